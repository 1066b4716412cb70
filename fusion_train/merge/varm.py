"""VaRM merging (FuseChat-1, Wan et al. 2024, Eq. 7): weights from the variation ratio of each
fine-tuned (target) model relative to the pivot.

For a unit m (``granularity``) and model j, with delta_{j,m} = theta_{j,m} - theta_{pivot,m}
(our definition of the paper's "before and after fine-tuning": the pivot/base is the common
starting point of all targets):

    W_{j,m} = mean(delta_{j,m}^2) / sum_i mean(delta_{i,m}^2)       (uniform 1/N when the sum is 0)
    theta_m = sum_j W_{j,m} theta_{j,m}

``granularity`` (the paper's Table 2):

``model``      one W_j over all merged tensors (a statistics pass first);
``layer``      one W_j per transformer block (tensors named ``...layers.<i>.``/``h.<i>.``/
               ``blocks.<i>.``); tensors outside blocks (embeddings, final norm, lm_head) are each
               their own unit, i.e. fall back to ``matrix``;
``matrix``     one W_j per parameter tensor (default);
``parameter``  one W_j per element: W_j = delta_j^2 / sum_i delta_i^2.

The only public code labelled VaRM ends up averaging uniformly; this implements the formula.
The pivot itself is not among the averaged models (list it in ``models`` to include it, where
its delta is 0 and so is its weight unless all deltas are 0).
"""
from __future__ import annotations

from typing import Dict, List

import torch

from fusion_train.merge.registry import SHARED, MergeMethod, ParamSpec, TensorTask, layer_of, register, stack_deltas


def variation_weights(sq_sums: List[float], counts: List[int]) -> List[float]:
    """W_j = mean_j / sum_i mean_i, uniform when every mean is 0."""
    means = [s / c if c else 0.0 for s, c in zip(sq_sums, counts)]
    total = sum(means)
    if total == 0:
        return [1.0 / len(means)] * len(means)
    return [m / total for m in means]


@register
class Varm(MergeMethod):
    name = "varm"
    description = "FuseChat-1 variation-ratio weights (granularity model|layer|matrix|parameter)"
    params = (ParamSpec("granularity", "matrix", SHARED, str, choices=("model", "layer", "matrix", "parameter"),
                        help="unit sharing one weight per model"),)

    def __init__(self, params=None):
        super().__init__(params)
        self.granularity = self.shared_params.get("granularity", "matrix")
        self.needs_statistics = self.granularity in ("model", "layer")
        # unit key -> per-model [sum of squared deltas], per-model element count
        self._sq: Dict[str, List[float]] = {}
        self._count: Dict[str, int] = {}

    def _unit(self, name: str) -> str:
        if self.granularity == "model":
            return "<model>"
        layer = layer_of(name)
        return "layer:%d" % layer if layer is not None else "tensor:" + name

    def observe(self, task: TensorTask) -> None:
        assert task.base is not None
        key = self._unit(task.name)
        sums = self._sq.setdefault(key, [0.0] * len(task.models))
        for j, m in enumerate(task.models):
            sums[j] += float((m - task.base).double().square().sum())
        self._count[key] = self._count.get(key, 0) + task.base.numel()

    def weights_for(self, task: TensorTask) -> List[float]:
        """The per-model W_j for this tensor (matrix/layer/model granularity)."""
        if self.granularity == "matrix":
            deltas_sq = [float((m - task.base).double().square().sum()) for m in task.models]
            return variation_weights(deltas_sq, [task.base.numel()] * len(task.models))
        key = self._unit(task.name)
        n = self._count[key]
        return variation_weights(self._sq[key], [n] * len(task.models))

    def merge(self, task: TensorTask) -> torch.Tensor:
        assert task.base is not None
        if self.granularity == "parameter":
            sq = stack_deltas(task.base, task.models).square_()
            total = sq.sum(dim=0)
            zero = total == 0
            weights = torch.where(zero, torch.full_like(sq, 1.0 / len(task.models)), sq / torch.where(zero, 1.0, total))
            out = torch.zeros_like(task.base)
            for j, m in enumerate(task.models):
                out.addcmul_(weights[j], m)
            return out
        out = torch.zeros_like(task.base)
        for w, m in zip(self.weights_for(task), task.models):
            out.add_(m, alpha=w)
        return out
