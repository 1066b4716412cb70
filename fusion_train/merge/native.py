"""CPU fast paths of merging on numpy fp32 arrays, torch-free: generalized task arithmetic (task
arithmetic, TIES, DARE-TIES, DARE-linear; :func:`gta_merge`), SCE (:func:`sce_merge`) and linear
(:func:`linear_merge`).

:func:`gta_merge` runs ``tokalign._core.merge_gta`` (csrc/merge_kernel.cpp): one fused, OpenMP,
GIL-releasing kernel over fp32 buffers (read in place, e.g. memory-mapped checkpoint data) instead of
~10 torch passes per model. It computes what
:func:`fusion_train.merge.task_arithmetic.generalized_task_arithmetic` computes with torch, in the
same order of float operations:

* TIES top-k: the exact k-th largest |delta| by radix select (the value ``torch.kthvalue`` returns),
  every entry with |delta| >= it kept (so ties at the cut-off are all kept, as in the torch path);
* DARE: the counter-based stream of :mod:`fusion_train.merge.rng` (same mask as the torch path);
* L1 rescale: norms summed in double per fixed block (the torch path sums in fp32, so rescaled
  results differ from it by float rounding, ~1e-7 relative).

The merge runner calls these through the methods' ``merge_array`` (numpy tasks read straight from
the checkpoints, no torch import); the torch methods call the same ``merge_array`` on numpy views of
CPU tensors (:meth:`fusion_train.merge.registry.MergeMethod.native_torch`). Inputs: fp32,
C-contiguous, one size below 2^32 elements (:func:`applicable`); ``TOKALIGN_MERGE_NATIVE=0`` in the
environment switches the kernels off (torch path). Threads: :func:`set_num_threads`
(``fusion-train merge --threads``; 0 = OpenMP's default). Results do not depend on it.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from fusion_train.merge import rng
from tokalign._native import load
from tokalign.settings import get_bool

KEEP_ALL, DROP_ALL, MAGNITUDE, RANDOM = 0, 1, 2, 3  # csrc/include/tokalign/merge.h: Sparsify
SPARSIFY_KINDS = ("none", "magnitude", "random")
_threads = {"n": 0}  # set_num_threads; 0 = OpenMP's default


def _core():
    """``tokalign._core`` when built with the merge kernels, else None (the torch path runs instead)."""
    core, _ = load("_core")
    return core if hasattr(core, "merge_gta") else None


def enabled() -> bool:
    """The native kernels are built and not switched off by ``TOKALIGN_MERGE_NATIVE=0``."""
    return get_bool("TOKALIGN_MERGE_NATIVE") and _core() is not None


def set_num_threads(n: int) -> None:
    """Threads of the kernels (0: OpenMP's default)."""
    _threads["n"] = max(0, int(n))


def get_num_threads() -> int:
    return _threads["n"]


def applicable(arrays: Sequence[np.ndarray]) -> bool:
    """Every array is fp32 C-contiguous numpy, of one size below 2^32 elements."""
    if not arrays:
        return False
    n = arrays[0].size
    return n < 2 ** 32 and all(isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous
                               and a.size == n for a in arrays)


def usable(arrays: Sequence[np.ndarray]) -> bool:
    """:func:`enabled` and :func:`applicable`: the kernels can merge these arrays."""
    return applicable(arrays) and enabled()


def _threads_or(num_threads: Optional[int]) -> int:
    return int(num_threads if num_threads is not None else _threads["n"])


def _flat(arrays: Sequence[np.ndarray]) -> List[np.ndarray]:
    return [a.reshape(-1) for a in arrays]


def kth_largest(values: np.ndarray, k: int, num_threads: Optional[int] = None) -> float:
    """The k-th largest entry of a fp32 contiguous array (1 <= k <= size), exactly
    ``torch.kthvalue(values.flatten(), size - k + 1)`` (radix select, O(n), GIL released)."""
    return float(_core().merge_kth_largest(values.reshape(-1), int(k), _threads_or(num_threads)))


def linear_merge(models: Sequence[np.ndarray], weights: Sequence[float], normalize: bool,
                 num_threads: Optional[int] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
    """sum_j w_j theta_j (/ sum_j w_j when ``normalize``) in one native sweep, in the torch code's
    float order (``out.add_(theta_j, alpha=w_j)`` fuses multiply-add on AVX2 CPUs). ``out``: an
    optional fp32 C-contiguous array of the models' shape to write into."""
    out = np.empty_like(models[0]) if out is None else out
    _core().merge_linear(_flat(models), out.reshape(-1), [float(w) for w in weights], bool(normalize),
                         float(sum(weights)), _threads_or(num_threads))
    return out


def sce_merge(base: np.ndarray, models: Sequence[np.ndarray], tau: float, variant: str,
              num_threads: Optional[int] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
    """SCE (:mod:`fusion_train.merge.sce`) in two native sweeps plus the variance top-k: the variances
    in the torch code's float order, the same exact threshold and selection (``var >= k-th largest``,
    k = int(tau * #nonzero variances)), energies summed in double (torch: fp32 dots, so eta agrees to
    float rounding), erase and merge as the torch code."""
    core = _core()
    threads = _threads_or(num_threads)
    flat_models = _flat(models)
    flat_base = base.reshape(-1)
    var = None
    mode, threshold = 0, 0.0
    if tau <= 0:
        mode = 2
    elif tau < 1:
        var = np.empty(base.size, dtype=np.float32)
        core.merge_sce_variance(flat_base, flat_models, var, threads)
        k = int(int(np.count_nonzero(var)) * tau)
        if k == 0:
            mode = 2
        else:
            mode, threshold = 1, float(core.merge_kth_largest(var, k, threads))
    out = np.empty_like(base) if out is None else out
    core.merge_sce(flat_base, flat_models, var, out.reshape(-1), mode, threshold, variant == "mergekit", threads)
    return out


def sparsify_mode(kind: str, density: float, numel: int) -> tuple:
    """(mode, k, keep_below) of one model for the kernel, with the torch sparsifiers' edge cases:
    density >= 1 keeps everything, density <= 0 drops everything; top-k keeps
    ``max(1, int(density * numel))`` entries."""
    if kind == "none" or density >= 1:
        return KEEP_ALL, 0, 0
    if density <= 0 or numel == 0:
        return DROP_ALL, 0, 0
    if kind == "magnitude":
        return MAGNITUDE, max(1, int(density * numel)), 0
    if kind == "random":
        return RANDOM, 0, rng.keep_below(density)
    raise ValueError("unknown sparsification %r (one of %s)" % (kind, ", ".join(SPARSIFY_KINDS)))


def gta_merge(base: np.ndarray, models: Sequence[np.ndarray], weights: Sequence[float], *, sparsify: str,
              densities: Optional[Sequence[float]] = None, keys: Optional[Sequence[int]] = None,
              consensus: bool, normalize: bool, rescale: bool, lam: float,
              num_threads: Optional[int] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
    """base + lam * merged delta, merged as generalized task arithmetic (see the module docstring).

    ``sparsify``: ``none`` | ``magnitude`` (TIES) | ``random`` (DARE; ``keys[j]`` from
    :func:`fusion_train.merge.rng.stream_key`). ``densities`` and ``keys`` have one entry per model.
    Callers check :func:`enabled` and :func:`applicable` first.
    """
    core = _core()
    n = base.size
    count = len(models)
    densities = list(densities) if densities is not None else [1.0] * count
    keys = list(keys) if keys is not None else [0] * count
    modes: List[int] = []
    ks: List[int] = []
    below: List[int] = []
    for d in densities:
        mode, k, kb = sparsify_mode(sparsify, float(d), n)
        modes.append(mode)
        ks.append(k)
        below.append(kb)
    total = float(sum(weights))
    divisor = total if abs(total) >= 1e-8 else 1.0
    out = np.empty_like(base) if out is None else out
    core.merge_gta(base.reshape(-1), _flat(models), out.reshape(-1), [float(w) for w in weights], modes, ks, below,
                   [int(k) for k in keys], bool(consensus), bool(normalize), bool(rescale), float(lam), divisor,
                   _threads_or(num_threads))
    return out
