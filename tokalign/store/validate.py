"""Turning what a producer hands the store writer into a checked packed batch (docs/store.md, "Writing").

Two ways in, one way out: :func:`pack_samples` (a list of sample dicts, the reader's contract; numpy or
torch values) and :func:`pack_arrays` (token arrays already concatenated) both give a :class:`PackedBatch`
whose fields have the schema's shapes and acceptable dtypes; :func:`check_batch` then checks the values
(ids inside the vocabulary, boolean loss mask) and derives the per-sample ``nonfinite`` counts and
``seq_ce``. Every check runs on the whole batch before the writer buffers anything, and each error names
the sample and field. What depends on the part being written (duplicate ids, empty samples, buffering,
commits) stays in :mod:`tokalign.store.writer`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..errors import TokalignError
from .schema import CHECKED_FLOAT_ARRAYS, StoreSchema, bf16_bits_nonfinite, float32_to_bf16_bits

# keys a sample dict may carry besides the token arrays; reader-only fields are accepted and ignored
READER_ONLY = ("valid", "nonfinite", "index", "part")


@dataclass
class PackedBatch:
    """A batch of samples as concatenated token arrays (sample i owns rows ``starts[i]:starts[i+1]``)."""

    sample_ids: List[str]
    lengths: np.ndarray  # int64 [B]
    arrays: Dict[str, np.ndarray]  # every token array of the schema, sum(lengths) rows
    seq_ce: np.ndarray  # float32 [B]: as given (NaN where not), the final values after check_batch
    seq_ce_given: np.ndarray  # bool [B]
    nonfinite: Optional[np.ndarray] = None  # int32 [B] non-finite values per sample (set by check_batch)


def sample_id_str(sid: Any, i: int) -> str:
    """The stored form of a sample id (a non-empty str; integers are written in decimal); ``i``: its place in
    the batch, for the error."""
    if isinstance(sid, (np.integer, int)) and not isinstance(sid, bool):
        sid = str(int(sid))
    if not isinstance(sid, str) or not sid:
        raise TokalignError("sample %d of the batch: sample_id must be a non-empty str, got %r" % (i, sid))
    return sid


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def to_numpy(x: Any) -> np.ndarray:
    """numpy view of numpy/torch/list input; torch bfloat16 comes back as float32 (exact)."""
    if _is_torch(x):
        import torch

        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def logits_to_stored(x: Any, logits_dtype: str) -> np.ndarray:
    """Convert top-k logits to the stored representation (bf16 -> raw uint16 patterns)."""
    if _is_torch(x):
        import torch

        t = x.detach().cpu()
        if logits_dtype == "bfloat16":
            if t.dtype != torch.bfloat16:
                t = t.float().to(torch.bfloat16)  # torch rounds to nearest even, like float32_to_bf16_bits
            return t.contiguous().view(torch.int16).numpy().view(np.uint16)
        return t.float().numpy().astype(logits_dtype)
    a = np.asarray(x)
    if a.dtype.name == "bfloat16":  # ml_dtypes arrays: already bf16 bit patterns
        a = a.view(np.uint16)
        return a if logits_dtype == "bfloat16" else (a.astype(np.uint32) << 16).view(np.float32).astype(logits_dtype)
    if a.dtype.kind != "f":
        raise TokalignError("topk_logits must be floating point, got dtype %s" % a.dtype)
    if logits_dtype == "bfloat16":
        return float32_to_bf16_bits(a.astype(np.float32, copy=False))
    return a.astype(logits_dtype, copy=False)


def _token_array(schema: StoreSchema, specs: Mapping[str, Any], name: str, value: Any, n: int,
                 where: str) -> np.ndarray:
    """Token array ``name`` of ``n`` rows in the stored representation (logits) or as given (dtype kind checked);
    ``specs``: the schema's token_array_specs(); ``where`` starts each error ("sample 'x'" or "packed batch")."""
    dtype, tail = specs[name]
    arr = logits_to_stored(value, schema.logits_dtype) if name == "topk_logits" else to_numpy(value)
    want = (n,) + tuple(tail)
    if arr.shape != want:
        if name in ("topk_ids", "topk_logits") and arr.ndim == 2 and arr.shape[0] == n:
            raise TokalignError("%s: %s has K=%d per position, the store has k=%d"
                                % (where, name, arr.shape[1], int(schema.k)))
        raise TokalignError("%s: %s has shape %s, expected %s" % (where, name, arr.shape, want))
    target = np.dtype(dtype)
    if name != "topk_logits" and arr.size:
        if name == "input_ids" and arr.dtype.kind not in "iu":
            raise TokalignError("%s: input_ids must be integers, got dtype %s" % (where, arr.dtype))
        if target.kind in "iu" and name != "topk_ids" and arr.dtype.kind in "iu":
            info = np.iinfo(target)  # extras: refuse values the declared dtype would wrap
            if arr.min() < info.min or arr.max() > info.max:
                raise TokalignError("%s: %s holds values outside %s" % (where, name, target.name))
        if target.kind in "iub" and arr.dtype.kind not in "iub":
            raise TokalignError("%s: %s must be integer/boolean, got dtype %s" % (where, name, arr.dtype))
        if target.kind == "f" and arr.dtype.kind not in "iuf":
            raise TokalignError("%s: %s must be numeric, got dtype %s" % (where, name, arr.dtype))
    return arr


def _require(s: Mapping[str, Any], name: str, where: str) -> Any:
    if s.get(name) is None:
        raise TokalignError("%s: field %s is missing" % (where, name))
    return s[name]


def _zero_logsumexp(schema: StoreSchema, name: str, value: Any) -> bool:
    """Remapped stores hold log-probabilities: a missing ``logsumexp`` is 0."""
    return name == "logsumexp" and schema.kind == "remapped" and value is None


def pack_samples(schema: StoreSchema, samples: Sequence[Mapping[str, Any]]) -> PackedBatch:
    """A batch of sample dicts (required keys: docs/store.md) packed, each field's shape and dtype checked."""
    specs = schema.token_array_specs()
    known = set(specs) | {"sample_id", "seq_ce"} | set(READER_ONLY)
    cols: Dict[str, List[np.ndarray]] = {name: [] for name in specs}
    ids: List[str] = []
    seq_ce: List[float] = []
    lengths: List[int] = []
    for i, s in enumerate(samples):
        if not isinstance(s, Mapping):
            raise TokalignError("sample %d of the batch is a %s, not a dict" % (i, type(s).__name__))
        sid = sample_id_str(s.get("sample_id"), i)
        where = "sample %r" % sid
        unknown = set(s) - known
        if unknown:
            raise TokalignError("%s: unknown field(s) %s" % (where, ", ".join(sorted(unknown))))
        input_ids = to_numpy(_require(s, "input_ids", where))
        if input_ids.ndim != 1 or (input_ids.size and input_ids.dtype.kind not in "iu"):
            raise TokalignError("%s: input_ids must be a 1-D integer array, got shape %s dtype %s"
                                % (where, input_ids.shape, input_ids.dtype))
        n = int(input_ids.shape[0])
        cols["input_ids"].append(input_ids)
        for name in specs:
            if name == "input_ids":
                continue
            if _zero_logsumexp(schema, name, s.get(name)):
                cols[name].append(np.zeros(n, dtype=np.float32))
            else:
                cols[name].append(_token_array(schema, specs, name, _require(s, name, where), n, where))
        ce = s.get("seq_ce")
        seq_ce.append(float("nan") if ce is None else float(to_numpy(ce)))
        ids.append(sid)
        lengths.append(n)
    arrays = {name: np.concatenate(parts) if parts else np.zeros((0,) + tuple(specs[name][1]), dtype=specs[name][0])
              for name, parts in cols.items()}
    return PackedBatch(ids, np.asarray(lengths, dtype=np.int64), arrays, np.asarray(seq_ce, dtype=np.float32),
                       np.asarray([s.get("seq_ce") is not None for s in samples]))


def pack_arrays(schema: StoreSchema, sample_ids: Sequence[Any], lengths: Any, arrays: Mapping[str, Any],
                seq_ce: Optional[Any] = None) -> Optional[PackedBatch]:
    """An already packed batch (``StoreWriter.append_packed``'s arguments) checked like :func:`pack_samples`'s
    fields; None for an empty batch. Arrays that already have the stored dtype are not copied."""
    ids = [sample_id_str(sid, i) for i, sid in enumerate(sample_ids)]
    if not ids:
        return None
    lengths = np.asarray(lengths)
    if lengths.shape != (len(ids),) or (lengths.size and (lengths.dtype.kind not in "iu" or lengths.min() < 0)):
        raise TokalignError("lengths must be %d non-negative integers, got shape %s dtype %s"
                            % (len(ids), lengths.shape, lengths.dtype))
    lengths = lengths.astype(np.int64)
    total = int(lengths.sum())
    specs = schema.token_array_specs()
    unknown = set(arrays) - set(specs)
    if unknown:
        raise TokalignError("packed batch: unknown field(s) %s" % ", ".join(sorted(unknown)))
    packed: Dict[str, np.ndarray] = {}
    for name in specs:
        if _zero_logsumexp(schema, name, arrays.get(name)):
            packed[name] = np.zeros(total, dtype=np.float32)
            continue
        if arrays.get(name) is None:
            raise TokalignError("packed batch: field %s is missing" % name)
        packed[name] = _token_array(schema, specs, name, arrays[name], total, "packed batch")
    if seq_ce is None:
        given = np.zeros(len(ids), dtype=bool)
        ce = np.full(len(ids), np.nan, dtype=np.float32)
    else:
        ce = np.asarray(to_numpy(seq_ce), dtype=np.float32)
        if ce.shape != (len(ids),):
            raise TokalignError("packed batch: seq_ce has shape %s, expected (%d,)" % (ce.shape, len(ids)))
        given = np.ones(len(ids), dtype=bool)
    return PackedBatch(ids, lengths, packed, ce, given)


def check_batch(schema: StoreSchema, batch: PackedBatch) -> PackedBatch:
    """Checks the values of a packed batch (ids inside the vocabulary, a 0/1 loss mask, converted to bool) and
    sets its per-sample ``nonfinite`` counts and final ``seq_ce`` (the mean ``token_ce`` over positions whose
    next token is in the loss mask, where not given). Raises TokalignError naming the first bad sample."""
    p = batch.arrays
    ids = batch.sample_ids
    lengths = batch.lengths
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    total = int(starts[-1])

    def sample_at(token_index: int) -> str:
        return ids[int(np.searchsorted(starts, token_index, side="right") - 1)]

    vocab = int(schema.vocab_size)
    inp = p["input_ids"]
    if inp.size and (inp.min() < 0 or inp.max() >= vocab):
        bad = int(np.flatnonzero((inp < 0) | (inp >= vocab))[0])
        raise TokalignError("sample %r: input_ids holds %d, outside [0, vocab_size=%d)"
                            % (sample_at(bad), int(inp[bad]), vocab))
    tid = p["topk_ids"]
    if tid.size and (tid.min() < -1 or tid.max() >= vocab):
        bad = int(np.flatnonzero(((tid < -1) | (tid >= vocab)).any(axis=1))[0])
        first = int(starts[np.searchsorted(starts, bad, side="right") - 1])
        raise TokalignError("sample %r: topk_ids holds an id outside [-1, vocab_size=%d) at position %d"
                            % (sample_at(bad), vocab, bad - first))
    mask = p["loss_mask"]
    if mask.dtype != np.bool_:
        if mask.size and not np.isin(mask, (0, 1)).all():
            raise TokalignError("sample %r: loss_mask must be boolean (0/1)"
                                % sample_at(int(np.flatnonzero(~np.isin(mask, (0, 1)))[0])))
        p["loss_mask"] = mask.astype(np.bool_)

    # -- per-token non-finite counts (topk_logits only at valid slots) -> per sample
    bad_tok = np.zeros(total, dtype=np.int64)
    for name, (dtype, tail) in schema.token_array_specs().items():
        arr = p[name]
        if name == "topk_logits":
            nf = bf16_bits_nonfinite(arr) if schema.logits_dtype == "bfloat16" else ~np.isfinite(arr)
            nf &= p["topk_ids"] >= 0
            if nf.any():  # the per-row count is the costly part, and nearly always all zeros
                bad_tok += nf.sum(axis=1)
        elif name in CHECKED_FLOAT_ARRAYS or np.dtype(dtype).kind == "f":
            nf = ~np.isfinite(arr.astype(dtype, copy=False))
            bad_tok += nf.reshape(total, -1).sum(axis=1) if nf.ndim > 1 else nf
    csum = np.concatenate([[0], np.cumsum(bad_tok)])
    nonfinite = (csum[starts[1:]] - csum[starts[:-1]]).astype(np.int32)

    # -- seq_ce = mean token_ce over positions whose next token is in the loss mask
    target = np.zeros(total, dtype=bool)
    if total > 1:
        target[:-1] = p["loss_mask"][1:]
    ends = starts[1:][lengths > 0] - 1
    target[ends] = False
    ce = np.where(target, p["token_ce"].astype(np.float64), 0.0)
    ce_sum = np.concatenate([[0.0], np.cumsum(ce)])
    cnt = np.concatenate([[0], np.cumsum(target)])
    n_target = cnt[starts[1:]] - cnt[starts[:-1]]
    with np.errstate(invalid="ignore", divide="ignore"):
        computed = ((ce_sum[starts[1:]] - ce_sum[starts[:-1]]) / n_target).astype(np.float32)
    batch.seq_ce = np.where(batch.seq_ce_given, batch.seq_ce, computed).astype(np.float32)
    nonfinite += (batch.seq_ce_given & ~np.isfinite(batch.seq_ce)).astype(np.int32)
    batch.nonfinite = nonfinite
    return batch
