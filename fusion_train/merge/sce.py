"""SCE merging (FuseChat-2.0, Wan et al. 2024: Select, Calculate, Erase), per parameter matrix.

With fusion vectors delta_j = theta_j - theta_pivot:

* **Select**: keep the top ``select_topk`` (tau) fraction of elements ranked by their variance
  across the delta_j (k = int(tau * #nonzero-variance elements); k = 0 selects nothing).
* **Calculate**: eta_j = sum(sel(delta_j)^2) / sum_i sum(sel(delta_i)^2).
* **Erase**: drop entries whose sign disagrees with the sign of the sum over models (zero -> +).
* Merge sum_j eta_j delta_j over the kept entries, divided by the kept eta, added to the pivot.

Two published variants differ in what the selection mask touches (``variant``):

``fusechat`` (default; the released FuseChat code, ``FuseChat/mergekit/.../sce_merging.py``):
    the mask only shapes the coefficients eta; sign election and the merge use the *unmasked*
    deltas; uniform eta only when the masked energies sum to exactly 0; a zero divisor -> 1.
``mergekit`` (mergekit >= 0.1.5, ``merge_methods/sce.py``): the masked deltas are what gets
    sign-elected and merged; uniform eta when the sum is below 1e-6; divisor clamped to >= 1e-6.

tau defaults to 0.1 here (the FuseChat setting) whichever the variant; mergekit's own default is
1.0 (no selection), so pass ``select_topk`` explicitly when reproducing a mergekit config.
"""
from __future__ import annotations

import torch

from fusion_train.merge.registry import SHARED, MergeMethod, ParamSpec, TensorTask, register, stack_deltas
from fusion_train.merge.task_arithmetic import sign_consensus


def variance_mask(deltas: torch.Tensor, density: float) -> torch.Tensor:
    """fp32 0/1 mask [*shape] selecting the top ``density`` fraction of elements by variance
    across models (population variance), among elements with nonzero variance.

    Selection by a k-th-value threshold (O(n)) rather than a top-k sort; equal to mergekit's
    ``torch.topk`` selection unless values tie exactly at the threshold (then all are kept).
    """
    shape = deltas.shape[1:]
    if density <= 0:
        return torch.zeros(shape, dtype=deltas.dtype, device=deltas.device)
    if density >= 1:
        return torch.ones(shape, dtype=deltas.dtype, device=deltas.device)
    var = torch.var(deltas, dim=0, unbiased=False)
    nonzero = int(torch.count_nonzero(var))
    k = int(nonzero * density)
    if k == 0:
        return torch.zeros_like(var)
    flat = var.abs().reshape(-1)
    threshold = torch.kthvalue(flat, flat.numel() - k + 1).values
    return (var.abs() >= threshold).to(deltas.dtype)


def sce_mergekit(base: torch.Tensor, deltas: torch.Tensor, tau: float) -> torch.Tensor:
    if tau < 1:
        deltas = deltas * variance_mask(deltas, tau).unsqueeze(0)
    erase = sign_consensus(deltas)
    energy = deltas.square().reshape(deltas.shape[0], -1).mean(dim=1)
    total = float(energy.sum())
    if abs(total) < 1e-6:
        eta = torch.full_like(energy, 1.0 / energy.numel())
    else:
        eta = energy / total
    eta = eta.reshape((-1,) + (1,) * (deltas.dim() - 1))
    kept = eta * erase
    merged = (deltas * kept).sum(dim=0) / kept.sum(dim=0).clamp(min=1e-6)
    return base + merged


def sce_fusechat(base: torch.Tensor, deltas: torch.Tensor, tau: float) -> torch.Tensor:
    n = deltas.shape[0]
    if tau < 1:
        mask = variance_mask(deltas, tau)
        energy = [float((deltas[j] * mask).square().sum()) / deltas[j].numel() for j in range(n)]
    else:
        energy = [float(deltas[j].square().sum()) / deltas[j].numel() for j in range(n)]
    total = sum(energy)
    eta_list = [1.0 / n] * n if total == 0 else [e / total for e in energy]
    eta = torch.tensor(eta_list, dtype=deltas.dtype, device=deltas.device).reshape((-1,) + (1,) * (deltas.dim() - 1))
    kept = eta * sign_consensus(deltas)
    merged = (deltas * kept).sum(dim=0)
    divisor = kept.sum(dim=0)
    divisor[divisor == 0] = 1
    return base + merged / divisor


@register
class Sce(MergeMethod):
    name = "sce"
    description = "FuseChat-2.0 select / calculate / erase"
    params = (
        ParamSpec("select_topk", 0.1, SHARED, float, help="tau: fraction of elements selected by variance"),
        ParamSpec("variant", "fusechat", SHARED, str, choices=("fusechat", "mergekit"), help="fusechat | mergekit"),
        ParamSpec("int8_mask", False, SHARED, bool, help="accepted for mergekit compatibility; no effect"),
    )

    def merge(self, task: TensorTask) -> torch.Tensor:
        assert task.base is not None
        deltas = stack_deltas(task.base, task.models)
        tau = float(task.params["select_topk"])
        if task.params["variant"] == "mergekit":
            return sce_mergekit(task.base, deltas, tau)
        return sce_fusechat(task.base, deltas, tau)
