"""Reader of a tokalign logit store: all parts seen as one sequence of samples.

``open_store(url)`` checks the completeness marker (and optionally the tokenizer fingerprint), loads the small
per-sample arrays (offsets, seq_ce, valid) of every part, and then gives O(1) access to any sample by index or
id and batched iteration over whole sequences (one contiguous read per array per batch).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np

from ..errors import TokalignError
from . import _zarrio
from .schema import PART_RE, StoreSchema, bf16_bits_to_float32, part_name

OUTPUTS = ("numpy", "torch")


def _read_many(arrays: Sequence[Any], lo: int, hi: int) -> List[np.ndarray]:
    """Rows [lo, hi) of several Zarr arrays, fetched and decoded concurrently in one event-loop call.

    Reading the arrays one after another leaves zarr's I/O and decode pipeline idle between calls; gathering
    them makes a batch read ~1.5x faster. Falls back to sequential reads if zarr's async handle is missing.
    """
    handles = [getattr(a, "_async_array", None) for a in arrays]
    if any(h is None for h in handles):
        return [np.asarray(a[lo:hi]) for a in arrays]
    import asyncio

    from zarr.core.sync import sync

    async def gather() -> List[Any]:
        return list(await asyncio.gather(*(h.getitem(slice(lo, hi)) for h in handles)))

    return [np.asarray(x) for x in sync(gather())]


class _Part:
    """One part's arrays and its committed extent (rows past the commit are ignored)."""

    def __init__(self, name: str, group, schema: StoreSchema) -> None:
        self.name = name
        self.group = group
        attrs = group.attrs.asdict()
        self.complete = bool(attrs.get("complete"))
        committed = attrs.get("committed") or {}
        self.committed = dict(committed)
        self.num_samples = int(committed.get("samples", 0))
        self.num_tokens = int(committed.get("tokens", 0))
        self.arrays = {name: group[name] for name in list(schema.token_array_specs()) + list(schema.sample_array_specs())}
        s = self.num_samples
        self.offsets = np.asarray(self.arrays["offsets"][: s + 1], dtype=np.int64)
        if len(self.offsets) != s + 1 or int(self.offsets[-1]) != self.num_tokens:
            raise TokalignError("store part %s is corrupt: offsets do not end at the %d committed tokens"
                                % (name, self.num_tokens))
        self.seq_ce = np.asarray(self.arrays["seq_ce"][:s], dtype=np.float32)
        self.valid = np.asarray(self.arrays["valid"][:s], dtype=bool)
        self.nonfinite = np.asarray(self.arrays["nonfinite"][:s], dtype=np.int32)
        self._ids: Optional[np.ndarray] = None
        # last decoded chunk-aligned token block (lo, hi, arrays): zarr decodes whole chunks anyway, so keeping
        # the block makes neighbouring random accesses (by index or id, in store order) free
        self.block: Optional[tuple] = None

    @property
    def sample_ids(self) -> np.ndarray:
        if self._ids is None:
            raw = self.arrays["sample_id"][: self.num_samples] if self.num_samples else np.zeros(0, dtype=object)
            self._ids = np.asarray([str(x) for x in np.asarray(raw).tolist()], dtype=object)
        return self._ids


class StoreReader:
    """All parts of a store as one indexable collection of samples (see :func:`open_store`)."""

    def __init__(self, url: Union[str, Path], root, schema: StoreSchema, parts: List[_Part], *,
                 complete: bool, output: str = "numpy") -> None:
        if output not in OUTPUTS:
            raise TokalignError("output must be one of %s, got %r" % (", ".join(OUTPUTS), output))
        self.url = str(url)
        self.root = root
        self.schema = schema
        self.parts = parts
        self.complete = complete
        self.output = output
        self.attrs: Dict[str, Any] = root.attrs.asdict()
        counts = np.asarray([p.num_samples for p in parts], dtype=np.int64)
        self._part_starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._id_index: Optional[Dict[str, int]] = None
        self._token_names = list(schema.token_array_specs())
        self.extra_names = [e.name for e in schema.extras]

    # -- sizes ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._part_starts[-1])

    @property
    def num_samples(self) -> int:
        return len(self)

    @property
    def num_tokens(self) -> int:
        return int(sum(p.num_tokens for p in self.parts))

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per sample, all parts (int64 [S])."""
        return np.concatenate([np.diff(p.offsets) for p in self.parts]) if self.parts else np.zeros(0, np.int64)

    @property
    def seq_ce(self) -> np.ndarray:
        return np.concatenate([p.seq_ce for p in self.parts]) if self.parts else np.zeros(0, np.float32)

    @property
    def valid(self) -> np.ndarray:
        """Per-sample flag: False when the sample holds non-finite values (NaN/Inf)."""
        return np.concatenate([p.valid for p in self.parts]) if self.parts else np.zeros(0, bool)

    @property
    def sample_ids(self) -> List[str]:
        return [sid for p in self.parts for sid in p.sample_ids.tolist()]

    # -- lookup -----------------------------------------------------------------------------------------
    def _locate(self, index: int):
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("sample index %d out of range for a store of %d samples" % (index, n))
        p = int(np.searchsorted(self._part_starts, i, side="right") - 1)
        return self.parts[p], i - int(self._part_starts[p])

    def index_of(self, sample_id: Any) -> int:
        """Global index of ``sample_id``; KeyError when absent. The id index is built on first use."""
        if self._id_index is None:
            index: Dict[str, int] = {}
            for p_i, part in enumerate(self.parts):
                base = int(self._part_starts[p_i])
                for j, sid in enumerate(part.sample_ids.tolist()):
                    if sid in index:
                        other, _ = self._locate(index[sid])
                        raise TokalignError("store %s: sample_id %r appears twice (%s and %s)"
                                            % (self.url, sid, other.name, part.name))
                    index[sid] = base + j
            self._id_index = index
        try:
            return self._id_index[str(sample_id)]
        except KeyError:
            raise KeyError("sample_id %r is not in store %s" % (sample_id, self.url)) from None

    def __contains__(self, sample_id: Any) -> bool:
        try:
            self.index_of(sample_id)
            return True
        except KeyError:
            return False

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return self.sample(index)

    def sample(self, index: int, output: Optional[str] = None) -> Dict[str, Any]:
        """The sample dict at global ``index`` (contract in docs/architecture.md)."""
        part, j = self._locate(index)
        lo, hi = int(part.offsets[j]), int(part.offsets[j + 1])
        if part.block is None or not (part.block[0] <= lo and hi <= part.block[1]):
            chunk = int(self.schema.chunk_tokens)
            a = lo // chunk * chunk
            b = min(-(-hi // chunk) * chunk, part.num_tokens)
            part.block = (a, b, self._read_tokens(part, a, b))
        a, _, tokens = part.block
        return self._convert(self._make_sample(part, j, tokens, lo - a, hi - a), output)

    def by_id(self, sample_id: Any, output: Optional[str] = None) -> Dict[str, Any]:
        """The sample dict with this id (O(1) after the id index is built)."""
        return self.sample(self.index_of(sample_id), output)

    get = by_id

    # -- iteration --------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Dict[str, Any]]:
        for batch in self.iter_batches():
            yield from batch

    def iter_batches(self, batch_size: int = 256, *, max_tokens: Optional[int] = None, start: int = 0,
                     stop: Optional[int] = None, packed: bool = False, only_valid: bool = False,
                     fields: Optional[Sequence[str]] = None, output: Optional[str] = None) -> Iterator[Any]:
        """Batches of whole sequences in store order.

        A batch has at most ``batch_size`` samples and, with ``max_tokens``, at most that many tokens (a
        longer single sequence still forms its own batch); batches never span parts. Yields a list of sample
        dicts, or with ``packed=True`` one dict of concatenated token arrays plus ``offsets`` [B+1],
        ``sample_id`` list, ``seq_ce`` / ``valid`` [B]. ``only_valid`` drops samples with NaN/Inf values.
        ``fields`` limits the token arrays read (e.g. ``["topk_ids", "topk_logits", "logsumexp"]``).
        """
        if batch_size <= 0:
            raise TokalignError("batch_size must be positive")
        names = self._token_names if fields is None else list(fields)
        unknown = [f for f in names if f not in self._token_names]
        if unknown:
            raise TokalignError("unknown token field(s) %s; this store has %s" % (", ".join(unknown),
                                                                                ", ".join(self._token_names)))
        n = len(self)
        stop = n if stop is None else min(int(stop), n)
        i = int(start)
        while i < stop:
            part, j = self._locate(i)
            j_end = min(j + batch_size, part.num_samples, j + (stop - i))
            if max_tokens is not None:
                limit = part.offsets[j] + int(max_tokens)
                k = int(np.searchsorted(part.offsets, limit, side="right") - 1)
                j_end = max(j + 1, min(j_end, k))
            lo, hi = int(part.offsets[j]), int(part.offsets[j_end])
            tokens = self._read_tokens(part, lo, hi, names)
            keep = np.arange(j, j_end)
            if only_valid:
                keep = keep[part.valid[j:j_end]]
            if packed:
                yield self._convert(self._make_packed(part, keep, tokens, lo, len(keep) == j_end - j), output)
            else:
                yield [self._convert(self._make_sample(part, jj, tokens, int(part.offsets[jj]) - lo,
                                                       int(part.offsets[jj + 1]) - lo), output) for jj in keep]
            i += j_end - j

    # -- raw access -------------------------------------------------------------------------------------
    def read_tokens(self, part: Union[int, str], start: int, stop: int,
                    fields: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
        """Decoded token arrays of one part, rows [start, stop) (topk_logits as float32, topk_ids as int32).

        ``fields`` limits the arrays read (default: all token arrays); they are fetched concurrently.
        """
        p = self.parts[part] if isinstance(part, int) else {q.name: q for q in self.parts}[part]
        if fields is not None:
            unknown = [f for f in fields if f not in self._token_names]
            if unknown:
                raise TokalignError("unknown token field(s) %s; this store has %s"
                                    % (", ".join(unknown), ", ".join(self._token_names)))
        return self._read_tokens(p, int(start), int(stop), None if fields is None else list(fields))

    def _read_tokens(self, part: _Part, lo: int, hi: int, names: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
        names = self._token_names if names is None else names
        raws = _read_many([part.arrays[name] for name in names], lo, hi)
        out: Dict[str, np.ndarray] = {}
        for name, raw in zip(names, raws):
            if name == "topk_logits":
                raw = bf16_bits_to_float32(raw) if self.schema.logits_dtype == "bfloat16" else raw.astype(np.float32)
            elif name == "topk_ids" and raw.dtype != np.int32:
                raw = raw.astype(np.int32)
            out[name] = raw
        return out

    def _make_sample(self, part: _Part, j: int, tokens: Dict[str, np.ndarray], a: int, b: int) -> Dict[str, Any]:
        s = {"sample_id": part.sample_ids[j]}
        for name, values in tokens.items():
            s[name] = values[a:b]
        s["seq_ce"] = np.float32(part.seq_ce[j])
        s["valid"] = bool(part.valid[j])
        return s

    def _make_packed(self, part: _Part, keep: np.ndarray, tokens: Dict[str, np.ndarray], lo: int,
                     full: bool) -> Dict[str, Any]:
        starts, ends = part.offsets[keep] - lo, part.offsets[keep + 1] - lo
        if not full:  # some samples dropped: gather the kept token rows
            sel = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)] + [np.zeros(0, np.int64)])
            tokens = {k: v[sel] for k, v in tokens.items()}
        lengths = ends - starts
        out: Dict[str, Any] = dict(tokens)
        out["offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        out["sample_id"] = [part.sample_ids[j] for j in keep]
        out["seq_ce"] = part.seq_ce[keep]
        out["valid"] = part.valid[keep]
        return out

    def _convert(self, obj: Dict[str, Any], output: Optional[str]) -> Dict[str, Any]:
        output = output or self.output
        if output == "numpy":
            return obj
        if output not in OUTPUTS:
            raise TokalignError("output must be one of %s, got %r" % (", ".join(OUTPUTS), output))
        import torch  # optional dependency: imported only when torch output is asked for

        out = {}
        for key, value in obj.items():
            if isinstance(value, np.ndarray):
                out[key] = torch.from_numpy(np.ascontiguousarray(value))
            elif isinstance(value, np.floating):
                out[key] = torch.tensor(float(value), dtype=torch.float32)
            else:
                out[key] = value
        return out

    # -- reporting --------------------------------------------------------------------------------------
    def stored_bytes(self) -> int:
        """Bytes on storage of the whole store (all parts, chunks and metadata)."""
        return _zarrio.stored_bytes(self.root)

    def __repr__(self) -> str:
        return "StoreReader(%s: %d samples, %d tokens, %d part(s), %s, model=%s)" % (
            self.url, len(self), self.num_tokens, len(self.parts), "complete" if self.complete else "INCOMPLETE",
            self.schema.model)


def store_status(url: Union[str, Path], storage_options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Completeness of a store without opening its arrays: {exists, complete, num_parts, parts: {...}}."""
    if not _zarrio.exists(url, storage_options):
        return {"exists": False, "complete": False, "num_parts": 0, "parts": {}, "missing_parts": []}
    root = _zarrio.open_root(url, mode="r", storage_options=storage_options)
    attrs = root.attrs.asdict()
    num_parts = int(attrs.get("num_parts", 0))
    parts = {}
    for name in sorted(k for k in root.group_keys() if PART_RE.match(k)):
        a = root[name].attrs.asdict()
        c = a.get("committed") or {}
        parts[name] = {"complete": bool(a.get("complete")), "samples": int(c.get("samples", 0)),
                       "tokens": int(c.get("tokens", 0))}
    missing = [part_name(i) for i in range(num_parts) if part_name(i) not in parts]
    complete = bool(num_parts) and not missing and all(p["complete"] for p in parts.values())
    return {"exists": True, "complete": complete, "num_parts": num_parts, "parts": parts, "missing_parts": missing}


def open_store(url: Union[str, Path], *, expect_fingerprint: Optional[str] = None, allow_incomplete: bool = False,
               output: str = "numpy", storage_options: Optional[Dict[str, Any]] = None) -> StoreReader:
    """Open a store for reading (any fsspec URL or local path).

    Refuses (TokalignError) a store whose tokenizer fingerprint differs from ``expect_fingerprint``, and an
    incomplete store (a part missing or not closed) unless ``allow_incomplete`` — then only committed
    samples are visible. ``output="torch"`` returns torch tensors (torch is imported only then).
    """
    root = _zarrio.open_root(url, mode="r", storage_options=storage_options)
    schema = StoreSchema.from_attrs(root.attrs.asdict(), where=str(url))
    if expect_fingerprint is not None and expect_fingerprint != schema.tokenizer_fingerprint:
        raise TokalignError("store %s was written with tokenizer fingerprint %s (model %s), expected %s: it belongs "
                            "to a different tokenizer" % (url, schema.tokenizer_fingerprint, schema.model,
                                                          expect_fingerprint))
    status = store_status(url, storage_options)
    if not status["complete"] and not allow_incomplete:
        problems = ["%s missing" % m for m in status["missing_parts"]]
        problems += ["%s incomplete (%d samples committed)" % (n, p["samples"])
                     for n, p in status["parts"].items() if not p["complete"]]
        raise TokalignError("store %s is incomplete: %s; resume the writer (StoreWriter.resume(url, part=N), or "
                            "re-run the dump with --resume) or open it with allow_incomplete=True"
                            % (url, "; ".join(problems) or "no parts"))
    parts = [_Part(name, root[name], schema) for name in sorted(status["parts"])]
    return StoreReader(url, root, schema, parts, complete=status["complete"], output=output)
