"""Corpus items -> tokenized samples with loss masks, their length order and the forward batches.

Batches are packed greedily from the front of the length-sorted list (:func:`batch_ranges`), so a resumed
run re-forms exactly the batches an uninterrupted run would have used for the remaining samples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..corpus import CorpusItem
from ..errors import TokalignError
from .options import SPECIAL_TOKEN_POLICIES


@dataclass
class PreparedSample:
    """One tokenized corpus item, ready to batch."""

    sample_id: str
    order: int               # position in the rank's slice (corpus order): the tie-break of the length sort
    input_ids: np.ndarray    # int32 [L]
    loss_mask: np.ndarray    # bool [L]

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def assistant_token_mask(offsets: np.ndarray, ids: np.ndarray, spans: Sequence[Tuple[int, int]],
                         special_mask: np.ndarray) -> np.ndarray:
    """bool [L]: tokens whose character span overlaps an assistant span, plus the special token that directly
    follows each response (the end-of-turn marker, e.g. ``<|end_of_turn|>``, ``<|im_end|>``, ``</s>``): like
    FastChat/FuseChat's label masking, the model is trained to end its turn.

    Tokens inserted by the tokenizer (BOS) have empty spans and never overlap.
    """
    n = int(ids.shape[0])
    mask = np.zeros(n, dtype=bool)
    if not n or not spans:
        return mask
    starts, ends = offsets[:, 0], offsets[:, 1]
    for s, e in spans:
        if e <= s:
            continue
        mask |= (starts < e) & (ends > s)
        after = np.flatnonzero((starts >= e) & (ends > starts))
        if after.size:
            j = int(after[0])
            tid = int(ids[j])
            if 0 <= tid < special_mask.shape[0] and special_mask[tid]:
                mask[j] = True
    return mask


def resolve_special_tokens(policy: str, template: str) -> bool:
    """``add_special_tokens`` for ``Tokenizer.encode``.

    ``auto`` follows transformers: a chat template renders the BOS it wants (``{{ bos_token }}``) and
    ``apply_chat_template(tokenize=True)`` encodes without special tokens; plain text is encoded like
    ``tokenizer(text)``, whose post-processor adds BOS when the model expects one (Llama/Mistral/InternLM2
    ``add_bos_token``; Qwen adds none).
    """
    if policy not in SPECIAL_TOKEN_POLICIES:
        raise TokalignError("special_tokens must be one of %s, not %r" % (", ".join(SPECIAL_TOKEN_POLICIES), policy))
    if policy == "auto":
        return template != "chat"
    return policy == "add"


def prepare_samples(tokenizer, items: Sequence[CorpusItem], *, mask_instruction: bool, max_length: int,
                    skip_long: bool, add_special_tokens: bool,
                    encode_chunk: int = 512) -> Tuple[List[PreparedSample], Dict[str, int]]:
    """Tokenize ``items`` (Rust, parallel) and build input ids + loss masks.

    Returns the samples (in ``items`` order) and counts ``truncated``, ``skipped_long``, ``skipped_empty``.
    Sequences longer than ``max_length`` are cut to their first ``max_length`` tokens, or skipped with
    ``skip_long``. ``mask_instruction`` sets the loss mask on assistant tokens only (see
    :func:`assistant_token_mask`); otherwise on every token.
    """
    if max_length < 1:
        raise TokalignError("max_length must be >= 1, got %r" % (max_length,))
    special = tokenizer.special_mask
    out: List[PreparedSample] = []
    counts = {"truncated": 0, "skipped_long": 0, "skipped_empty": 0}
    for lo in range(0, len(items), encode_chunk):
        chunk = items[lo:lo + encode_chunk]
        encodings = tokenizer.encode_batch([it.text for it in chunk], add_special_tokens=add_special_tokens)
        for j, (item, enc) in enumerate(zip(chunk, encodings)):
            ids = np.ascontiguousarray(enc.ids, dtype=np.int32)
            if ids.shape[0] == 0:
                counts["skipped_empty"] += 1
                continue
            if mask_instruction:
                mask = assistant_token_mask(enc.offsets, ids, item.assistant_spans, special)
            else:
                mask = np.ones(ids.shape[0], dtype=bool)
            if ids.shape[0] > max_length:
                if skip_long:
                    counts["skipped_long"] += 1
                    continue
                ids, mask = ids[:max_length].copy(), mask[:max_length].copy()
                counts["truncated"] += 1
            out.append(PreparedSample(item.sample_id, lo + j, ids, mask))
    return out, counts


def length_order(samples: Sequence[PreparedSample]) -> List[PreparedSample]:
    """Longest first (an out-of-memory batch shows up at once); ties keep corpus order. Deterministic."""
    return sorted(samples, key=lambda s: (-len(s), s.order))


def batch_ranges(lengths: Sequence[int], batch_tokens: int) -> List[Tuple[int, int]]:
    """Greedy ``[start, stop)`` ranges over ``lengths`` (sorted longest first) holding at most ``batch_tokens``
    padded tokens (batch size x longest length); a sequence longer than ``batch_tokens`` gets a batch alone.

    Greedy packing is memoryless: packing any suffix that starts at a batch boundary reproduces the same
    batches, which is what makes a resumed dump identical to an uninterrupted one.
    """
    if batch_tokens < 1:
        raise TokalignError("batch_tokens must be >= 1, got %r" % (batch_tokens,))
    out = []
    i, n = 0, len(lengths)
    while i < n:
        longest = max(int(lengths[i]), 1)
        j = i + 1
        while j < n and (j - i + 1) * max(longest, int(lengths[j])) <= batch_tokens:
            longest = max(longest, int(lengths[j]))
            j += 1
        out.append((i, j))
        i = j
    return out
