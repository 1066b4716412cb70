"""Task arithmetic (Ilharco et al. 2023) and the generalized task-arithmetic core shared by TIES
and DARE, with mergekit's semantics (``mergekit/merge_methods/generalized_task_arithmetic.py``):

1. delta_j = theta_j - theta_base, optionally sparsified per model (TIES: magnitude top-k;
   DARE: random drop, L1-norm rescale when ``rescale``);
2. delta_j *= weight_j;
3. with sign consensus (TIES, DARE-TIES): keep delta_j where sign(delta_j) equals the sign of
   sum_j delta_j (sign election after weighting; a zero sum counts as +), and the normaliser is
   sum_j weight_j over the kept entries (0 -> 1); without: the normaliser is sum_j weight_j
   (|.| < 1e-8 -> 1);
4. merged delta = sum / normaliser if ``normalize``, times ``lambda``; result = base + merged.

On CPU the whole computation runs as one fused native kernel on numpy arrays (:func:`gta_array`,
:mod:`fusion_train.merge.native`, no torch); the torch code below is the reference and the path for
other devices (``--device cuda``). :class:`GeneralizedTaskArithmetic` wires both paths for the three
methods (task arithmetic here, TIES in ``ties.py``, DARE in ``dare.py``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from fusion_train.merge import native, rng
from fusion_train.merge.registry import (PER_MODEL, SHARED, MergeMethod, ParamSpec, TensorTask, native_on_torch,
                                         register, stack_deltas)

if TYPE_CHECKING:
    import numpy as np
    import torch

# A sparsifier maps (delta, density, rescale, stream key) -> sparsified delta (same shape; may work in
# place). The key (fusion_train.merge.rng.stream_key) drives DARE's random stream.
Sparsifier = Callable[["torch.Tensor", float, bool, int], "torch.Tensor"]


def rescale_l1(delta: torch.Tensor, kept: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Scale ``kept`` (a masked ``delta``) so its L1 norm matches ``delta``'s (mergekit's rescale)."""
    import torch

    before = torch.linalg.vector_norm(delta, ord=1)
    after = torch.linalg.vector_norm(kept, ord=1)
    if before < eps or after < eps:
        return kept
    return kept * (before / after)


def sign_consensus(deltas: torch.Tensor) -> torch.Tensor:
    """Bool mask [n, *shape]: entries whose sign agrees with the sign of the sum over models."""
    import torch

    majority = torch.where(deltas.sum(dim=0) >= 0, 1.0, -1.0).to(deltas.dtype)
    return deltas.sign() == majority


def gta_array(task: TensorTask, *, consensus: bool, kind: str) -> Optional[np.ndarray]:
    """Merge one tensor of numpy fp32 arrays with the fused native kernel; ``kind`` names the
    sparsification (``none``, ``magnitude``, ``random``; :mod:`fusion_train.merge.native`). None when
    the kernel cannot take the arrays."""
    base = task.base
    assert base is not None
    if not native.usable([base] + list(task.models)):
        return None
    sparsified = kind != "none"
    return native.gta_merge(base, task.models, [float(mp["weight"]) for mp in task.model_params], sparsify=kind,
                            densities=[float(mp["density"]) for mp in task.model_params] if sparsified else None,
                            keys=[rng.stream_key(task.seed, task.name, j) for j in range(len(task.models))]
                            if kind == "random" else None,
                            consensus=consensus, normalize=bool(task.params["normalize"]),
                            rescale=sparsified and bool(task.params["rescale"]), lam=float(task.params["lambda"]),
                            out=task.out)


def generalized_task_arithmetic(task: TensorTask, *, consensus: bool, sparsify: Optional[Sparsifier],
                                native_kind: Optional[str] = None) -> torch.Tensor:
    """Merge one tensor of torch tensors. ``native_kind`` names ``sparsify`` for the native kernel
    (``none``, ``magnitude``, ``random``), which runs instead of the torch code when it applies (CPU
    fp32: :func:`gta_array` on numpy views); None: always torch."""
    if native_kind is not None:
        kind = native_kind if sparsify is not None else "none"
        fast = native_on_torch(lambda t: gta_array(t, consensus=consensus, kind=kind), task)
        if fast is not None:
            return fast
    import torch

    base = task.base
    assert base is not None
    weights = [float(mp["weight"]) for mp in task.model_params]
    keys = [rng.stream_key(task.seed, task.name, j) for j in range(len(task.models))] if sparsify is not None else None
    deltas = stack_deltas(base, task.models)
    for j, mp in enumerate(task.model_params):
        if sparsify is not None:
            assert keys is not None
            sparse = sparsify(deltas[j], float(mp["density"]), bool(task.params["rescale"]), keys[j])
            if sparse.data_ptr() != deltas[j].data_ptr():
                deltas[j] = sparse
        deltas[j].mul_(weights[j])
    if consensus:
        elected = torch.where(deltas.sum(dim=0) >= 0, 1.0, -1.0).to(base.dtype)
        mixed = torch.zeros_like(base)
        divisor = torch.zeros_like(base)
        scratch = torch.empty_like(base)
        keep = torch.empty(base.shape, dtype=torch.bool, device=base.device)
        for j in range(deltas.shape[0]):
            d = deltas[j]
            torch.gt(torch.mul(d, elected, out=scratch), 0, out=keep)  # sign(d) == elected sign, d != 0
            mixed.add_(torch.mul(d, keep, out=scratch))
            divisor.add_(keep, alpha=weights[j])
        divisor.masked_fill_(divisor == 0, 1)
    else:
        mixed = deltas.sum(dim=0)
        total = sum(weights)
        divisor = total if abs(total) >= 1e-8 else 1.0
    del deltas
    if task.params["normalize"]:
        mixed /= divisor
    lam = float(task.params["lambda"])
    if lam != 1:
        mixed *= lam
    return mixed.add_(base)


def gta_params(*, normalize: bool, rescale: bool, density: bool) -> tuple:
    """The parameter set of a generalized-task-arithmetic method, with mergekit's defaults."""
    params = [
        ParamSpec("weight", 1.0, PER_MODEL, float, help="scale of this model's delta (mergekit requires it; default 1)"),
        ParamSpec("normalize", normalize, SHARED, bool, help="divide by the sum of (kept) weights"),
        ParamSpec("lambda", 1.0, SHARED, float, help="scale of the merged delta"),
    ]
    if density:
        params.append(ParamSpec("density", 1.0, PER_MODEL, float, help="fraction of delta entries kept"))
        params.append(ParamSpec("rescale", rescale, SHARED, bool, help="rescale kept entries to the delta's L1 norm"))
    return tuple(params)


class GeneralizedTaskArithmetic(MergeMethod):
    """Both paths of a generalized-task-arithmetic method; subclasses set the knobs: sign
    ``consensus``, the torch ``sparsify`` (a staticmethod) and its native name ``sparsify_kind``."""

    consensus: bool = False
    sparsify: Optional[Sparsifier] = None
    sparsify_kind: str = "none"

    def merge_array(self, task: TensorTask) -> Optional[np.ndarray]:
        return gta_array(task, consensus=self.consensus, kind=self.sparsify_kind)

    def merge(self, task: TensorTask) -> torch.Tensor:
        return generalized_task_arithmetic(task, consensus=self.consensus, sparsify=self.sparsify,
                                           native_kind=self.sparsify_kind)


@register
class TaskArithmetic(GeneralizedTaskArithmetic):
    name = "task_arithmetic"
    description = "base + lambda * sum_j w_j (theta_j - base)"
    params = gta_params(normalize=False, rescale=False, density=False)
