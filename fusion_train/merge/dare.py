"""DARE (Yu et al. 2024) with mergekit's semantics: drop each delta entry with probability
1 - density, rescale the kept entries so the delta's L1 norm is preserved (``rescale``, default
on), then merge as TIES (``dare_ties``: sign consensus) or task arithmetic (``dare_linear``).

Randomness is seedable and order-independent: each (tensor, model) pair has its own counter-based
stream keyed by the user's seed, the tensor name and the model's position (:mod:`fusion_train.merge.rng`),
so a given seed always produces the same merge, whatever the thread count or device (mergekit uses
the global RNG instead).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from fusion_train.merge.registry import register
from fusion_train.merge.rng import keep_mask
from fusion_train.merge.task_arithmetic import GeneralizedTaskArithmetic, gta_params

if TYPE_CHECKING:
    import torch


def random_drop(delta: torch.Tensor, density: float, rescale: bool, key: int = 0) -> torch.Tensor:
    """Keep each entry with probability ``density`` (the Bernoulli mask of stream ``key``,
    :func:`fusion_train.merge.rng.keep_mask`), optionally L1-rescaled.
    Works in place on ``delta`` (callers pass their own scratch copy) and returns it."""
    import torch

    if density >= 1:
        return delta
    if density <= 0:
        return delta.zero_()
    before = torch.linalg.vector_norm(delta, ord=1) if rescale else None
    delta.mul_(keep_mask(key, density, delta.numel(), delta.device).reshape(delta.shape))
    if before is not None:
        after = torch.linalg.vector_norm(delta, ord=1)
        if before >= 1e-7 and after >= 1e-7:  # mergekit's rescale, same thresholds
            delta.mul_(before / after)
    return delta


@register
class DareTies(GeneralizedTaskArithmetic):
    name = "dare_ties"
    description = "random drop + rescale, sign consensus"
    params = gta_params(normalize=False, rescale=True, density=True)
    consensus = True
    sparsify = staticmethod(random_drop)
    sparsify_kind = "random"


@register
class DareLinear(GeneralizedTaskArithmetic):
    name = "dare_linear"
    description = "random drop + rescale, weighted sum"
    params = gta_params(normalize=False, rescale=True, density=True)
    sparsify = staticmethod(random_drop)
    sparsify_kind = "random"
