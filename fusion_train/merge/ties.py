"""TIES merging (Yadav et al. 2023) with mergekit's semantics: per model keep the top ``density``
fraction of |delta| (at least one entry), weight, elect signs on the weighted sum, drop
disagreeing entries, divide by the kept weights (``normalize``, default on)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from fusion_train.merge.registry import register
from fusion_train.merge.task_arithmetic import GeneralizedTaskArithmetic, gta_params, rescale_l1

if TYPE_CHECKING:
    import torch


def magnitude_topk(delta: torch.Tensor, density: float, rescale: bool, key: int = 0) -> torch.Tensor:
    """Zero all but the ``max(1, int(density * n))`` largest-magnitude entries (``key`` unused).

    Selection by a k-th-value threshold (O(n)) instead of mergekit's full argsort; the kept set is
    the same unless several entries tie exactly at the threshold (then all of them are kept). The
    native kernel finds the same threshold by radix select (:mod:`fusion_train.merge.native`).
    """
    import torch

    if density >= 1:
        return delta
    n = delta.numel()
    if density <= 0 or n == 0:
        return torch.zeros_like(delta)
    k = max(1, int(density * n))
    mag = delta.abs()
    threshold = torch.kthvalue(mag.reshape(-1), n - k + 1).values
    kept = torch.where(mag >= threshold, delta, 0.0)
    return rescale_l1(delta, kept) if rescale else kept


@register
class Ties(GeneralizedTaskArithmetic):
    name = "ties"
    description = "trim by magnitude (density), elect sign, disjoint mean"
    params = gta_params(normalize=True, rescale=False, density=True)
    consensus = True
    sparsify = staticmethod(magnitude_topk)
    sparsify_kind = "magnitude"
