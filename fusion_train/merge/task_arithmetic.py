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

On CPU the whole computation runs as one fused native kernel (:mod:`fusion_train.merge.native`);
the torch code below is the reference and the path for other devices (``--device cuda``).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from fusion_train.merge import native, rng
from fusion_train.merge.registry import PER_MODEL, SHARED, MergeMethod, ParamSpec, TensorTask, register, stack_deltas

# A sparsifier maps (delta, density, rescale, stream key) -> sparsified delta (same shape; may work in
# place). The key (fusion_train.merge.rng.stream_key) drives DARE's random stream.
Sparsifier = Callable[[torch.Tensor, float, bool, int], torch.Tensor]


def rescale_l1(delta: torch.Tensor, kept: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Scale ``kept`` (a masked ``delta``) so its L1 norm matches ``delta``'s (mergekit's rescale)."""
    before = torch.linalg.vector_norm(delta, ord=1)
    after = torch.linalg.vector_norm(kept, ord=1)
    if before < eps or after < eps:
        return kept
    return kept * (before / after)


def sign_consensus(deltas: torch.Tensor) -> torch.Tensor:
    """Bool mask [n, *shape]: entries whose sign agrees with the sign of the sum over models."""
    majority = torch.where(deltas.sum(dim=0) >= 0, 1.0, -1.0).to(deltas.dtype)
    return deltas.sign() == majority


def generalized_task_arithmetic(task: TensorTask, *, consensus: bool, sparsify: Optional[Sparsifier],
                                native_kind: Optional[str] = None) -> torch.Tensor:
    """Merge one tensor. ``native_kind`` names ``sparsify`` for the native kernel (``none``,
    ``magnitude``, ``random``; see :mod:`fusion_train.merge.native`), which runs instead of the torch
    code when it applies (CPU fp32); None: always torch."""
    base = task.base
    assert base is not None
    weights = [float(mp["weight"]) for mp in task.model_params]
    sparsified = sparsify is not None
    keys = [rng.stream_key(task.seed, task.name, j) for j in range(len(task.models))] if sparsified else None
    if native_kind is not None and native.enabled() and native.applicable([base] + list(task.models)):
        return native.gta_merge(base, task.models, weights, sparsify=native_kind if sparsified else "none",
                                densities=[float(mp["density"]) for mp in task.model_params] if sparsified else None,
                                keys=keys, consensus=consensus, normalize=bool(task.params["normalize"]),
                                rescale=sparsified and bool(task.params["rescale"]), lam=float(task.params["lambda"]))
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


@register
class TaskArithmetic(MergeMethod):
    name = "task_arithmetic"
    description = "base + lambda * sum_j w_j (theta_j - base)"
    params = gta_params(normalize=False, rescale=False, density=False)

    def merge(self, task: TensorTask) -> torch.Tensor:
        return generalized_task_arithmetic(task, consensus=False, sparsify=None, native_kind="none")
