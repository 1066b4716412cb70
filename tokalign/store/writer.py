"""Append-only, resumable writer of one part of a tokalign logit store.

Resume protocol (docs/store.md): every flush (1) grows each array and writes the new rows, then (2) writes the
part attribute ``committed = {"samples": S, "tokens": T, ...}``. Step (2) is the commit point: a killed writer
leaves at most rows beyond the committed counts, which :meth:`StoreWriter.resume` cuts off before appending
again. Every object is replaced atomically by the store (temp file + rename locally, whole-object PUT on object
stores), so rows that were committed before a kill are never torn.

What a batch must hold, and the checks it passes before anything is buffered, are in
:mod:`tokalign.store.validate`; this module holds the part's lifecycle (create / resume / close), buffering,
shard writes and commits. It stays one ~600-line class on purpose: buffering, shard writes, commits and the
resume cut all move the same counters (written rows, committed samples and tokens), and that invariant is
easiest to check in one place.
"""
from __future__ import annotations

import datetime as _dt
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .. import settings
from ..errors import TokalignError
from . import _shards, _zarrio
from .lock import PartLock
from .schema import (CHECKSUMMED_SINCE, FORMAT_VERSION, FORMAT_VERSIONS, PART_RE, StoreSchema,
                     describe_difference, format_version, num_parts_attr, part_name)
from .validate import PackedBatch, check_batch, pack_arrays, pack_samples

_POLICIES = ("error", "skip")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class StoreWriter:
    """Writes samples to one part (``part-NNNNN``) of a store; see :meth:`create`, :meth:`resume`, :meth:`open`.

    Use as a context manager or call :meth:`close` to mark the part complete. Batches are buffered and
    flushed (and committed) whenever ``flush_tokens`` tokens are pending (``flush_tokens=0``: every batch).

    Options (keyword arguments of :meth:`create`, :meth:`resume`, :meth:`open`):

    * ``whole_shards`` (default: ``flush_tokens >= schema.shard_tokens``): write token rows in whole shards
      only. Each shard is encoded once and written once (no read-modify-write); a commit follows each
      shard, so a kill loses at most one shard of work; :meth:`close` (or :meth:`flush`) writes the last,
      partial shard. Memory: one shard of rows plus one batch.
    * ``encode_threads`` (default ``min(2, cores)``, ``TOKALIGN_STORE_THREADS``): threads that blosc-encode
      the chunks of a shard (blosc releases the GIL).
    * ``direct`` (default True; ``TOKALIGN_STORE_DIRECT=0`` turns it off): shards that start on a shard
      boundary are encoded by tokalign (``tokalign.store._shards``) and put as one object each; rows that
      continue a shard begun earlier always go through zarr. The objects are identical in format to zarr's.

    A writer of a local store holds the part's lock file (:mod:`tokalign.store.lock`) from ``create`` /
    ``resume`` until :meth:`close`, an exception leaving its ``with`` block, or :meth:`abort`.
    """

    def __init__(self, url: Union[str, Path], schema: StoreSchema, root, group, *, part: int,
                 flush_tokens: int = 65536, on_duplicate: str = "error", on_empty: str = "skip",
                 whole_shards: Optional[bool] = None, encode_threads: Optional[int] = None,
                 direct: bool = True, _lock: Optional[PartLock] = None) -> None:
        self._lock = _lock  # first, so that __del__ can release it whatever fails below
        if on_duplicate not in _POLICIES or on_empty not in _POLICIES:
            raise TokalignError("on_duplicate / on_empty must be one of %s" % ", ".join(_POLICIES))
        self.url = str(url)
        self.schema = schema
        self.part = int(part)
        self.flush_tokens = int(flush_tokens)
        #: write token rows only in whole shards (each shard encoded and written once; commits as shards fill)
        self.whole_shards = self.flush_tokens >= schema.shard_tokens if whole_shards is None else bool(whole_shards)
        self.on_duplicate = on_duplicate
        self.on_empty = on_empty
        self._root = root
        self._group = group
        self._token_specs = schema.token_array_specs()
        self._sample_specs = schema.sample_array_specs()
        arrays = {name: group[name] for name in list(self._token_specs) + list(self._sample_specs)}
        #: format 2 writes every chunk, also those holding only the fill value (absence = loss for readers)
        self.format_version = format_version(root.attrs.asdict(), str(url))
        if self.format_version >= CHECKSUMMED_SINCE:
            arrays = {name: _zarrio.writable(a) for name, a in arrays.items()}
        self._arrays = arrays
        committed = dict(group.attrs.get("committed") or {})
        self._committed: Dict[str, int] = {key: int(committed.get(key, 0)) for key in
                                           ("samples", "tokens", "skipped_empty", "skipped_duplicate",
                                            "invalid_samples", "nonfinite_values")}
        self._ids: set = set()
        # token rows not yet written (they continue the arrays at row self._written) ...
        self._rows: List[Dict[str, np.ndarray]] = []
        self._rows_pending = 0
        self._written = self._committed["tokens"]
        # ... and samples not yet committed (they start at the committed token count)
        self._buffer: List[Dict[str, Any]] = []
        self._buffered_tokens = 0
        self._pending = dict.fromkeys(("skipped_empty", "skipped_duplicate"), 0)
        self._closed = False
        self.truncated_tokens = 0
        self.truncated_samples = 0
        # direct shard writes (tokalign.store._shards) where zarr's layout allows; None: zarr writes the array
        use_direct = bool(direct) and settings.get_bool("TOKALIGN_STORE_DIRECT")
        self._layouts = {name: _shards.ShardLayout.from_array(self._arrays[name]) if use_direct else None
                         for name in self._token_specs}
        self._io = _shards.ByteIO(group.store) if use_direct else None
        self.encode_threads = int(encode_threads or settings.get_int("TOKALIGN_STORE_THREADS") or
                                  max(1, min(2, os.cpu_count() or 1)))
        self._pool: Optional[ThreadPoolExecutor] = None
        #: seconds / CPU seconds spent writing token rows (encode + store), for benchmarks
        self.write_seconds = 0.0

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, url: Union[str, Path], schema: StoreSchema, *, part: int = 0, num_parts: int = 1,
               overwrite: bool = False, storage_options: Optional[Dict[str, Any]] = None,
               format_version: int = FORMAT_VERSION, **options: Any) -> "StoreWriter":
        """Start part ``part`` of ``num_parts`` of a new (or partly written, multi-rank) store at ``url``.

        Ranks call this concurrently with the same schema; each writes only its own part. An existing part is
        an error unless ``overwrite=True`` (which deletes that part only). ``format_version=1`` writes the
        older format (no chunk checksums, chunks holding only the fill value left out) that tokalign releases
        before format 2 read; a part added to an existing store always takes the store's format.
        """
        if not 0 <= int(part) < int(num_parts):
            raise TokalignError("part %d is outside [0, num_parts=%d)" % (part, num_parts))
        if int(num_parts) > 100000:
            raise TokalignError("num_parts=%d is more than the 100000 parts a store can hold" % int(num_parts))
        if format_version not in FORMAT_VERSIONS:
            raise TokalignError("format_version must be one of %s" % ", ".join(map(str, FORMAT_VERSIONS)))
        root = _zarrio.open_root(url, mode="a", storage_options=storage_options)
        name = part_name(part)
        lock = _acquire(url, root, name)
        try:
            return cls._create(url, schema, root, part, num_parts, overwrite, storage_options, format_version,
                               lock, options)
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    @classmethod
    def _create(cls, url, schema: StoreSchema, root, part: int, num_parts: int, overwrite: bool,
                storage_options, version: int, lock: Optional[PartLock], options: Dict[str, Any]) -> "StoreWriter":
        wanted = dict(schema.to_attrs(), num_parts=int(num_parts), format_version=int(version))
        name = part_name(part)
        if "format" not in root.attrs:
            foreign = [k for k in root.keys() if not PART_RE.match(k)]
            if foreign or (root.attrs.asdict() and "format" not in root.attrs):
                raise TokalignError("%s is a Zarr group that is not a tokalign store; refusing to write into it" % url)
            # re-read: a rank starting at the same time may have written the schema since we opened the root
            root = _zarrio.open_root(url, mode="r+", storage_options=storage_options)
            if "format" not in root.attrs:
                root.update_attributes(wanted)
        if "format" in root.attrs:
            have = StoreSchema.from_attrs(root.attrs.asdict(), where=str(url))
            version = format_version(root.attrs.asdict(), str(url))
            same = (have.identity() == schema.identity()
                    and num_parts_attr(root.attrs.asdict(), str(url)) == int(num_parts))
            if not same:
                others = [k for k in root.group_keys() if k != name]
                if not (overwrite and not others):
                    diff = describe_difference(dict(have.identity(), num_parts=root.attrs.get("num_parts")),
                                               dict(schema.identity(), num_parts=int(num_parts)))
                    raise TokalignError("store %s was created with a different schema (%s); use another URL or "
                                        "delete the store" % (url, diff))
                root.update_attributes(wanted)
        if name in root:
            if not overwrite:
                state = "complete" if root[name].attrs.get("complete") else "incomplete"
                raise TokalignError("store %s already has %s (%s): resume it (run the same command again; "
                                    "StoreWriter.resume from Python) or rewrite it (--overwrite; overwrite=True from "
                                    "Python)" % (url, name, state))
            del root[name]
        group = root.create_group(name, attributes={
            "part": int(part), "complete": False, "created_at": _now(), "updated_at": _now(),
            "writer": {"host": socket.gethostname(), "pid": os.getpid()},
            "committed": {"samples": 0, "tokens": 0},
        })
        checksum = int(root.attrs.get("format_version", version)) >= CHECKSUMMED_SINCE
        for arr_name, (dtype, tail) in schema.token_array_specs().items():
            _zarrio.create_array(group, arr_name, dtype, tail, 0, schema.chunk_tokens, schema.shard_tokens,
                                 schema.compression_level, schema.codec, checksum=checksum)
        for arr_name, (dtype, tail) in schema.sample_array_specs().items():
            _zarrio.create_array(group, arr_name, dtype, tail, 1 if arr_name == "offsets" else 0,
                                 schema.chunk_samples, schema.shard_samples, schema.compression_level, schema.codec,
                                 checksum=checksum)
        writer = cls(url, schema, root, group, part=part, _lock=lock, **options)
        writer._arrays["offsets"][0:1] = np.zeros(1, dtype=np.int64)
        return writer

    @classmethod
    def resume(cls, url: Union[str, Path], *, part: int = 0, schema: Optional[StoreSchema] = None,
               storage_options: Optional[Dict[str, Any]] = None, **options: Any) -> "StoreWriter":
        """Reopen an interrupted part: cut rows beyond the last commit and continue after it.

        ``schema`` (recommended) must equal the stored one. ``writer.remaining(all_ids)`` then lists the
        samples still to write, in their original order.
        """
        root = _zarrio.open_root(url, mode="r+", storage_options=storage_options)
        have = StoreSchema.from_attrs(root.attrs.asdict(), where=str(url))
        if schema is not None and have.identity() != schema.identity():
            raise TokalignError("cannot resume %s: its schema differs (%s)"
                                % (url, describe_difference(have.identity(), schema.identity())))
        name = part_name(part)
        if name not in root:
            raise TokalignError("cannot resume %s: it has no %s (start it with StoreWriter.create)" % (url, name))
        group = root[name]
        if group.attrs.get("complete"):
            raise TokalignError("cannot resume %s/%s: it is already complete (nothing to do; start it over with "
                                "overwrite (--overwrite on the command line) to rewrite it)" % (url, name))
        lock = _acquire(url, root, name)
        try:
            writer = cls(url, have, root, group, part=part, _lock=lock, **options)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        writer._truncate_to_commit()
        writer._ids = set(writer._read_ids(writer.committed_samples))
        group.update_attributes({"updated_at": _now(), "writer": {"host": socket.gethostname(), "pid": os.getpid()},
                                 "resumed": int(group.attrs.get("resumed", 0)) + 1})
        return writer

    @classmethod
    def open(cls, url: Union[str, Path], schema: StoreSchema, *, part: int = 0, num_parts: int = 1,
             resume: bool = True, overwrite: bool = False, storage_options: Optional[Dict[str, Any]] = None,
             **options: Any) -> "StoreWriter":
        """:meth:`resume` the part when it exists (and ``resume``), else :meth:`create` it."""
        if resume and not overwrite and _zarrio.exists(url, storage_options):
            root = _zarrio.open_root(url, mode="r", storage_options=storage_options)
            if part_name(part) in root:
                return cls.resume(url, part=part, schema=schema, storage_options=storage_options, **options)
        return cls.create(url, schema, part=part, num_parts=num_parts, overwrite=overwrite,
                          storage_options=storage_options, **options)

    # -- state ------------------------------------------------------------------------------------------
    @property
    def committed_samples(self) -> int:
        """Samples durably written (survive a kill)."""
        return self._committed["samples"]

    @property
    def committed_tokens(self) -> int:
        return self._committed["tokens"]

    @property
    def committed_ids(self) -> frozenset:
        """Ids written or buffered in this part (a resumed writer starts with the committed ones)."""
        return frozenset(self._ids)

    def remaining(self, sample_ids: Iterable[Any]) -> List[str]:
        """The ids of ``sample_ids`` not yet in this part, in the given order (what a resumed job still owes)."""
        return [s for s in (str(x) for x in sample_ids) if s not in self._ids]

    @property
    def stats(self) -> Dict[str, int]:
        """Committed counts plus what is buffered: samples, tokens, skips, invalid samples, non-finite values."""
        out = dict(self._committed)
        out["buffered_samples"] = sum(len(b["sample_id"]) for b in self._buffer)  # not yet committed
        out["buffered_tokens"] = self._buffered_tokens
        for key, value in self._pending.items():
            out[key] += value
        return out

    def resume_report(self) -> str:
        return ("%s/%s: %d samples / %d tokens committed%s" %
                (self.url, part_name(self.part), self.committed_samples, self.committed_tokens,
                 "; cut %d uncommitted tokens, %d samples" % (self.truncated_tokens, self.truncated_samples)
                 if self.truncated_tokens or self.truncated_samples else ""))

    # -- appending ----------------------------------------------------------------------------------
    def append(self, samples: Iterable[Mapping[str, Any]]) -> int:
        """Validate and buffer a batch of sample dicts (the reader's contract; numpy or torch values).

        Required keys: ``sample_id``, ``input_ids`` [L], ``loss_mask`` [L], ``topk_ids`` [L, K],
        ``topk_logits`` [L, K], ``token_ce`` [L], ``logsumexp`` [L] (optional for remapped stores: 0), each
        declared extra; optional ``seq_ce`` (computed from token_ce and loss_mask when absent). The whole
        batch is rejected (TokalignError naming the sample and field) before anything is buffered.
        Returns the number of samples accepted (skips are counted in :attr:`stats`).
        """
        self._check_open()
        samples = list(samples)
        if not samples:
            return 0
        return self._buffer_batch(check_batch(self.schema, pack_samples(self.schema, samples)))

    def append_packed(self, sample_ids: Sequence[Any], lengths: Any, arrays: Mapping[str, Any],
                      seq_ce: Optional[Any] = None) -> int:
        """Validate and buffer a batch given as concatenated token arrays (what :meth:`append` builds from
        sample dicts; this skips the per-sample packing, for producers that already hold packed batches).

        ``sample_ids`` [B] str, ``lengths`` [B] tokens per sample, ``arrays``: every token array of the schema
        with ``sum(lengths)`` rows (``logsumexp`` optional for remapped stores), ``seq_ce`` [B] optional
        (computed from token_ce and loss_mask when None). Same checks, skips and commit behaviour as
        :meth:`append`; the whole batch is rejected on a bad value. The arrays are not copied when they
        already have the stored dtype: do not modify them after the call.
        """
        self._check_open()
        batch = pack_arrays(self.schema, sample_ids, lengths, arrays, seq_ce)
        if batch is None:
            return 0
        return self._buffer_batch(check_batch(self.schema, batch))

    def _buffer_batch(self, batch: PackedBatch) -> int:
        """Buffers a checked batch (minus duplicates and empty samples, by policy); flushes when due."""
        p = batch.arrays
        ids, lengths, seq_ce, nonfinite = batch.sample_ids, batch.lengths, batch.seq_ce, batch.nonfinite

        # -- duplicates and empty sequences: error or counted skip (counted only once nothing can raise)
        dup = np.zeros(len(ids), dtype=bool)
        seen = set()
        for i, sid in enumerate(ids):
            if sid in self._ids or sid in seen:
                if self.on_duplicate == "error":
                    where = "already in %s" % part_name(self.part) if sid in self._ids else "twice in this batch"
                    raise TokalignError("duplicate sample_id %r (%s); pass on_duplicate='skip' to count and skip it"
                                        % (sid, where))
                dup[i] = True
            seen.add(sid)
        empty = (lengths == 0) & ~dup
        if empty.any() and self.on_empty == "error":
            raise TokalignError("sample %r is empty (0 tokens); pass on_empty='skip' to count and skip it"
                                % ids[int(np.flatnonzero(empty)[0])])
        self._pending["skipped_duplicate"] += int(dup.sum())
        self._pending["skipped_empty"] += int(empty.sum())
        keep = ~(dup | empty)
        if not keep.all():
            tok_keep = np.repeat(keep, lengths)
            for name in self._token_specs:
                p[name] = p[name][tok_keep]
            ids = [sid for sid, k in zip(ids, keep) if k]
            lengths, seq_ce, nonfinite = lengths[keep], seq_ce[keep], nonfinite[keep]
        if not ids:
            return 0

        rows = {name: np.ascontiguousarray(p[name], dtype=dtype) for name, (dtype, _) in self._token_specs.items()}
        n_rows = int(lengths.sum())
        if n_rows:
            self._rows.append(rows)
            self._rows_pending += n_rows
        self._buffer.append(dict(sample_id=ids, lengths=lengths, seq_ce=seq_ce, nonfinite=nonfinite,
                                 valid=nonfinite == 0))
        self._ids.update(ids)
        self._buffered_tokens += n_rows
        if self.whole_shards:
            shard = int(self.schema.shard_tokens)
            if self._written + self._rows_pending >= (self._written // shard + 1) * shard:
                self._flush(aligned=True)
        elif self._buffered_tokens >= self.flush_tokens:
            self.flush()
        return len(ids)

    # -- flushing and closing ---------------------------------------------------------------------------
    def flush(self) -> None:
        """Write everything buffered and commit it (the commit attribute is written last).

        With ``whole_shards`` the rows of a partial shard written here are rewritten when the shard fills up
        (zarr re-reads it); :meth:`append` itself only ever writes whole shards.
        """
        self._flush(aligned=False)

    def _check_current(self) -> None:
        if self._lock is not None and self._lock.superseded:
            raise TokalignError("%s/%s: this writer was superseded by a newer writer of the same part in this process; "
                                "it writes nothing more" % (self.url, part_name(self.part)))

    def _flush(self, aligned: bool) -> None:
        """Write pending token rows (``aligned``: only up to the last shard boundary), then commit every
        sample whose rows are all written."""
        self._check_current()
        end = self._written + self._rows_pending
        target = end
        if aligned:
            shard = int(self.schema.shard_tokens)
            target = end // shard * shard
        if target > self._written:
            self._write_rows(self._take_rows(target - self._written))
        self._commit_written()

    def _take_rows(self, n: int) -> Dict[str, _shards.RowPieces]:
        """The first ``n`` pending token rows of every array, removed from the buffer: the buffered batches as
        pieces (views, no concatenation)."""
        taken: List[Dict[str, np.ndarray]] = []
        got = 0
        while got < n:
            first = self._rows[0]
            m = int(first["input_ids"].shape[0])
            if got + m <= n:
                taken.append(self._rows.pop(0))
                got += m
            else:
                cut = n - got
                taken.append({k: v[:cut] for k, v in first.items()})
                self._rows[0] = {k: v[cut:] for k, v in first.items()}
                got = n
        self._rows_pending -= n
        return {name: _shards.RowPieces([t[name] for t in taken]) for name in self._token_specs}

    def _write_rows(self, rows: Dict[str, _shards.RowPieces]) -> None:
        """Append ``rows`` at row ``self._written``: whole shards (and a last partial shard that starts on a shard
        boundary) are encoded here and put as single objects; the rest of a shard already begun goes through
        zarr (which re-reads the shard)."""
        t0 = time.perf_counter()
        w0 = self._written
        n = len(rows["input_ids"])
        w1 = w0 + n
        shard = int(self.schema.shard_tokens)
        names = list(self._token_specs)
        _zarrio.resize_many([self._arrays[k] for k in names],
                            [(w1,) + tuple(self._token_specs[k][1]) for k in names])
        head = min(w1, -(-w0 // shard) * shard) - w0  # rows that continue a shard begun earlier
        puts: List[Tuple[str, List[bytes]]] = []
        for name in names:
            data = rows[name]
            lay = self._layouts[name]
            if lay is None:
                self._arrays[name][w0:w1] = data.array()
                continue
            if head:
                self._arrays[name][w0:w0 + head] = data.rows(0, head)
            if self._pool is None and self.encode_threads > 1:
                self._pool = ThreadPoolExecutor(self.encode_threads, thread_name_prefix="tokalign-encode")
            map_fn = self._pool.map if self._pool is not None else map
            for a in range(w0 + head, w1, shard):
                b = min(a + shard, w1)
                puts.append((lay.shard_key(a // shard), _shards.encode_shard(lay, data.sub(a - w0, b - w0), map_fn)))
        if puts:
            self._io.put_many(puts)
        self._written = w1
        self.write_seconds += time.perf_counter() - t0

    def _commit_written(self) -> None:
        """Write the sample arrays of every buffered sample whose tokens are all written, then commit them."""
        s0, t0 = self.committed_samples, self.committed_tokens
        done: List[Dict[str, Any]] = []
        t = t0
        while self._buffer:
            b = self._buffer[0]
            ends = t + np.cumsum(b["lengths"])
            k = int(np.searchsorted(ends, self._written, side="right"))
            if k == len(b["lengths"]):
                done.append(self._buffer.pop(0))
                t = int(ends[-1]) if len(ends) else t
                continue
            if k:
                done.append({key: v[:k] for key, v in b.items()})
                self._buffer[0] = {key: v[k:] for key, v in b.items()}
                t = int(ends[k - 1])
            break
        if not done and not any(self._pending.values()):
            return
        lengths = np.concatenate([b["lengths"] for b in done]) if done else np.zeros(0, np.int64)
        s1, t1 = s0 + len(lengths), t0 + int(lengths.sum())
        if done:
            sample_cols = {
                "offsets": t0 + np.cumsum(lengths),
                "sample_id": np.asarray([sid for b in done for sid in b["sample_id"]], dtype=object),
                "seq_ce": np.concatenate([b["seq_ce"] for b in done]),
                "valid": np.concatenate([b["valid"] for b in done]),
                "nonfinite": np.concatenate([b["nonfinite"] for b in done]),
            }
            names = list(sample_cols)
            _zarrio.resize_many([self._arrays[k] for k in names],
                                [(s1 + 1,) if k == "offsets" else (s1,) for k in names])
            for name, values in sample_cols.items():
                lo, hi = (s0 + 1, s1 + 1) if name == "offsets" else (s0, s1)
                if name == "sample_id":
                    self._arrays[name][lo:hi] = values.astype(str)
                else:
                    self._arrays[name][lo:hi] = values.astype(self._sample_specs[name][0])
        committed = dict(self._committed)
        committed["samples"], committed["tokens"] = s1, t1
        if done:
            committed["invalid_samples"] += int((~sample_cols["valid"]).sum())
            committed["nonfinite_values"] += int(sample_cols["nonfinite"].sum())
        for key, value in self._pending.items():
            committed[key] += value
        self._group.update_attributes({"committed": committed, "updated_at": _now()})  # the commit point
        self._committed = committed
        self._pending = dict.fromkeys(self._pending, 0)
        self._buffered_tokens -= t1 - t0

    def close(self) -> Dict[str, Any]:
        """Flush, mark the part complete and return its summary (counts)."""
        if self._closed:
            return self.summary()
        self.flush()
        if any(self._pending.values()):  # skips after the last flush still count
            committed = dict(self._committed)
            for key, value in self._pending.items():
                committed[key] += value
            self._committed = committed
            self._pending = dict.fromkeys(self._pending, 0)
        self._group.update_attributes({"committed": self._committed, "complete": True, "completed_at": _now(),
                                       "updated_at": _now()})
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._release()
        return self.summary()

    def abort(self) -> None:
        """Stop writing without closing: what is committed stays (the part stays incomplete, resumable) and the
        lock is released. For callers that do not use the writer as a context manager and hit an error."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._release()

    def _release(self) -> None:
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            lock.release()

    def __del__(self) -> None:
        try:
            self._release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def summary(self) -> Dict[str, Any]:
        c = self._committed
        return {"url": self.url, "part": part_name(self.part), "complete": self._closed, **c}

    def summary_line(self) -> str:
        c = self._committed
        return ("%s/%s: %d samples, %d tokens; %d invalid (non-finite) samples; skipped %d empty, %d duplicate"
                % (self.url, part_name(self.part), c["samples"], c["tokens"], c["invalid_samples"],
                   c["skipped_empty"], c["skipped_duplicate"]))

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif not self._closed:
            # keep every validated sample: flush but leave the part incomplete so it can be resumed
            try:
                self.flush()
            except Exception:
                pass
            self.abort()

    def _check_open(self) -> None:
        self._check_current()
        if self._closed:
            raise TokalignError("%s/%s is closed (complete); nothing more can be appended"
                                % (self.url, part_name(self.part)))

    # -- resume internals -------------------------------------------------------------------------------
    def _truncate_to_commit(self) -> None:
        s, t = self.committed_samples, self.committed_tokens
        for name, arr in self._arrays.items():
            want = s + 1 if name == "offsets" else (t if name in self._token_specs else s)
            have = int(arr.shape[0])
            if have < want:
                raise TokalignError("store %s/%s is corrupt: array %s has %d rows but %d are committed"
                                    % (self.url, part_name(self.part), name, have, want))
            if have > want:
                if name == "input_ids":
                    self.truncated_tokens = have - want
                if name == "seq_ce":
                    self.truncated_samples = have - want
                arr.resize((want,) + tuple(arr.shape[1:]))
        if int(self._arrays["offsets"][s]) != t:
            raise TokalignError("store %s/%s is corrupt: offsets[%d]=%d but %d tokens are committed"
                                % (self.url, part_name(self.part), s, int(self._arrays["offsets"][s]), t))

    def _read_ids(self, n: int) -> List[str]:
        if not n:
            return []
        geom = _shards.Geometry.from_array(self._arrays["sample_id"])
        if geom is not None and self.format_version >= CHECKSUMMED_SINCE:  # a lost shard would read as ""
            _shards.check_present([(geom, 0, n)], _shards.ByteIO(self._group.store, self.url))
        return [str(x) for x in self._arrays["sample_id"][:n].tolist()]


def _acquire(url: Union[str, Path], root, name: str) -> Optional[PartLock]:
    """The part's lock for a local store (None for other filesystems: docs/store.md, "Integrity")."""
    from zarr.storage import LocalStore

    if not isinstance(root.store, LocalStore):
        return None
    return PartLock.acquire(Path(root.store.root), name, str(url))


def open_writer(url: Union[str, Path], schema: StoreSchema, **kwargs: Any) -> StoreWriter:
    """Shorthand for :meth:`StoreWriter.open` (create or resume)."""
    return StoreWriter.open(url, schema, **kwargs)
