"""Reader of a tokalign logit store: all parts seen as one sequence of samples.

``open_store(url)`` checks the completeness marker (and optionally the tokenizer fingerprint), loads the small
per-sample arrays (offsets, seq_ce, valid) of every part, and then gives O(1) access to any sample by index or
id and batched iteration over whole sequences (one contiguous read per array per batch).

About 570 lines on purpose: one class whose access paths (by index, by id, batches, raw rows, gather) share the
part layout, the decode threads, the direct-read switch and the integrity checks of every read (objects present,
attributes possible: docs/store.md, "Integrity"); the chunk cache of ``gather`` lives in gather.py.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import zarr

from .. import settings
from ..errors import TokalignError
from . import _shards, _zarrio
from .gather import CACHE_BYTES, MIN_RUN_ROWS, ChunkGather
from .schema import (CHECKSUMMED_SINCE, PART_RE, StoreSchema, bf16_bits_to_float32, committed_attr,
                     format_version, num_parts_attr, part_name)

OUTPUTS = ("numpy", "torch")
#: decode threads of a reader (blosc releases the GIL); TOKALIGN_STORE_THREADS overrides
DEFAULT_THREADS = max(1, min(4, os.cpu_count() or 1))


def _read_many(arrays: Sequence[Any], lo: int, hi: int, io: _shards.ByteIO,
               geoms: Sequence[Optional[_shards.Geometry]]) -> List[np.ndarray]:
    """Rows [lo, hi) of several Zarr arrays, fetched and decoded concurrently in one event-loop call.

    Reading the arrays one after another leaves zarr's I/O and decode pipeline idle between calls; gathering
    them makes a batch read ~1.5x faster. Falls back to sequential reads if zarr's async handle is missing.
    Checked like every read (:func:`_zarr_read`).
    """
    return _zarr_read(arrays, [(lo, hi)] * len(arrays), io, geoms)


_PER_SAMPLE = ("offsets", "seq_ce", "valid", "nonfinite")  # loaded at open (a few bytes per sample)


def _read_prefixes(arrays: Sequence[Any], lengths: Sequence[int], io: _shards.ByteIO,
                   geoms: Sequence[Optional[_shards.Geometry]]) -> List[np.ndarray]:
    """The first ``lengths[i]`` rows of each array, all fetched in one event-loop call."""
    return _zarr_read(arrays, [(0, int(n)) for n in lengths], io, geoms)


def _zarr_read(arrays: Sequence[Any], ranges: Sequence[tuple], io: _shards.ByteIO,
               geoms: Sequence[Optional[_shards.Geometry]]) -> List[np.ndarray]:
    """Rows ranges[i] of arrays[i] read by zarr, in one event-loop call, after checking that every object they
    need exists (zarr would read a missing shard or chunk as the fill value). zarr's crc32c codec checks the
    chunk checksums; any failure to read becomes one line naming the damaged chunk (found by
    :func:`_shards.shard_problems`) and the store."""
    _shards.check_present([(g, lo, hi) for g, (lo, hi) in zip(geoms, ranges) if g is not None], io)
    import asyncio

    from zarr.core.sync import sync

    handles = [getattr(a, "_async_array", None) for a in arrays]
    try:
        if any(h is None for h in handles):
            return [np.asarray(a[lo:hi]) for a, (lo, hi) in zip(arrays, ranges)]

        async def gather() -> List[Any]:
            return list(await asyncio.gather(*(h.getitem(slice(lo, hi)) for h, (lo, hi) in zip(handles, ranges))))

        return [np.asarray(x) for x in sync(gather())]
    except TokalignError:
        raise
    except Exception as exc:  # noqa: BLE001 - zarr / numcodecs raise many kinds for damaged bytes
        for a, g, (lo, hi) in zip(arrays, geoms, ranges):
            if g is None or hi <= lo:
                continue
            for sh in range(lo // g.shard_rows, (hi - 1) // g.shard_rows + 1):
                raw = io.get_many([(g.shard_key(sh), None, 0)])[0]
                problems = _shards.shard_problems(g, raw, sh, hi, io.where)
                if problems:
                    raise TokalignError(problems[0]) from None
        names = ", ".join(str(getattr(a, "path", a)) for a in arrays)
        raise TokalignError("store %s: cannot read %s (%s: %s); the store is damaged: restore it from a good copy "
                            "or re-create it" % (io.where, names, type(exc).__name__, str(exc).splitlines()[0]
                                                 if str(exc) else "")) from None


#: arrays of a format-1 store (chunks holding only the fill value were left out) that are never all fill value
#: over a whole shard: for them a missing shard under the committed rows is loss in format 1 too
_V1_REQUIRED = ("input_ids", "topk_ids", "topk_logits", "sample_id")


def absent_level(version: int, name: str, schema: StoreSchema) -> int:
    """What may be missing of array ``name`` under the committed rows (see :data:`_shards.ABSENT_NOTHING`)."""
    if version >= CHECKSUMMED_SINCE:
        return _shards.ABSENT_NOTHING
    if name in _V1_REQUIRED or (name == "logsumexp" and schema.kind == "topk"):
        return _shards.ABSENT_CHUNKS
    return _shards.ABSENT_ANY


def geometries(arrays: Dict[str, Any], version: int, schema: StoreSchema) -> Dict[str, Optional[_shards.Geometry]]:
    """Geometry (with what may be absent) of each array, None where it is not sharded the usual way."""
    import dataclasses

    out: Dict[str, Optional[_shards.Geometry]] = {}
    for name, a in arrays.items():
        g = _shards.Geometry.from_array(a)
        out[name] = None if g is None else dataclasses.replace(g, absent=absent_level(version, name, schema))
    return out


class _Part:
    """One part's arrays and its committed extent (rows past the commit are ignored)."""

    def __init__(self, name: str, group, schema: StoreSchema, arrays: Optional[Dict[str, Any]] = None,
                 sample_rows: Optional[Dict[str, np.ndarray]] = None, *, io: _shards.ByteIO, version: int,
                 where: str = "store") -> None:
        import dataclasses

        self.name = name
        self.group = group
        self.io = io
        attrs = group.attrs.asdict()
        self.complete = bool(attrs.get("complete"))
        committed = committed_attr(attrs, "%s/%s" % (where, name))
        self.committed = dict(committed)
        self.num_samples = int(committed.get("samples", 0))
        self.num_tokens = int(committed.get("tokens", 0))
        names = list(schema.token_array_specs()) + list(schema.sample_array_specs())
        arrays = arrays or {}
        self.arrays = {n: arrays[n] if n in arrays else group[n] for n in names}
        s = self.num_samples
        for n, a in self.arrays.items():  # committed rows beyond an array's length: impossible attributes
            need = s + 1 if n == "offsets" else (s if n in schema.sample_array_specs() else self.num_tokens)
            if int(a.shape[0]) < need:
                raise TokalignError("store %s/%s is corrupt: %d rows committed but array %s has %d"
                                    % (where, name, need, n, int(a.shape[0])))
        #: where each array's objects lie and what of them may be absent (format 1: see absent_level)
        self.geoms = geometries(self.arrays, version, schema)
        if sample_rows is None:
            sample_rows = dict(zip(_PER_SAMPLE, _read_prefixes([self.arrays[n] for n in _PER_SAMPLE],
                                                                [s + 1, s, s, s], io,
                                                                [self.geoms[n] for n in _PER_SAMPLE])))
        self.offsets = np.asarray(sample_rows["offsets"], dtype=np.int64)
        if len(self.offsets) != s + 1 or int(self.offsets[-1]) != self.num_tokens:
            raise TokalignError("store part %s is corrupt: offsets do not end at the %d committed tokens"
                                % (name, self.num_tokens))
        if int(self.offsets[0]) != 0 or (s and int(np.diff(self.offsets).min()) < 0):
            raise TokalignError("store %s/%s is corrupt: its offsets do not start at 0 and grow monotonically"
                                % (where, name))
        self.seq_ce = np.asarray(sample_rows["seq_ce"], dtype=np.float32)
        self.valid = np.asarray(sample_rows["valid"], dtype=bool)
        self.nonfinite = np.asarray(sample_rows["nonfinite"], dtype=np.int32)
        self._ids: Optional[np.ndarray] = None
        # direct (zarr-free) read layouts of the token arrays; None for an array zarr must read
        self.layouts = {}
        for n in schema.token_array_specs():
            lay = _shards.ShardLayout.from_array(self.arrays[n])
            self.layouts[n] = None if lay is None else dataclasses.replace(lay, absent=absent_level(version, n, schema))
        # shard indexes never change once a part is complete: cache them (an open part may still be rewritten)
        self.index_cache: Optional[Dict[Any, np.ndarray]] = {} if self.complete else None
        # last decoded chunk-aligned token block (lo, hi, arrays): zarr decodes whole chunks anyway, so keeping
        # the block makes neighbouring random accesses (by index or id, in store order) free
        self.block: Optional[tuple] = None

    def num_tokens_stored(self, name: str) -> int:
        """Rows array ``name`` has (the committed rows, possibly more while a writer is running)."""
        return int(self.arrays[name].shape[0])

    @property
    def sample_ids(self) -> np.ndarray:
        if self._ids is None:
            raw = (_read_prefixes([self.arrays["sample_id"]], [self.num_samples], self.io, [self.geoms["sample_id"]])[0]
                   if self.num_samples else np.zeros(0, dtype=object))
            self._ids = np.asarray([str(x) for x in np.asarray(raw).tolist()], dtype=object)
        return self._ids


class StoreReader:
    """All parts of a store as one indexable collection of samples (see :func:`open_store`)."""

    def __init__(self, url: Union[str, Path], root, schema: StoreSchema, parts: List[_Part], *,
                 complete: bool, output: str = "numpy", direct: bool = True, threads: Optional[int] = None) -> None:
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
        #: read token rows without zarr's pipeline where the layout allows (see _shards); False: always zarr
        self.direct = bool(direct) and settings.get_bool("TOKALIGN_STORE_DIRECT")
        self.threads = int(threads or settings.get_int("TOKALIGN_STORE_THREADS") or DEFAULT_THREADS)
        self._io = _shards.ByteIO(root.store, self.url)
        #: root attribute format_version: 2 and later checksum every chunk (see docs/store.md, "Integrity")
        self.format_version = format_version(self.attrs, self.url)
        self._pool: Optional[ThreadPoolExecutor] = None

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
                     fields: Optional[Sequence[str]] = None, output: Optional[str] = None,
                     prefetch: int = 1) -> Iterator[Any]:
        """Batches of whole sequences in store order.

        A batch has at most ``batch_size`` samples and, with ``max_tokens``, at most that many tokens (a
        longer single sequence still forms its own batch); batches never span parts. Yields a list of sample
        dicts, or with ``packed=True`` one dict of concatenated token arrays plus ``offsets`` [B+1],
        ``sample_id`` list, ``seq_ce`` / ``valid`` [B]. ``only_valid`` drops samples with NaN/Inf values.
        ``fields`` limits the token arrays read (e.g. ``["topk_ids", "topk_logits", "logsumexp"]``).
        ``prefetch``: batches read ahead on a background thread while the caller works on the current one
        (0: read in the caller's thread).
        """
        if batch_size <= 0:
            raise TokalignError("batch_size must be positive")
        names = self._token_names if fields is None else list(fields)
        unknown = [f for f in names if f not in self._token_names]
        if unknown:
            raise TokalignError("unknown token field(s) %s; this store has %s" % (", ".join(unknown),
                                                                                ", ".join(self._token_names)))
        carry = _shards.Carry()  # consecutive batches share their boundary chunks: decode each chunk once

        def read(r: tuple) -> Dict[str, np.ndarray]:
            part, _, _, lo, hi = r
            return self._read_tokens(part, lo, hi, names, carry)

        ranges = self._batch_ranges(batch_size, max_tokens, start, stop)
        if prefetch > 0:
            # one reader thread keeps the reads in order (the carry needs that); up to `prefetch` ahead
            from collections import deque

            ahead = ThreadPoolExecutor(1, thread_name_prefix="tokalign-prefetch")
            queue: deque = deque()
            try:
                for r in ranges:
                    queue.append((r, ahead.submit(read, r)))
                    if len(queue) > prefetch:
                        r0, fut = queue.popleft()
                        yield self._make_batch(r0, fut.result(), packed, only_valid, output)
                while queue:
                    r0, fut = queue.popleft()
                    yield self._make_batch(r0, fut.result(), packed, only_valid, output)
            finally:
                ahead.shutdown(wait=False, cancel_futures=True)
        else:
            for r in ranges:
                yield self._make_batch(r, read(r), packed, only_valid, output)

    def _batch_ranges(self, batch_size: int, max_tokens: Optional[int], start: int,
                      stop: Optional[int]) -> Iterator[tuple]:
        """(part, j, j_end, lo, hi) per batch: samples [j, j_end) of part, token rows [lo, hi)."""
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
            yield part, j, j_end, int(part.offsets[j]), int(part.offsets[j_end])
            i += j_end - j

    def _make_batch(self, r: tuple, tokens: Dict[str, np.ndarray], packed: bool, only_valid: bool,
                    output: Optional[str]) -> Any:
        part, j, j_end, lo, _ = r
        keep = np.arange(j, j_end)
        if only_valid:
            keep = keep[part.valid[j:j_end]]
        if packed:
            return self._convert(self._make_packed(part, keep, tokens, lo, len(keep) == j_end - j), output)
        return [self._convert(self._make_sample(part, jj, tokens, int(part.offsets[jj]) - lo,
                                                int(part.offsets[jj + 1]) - lo), output) for jj in keep]

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

    def _read_tokens(self, part: _Part, lo: int, hi: int, names: Optional[Sequence[str]] = None,
                     carry: Optional[_shards.Carry] = None) -> Dict[str, np.ndarray]:
        names = self._token_names if names is None else names
        layouts = [part.layouts[name] for name in names]
        if self.direct and all(lay is not None for lay in layouts):
            if self._pool is None and self.threads > 1:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="tokalign-store")
            raws = _shards.read_rows(layouts, self._io, lo, hi, [part.num_tokens_stored(name) for name in names],
                                     pool=self._pool, carry=carry, index_cache=part.index_cache)
        else:
            raws = _read_many([part.arrays[name] for name in names], lo, hi, self._io,
                              [part.geoms[name] for name in names])
        out: Dict[str, np.ndarray] = {}
        for name, raw in zip(names, raws):
            if name == "topk_logits":
                raw = bf16_bits_to_float32(raw) if self.schema.logits_dtype == "bfloat16" else raw.astype(np.float32)
            elif name == "topk_ids" and raw.dtype != np.int32:
                raw = raw.astype(np.int32)
            out[name] = raw
        return out

    def gather(self, fields: Sequence[str], plan: Sequence[np.ndarray], *, cache_bytes: int = CACHE_BYTES,
               min_run_rows: int = MIN_RUN_ROWS) -> ChunkGather:
        """A reader of whole samples in any order, batch after batch: ``plan[b]`` holds the global sample indices
        of batch b; ``.gather(b)`` returns the concatenated ``fields`` of its samples and their offsets [S + 1].
        Each chunk is decoded once while a later batch of the plan needs it (up to ``cache_bytes`` of decoded
        chunks; see :class:`tokalign.store.gather.ChunkGather`)."""
        return ChunkGather(self, fields, plan, cache_bytes, min_run_rows)

    def close(self) -> None:
        """Stop the decode threads (also done when the reader is garbage-collected)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

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
    try:
        root = _zarrio.open_root(url, mode="r", storage_options=storage_options)
    except _zarrio.StoreNotFoundError:
        return {"exists": False, "complete": False, "num_parts": 0, "parts": {}, "missing_parts": []}
    members = _zarrio.members(root, url)
    return _status(root, {k: v for k, v in members.items() if PART_RE.match(k) and isinstance(v, zarr.Group)},
                   str(url))


def _status(root, part_groups: Dict[str, Any], where: str = "store") -> Dict[str, Any]:
    attrs = root.attrs.asdict()
    num_parts = num_parts_attr(attrs, where)
    extra = sorted(n for n in part_groups if int(n[len("part-"):]) >= num_parts)
    if extra:
        raise TokalignError("store %s is inconsistent: it has %s but its root attribute num_parts=%d; the store's "
                            "metadata is damaged or parts of two stores were mixed" % (where, ", ".join(extra[:3]),
                                                                                       num_parts))
    parts = {}
    for name in sorted(part_groups):
        a = part_groups[name].attrs.asdict()
        c = committed_attr(a, "%s/%s" % (where, name))
        parts[name] = {"complete": bool(a.get("complete")), "samples": int(c.get("samples", 0)),
                       "tokens": int(c.get("tokens", 0))}
    missing = [part_name(i) for i in range(num_parts) if part_name(i) not in parts]
    complete = bool(num_parts) and not missing and all(p["complete"] for p in parts.values())
    return {"exists": True, "complete": complete, "num_parts": num_parts, "parts": parts, "missing_parts": missing}


def open_store(url: Union[str, Path], *, expect_fingerprint: Optional[str] = None, allow_incomplete: bool = False,
               output: str = "numpy", storage_options: Optional[Dict[str, Any]] = None, direct: bool = True,
               threads: Optional[int] = None) -> StoreReader:
    """Open a store for reading (any fsspec URL or local path).

    Refuses (TokalignError) a store whose tokenizer fingerprint differs from ``expect_fingerprint``, and an
    incomplete store (a part missing or not closed) unless ``allow_incomplete`` — then only committed
    samples are visible. ``output="torch"`` returns torch tensors (torch is imported only then).

    Token rows are decoded without zarr's async pipeline where the array layout allows (``direct=True``,
    the default; ``direct=False`` or ``TOKALIGN_STORE_DIRECT=0`` always uses zarr), on ``threads`` decode
    threads (default ``min(4, cores)``; ``TOKALIGN_STORE_THREADS``). Both paths return identical arrays.
    """
    root = _zarrio.open_root(url, mode="r", storage_options=storage_options)
    schema = StoreSchema.from_attrs(root.attrs.asdict(), where=str(url))
    if expect_fingerprint is not None and expect_fingerprint != schema.tokenizer_fingerprint:
        raise TokalignError("store %s was written with tokenizer fingerprint %s (model %s), expected %s: it belongs "
                            "to a different tokenizer" % (url, schema.tokenizer_fingerprint, schema.model,
                                                          expect_fingerprint))
    # every part group and array's metadata in one concurrent listing (instead of one round trip each)
    members = _zarrio.members(root, url)
    groups = {k: v for k, v in members.items() if PART_RE.match(k) and isinstance(v, zarr.Group)}
    status = _status(root, groups, str(url))
    if not status["complete"] and not allow_incomplete:
        problems = ["%s missing" % m for m in status["missing_parts"]]
        problems += ["%s incomplete (%d samples committed)" % (n, p["samples"])
                     for n, p in status["parts"].items() if not p["complete"]]
        raise TokalignError("store %s is incomplete: %s; resume the writer (run the same `tokalign dump-logits` / "
                            "`tokalign remap` command again, or StoreWriter.resume(url, part=N)) or open it with "
                            "allow_incomplete=True"
                            % (url, "; ".join(problems) or "no parts"))
    names = sorted(status["parts"])
    arrays = {name: {k.split("/", 1)[1]: v for k, v in members.items() if k.startswith(name + "/")
                     and isinstance(v, zarr.Array)} for name in names}
    for name in names:
        missing = [a for a in list(schema.token_array_specs()) + list(schema.sample_array_specs())
                   if a not in arrays[name]]
        if missing:
            raise TokalignError("store %s/%s is corrupt: array(s) %s missing" % (url, name, ", ".join(missing)))
    counts = [int((status["parts"][name])["samples"]) for name in names]
    io = _shards.ByteIO(root.store, str(url))
    version = format_version(root.attrs.asdict(), str(url))
    for name, c in zip(names, counts):
        for a in _PER_SAMPLE:
            need = c + 1 if a == "offsets" else c
            if int(arrays[name][a].shape[0]) < need:
                raise TokalignError("store %s/%s is corrupt: %d rows committed but array %s has %d"
                                    % (url, name, need, a, int(arrays[name][a].shape[0])))
    geoms = [geometries({a: arrays[name][a]}, version, schema)[a] for name in names for a in _PER_SAMPLE]
    prefixes = _read_prefixes([arrays[name][a] for name in names for a in _PER_SAMPLE],
                              [n for c in counts for n in (c + 1, c, c, c)], io, geoms)
    parts = [_Part(name, groups[name], schema, arrays[name], dict(zip(_PER_SAMPLE, prefixes[4 * i: 4 * i + 4])),
                   io=io, version=version, where=str(url))
             for i, name in enumerate(names)]
    return StoreReader(url, root, schema, parts, complete=status["complete"], output=output, direct=direct,
                       threads=threads)
