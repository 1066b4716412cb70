"""Batched DTW on the GPU, with the CPU core as fallback for the pairs the kernel does not take.

:func:`dtw_batch` -- batched FuseChat DTW (``tokalign._cuda.dtw_batch``): the same band, the
  same widening rule, the same cost and tie-break as ``tokalign._core.dtw_batch``; each banded
  candidate is then checked against the full matrix on the device (the CPU checks it with a pruned
  pass), so every path, cost and band radius is identical. Pairs the GPU does not take (empty, pivot longer than
  ``_cuda.DTW_MAX_PIVOT`` tokens, more band cells than ``max_cells``, or a cell comparing two tokens
  both longer than 64 code points) run on the CPU core in the same call.

Callers normally go through ``tokalign.align.batch(..., device=)``; see docs/cuda.md.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._native import _core, call
from ..device import cuda_module, device_index
from ..errors import TokalignError

__all__ = ["dtw_batch", "DEFAULT_MAX_CELLS"]

DEFAULT_MAX_CELLS = 1 << 28  # move bytes per kernel launch (one byte per band cell)


def _device_table(table: Any, mod: Any) -> Any:
    """The GPU twin of a :class:`tokalign.align.TokenTable`, built once and kept on the table."""
    cached = getattr(table, "_cuda_table", None)
    if cached is not None:
        return cached
    tokens = getattr(table, "tokens", None)
    if tokens is None:
        raise TokalignError("device='cuda' needs token tables built with tokalign.align.TokenTable "
                            "(a bare tokalign._core.TokenTable does not keep its strings)")
    cached = call(mod.DtwTable, tokens, getattr(table, "weights", None), what="cuda")
    table._cuda_table = cached
    return cached


def dtw_batch(pivot_table: Any, pivot_ids: Sequence[np.ndarray], source_table: Any, source_ids: Sequence[np.ndarray],
              tie: int, band: int, num_threads: int = 0, *, max_cells: int = DEFAULT_MAX_CELLS,
              emulate: bool = False) -> Tuple[List[dict], Dict[str, Any]]:
    """Raw DTW results (the dicts of ``tokalign._core.dtw_batch``) for int32 id arrays, computed on
    the GPU where possible. ``band``: -1 full matrix, 0 auto, > 0 initial radius. Returns
    (results, stats) with stats["kernel_ms"] (cudaEvent time of all launches: ``band_kernel_ms`` +
    ``verify_kernel_ms``), stats["cpu_pairs"] and stats["verify_replaced"] (band-pass candidates
    that were not the optimum).
    ``emulate=True`` runs the kernel's code on the host (tests without a GPU)."""
    if emulate:  # no device needed: only the extension
        from .._native import _cuda as mod
    else:
        mod = cuda_module()
    gp, gs = _device_table(pivot_table, mod), _device_table(source_table, mod)
    pids = [np.ascontiguousarray(a, dtype=np.int32) for a in pivot_ids]
    sids = [np.ascontiguousarray(a, dtype=np.int32) for a in source_ids]
    results, stats = call(mod.dtw_batch, gp, pids, gs, sids, int(tie), int(band), device_index(),
                          int(max_cells), bool(emulate), what="cuda")
    stats = dict(stats)
    if int(band) >= 0:
        results = _settle_on_device(mod, gp, pids, gs, sids, results, stats, int(tie), int(max_cells), bool(emulate))
    todo = [k for k, r in enumerate(results) if r is None]
    cpu = []
    if todo:
        cpu = _core.dtw_batch(pivot_table, [pids[k] for k in todo], source_table, [sids[k] for k in todo],
                              int(tie), int(band), int(num_threads))
    out: List[dict] = []
    it = iter(cpu)
    for k, r in enumerate(results):
        if r is None:
            out.append(next(it))
            continue
        raw = _core.path_result(r["path_p"], r["path_s"], len(pids[k]), len(sids[k]), int(r["cost"]))
        raw["band"] = int(r["band"])
        out.append(raw)
    stats["pairs"] = len(results)
    return out, stats


def _settle_on_device(mod: Any, gp: Any, pids: List[np.ndarray], gs: Any, sids: List[np.ndarray],
                      results: List[Optional[dict]], stats: Dict[str, Any], tie: int, max_cells: int,
                      emulate: bool) -> List[Optional[dict]]:
    """Makes banded kernel results exact, as the CPU's banded DTW is.

    A band pass finds a candidate path that a cheaper path leaving the band could beat. The CPU checks
    it with a pruned pass (row by row, data-dependent: a poor fit for the GPU); here the full matrix of
    every banded pair runs on the device instead (one more launch, exact by construction). Where the
    full DTW's path is the candidate, the result keeps the candidate's band radius, else it is the full
    path with band -1: exactly what the CPU's verification / exact pass report. Pairs the full pass
    does not take (too many cells) go to the CPU like the other fallbacks."""
    banded = [k for k, r in enumerate(results) if r is not None and int(r["band"]) >= 0]
    stats.update(band_kernel_ms=float(stats.get("kernel_ms", 0.0)), verify_kernel_ms=0.0, verify_replaced=0)
    if not banded:
        return results
    full, fstats = call(mod.dtw_batch, gp, [pids[k] for k in banded], gs, [sids[k] for k in banded], tie, -1,
                        device_index(), max_cells, emulate, what="cuda")
    out = list(results)
    for k, f in zip(banded, full):
        cand = results[k]
        if f is None:
            out[k] = None
        elif not (np.array_equal(f["path_p"], cand["path_p"]) and np.array_equal(f["path_s"], cand["path_s"])):
            out[k] = dict(f, band=-1)
            stats["verify_replaced"] += 1
    stats["verify_kernel_ms"] = float(fstats.get("kernel_ms", 0.0))
    stats["kernel_ms"] = stats["band_kernel_ms"] + stats["verify_kernel_ms"]
    for key in ("launches", "cells"):
        stats[key] = int(stats.get(key, 0)) + int(fstats.get(key, 0))
    return out
