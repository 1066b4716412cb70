"""The trainers' losses on the fused output layer: SFT + MinCE fusion, weighted SFT, per-sequence log-probs.

Each takes the final hidden states and the model's :class:`~fusion_train.fused_output.kernel.OutputHead`
instead of logits, keeps only the positions that carry a loss term (a label to predict, a fusion target
under the mask) and runs the per-position math of :mod:`fusion_train.fuse.losses` (``_per_position``: every
registered loss, every tail, the teacher temperature) on the gathered log-probabilities of each chunk, so the
results equal the unfused functions (:func:`fusion_train.fuse.losses.fusion_loss`,
:func:`~fusion_train.fuse.losses.sft_loss`, :func:`fusion_train.preference.losses.response_log_probs`)
up to float rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from fusion_train.fuse.losses import (
    TeacherTargets,
    _per_position,
    choose_teachers,
    select_targets,
    target_log_probs,
)

from .kernel import DEFAULT_CHUNK_MB, OutputHead, linear_loss, log_probs_at

__all__ = ["FusedFusionOutput", "fused_fusion_loss", "fused_weighted_nll", "token_log_probs",
           "fused_sequence_log_probs"]


@dataclass
class FusedFusionOutput:
    """Result of :func:`fused_fusion_loss`: ``loss`` (scalar, differentiable), ``sft`` / ``fusion`` its parts
    (detached; None when not computed), ``choice [B, L]``, ``choice_counts [T]`` and ``positions`` as in
    :class:`fusion_train.fuse.losses.FusionLossOutput`."""

    loss: torch.Tensor
    sft: Optional[torch.Tensor]
    fusion: Optional[torch.Tensor]
    choice: Optional[torch.Tensor] = None
    choice_counts: Optional[torch.Tensor] = None
    positions: Optional[torch.Tensor] = None


def _next_labels(labels: torch.Tensor) -> torch.Tensor:
    """``labels[:, t + 1]`` at position ``t`` (``-100`` at the last position), as the causal-LM loss shifts."""
    return F.pad(labels[..., 1:], (0, 1), value=-100)


def fused_fusion_loss(
    hidden: torch.Tensor,
    head: OutputHead,
    teachers: Optional[Sequence[TeacherTargets]] = None,
    *,
    labels: Optional[torch.Tensor] = None,
    lambda_sft: float = 0.9,
    mask: Optional[torch.Tensor] = None,
    fusion: str = "minCE",
    granularity: str = "sequence",
    include_pivot: bool = True,
    kind: str = "ce",
    tail: str = "renormalize",
    temperature: float = 1.0,
    chunk_mb: float = DEFAULT_CHUNK_MB,
    chunk_rows: Optional[int] = None,
    sft_normalizer: Optional[torch.Tensor] = None,
    fusion_normalizer: Optional[torch.Tensor] = None,
) -> FusedFusionOutput:
    """``lambda_sft * SFT + (1 - lambda_sft) * fusion`` from ``hidden [B, L, H]`` (:class:`FusionTrainer`'s loss).

    Equals :func:`fusion_train.fuse.losses.combine_losses` of ``sft_loss`` and ``fusion_loss(...).loss`` on
    ``head.logits(hidden)``. Without ``teachers`` (or ``lambda_sft == 1``) the loss is the SFT loss alone;
    without ``labels`` it is the fusion loss alone. ``sft_normalizer`` / ``fusion_normalizer`` as in
    :func:`~fusion_train.fuse.losses.fusion_loss`.
    """
    if teachers is not None and len(teachers) == 0:
        raise ValueError("fused_fusion_loss needs at least one teacher (or teachers=None)")
    use_fusion = teachers is not None and (labels is None or lambda_sft < 1.0)
    use_sft = labels is not None
    if not (use_fusion or use_sft):
        raise ValueError("fused_fusion_loss needs labels, teachers or both")
    lead = hidden.shape[:-1]
    device = hidden.device
    ids_parts, keep_sel = [], []
    sel = torch.zeros(lead, dtype=torch.bool, device=device)
    choice = counts = positions = None
    if use_sft:
        next_label = _next_labels(labels)
        keep = next_label.ne(-100)
        sel |= keep
        sft_den = (keep.sum().clamp_min(1) if sft_normalizer is None else torch.as_tensor(sft_normalizer)).float()
    if use_fusion:
        choice = choose_teachers(teachers, fusion=fusion, granularity=granularity, include_pivot=include_pivot)
        ids, probs = select_targets(teachers, choice)
        valid, _, _, _ = target_log_probs(ids, probs, tail=tail, temperature=temperature)  # checks tail / T
        weight = valid.any(-1).float()
        if mask is not None:
            weight = weight * mask.float()
        sel |= weight > 0
        fus_den = (weight.sum().clamp_min(1.0) if fusion_normalizer is None
                   else torch.as_tensor(fusion_normalizer)).float()
        counted = weight > 0
        counts = torch.bincount(choice[counted].reshape(-1), minlength=len(teachers))
        positions = counted.sum()
    # only the positions with a loss term reach the output layer
    h = hidden[sel]
    if use_sft:
        lab = next_label[sel]
        keep_sel = keep[sel].float()
        ids_parts.append(lab.clamp_min(0).unsqueeze(-1))
    if use_fusion:
        ids_s, probs_s, w_s = ids[sel], probs[sel], weight[sel]
        ids_parts.append(ids_s.to(torch.long))
    all_ids = torch.cat([p.to(torch.long) for p in ids_parts], -1)
    coef_sft = (lambda_sft if use_fusion else 1.0) if use_sft else 0.0
    coef_fus = (1.0 - lambda_sft if use_sft else 1.0) if use_fusion else 0.0
    first = 1 if use_sft else 0

    def chunk_loss(logq: torch.Tensor, start: int, stop: int):
        value = logq.new_zeros(())
        parts = []
        if use_sft:
            sft_c = -(logq[:, 0] * keep_sel[start:stop]).sum() / sft_den
            value = value + coef_sft * sft_c
            parts.append(sft_c)
        if use_fusion:
            per_pos, _ = _per_position(kind, logq[:, first:], ids_s[start:stop], probs_s[start:stop], tail, temperature)
            fus_c = (per_pos * w_s[start:stop]).sum() / fus_den
            value = value + coef_fus * fus_c
            parts.append(fus_c)
        return value, torch.stack(parts)

    n_parts = int(use_sft) + int(use_fusion)
    loss, parts = linear_loss(h, head, all_ids, chunk_loss, n_parts=n_parts, chunk_mb=chunk_mb, chunk_rows=chunk_rows)
    sft = parts[0] if use_sft else None
    fus = parts[first] if use_fusion else None
    return FusedFusionOutput(loss=loss, sft=sft, fusion=fus, choice=choice, choice_counts=counts, positions=positions)


def fused_weighted_nll(
    hidden: torch.Tensor,
    head: OutputHead,
    labels: torch.Tensor,
    weights: torch.Tensor,
    *,
    normalizer: Optional[torch.Tensor] = None,
    chunk_mb: float = DEFAULT_CHUNK_MB,
    chunk_rows: Optional[int] = None,
) -> torch.Tensor:
    """``-sum_n weights[n] * log q(labels[n]) / normalizer`` over positions (weighted SFT, C-RLFT).

    ``hidden [..., H]``, ``labels [...]`` the token each position predicts (already shifted; ``-100`` /
    negative: no term), ``weights [...]`` per position (C-RLFT: the sequence's class weight, divided by its
    length for ``per_sequence``), ``normalizer`` default ``sum(weights)`` over labelled positions.
    """
    keep = labels.ge(0) & weights.ne(0)
    h = hidden[keep]
    lab = labels[keep].long().unsqueeze(-1)
    w = weights[keep].float()
    den = (weights.float() * labels.ge(0)).sum() if normalizer is None else torch.as_tensor(normalizer).float()
    den = den.to(hidden.device).clamp_min(1e-12)

    def chunk_loss(logq: torch.Tensor, start: int, stop: int):
        return -(logq[:, 0] * w[start:stop]).sum() / den, logq.new_zeros(0)

    loss, _ = linear_loss(h, head, lab, chunk_loss, chunk_mb=chunk_mb, chunk_rows=chunk_rows)
    return loss


def token_log_probs(
    hidden: torch.Tensor,
    head: OutputHead,
    input_ids: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    chunk_mb: float = DEFAULT_CHUNK_MB,
    chunk_rows: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(token_logps [B, L-1], mask [B, L-1])``: the log-probability of ``input_ids[:, t+1]`` at position ``t``
    where ``response_mask[:, t+1]``, 0 elsewhere — what :func:`fusion_train.preference.losses.response_log_probs`
    returns from logits, here from ``hidden [B, L, H]``. Differentiable (the backward recomputes the chunks'
    logits), so any reduction works: per-sequence sums for DPO / WRPO, weighted sums for C-RLFT.
    """
    mask = response_mask[:, 1:].bool()
    h = hidden[:, :-1][mask]
    target = input_ids[:, 1:][mask].long().unsqueeze(-1)
    logq = log_probs_at(h, head, target, chunk_mb=chunk_mb, chunk_rows=chunk_rows)[:, 0]
    out = torch.zeros(mask.shape, dtype=torch.float32, device=hidden.device)
    return out.masked_scatter(mask, logq), mask


def fused_sequence_log_probs(hidden, head, input_ids, response_mask, **kwargs) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(logps [B], lengths [B])``: summed response log-probabilities and response token counts."""
    logps, mask = token_log_probs(hidden, head, input_ids, response_mask, **kwargs)
    return logps.sum(-1), mask.sum(-1)
