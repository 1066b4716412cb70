"""All-pairs MinED on the GPU (``tokalign._cuda.mined_search``), with the CPU index as fallback.

Same result order as the CPU index (distance, |length difference|, rank, id) and the same exact-match
short-circuit. Queries longer than ``_cuda.MINED_MAX_QUERY_UNITS`` units, or ``top_n`` above
``_cuda.MINED_MAX_TOP_N``, run on the CPU index. Callers normally go through
``tokalign.vocab.mined.search(..., device=)``; see docs/cuda.md.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .._native import _core, call
from ..device import cuda_module, device_index

__all__ = ["mined_search"]


def mined_search(pivot_texts: List[bytes], candidate: np.ndarray, rank: np.ndarray, source_texts: List[bytes],
                 query: np.ndarray, top_n: int, threads: int = 0,
                 cpu_index: Optional[Any] = None) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
    """MinED ids / dists (int32 (n_source, top_n), -1 where empty) with the GPU; rows the GPU does
    not take go to the CPU index (built here unless ``cpu_index`` is given)."""
    mod = cuda_module()
    query = np.asarray(query, dtype=bool)
    if top_n > int(mod.MINED_MAX_TOP_N):
        index = cpu_index or _core.MinEDIndex(pivot_texts, candidate, rank)
        ids, dists, st = index.query(source_texts, query, top_n, threads)
        stats = {k: int(v) for k, v in st.items()}
        stats.update(device="cpu", reason="top_n > %d" % mod.MINED_MAX_TOP_N)
        return ids, dists, stats
    ids, dists, cpu_rows, st = call(mod.mined_search, pivot_texts, np.asarray(candidate, dtype=bool),
                                    np.asarray(rank, dtype=np.int64), source_texts, query, int(top_n),
                                    device_index(), what="cuda")
    stats: Dict[str, Any] = dict(st)
    stats["device"] = "cuda"
    rows = np.flatnonzero(cpu_rows)
    stats["cpu_rows"] = int(rows.size)
    if rows.size:
        index = cpu_index or _core.MinEDIndex(pivot_texts, candidate, rank)
        ci, cd, _ = index.query([source_texts[k] for k in rows], None, int(top_n), threads)
        ids[rows], dists[rows] = ci, cd
    return ids, dists, stats
