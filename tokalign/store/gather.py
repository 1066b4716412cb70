"""Reading whole samples of a store, batch after batch, through a chunk cache (:meth:`StoreReader.gather`).

The remap engine (tokalign.remap.stores) reads the pivot and source rows of each output batch in an order the
store was not written in; this cache decodes each chunk once as long as the two orders are close, and still
works (re-reading chunks) when they are not. It lives with the reader because it walks the parts' offsets.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from ..errors import TokalignError

#: decoded chunks kept for later batches (bytes)
CACHE_BYTES = 512 << 20
#: a batch is copied run by run (slices) when its runs of store-consecutive rows average at least this many
#: rows, else row by row (index arrays: a Python loop per run would cost more than it saves)
MIN_RUN_ROWS = 32


class ChunkGather:
    """Reads the token rows of given samples of one store, batch after batch, for a plan known in advance
    (made by :meth:`tokalign.store.StoreReader.gather`).

    ``plan[b]`` holds the global sample indices of batch b (output order). Chunks (``chunk_tokens`` rows
    of the store) are decoded once and kept while a later batch still needs them; when the decoded
    chunks exceed ``cache_bytes`` the one needed furthest in the future is dropped first (Belady's rule).
    """

    def __init__(self, store: Any, fields: Sequence[str], plan: Sequence[np.ndarray], cache_bytes: int = CACHE_BYTES,
                 min_run_rows: int = MIN_RUN_ROWS):
        self.store = store
        self.min_run_rows = int(min_run_rows)
        self.fields = list(fields)
        self.chunk = int(store.schema.chunk_tokens)
        self.cache_bytes = int(cache_bytes)
        counts = np.asarray([p.num_samples for p in store.parts], np.int64)
        self._part_starts = np.concatenate([[0], np.cumsum(counts)])
        self._chunks_per_part = 1 + max([p.num_tokens // self.chunk for p in store.parts] + [0])
        self._plan: List[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._uses: Dict[int, List[int]] = {}
        for b, idx in enumerate(plan):
            part, lo, hi = self._ranges(np.asarray(idx, np.int64))
            keys = self._keys(part, lo, hi)
            self._plan.append((part, lo, hi, keys))
            for k in keys.tolist():
                self._uses.setdefault(k, []).append(b)
        self._next_use: Dict[int, int] = dict.fromkeys(self._uses, 0)  # index into _uses[key]
        self._cache: Dict[int, Dict[str, np.ndarray]] = {}
        self._cached_bytes = 0
        self.chunks_read = 0
        self.chunks_reread = 0
        self._ever: set = set()

    def _ranges(self, idx: np.ndarray):
        n = len(self._part_starts) - 1
        if idx.size and (idx.min() < 0 or idx.max() >= self._part_starts[-1]):
            raise TokalignError("sample index outside the store (%d samples)" % int(self._part_starts[-1]))
        part = np.searchsorted(self._part_starts, idx, side="right") - 1 if n > 1 else np.zeros(idx.size, np.int64)
        j = idx - self._part_starts[part]
        lo = np.empty(idx.size, np.int64)
        hi = np.empty(idx.size, np.int64)
        for p in np.unique(part).tolist():
            sel = part == p
            offs = self.store.parts[p].offsets
            lo[sel] = offs[j[sel]]
            hi[sel] = offs[j[sel] + 1]
        return part.astype(np.int64), lo, hi

    def _keys(self, part: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        nonempty = hi > lo
        c0 = lo[nonempty] // self.chunk
        c1 = (hi[nonempty] - 1) // self.chunk
        n = c1 - c0 + 1
        first = np.repeat(part[nonempty] * self._chunks_per_part + c0, n)
        step = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        return np.unique(first + step)

    def _load(self, keys: Sequence[int]) -> None:
        """Decodes the missing chunks, one read per run of consecutive chunks."""
        missing = sorted(k for k in keys if k not in self._cache)
        runs: List[List[int]] = []
        for k in missing:
            if runs and runs[-1][-1] + 1 == k and k // self._chunks_per_part == runs[-1][0] // self._chunks_per_part:
                runs[-1].append(k)
            else:
                runs.append([k])
        for run in runs:
            p, c0 = divmod(run[0], self._chunks_per_part)
            part = self.store.parts[p]
            lo = c0 * self.chunk
            hi = min((c0 + len(run)) * self.chunk, part.num_tokens)
            arrays = self.store.read_tokens(p, lo, hi, self.fields)
            for i, k in enumerate(run):
                a, b = i * self.chunk, min((i + 1) * self.chunk, hi - lo)
                piece = {f: v[a:b] for f, v in arrays.items()}
                self._cache[k] = piece
                self._cached_bytes += sum(v.nbytes for v in piece.values())
                self.chunks_read += 1
                if k in self._ever:
                    self.chunks_reread += 1
                self._ever.add(k)

    def _evict(self, current: int) -> None:
        for k in [k for k in self._cache if self._next_use[k] >= len(self._uses[k])]:
            self._drop(k)  # no later batch needs it
        if self._cached_bytes <= self.cache_bytes:
            return
        order = sorted(self._cache, key=lambda k: -self._uses[k][self._next_use[k]])
        for k in order:
            if self._cached_bytes <= self.cache_bytes:
                break
            self._drop(k)

    def _drop(self, k: int) -> None:
        piece = self._cache.pop(k)
        self._cached_bytes -= sum(v.nbytes for v in piece.values())

    @staticmethod
    def _runs(part: np.ndarray, lo: np.ndarray,
              hi: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Consecutive samples whose rows follow on in the store, merged: (first sample, part, lo, hi) per run."""
        nonempty = np.flatnonzero(hi > lo)
        part, lo, hi = part[nonempty], lo[nonempty], hi[nonempty]
        new = np.ones(lo.size, bool)
        new[1:] = (lo[1:] != hi[:-1]) | (part[1:] != part[:-1])
        first = np.flatnonzero(new)
        last = np.r_[first[1:], lo.size] - 1
        return nonempty[first], part[first], lo[first], hi[last]

    def _copy_runs(self, out: Dict[str, np.ndarray], offsets: np.ndarray, runs) -> None:
        """Slice copies, one per run and chunk it touches (no index arrays: the cheap path for long runs)."""
        first, part, lo, hi = runs
        chunk, per_part = self.chunk, self._chunks_per_part
        for i, p, a, b in zip(first.tolist(), part.tolist(), lo.tolist(), hi.tolist()):
            o = int(offsets[i])
            for c in range(a // chunk, (b - 1) // chunk + 1):
                piece = self._cache[p * per_part + c]
                r0, r1 = max(a, c * chunk), min(b, (c + 1) * chunk)
                for f in self.fields:
                    out[f][o:o + r1 - r0] = piece[f][r0 - c * chunk:r1 - c * chunk]
                o += r1 - r0

    def _copy_rows(self, out: Dict[str, np.ndarray], offsets: np.ndarray, part: np.ndarray, lo: np.ndarray,
                   lengths: np.ndarray, total: int) -> None:
        """Row-index copies grouped by chunk (vectorised: the path for many short runs)."""
        rows = np.repeat(lo - offsets[:-1], lengths) + np.arange(total, dtype=np.int64)  # part-local row per output row
        key = np.repeat(part * self._chunks_per_part, lengths) + rows // self.chunk
        order = np.argsort(key, kind="stable")
        ks = key[order]
        bounds = np.concatenate([[0], np.flatnonzero(ks[1:] != ks[:-1]) + 1, [total]])
        for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            pos = order[s:e]
            k = int(ks[s])
            piece = self._cache[k]
            local = rows[pos] - (k % self._chunks_per_part) * self.chunk
            for f in self.fields:
                out[f][pos] = piece[f][local]

    def gather(self, b: int) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
        """Concatenated token arrays of batch ``b``'s samples and their offsets [S + 1]."""
        part, lo, hi, keys = self._plan[b]
        key_list = keys.tolist()
        self._load(key_list)
        lengths = hi - lo
        offsets = np.zeros(lengths.size + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        total = int(offsets[-1])
        first = self._cache[key_list[0]] if key_list else None
        out: Dict[str, np.ndarray] = {}
        for f in self.fields:
            tail, dtype = ((first[f].shape[1:], first[f].dtype) if first is not None else ((), np.float32))
            out[f] = np.empty((total,) + tuple(tail), dtype)
        if total:
            runs = self._runs(part, lo, hi)
            if total >= self.min_run_rows * len(runs[0]):
                self._copy_runs(out, offsets, runs)
            else:
                self._copy_rows(out, offsets, part, lo, lengths, total)
        for k in key_list:
            self._next_use[k] += 1
        self._evict(b)
        return out, offsets
