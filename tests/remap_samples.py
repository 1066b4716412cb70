"""Per-sample remap helpers over sample dicts (the store contract), kept for the tests and the per-sample reference
(tests/remap_store_reference.py): the library works on packed batches (tokalign.remap.stores) and needs none of
these. Moved here from tokalign/cli/remap.py."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from tokalign.remap import RemapResult, concat_groups, remap_batch
from tokalign.remap.ce import REMAP_CE_FIELD, source_nll_by_group
from tokalign.remap.stores import remapped_token_ce_packed


def token_byte_offsets(token_texts: Sequence[bytes], ids: np.ndarray) -> Tuple[str, np.ndarray]:
    """The text a token sequence spells (as latin-1, one character per byte) and each token's
    [start, end) offsets into it, so that ``align.span`` can align two decodings of the same bytes."""
    ids = np.asarray(ids, dtype=np.int64)
    lengths = np.fromiter((len(token_texts[i]) for i in ids), dtype=np.int64, count=len(ids))
    ends = np.cumsum(lengths)
    offsets = np.stack([ends - lengths, ends], axis=1) if len(ids) else np.zeros((0, 2), np.int64)
    text = b"".join(token_texts[i] for i in ids).decode("latin-1")
    return text, offsets


def remapped_token_ce(result: Mapping[str, np.ndarray], input_ids: np.ndarray) -> np.ndarray:
    """Cross-entropy of each remapped distribution on the next pivot token (the ``remap_ce`` diagnostic) of one
    sequence: -log q(next) when the token is kept, else -log(tail mass) (a lower bound, since
    q(next) <= 1 - retained); 0 for the last position and for invalid positions. Not the store's ``token_ce``
    (see tokalign.remap.ce)."""
    n = int(result["topk_ids"].shape[0])
    return remapped_token_ce_packed(result["topk_ids"], result["topk_logits"], result["retained_mass"], result["valid"],
                                    input_ids, np.array([0, n], np.int64))


def build_samples(sample_ids: Sequence[str], pivot_samples: Sequence[Mapping[str, Any]], result: RemapResult,
                  source_samples: Sequence[Mapping[str, Any]], groups: Sequence[np.ndarray], *,
                  remap_ce: bool = True) -> List[Dict[str, Any]]:
    """Output sample dicts (store contract) for one remapped batch: ``token_ce`` is the source's NLL carried
    through ``groups`` (:func:`tokalign.remap.ce.source_nll_by_group`, computed for the whole batch at once);
    ``remap_ce`` adds the diagnostic :func:`remapped_token_ce` (the output schema must declare it)."""
    g, go = concat_groups(groups)
    s_off = np.r_[0, np.cumsum([len(s["input_ids"]) for s in source_samples])].astype(np.int64)
    cat = lambda name: (np.concatenate([np.asarray(s[name], np.float32) for s in source_samples])  # noqa: E731
                        if source_samples else np.zeros(0, np.float32))
    ce = source_nll_by_group(cat("token_ce"), s_off, g, go, result.offsets, source_lse=cat("logsumexp"))
    out = []
    for i, sid in enumerate(sample_ids):
        seq = result.sequence(i)
        ps = pivot_samples[i]
        extra = {REMAP_CE_FIELD: remapped_token_ce(seq, np.asarray(ps["input_ids"]))} if remap_ce else {}
        out.append({
            "sample_id": sid,
            "input_ids": np.asarray(ps["input_ids"], np.int32),
            "loss_mask": np.asarray(ps["loss_mask"], bool),
            "topk_ids": seq["topk_ids"],
            "topk_logits": seq["topk_logits"],
            "logsumexp": seq["logsumexp"],
            "token_ce": ce[result.offsets[i]:result.offsets[i + 1]],
            "group_kind": seq["group_kind"],
            "retained_mass": seq["retained_mass"],
            "source_position": seq["source_position"],
            "remap_valid": seq["valid"],
            **extra,
        })
    return out


def remap_samples(pivot_samples: Sequence[Mapping[str, Any]], source_samples: Sequence[Mapping[str, Any]],
                  groups: Sequence[np.ndarray], vocab_map: Any, *, k_out: int, inside: str, one_to_many: str,
                  threads: int = 0) -> RemapResult:
    """Array-level remap of a batch of joined samples (ragged arrays built from the sample dicts)."""
    def cat(samples, name, shape_tail, dtype):
        parts = [np.asarray(s[name]) for s in samples]
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros((0,) + shape_tail, dtype)

    k_src = int(np.asarray(source_samples[0]["topk_ids"]).shape[1]) if source_samples else 1
    s_off = np.r_[0, np.cumsum([len(s["input_ids"]) for s in source_samples])].astype(np.int64)
    p_off = np.r_[0, np.cumsum([len(s["input_ids"]) for s in pivot_samples])].astype(np.int64)
    g, go = concat_groups(groups)
    pivot_topk = None
    if inside == "pivot":
        kp = int(np.asarray(pivot_samples[0]["topk_ids"]).shape[1]) if pivot_samples else 1
        pivot_topk = (cat(pivot_samples, "topk_ids", (kp,), np.int32), cat(pivot_samples, "topk_logits", (kp,), np.float32),
                      cat(pivot_samples, "logsumexp", (), np.float32))
    return remap_batch(g, cat(source_samples, "topk_ids", (k_src,), np.int32),
                       cat(source_samples, "topk_logits", (k_src,), np.float32),
                       cat(source_samples, "logsumexp", (), np.float32), vocab_map,
                       cat(pivot_samples, "input_ids", (), np.int32), group_offsets=go, source_offsets=s_off,
                       pivot_offsets=p_off, pivot_topk=pivot_topk, k_out=k_out, inside=inside,
                       one_to_many=one_to_many, num_threads=threads)
