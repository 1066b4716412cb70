"""Linear (weighted-average) merging, mergekit's semantics: sum_j w_j theta_j, divided by
sum_j w_j when ``normalize`` (default). Only the listed models take part: the base supplies
config/tokenizer, and joins the average only if it is also listed among the models. On CPU: one
native sweep (:func:`fusion_train.merge.native.linear_merge`), torch-free."""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional

from fusion_train.merge import native
from fusion_train.merge.registry import PER_MODEL, SHARED, MergeMethod, ParamSpec, TensorTask, register

if TYPE_CHECKING:
    import numpy as np
    import torch


def _weights(task: TensorTask) -> List[float]:
    return [float(mp["weight"]) for mp in task.model_params]


@register
class Linear(MergeMethod):
    name = "linear"
    description = "weighted average of the models"
    params = (
        ParamSpec("weight", 1.0, PER_MODEL, float, help="weight of this model (mergekit requires it; default 1)"),
        ParamSpec("normalize", True, SHARED, bool, help="divide by the sum of weights"),
    )
    uses_base = False

    def merge_array(self, task: TensorTask) -> Optional[np.ndarray]:
        if not native.usable(task.models):
            return None
        return native.linear_merge(task.models, _weights(task), bool(task.params["normalize"]), out=task.out)

    def merge(self, task: TensorTask) -> torch.Tensor:
        fast = self.native_torch(task)
        if fast is not None:
            return fast
        import torch

        weights = _weights(task)
        out = torch.zeros_like(task.models[0])
        for tensor, w in zip(task.models, weights):
            out.add_(tensor, alpha=w)
        if task.params["normalize"]:
            out.div_(sum(weights))
        return out
