"""Dump a causal LM's per-token top-K distributions into a tokalign logit store (docs/dump.md).

    from tokalign.dump import dump_logits
    summary = dump_logits("models/openchat", "models/openchat", "data.jsonl", "openchat.zarr",
                          top_k=10, template="chat", mask_instruction=True)
    print(summary.line())

Pipeline of one rank: read the corpus -> take this rank's slice (``items[rank::world_size]``, corpus order) ->
tokenize (the model's tokenizer, plain text or its chat template) -> sort by length (longest first) -> pack
batches of at most ``batch_tokens`` padded tokens -> forward pass -> top-K, logsumexp and token cross-entropy
on the device (only ``K + 2`` numbers per token come back to the host) -> ``StoreWriter.append``.

Batches are packed greedily from the front of the sorted list and the writer commits only between batches,
so a resumed run re-forms exactly the batches an uninterrupted run would have used for the remaining
samples: a resumed store is identical to an uninterrupted one.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .. import __version__
from ..corpus import Corpus, CorpusItem
from ..errors import TokalignError

TEMPLATES = ("plain", "chat")
SPECIAL_TOKEN_POLICIES = ("auto", "add", "none")
#: ``--dtype`` names -> torch dtype attribute names ("auto": the checkpoint's own dtype)
MODEL_DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
                "fp32": "float32", "float32": "float32", "auto": "auto"}
STORE_DTYPES = ("bfloat16", "float16", "float32")
#: float32 elements of one row chunk of logits processed at once (256 MiB): bounds the temporary memory of the
#: top-K / logsumexp pass independently of the batch size.
ROW_CHUNK_ELEMENTS = 1 << 26


# ---------------------------------------------------------------------------------------- results
@dataclass
class DumpSummary:
    """What one rank did (``to_dict()`` is the CLI's ``--json`` report)."""

    out: str
    part: str
    rank: int
    world_size: int
    model: str
    tokenizer: str
    device: str
    dtype: str
    k: int
    model_vocab_size: int
    tokenizer_vocab_size: int
    corpus_items: int = 0          # items of the whole corpus (all ranks)
    rank_items: int = 0            # items in this rank's slice
    samples: int = 0               # samples this rank's part holds when done (all runs)
    samples_written: int = 0       # written by this run
    samples_already_done: int = 0  # committed by an earlier, interrupted run
    tokens_written: int = 0
    truncated: int = 0
    skipped_long: int = 0
    skipped_empty: int = 0
    skipped_bad: int = 0           # malformed corpus lines (only with skip_bad)
    invalid_samples: int = 0       # samples with NaN/Inf written by this run (stored with valid = False)
    nonfinite_values: int = 0
    batches: int = 0
    seconds: float = 0.0
    tokens_per_s: float = 0.0
    resumed: bool = False
    complete: bool = False
    invalid_ids: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """The one-line summary printed at the end of a dump."""
        done = " (%d already done)" % self.samples_already_done if self.samples_already_done else ""
        return ("dump-logits %s/%s: %d samples, %d tokens written%s in %.1fs (%.0f tok/s); truncated %d, skipped "
                "%d long, %d empty, %d bad; %d invalid (NaN/Inf) samples%s"
                % (self.out, self.part, self.samples_written, self.tokens_written, done, self.seconds,
                   self.tokens_per_s, self.truncated, self.skipped_long, self.skipped_empty, self.skipped_bad,
                   self.invalid_samples, (": " + ", ".join(self.invalid_ids[:5])) if self.invalid_ids else ""))


@dataclass
class PreparedSample:
    """One tokenized corpus item, ready to batch."""

    sample_id: str
    order: int               # position in the rank's slice (corpus order): the tie-break of the length sort
    input_ids: np.ndarray    # int32 [L]
    loss_mask: np.ndarray    # bool [L]

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


# ------------------------------------------------------------------------------------ tokenization
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


def plan_batches(lengths: Sequence[int], batch_tokens: int) -> List[Tuple[int, int]]:
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


# ------------------------------------------------------------------------------- on-device statistics
def topk_statistics(logits, next_ids, k: int, id_limit: Optional[int] = None, row_chunk: Optional[int] = None):
    """Top-K, logsumexp and gold-token cross-entropy of one sequence's logits, on their device.

    Args:
        logits: ``[L, V]`` tensor (any float dtype; math in float32).
        next_ids: ``[L - 1]`` long tensor, the gold next tokens ``input_ids[1:]``.
        k: slots per position.
        id_limit: only ids ``< id_limit`` may enter the top-K (the tokenizer's size when the model's output is
            padded); ``logsumexp`` and ``token_ce`` still use the full output (the model's exact distribution).
        row_chunk: rows per pass (default: ``ROW_CHUNK_ELEMENTS // V``), bounding the float32 temporaries.

    Returns ``(topk_ids int32 [L, K], topk_logits float32 [L, K], logsumexp float32 [L], token_ce float32 [L])``
    with ``token_ce[t] = logsumexp[t] - logits[t, next_ids[t]]`` and ``token_ce[L-1] = 0``. NaN/Inf logits stay
    visible (``torch.topk`` ranks NaN first; logsumexp becomes NaN/Inf) so the store flags the sample.
    """
    import torch

    length, vocab = int(logits.shape[0]), int(logits.shape[1])
    limit = vocab if id_limit is None else min(int(id_limit), vocab)
    if row_chunk is None:
        row_chunk = max(1, ROW_CHUNK_ELEMENTS // max(vocab, 1))
    ids_out, vals_out, lse_out, ce_out = [], [], [], []
    next_ids = next_ids.to(device=logits.device, dtype=torch.long)
    for lo in range(0, length, row_chunk):
        hi = min(length, lo + row_chunk)
        x = logits[lo:hi].float()
        lse = torch.logsumexp(x, dim=-1)
        vals, idx = torch.topk(x[:, :limit] if limit < vocab else x, k, dim=-1, largest=True, sorted=True)
        ce = torch.zeros(hi - lo, dtype=torch.float32, device=x.device)
        n_gold = min(hi, length - 1) - lo  # rows of this chunk that have a next token
        if n_gold > 0:
            gold = x[:n_gold].gather(1, next_ids[lo:lo + n_gold, None]).squeeze(1)
            ce[:n_gold] = lse[:n_gold] - gold
        ids_out.append(idx.to(torch.int32))
        vals_out.append(vals)
        lse_out.append(lse)
        ce_out.append(ce)
    return torch.cat(ids_out), torch.cat(vals_out), torch.cat(lse_out), torch.cat(ce_out)


def forward_batch(model, batch: Sequence[PreparedSample], *, device, k: int, vocab_size: int, id_limit: int,
                  pad_id: int = 0) -> List[Dict[str, Any]]:
    """Run one padded batch (right padding, attention mask) and return the store's sample dicts (numpy).

    Right padding leaves every real position's logits unchanged under causal attention; positions start at 0.
    All per-sample statistics are concatenated on the device and copied to the host in one transfer.
    """
    import torch

    lengths = [len(s) for s in batch]
    longest = max(lengths)
    ids = torch.full((len(batch), longest), int(pad_id), dtype=torch.long)
    attn = torch.zeros((len(batch), longest), dtype=torch.long)
    for b, s in enumerate(batch):
        ids[b, :len(s)] = torch.from_numpy(s.input_ids.astype(np.int64))
        attn[b, :len(s)] = 1
    ids, attn = ids.to(device), attn.to(device)
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=attn, use_cache=False)
        logits = out.logits if hasattr(out, "logits") else out[0]
        if logits.dim() != 3 or int(logits.shape[-1]) != int(vocab_size):
            raise TokalignError("the model returned logits of shape %s, expected [batch, length, %d]"
                                % (tuple(logits.shape), vocab_size))
        parts = [topk_statistics(logits[b, :n], ids[b, 1:n], k, id_limit=id_limit) for b, n in enumerate(lengths)]
        cat = [torch.cat([p[f] for p in parts]) for f in range(4)]
        topk_ids, topk_vals, lse, ce = (t.cpu().numpy() for t in cat)
    samples = []
    start = 0
    for s, n in zip(batch, lengths):
        sl = slice(start, start + n)
        samples.append({"sample_id": s.sample_id, "input_ids": s.input_ids, "loss_mask": s.loss_mask,
                        "topk_ids": topk_ids[sl], "topk_logits": topk_vals[sl], "logsumexp": lse[sl],
                        "token_ce": ce[sl]})
        start += n
    return samples


# ------------------------------------------------------------------------------------- model loading
def resolve_device(spec: str = "auto", local_rank: Optional[int] = None):
    """``auto`` -> CUDA when present (device ``LOCAL_RANK`` under torchrun), else CPU."""
    import torch

    if spec not in ("auto", "cpu", "cuda") and not spec.startswith("cuda:"):
        raise TokalignError("device must be auto, cpu, cuda or cuda:N, not %r" % spec)
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TokalignError("device %s requested but CUDA is not available (torch %s)" % (spec, torch.__version__))
    if spec.startswith("cuda:"):
        return torch.device(spec)
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def _torch_dtype(name: str):
    import torch

    if name not in MODEL_DTYPES:
        raise TokalignError("dtype must be one of %s, not %r" % (", ".join(sorted(MODEL_DTYPES)), name))
    resolved = MODEL_DTYPES[name]
    return "auto" if resolved == "auto" else getattr(torch, resolved)


def _resolve_model_source(spec: Union[str, "os.PathLike[str]"]) -> Tuple[str, str]:
    """(what from_pretrained gets, the name recorded in the store): a path (absolute), an alias' hub id, a hub id."""
    s = os.fspath(spec)
    p = Path(s).expanduser()
    if p.exists():
        return str(p), str(p.resolve())
    from ..tokenize import lookup_alias

    alias = lookup_alias(s)
    if alias is not None and alias.hub_id:
        return alias.hub_id, s
    return s, s


def _refuse_remote_code(path: Path, spec: Any) -> None:
    """A checkpoint whose architecture exists only as code in its repository (``auto_map``) is refused with a
    clear message; transformers' own error names neither the cause nor the flag."""
    import json

    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # transformers reports a missing/broken config itself
    if not isinstance(config, dict) or not config.get("auto_map"):
        return
    from transformers import CONFIG_MAPPING

    if config.get("model_type") not in CONFIG_MAPPING:
        raise TokalignError("model %s needs custom code from its repository (config.json auto_map, model_type %r); "
                            "refusing to run it (pass --trust-remote-code only if you trust that code)"
                            % (spec, config.get("model_type")))


def load_causal_lm(spec: Union[str, "os.PathLike[str]"], *, dtype: str = "bf16", device: Any = "auto",
                   trust_remote_code: bool = False):
    """Load a transformers causal LM from a directory, hub id (local cache) or tokenizer alias.

    Only ``*.safetensors`` weights are read (``use_safetensors=True``: no pickle); custom model code runs only
    with ``trust_remote_code=True``. Returns ``(model, name)`` with the model in eval mode on ``device``.
    """
    import torch  # noqa: F401  (clear ImportError before transformers)
    from transformers import AutoModelForCausalLM
    import transformers

    source, name = _resolve_model_source(spec)
    path = Path(source)
    if path.is_dir() and not any(path.glob("*.safetensors")):
        raise TokalignError("%s: no *.safetensors weights (tokalign loads safetensors only, never pickled "
                            "checkpoints; convert them first)" % source)
    if path.exists() and not path.is_dir():
        raise TokalignError("%s: --model must be a model directory, hub id or alias, not a file" % source)
    if path.is_dir() and not trust_remote_code:
        _refuse_remote_code(path, spec)
    dev = device if not isinstance(device, str) else resolve_device(device)
    kwargs: Dict[str, Any] = {"use_safetensors": True, "trust_remote_code": bool(trust_remote_code)}
    major = int(transformers.__version__.split(".")[0])
    minor = int(transformers.__version__.split(".")[1])
    kwargs["dtype" if (major, minor) >= (4, 56) else "torch_dtype"] = _torch_dtype(dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except TokalignError:
        raise
    except Exception as exc:  # transformers raises ValueError/OSError/EnvironmentError/...; keep one line
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "trust_remote_code" in str(exc) and not trust_remote_code:
            raise TokalignError("model %s needs custom code from its repository; refusing to run it (pass "
                                "--trust-remote-code only if you trust that code)" % spec) from None
        raise TokalignError("cannot load model %s: %s" % (spec, msg)) from None
    model.to(dev)
    model.eval()
    return model, name


def model_output_size(model) -> int:
    """Size of the logit dimension (the output embedding's rows; padded embeddings included)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if weight is not None:
        return int(weight.shape[0])
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    if size is None:
        raise TokalignError("cannot tell the model's vocabulary size (no output embedding, no config.vocab_size)")
    return int(size)


# ----------------------------------------------------------------------------------------- the dump
def _rank_world(rank: Optional[int], world_size: Optional[int]) -> Tuple[int, int]:
    r = int(os.environ.get("RANK", "0")) if rank is None else int(rank)
    w = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else int(world_size)
    if w < 1 or not 0 <= r < w:
        raise TokalignError("rank %d is outside [0, world_size=%d)" % (r, w))
    return r, w


def _check_unique_ids(items: Sequence[CorpusItem]) -> None:
    seen: Dict[str, CorpusItem] = {}
    for it in items:
        first = seen.get(it.sample_id)
        if first is not None:
            raise TokalignError("%s:%d: duplicate sample id %r (first at %s:%d); store samples are joined by id"
                                % (it.file, it.line, it.sample_id, first.file, first.line))
        seen[it.sample_id] = it


def _spec_name(spec: Any) -> str:
    """A name that reloads from anywhere: absolute path for paths, else as given (alias, hub id)."""
    s = os.fspath(spec)
    return str(Path(s).expanduser().resolve()) if Path(s).expanduser().exists() else s


def dump_logits(model, tokenizer, corpus, out_url: Union[str, "os.PathLike[str]"], *, top_k: int = 10,
                template: str = "plain", mask_instruction: bool = False, max_length: int = 2048,
                skip_long: bool = False, batch_tokens: int = 16384, dtype: str = "bf16",
                store_dtype: str = "bfloat16", special_tokens: str = "auto", device: Any = "auto",
                rank: Optional[int] = None, world_size: Optional[int] = None, overwrite: bool = False,
                flush_tokens: int = 65536, trust_remote_code: bool = False, skip_bad: bool = False,
                tokenizer_dir: Optional[str] = None, progress: bool = True,
                storage_options: Optional[Dict[str, Any]] = None, schema_overrides: Optional[Mapping[str, Any]] = None,
                ) -> DumpSummary:
    """Write (this rank's part of) the logit store of ``model`` over ``corpus`` at ``out_url``.

    Args:
        model: a loaded causal LM (``torch.nn.Module`` returning ``.logits``) or a path / hub id / alias loaded
            with :func:`load_causal_lm` (``dtype``, ``device``, ``trust_remote_code``).
        tokenizer: a :class:`tokalign.tokenize.Tokenizer` or anything :func:`tokalign.load_tokenizer` takes
            (``None``: the model directory's tokenizer).
        corpus: a :class:`tokalign.corpus.Corpus` (its template wins) or corpus path(s) read with ``template``.
        out_url: store URL or path. An incomplete part is resumed (committed samples are skipped); a complete
            one is refused unless ``overwrite``.
        top_k: K; ``template``: ``plain`` or ``chat``; ``mask_instruction``: loss mask on assistant tokens only.
        max_length, skip_long: truncate longer sequences (counted) or skip them (counted).
        batch_tokens: padded tokens per forward batch (length-bucketed).
        store_dtype: stored ``topk_logits`` dtype (bfloat16 / float16 / float32).
        special_tokens: ``auto`` (see :func:`resolve_special_tokens`), ``add`` or ``none``.
        rank, world_size: default ``$RANK`` / ``$WORLD_SIZE`` (torchrun); rank r writes ``part-0000r`` with the
            corpus items ``r, r + world_size, ...``.
        flush_tokens: commit (durably) after at least this many tokens (always at a batch boundary).

    Returns a :class:`DumpSummary`. Raises :class:`TokalignError` for bad input (message names the problem).
    """
    import torch
    from tqdm import tqdm

    from ..store import StoreSchema, StoreWriter, store_status
    from ..store import _zarrio
    from ..store.schema import part_name
    from ..tokenize import Tokenizer, load_tokenizer

    rank, world_size = _rank_world(rank, world_size)
    if top_k < 1:
        raise TokalignError("top_k must be >= 1, got %r" % (top_k,))
    if store_dtype not in STORE_DTYPES:
        raise TokalignError("store dtype must be one of %s, not %r" % (", ".join(STORE_DTYPES), store_dtype))
    if template not in TEMPLATES:
        raise TokalignError("template must be one of %s, not %r" % (", ".join(TEMPLATES), template))
    if dtype not in MODEL_DTYPES:
        raise TokalignError("dtype must be one of %s, not %r" % (", ".join(sorted(MODEL_DTYPES)), dtype))
    if batch_tokens < 1:
        raise TokalignError("batch_tokens must be >= 1, got %r" % (batch_tokens,))
    out = os.fspath(out_url)

    # -- tokenizer and corpus (cheap checks before the model is loaded)
    model_spec = None if isinstance(model, torch.nn.Module) else model
    if tokenizer is None:
        if model_spec is None:
            raise TokalignError("no tokenizer given for an already loaded model")
        tokenizer = model_spec
    tok_name = tokenizer.name if isinstance(tokenizer, Tokenizer) else _spec_name(tokenizer)
    if not isinstance(tokenizer, Tokenizer):
        tokenizer = load_tokenizer(tokenizer, tokenizer_dir=tokenizer_dir, trust_remote_code=trust_remote_code)
    if isinstance(corpus, Corpus):
        template = corpus.template
    else:
        corpus = Corpus(corpus, template=template, tokenizer=tokenizer, skip_bad=skip_bad)
    if template == "chat" and not tokenizer.has_chat_template:
        raise TokalignError("template 'chat': tokenizer %s has no chat template (use --template plain)" % tok_name)
    n_tok = int(tokenizer.vocab_size)
    if top_k > n_tok:
        raise TokalignError("top_k=%d is larger than the tokenizer's vocabulary (%d)" % (top_k, n_tok))
    add_special = resolve_special_tokens(special_tokens, template)
    items = list(corpus)
    corpus_stats = corpus.stats
    _check_unique_ids(items)
    my_items = items[rank::world_size]
    prepared, counts = prepare_samples(tokenizer, my_items, mask_instruction=mask_instruction,
                                       max_length=max_length, skip_long=skip_long, add_special_tokens=add_special)
    ordered = length_order(prepared)
    provenance = [{"name": p["path"].rsplit("/", 1)[-1], "sha256": p["sha256"], "bytes": p["bytes"]}
                  for p in corpus.provenance()]

    # -- a complete part is refused before the (slow) model load
    pname = part_name(rank)
    status = store_status(out, storage_options)
    resumed = False
    if status["exists"] and pname in status["parts"]:
        if status["parts"][pname]["complete"] and not overwrite:
            raise TokalignError("%s: %s is already complete (%d samples); nothing to do (pass --overwrite to "
                                "rewrite it)" % (out, pname, status["parts"][pname]["samples"]))
        resumed = not overwrite

    # -- model
    if not progress:
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:  # pragma: no cover
            pass
    if model_spec is not None:
        model, model_name = load_causal_lm(model_spec, dtype=dtype, device=device,
                                           trust_remote_code=trust_remote_code)
        dev = next(model.parameters()).device
    else:
        given = getattr(getattr(model, "config", None), "_name_or_path", "")
        model_name = _spec_name(given) if given else type(model).__name__
        params = list(model.parameters())
        dev = params[0].device if params else torch.device("cpu")
        if device not in (None, "auto"):
            dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
            model.to(dev)
        model.eval()
    model_dtype = str(next(model.parameters()).dtype).replace("torch.", "") if list(model.parameters()) else "?"
    vocab = model_output_size(model)
    if vocab < n_tok:
        raise TokalignError("model %s has %d output logits but tokenizer %s has %d ids: the model's vocabulary is "
                            "smaller than the tokenizer's (wrong tokenizer for this model?)"
                            % (model_name, vocab, tok_name, n_tok))
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(max_pos, int) and ordered and len(ordered[0]) > max_pos:
        print("tokalign dump-logits: warning: sequences of %d tokens exceed the model's max_position_embeddings=%d"
              % (len(ordered[0]), max_pos), file=sys.stderr)

    options = {
        "tokenizer": tok_name,
        "tokenizer_vocab_size": n_tok,
        "model_vocab_size": vocab,
        "topk_id_limit": n_tok,
        "template": template,
        "mask_instruction": bool(mask_instruction),
        "add_special_tokens": bool(add_special),
        "special_tokens": special_tokens,
        "max_length": int(max_length),
        "long": "skip" if skip_long else "truncate",
        "dtype": model_dtype,
        "data": provenance,
        "dump": "tokalign.dump",
    }
    schema_kw: Dict[str, Any] = dict(model=model_name, tokenizer_fingerprint=tokenizer.fingerprint,
                                     vocab_size=vocab, k=int(top_k), logits_dtype=store_dtype, kind="topk",
                                     template=tokenizer.chat_template if template == "chat" else None,
                                     options=options)
    schema_kw.update(schema_overrides or {})
    schema = StoreSchema(**schema_kw)

    # -- store: resume an incomplete part (the writer checks the schema is the same)
    writer = StoreWriter.open(out, schema, part=rank, num_parts=world_size, overwrite=overwrite,
                              storage_options=storage_options, flush_tokens=flush_tokens, on_duplicate="error",
                              on_empty="skip")
    before = writer.stats
    todo_ids = set(writer.remaining(s.sample_id for s in ordered))
    todo = [s for s in ordered if s.sample_id in todo_ids]
    if resumed:
        print("tokalign dump-logits: resuming %s" % writer.resume_report(), file=sys.stderr)
    ranges = plan_batches([len(s) for s in todo], batch_tokens)
    pad_id = int(tokenizer.special_ids.get("pad", tokenizer.special_ids.get("eos", 0)))
    pad_id = pad_id if 0 <= pad_id < vocab else 0

    summary = DumpSummary(out=out, part=pname, rank=rank, world_size=world_size, model=model_name,
                          tokenizer=tok_name, device=str(dev), dtype=model_dtype, k=int(top_k),
                          model_vocab_size=vocab, tokenizer_vocab_size=n_tok, corpus_items=len(items),
                          rank_items=len(my_items), samples_already_done=len(ordered) - len(todo),
                          truncated=counts["truncated"], skipped_long=counts["skipped_long"],
                          skipped_empty=counts["skipped_empty"] + corpus_stats.skipped_empty,
                          skipped_bad=corpus_stats.skipped_bad_json + corpus_stats.skipped_bad_utf8
                          + corpus_stats.skipped_bad_schema, resumed=resumed)
    total_tokens = sum(len(s) for s in todo)
    t0 = time.perf_counter()
    desc = "dump-logits" if world_size == 1 else "dump-logits rank %d/%d" % (rank, world_size)
    with writer, tqdm(total=total_tokens, unit="tok", unit_scale=True, desc=desc, disable=not progress,
                      file=sys.stderr, dynamic_ncols=True) as bar:
        for lo, hi in ranges:
            batch = todo[lo:hi]
            samples = forward_batch(model, batch, device=dev, k=int(top_k), vocab_size=vocab, id_limit=n_tok,
                                    pad_id=pad_id)
            for s in samples:  # ids for the summary; the writer flags them (valid = False) itself
                if not (np.isfinite(s["logsumexp"]).all() and np.isfinite(s["token_ce"]).all()
                        and np.isfinite(s["topk_logits"]).all()):
                    summary.invalid_ids.append(s["sample_id"])
            writer.append(samples)
            summary.samples_written += len(batch)
            summary.tokens_written += sum(len(s) for s in batch)
            summary.batches += 1
            bar.update(sum(len(s) for s in batch))
            bar.set_postfix(samples=summary.samples_written, invalid=len(summary.invalid_ids), refresh=False)
    summary.seconds = time.perf_counter() - t0
    summary.tokens_per_s = summary.tokens_written / summary.seconds if summary.seconds > 0 else 0.0
    final = writer.summary()
    summary.samples = int(final["samples"])
    summary.invalid_samples = int(final["invalid_samples"]) - int(before["invalid_samples"])
    summary.nonfinite_values = int(final["nonfinite_values"]) - int(before["nonfinite_values"])
    summary.complete = bool(final["complete"])
    # per-part provenance of this dump (after close: the writer rewrites the part attributes while open)
    root = _zarrio.open_root(out, mode="r+", storage_options=storage_options)
    root[pname].update_attributes({"dump": {
        "items": len(my_items), "truncated": summary.truncated, "skipped_long": summary.skipped_long,
        "skipped_empty": summary.skipped_empty, "skipped_bad": summary.skipped_bad, "device": str(dev),
        "batch_tokens": int(batch_tokens), "tokalign_version": __version__,
        "torch_version": torch.__version__}})
    return summary
