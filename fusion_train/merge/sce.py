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

On CPU the method runs as native kernels on numpy arrays (:func:`fusion_train.merge.native.sce_merge`:
variances, exact radix-select threshold, energies in double, fused erase/merge; no torch); the torch
code below is the reference and the path for other devices.

tau defaults to 0.1 here (the FuseChat setting) whichever the variant; mergekit's own default is
1.0 (no selection), so pass ``select_topk`` explicitly when reproducing a mergekit config.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from fusion_train.merge import native
from fusion_train.merge.registry import SHARED, MergeMethod, ParamSpec, TensorTask, register, stack_deltas

if TYPE_CHECKING:
    import numpy as np
    import torch


def population_variance(deltas: torch.Tensor) -> torch.Tensor:
    """Variance across models (dim 0, biased), two-pass: far faster than ``torch.var(dim=0)`` on
    CPU, where that reduction runs along the strided model axis."""
    import torch

    n = deltas.shape[0]
    mean = deltas.sum(dim=0).div_(n)
    var = torch.zeros_like(mean)
    for j in range(n):
        diff = deltas[j] - mean
        var.addcmul_(diff, diff)
    return var.div_(n)


def variance_mask(deltas: torch.Tensor, density: float) -> torch.Tensor:
    """Bool mask [*shape] selecting the top ``density`` fraction of elements by variance across
    models (population variance), among elements with nonzero variance: k = int(density * nnz).

    Selection by a k-th-value threshold (O(n)) rather than a top-k sort; equal to mergekit's
    ``torch.topk`` selection unless values tie exactly at the threshold (then all are kept). On CPU
    the threshold comes from the native radix select (the value ``torch.kthvalue`` would return).
    """
    import torch

    shape = deltas.shape[1:]
    if density <= 0:
        return torch.zeros(shape, dtype=torch.bool, device=deltas.device)
    if density >= 1:
        return torch.ones(shape, dtype=torch.bool, device=deltas.device)
    var = population_variance(deltas)
    k = int(int(torch.count_nonzero(var)) * density)
    if k == 0:
        return torch.zeros(shape, dtype=torch.bool, device=deltas.device)
    flat = var.reshape(-1)
    if flat.device.type == "cpu" and native.usable([flat.numpy()]):  # exact radix select, same value as kthvalue
        threshold = native.kth_largest(flat.numpy(), k)
    else:
        threshold = torch.kthvalue(flat, flat.numel() - k + 1).values
    return var >= threshold


def _erase_merge(deltas: torch.Tensor, eta, total: torch.Tensor, clamp: bool) -> torch.Tensor:
    """sum_j eta_j d_j over entries whose sign agrees with sign(total) (0 -> +), divided by the
    kept eta (clamped to >= 1e-6 when ``clamp``, else 0 -> 1). ``total`` is overwritten."""
    import torch

    elected = torch.where(total >= 0, 1.0, -1.0).to(total.dtype)
    num = torch.zeros_like(total)
    den = total.zero_()
    scratch = torch.empty_like(total)
    keep = torch.empty(total.shape, dtype=torch.bool, device=total.device)
    for j in range(deltas.shape[0]):
        d = deltas[j]
        torch.gt(torch.mul(d, elected, out=scratch), 0, out=keep)  # sign(d) == elected sign, d != 0
        num.add_(torch.mul(d, keep, out=scratch), alpha=eta[j])
        den.add_(keep, alpha=eta[j])
    if clamp:
        return num.div_(den.clamp_(min=1e-6))
    den.masked_fill_(den == 0, 1)
    return num.div_(den)


def sce_mergekit(base: torch.Tensor, deltas: torch.Tensor, tau: float) -> torch.Tensor:
    import torch

    n = deltas.shape[0]
    if tau < 1:
        deltas.mul_(variance_mask(deltas, tau))
    energy = [float(torch.dot(deltas[j].reshape(-1), deltas[j].reshape(-1))) / max(deltas[j].numel(), 1) for j in range(n)]
    total = sum(energy)
    eta = [1.0 / n] * n if abs(total) < 1e-6 else [e / total for e in energy]
    return _erase_merge(deltas, eta, deltas.sum(dim=0), clamp=True).add_(base)


def sce_fusechat(base: torch.Tensor, deltas: torch.Tensor, tau: float) -> torch.Tensor:
    import torch

    n = deltas.shape[0]
    if tau < 1:
        mask = variance_mask(deltas, tau)
        energy = []
        for j in range(n):
            sel = torch.where(mask, deltas[j], 0.0).reshape(-1)
            energy.append(float(torch.dot(sel, sel)) / max(deltas[j].numel(), 1))
    else:
        energy = [float(torch.dot(deltas[j].reshape(-1), deltas[j].reshape(-1))) / max(deltas[j].numel(), 1) for j in range(n)]
    total = sum(energy)
    eta = [1.0 / n] * n if total == 0 else [e / total for e in energy]
    return _erase_merge(deltas, eta, deltas.sum(dim=0), clamp=False).add_(base)


@register
class Sce(MergeMethod):
    name = "sce"
    description = "FuseChat-2.0 select / calculate / erase"
    params = (
        ParamSpec("select_topk", 0.1, SHARED, float, help="tau: fraction of elements selected by variance"),
        ParamSpec("variant", "fusechat", SHARED, str, choices=("fusechat", "mergekit"), help="fusechat | mergekit"),
        ParamSpec("int8_mask", False, SHARED, bool, help="accepted for mergekit compatibility; no effect"),
    )

    def merge_array(self, task: TensorTask) -> Optional[np.ndarray]:
        assert task.base is not None
        if not native.usable([task.base] + list(task.models)):
            return None
        return native.sce_merge(task.base, task.models, float(task.params["select_topk"]), task.params["variant"],
                                out=task.out)

    def merge(self, task: TensorTask) -> torch.Tensor:
        fast = self.native_torch(task)
        if fast is not None:
            return fast
        assert task.base is not None
        tau = float(task.params["select_topk"])
        deltas = stack_deltas(task.base, task.models)
        if task.params["variant"] == "mergekit":
            return sce_mergekit(task.base, deltas, tau)
        return sce_fusechat(task.base, deltas, tau)
