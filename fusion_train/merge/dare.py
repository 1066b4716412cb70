"""DARE (Yu et al. 2024) with mergekit's semantics: drop each delta entry with probability
1 - density, rescale the kept entries so the delta's L1 norm is preserved (``rescale``, default
on), then merge as TIES (``dare_ties``: sign consensus) or task arithmetic (``dare_linear``).

Randomness is seedable and order-independent: each (tensor, model) pair draws from its own
``torch.Generator`` seeded from the user's seed, the tensor name and the model's position, so a
given seed always produces the same merge (mergekit uses the global RNG instead).
"""
from __future__ import annotations

from typing import Optional

import torch

from fusion_train.merge.registry import MergeMethod, TensorTask, register
from fusion_train.merge.task_arithmetic import generalized_task_arithmetic, gta_params


def random_drop(delta: torch.Tensor, density: float, rescale: bool, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Keep each entry with probability ``density`` (Bernoulli mask), optionally L1-rescaled.
    Works in place on ``delta`` (callers pass their own scratch copy) and returns it."""
    if density >= 1:
        return delta
    if density <= 0:
        return delta.zero_()
    before = torch.linalg.vector_norm(delta, ord=1) if rescale else None
    keep = torch.rand(delta.shape, generator=generator, device=delta.device, dtype=delta.dtype)
    delta.mul_(torch.lt(keep, density, out=keep))  # keep becomes the 0/1 mask
    del keep
    if before is not None:
        after = torch.linalg.vector_norm(delta, ord=1)
        if before >= 1e-7 and after >= 1e-7:  # mergekit's rescale, same thresholds
            delta.mul_(before / after)
    return delta


@register
class DareTies(MergeMethod):
    name = "dare_ties"
    description = "random drop + rescale, sign consensus"
    params = gta_params(normalize=False, rescale=True, density=True)

    def merge(self, task: TensorTask) -> torch.Tensor:
        return generalized_task_arithmetic(task, consensus=True, sparsify=random_drop)


@register
class DareLinear(MergeMethod):
    name = "dare_linear"
    description = "random drop + rescale, weighted sum"
    params = gta_params(normalize=False, rescale=True, density=True)

    def merge(self, task: TensorTask) -> torch.Tensor:
        return generalized_task_arithmetic(task, consensus=False, sparsify=random_drop)
