"""SLERP between the base and exactly one other model, mergekit's semantics: each tensor is
treated as one vector; with theta the angle between the normalised vectors,
result = sin((1-t) theta)/sin(theta) * base + sin(t theta)/sin(theta) * other, falling back to
(1-t) base + t other when |cos theta| > 0.9995 (nearly parallel tensors). t = 0 gives the base."""
from __future__ import annotations

import torch

from fusion_train.merge.registry import SHARED, MergeMethod, ParamSpec, TensorTask, register

DOT_THRESHOLD = 0.9995
EPS = 1e-8


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor, dot_threshold: float = DOT_THRESHOLD, eps: float = EPS) -> torch.Tensor:
    """Spherical interpolation of two same-shape tensors (fp32), as mergekit computes it."""
    a = v0.reshape(-1)
    b = v1.reshape(-1)
    tt = torch.tensor(t, dtype=v0.dtype, device=v0.device)
    if a.numel() == 0:
        return ((1 - tt) * v0 + tt * v1)
    norm_a = torch.linalg.vector_norm(a)
    norm_b = torch.linalg.vector_norm(b)
    norm_a = torch.where(norm_a > eps, norm_a, torch.ones_like(norm_a))
    norm_b = torch.where(norm_b > eps, norm_b, torch.ones_like(norm_b))
    dot = torch.dot(a / norm_a, b / norm_b).clamp(-1, 1)
    if dot.abs() > dot_threshold:
        coef_a, coef_b = 1 - tt, tt
    else:
        theta = torch.acos(dot)
        sin_theta = torch.sin(theta)
        coef_a = torch.sin((1 - tt) * theta) / sin_theta
        coef_b = torch.sin(tt * theta) / sin_theta
    return coef_a * v0 + coef_b * v1


@register
class Slerp(MergeMethod):
    name = "slerp"
    description = "spherical interpolation base -> model (exactly one model)"
    params = (ParamSpec("t", None, SHARED, float, help="interpolation factor: 0 = base, 1 = the other model"),)
    max_models = 1

    def merge(self, task: TensorTask) -> torch.Tensor:
        assert task.base is not None
        return slerp(float(task.params["t"]), task.base, task.models[0])
