"""Mapping statistics: C[p, s] = how often pivot token p and source token s share an alignment group.

The counting runs in C++ (``_core.count_pairs``, all cores, GIL released) per batch of aligned
sequences; the running total is kept as sorted (key, count) arrays with key = p * source_vocab + s,
merged with a sort-based reduction, so memory grows with the number of distinct pairs seen, never
with the corpus size and never as a dense V x V array.
"""
from __future__ import annotations

import json

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from .. import __version__
from .._native import _core
from ..artifacts import (atomic_dir, load_npz_arrays, load_sparse_npz, read_json, save_npz_arrays, save_sparse_npz,
                        write_json_atomic)
from ..errors import TokalignError

STATS_FILE = "stats.npz"
COUNTS_FILE = "token_counts.npz"  # pivot_counts / source_counts: occurrences of each token in the corpus
META_FILE = "meta.json"
GROUP_KINDS = ("1:1", "1:n", "n:1", "n:m")


def _merge_sorted(keys: Sequence[np.ndarray], counts: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sum counts of equal keys across several (sorted or not) key arrays."""
    if not keys:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    k = np.concatenate(keys)
    c = np.concatenate(counts)
    order = np.argsort(k, kind="stable")
    k, c = k[order], c[order]
    if k.size == 0:
        return k, c
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    return k[starts], np.add.reduceat(c, starts)


def group_kind_counts(groups: np.ndarray) -> dict[str, int]:
    """1:1 / 1:n / n:1 / n:m histogram of a [G, 4] group array (pivot side first)."""
    g = np.asarray(groups, dtype=np.int64).reshape(-1, 4)
    np_ = g[:, 1] - g[:, 0]
    ns = g[:, 3] - g[:, 2]
    return {
        "1:1": int(np.sum((np_ == 1) & (ns == 1))),
        "1:n": int(np.sum((np_ == 1) & (ns > 1))),
        "n:1": int(np.sum((np_ > 1) & (ns == 1))),
        "n:m": int(np.sum((np_ > 1) & (ns > 1))),
    }


@dataclass
class StatsAccumulator:
    """Streaming accumulator of the mapping-statistics matrix.

    ``add(pivot_ids, source_ids, groups)`` takes lists (one entry per aligned sequence) of pivot
    token ids, source token ids and [G, 4] group arrays (pivot_start, pivot_end, source_start,
    source_end; half-open, positions relative to the sequence).
    """

    pivot_vocab: int
    source_vocab: int
    compact_every: int = 1 << 22  # merge pending chunks once they hold this many keys
    kinds: dict = field(default_factory=lambda: dict.fromkeys(GROUP_KINDS, 0))
    items: int = 0
    pivot_tokens: int = 0
    source_tokens: int = 0
    pivot_counts: np.ndarray = None
    source_counts: np.ndarray = None
    _keys: list = field(default_factory=list, repr=False)
    _counts: list = field(default_factory=list, repr=False)
    _pending: int = 0

    def __post_init__(self):
        self.pivot_counts = np.zeros(self.pivot_vocab, np.int64)
        self.source_counts = np.zeros(self.source_vocab, np.int64)

    def add(self, pivot_ids: Sequence[np.ndarray], source_ids: Sequence[np.ndarray], groups: Sequence[np.ndarray]) -> None:
        if not (len(pivot_ids) == len(source_ids) == len(groups)):
            raise ValueError("add: pivot_ids, source_ids and groups must have one entry per sequence")
        if not pivot_ids:
            return
        groups = [np.asarray(g, dtype=np.int64).reshape(-1, 4) for g in groups]
        p_off = np.r_[0, np.cumsum([len(x) for x in pivot_ids])].astype(np.int64)
        s_off = np.r_[0, np.cumsum([len(x) for x in source_ids])].astype(np.int64)
        g_off = np.r_[0, np.cumsum([len(g) for g in groups])].astype(np.int64)
        all_groups = np.concatenate(groups) if g_off[-1] else np.zeros((0, 4), np.int64)
        keys, counts = _core.count_pairs(
            np.concatenate(pivot_ids).astype(np.int32, copy=False) if p_off[-1] else np.zeros(0, np.int32),
            p_off,
            np.concatenate(source_ids).astype(np.int32, copy=False) if s_off[-1] else np.zeros(0, np.int32),
            s_off,
            all_groups,
            g_off,
            self.pivot_vocab,
            self.source_vocab,
        )
        for kind, n in group_kind_counts(all_groups).items():
            self.kinds[kind] += n
        if p_off[-1]:
            self.pivot_counts += np.bincount(np.concatenate(pivot_ids), minlength=self.pivot_vocab)
        if s_off[-1]:
            self.source_counts += np.bincount(np.concatenate(source_ids), minlength=self.source_vocab)
        self.items += len(pivot_ids)
        self.pivot_tokens += int(p_off[-1])
        self.source_tokens += int(s_off[-1])
        self._keys.append(keys)
        self._counts.append(counts)
        self._pending += len(keys)
        if self._pending >= self.compact_every:
            self._compact()

    def _compact(self) -> None:
        k, c = _merge_sorted(self._keys, self._counts)
        self._keys, self._counts, self._pending = [k], [c], len(k)

    def matrix(self) -> sp.csr_matrix:
        """The counts as CSR int64, shape (pivot_vocab, source_vocab), indices sorted."""
        self._compact()
        k, c = self._keys[0], self._counts[0]
        rows = (k // np.uint64(self.source_vocab)).astype(np.int64)
        cols = (k % np.uint64(self.source_vocab)).astype(np.int32)
        indptr = np.zeros(self.pivot_vocab + 1, np.int64)
        np.add.at(indptr, rows + 1, 1)
        np.cumsum(indptr, out=indptr)
        return sp.csr_matrix((c.astype(np.int64), cols, indptr), shape=(self.pivot_vocab, self.source_vocab))


@dataclass
class MappingStats:
    """A mapping-statistics matrix plus its provenance (``meta.json``)."""

    matrix: sp.csr_matrix
    meta: dict
    pivot_counts: np.ndarray | None = None  # token occurrences in the corpus (None for old folders)
    source_counts: np.ndarray | None = None

    @property
    def pivot_fingerprint(self) -> str:
        return self.meta["pivot_fingerprint"]

    @property
    def source_fingerprint(self) -> str:
        return self.meta["source_fingerprint"]

    def save(self, out: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write ``stats.npz`` (reproducible bytes) and ``meta.json`` into ``out`` atomically."""
        with atomic_dir(out, overwrite=overwrite) as tmp:
            save_sparse_npz(tmp / STATS_FILE, self.matrix)
            if self.pivot_counts is not None and self.source_counts is not None:
                save_npz_arrays(tmp / COUNTS_FILE, {"pivot_counts": self.pivot_counts,
                                                    "source_counts": self.source_counts})
            write_json_atomic(tmp / META_FILE, self.meta)
        return Path(out)

    @classmethod
    def load(cls, directory: str | os.PathLike, *, expect_pivot: str | None = None,
             expect_source: str | None = None) -> "MappingStats":
        """Load a stats folder; refuse it when the fingerprints differ from the expected ones."""
        d = Path(directory)
        if not d.is_dir():
            raise TokalignError(f"{d}: stats folder not found")
        meta = read_json(d / META_FILE)
        for key in ("pivot_fingerprint", "source_fingerprint", "pivot_vocab", "source_vocab"):
            if key not in meta:
                raise TokalignError(f"{d / META_FILE}: field {key!r} missing")
        for side, expected in (("pivot", expect_pivot), ("source", expect_source)):
            if expected is not None and meta[f"{side}_fingerprint"] != expected:
                raise TokalignError(
                    f"{d}: stats were built for a different {side} tokenizer "
                    f"({meta.get(side + '_name')} {meta[side + '_fingerprint'][:16]}) than the one given "
                    f"({expected[:16]})"
                )
        m = load_sparse_npz(d / STATS_FILE)
        if m.shape != (meta["pivot_vocab"], meta["source_vocab"]):
            raise TokalignError(f"{d / STATS_FILE}: shape {m.shape} does not match meta.json vocab sizes")
        counts = load_npz_arrays(d / COUNTS_FILE) if (d / COUNTS_FILE).is_file() else {}
        return cls(m.astype(np.int64), meta, counts.get("pivot_counts"), counts.get("source_counts"))


def merge_stats(parts: Iterable[MappingStats]) -> MappingStats:
    """Sum shards; refuse shards built from different tokenizers (or with different options)."""
    parts = list(parts)
    if not parts:
        raise TokalignError("merge-stats: no stats folders given")
    first = parts[0].meta
    total = None
    meta = {k: v for k, v in first.items() if k not in ("shard",)}
    meta["corpus_files"] = []
    meta["merged_from"] = []
    counters = dict.fromkeys(("items", "pivot_tokens", "source_tokens", "skipped_items"), 0)
    kinds = dict.fromkeys(GROUP_KINDS, 0)
    seen_files = {}
    seen_shards = set()
    for part in parts:
        m = part.meta
        for key in ("pivot_fingerprint", "source_fingerprint"):
            if m[key] != first[key]:
                raise TokalignError(
                    f"merge-stats: {key.split('_')[0]} fingerprints differ: {first[key][:16]} "
                    f"({first.get(key.split('_')[0] + '_name')}) vs {m[key][:16]} ({m.get(key.split('_')[0] + '_name')})"
                )
        if m.get("options", {}).get("method") != first.get("options", {}).get("method"):
            raise TokalignError("merge-stats: shards were aligned with different methods")
        # the same shard twice would double-count every pair (e.g. `merge-stats A A`, or a copy of A)
        shard_key = (m.get("shard"), json.dumps(m.get("corpus_files", []), sort_keys=True), m.get("items"))
        if shard_key in seen_shards:
            raise TokalignError("merge-stats: shard %s of the same corpus is given twice; each shard must be "
                                "merged once" % (m.get("shard") or "(unsharded)"))
        seen_shards.add(shard_key)
        total = part.matrix if total is None else total + part.matrix
        for key in counters:
            counters[key] += int(m.get(key, 0))
        for kind in GROUP_KINDS:
            kinds[kind] += int(m.get("group_kinds", {}).get(kind, 0))
        for f in m.get("corpus_files", []):
            seen_files.setdefault(f["path"], f)
        meta["merged_from"].append(m.get("shard"))
    meta.update(counters)
    meta["group_kinds"] = kinds
    meta["corpus_files"] = list(seen_files.values())
    meta["tokalign_version"] = __version__
    total = sp.csr_matrix(total, dtype=np.int64)
    total.sort_indices()
    meta["pairs"] = int(total.nnz)
    pcounts = scounts = None
    if all(p.pivot_counts is not None and p.source_counts is not None for p in parts):
        pcounts = np.sum([p.pivot_counts for p in parts], axis=0)
        scounts = np.sum([p.source_counts for p in parts], axis=0)
    return MappingStats(total, meta, pcounts, scounts)
