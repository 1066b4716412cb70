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
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from fusion_train.merge.registry import PER_MODEL, SHARED, MergeMethod, ParamSpec, TensorTask, register, stack_deltas

# A sparsifier maps (delta, density, rescale, generator) -> sparsified delta (same shape; may work in place).
Sparsifier = Callable[[torch.Tensor, float, bool, Optional[torch.Generator]], torch.Tensor]


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


def generalized_task_arithmetic(task: TensorTask, *, consensus: bool, sparsify: Optional[Sparsifier]) -> torch.Tensor:
    base = task.base
    assert base is not None
    deltas = stack_deltas(base, task.models)
    weights = [float(mp["weight"]) for mp in task.model_params]
    for j, mp in enumerate(task.model_params):
        if sparsify is not None:
            make_gen = task.extra.get("make_generator")
            gen = make_gen(j) if make_gen is not None else None
            sparse = sparsify(deltas[j], float(mp["density"]), bool(task.params["rescale"]), gen)
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
        return generalized_task_arithmetic(task, consensus=False, sparsify=None)
