"""Linear (weighted-average) merging, mergekit's semantics: sum_j w_j theta_j, divided by
sum_j w_j when ``normalize`` (default). Only the listed models take part: the base supplies
config/tokenizer, and joins the average only if it is also listed among the models. On CPU: one
native sweep (:func:`fusion_train.merge.native.linear_merge`)."""
from __future__ import annotations

import torch

from fusion_train.merge import native
from fusion_train.merge.registry import PER_MODEL, SHARED, MergeMethod, ParamSpec, TensorTask, register


@register
class Linear(MergeMethod):
    name = "linear"
    description = "weighted average of the models"
    params = (
        ParamSpec("weight", 1.0, PER_MODEL, float, help="weight of this model (mergekit requires it; default 1)"),
        ParamSpec("normalize", True, SHARED, bool, help="divide by the sum of weights"),
    )
    uses_base = False

    def merge(self, task: TensorTask) -> torch.Tensor:
        weights = [float(mp["weight"]) for mp in task.model_params]
        if native.enabled() and native.applicable(task.models):
            return native.linear_merge(task.models, weights, bool(task.params["normalize"]))
        out = torch.zeros_like(task.models[0])
        for tensor, w in zip(task.models, weights):
            out.add_(tensor, alpha=w)
        if task.params["normalize"]:
            out.div_(sum(weights))
        return out
