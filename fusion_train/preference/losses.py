"""Preference and conditioned losses, in pure torch (docs/implicit.md has the formulas and their sources).

Notation: ``ℓ(y|x)`` is the sum of a response's token log-probabilities (prompt and padding excluded, the
EOS / end-of-turn token included), ``h = ℓ_policy − ℓ_reference`` its implicit reward before ``β``, ``σ`` the
logistic function. Every preference loss returns the per-example loss ``[B]``; the trainer averages it.

* :func:`dpo_loss` -- ``−log σ(β·h(y_w) − β·h(y_l))`` (DPO); ``length_normalize=True`` divides each ``h`` by
  its response length (FuseChat-3.0's length-normalised DPO); ``label_smoothing`` is cDPO.
* :func:`wrpo_loss` -- ``−log σ(α·β·h(y_ws) + (1−α)·β·h(y_wt) − β·h(y_l))`` (WRPO, Eq. 6).
* :class:`AlphaSchedule` -- WRPO's α ramp ``α(s) = α_end · s / T``.
* :func:`weighted_sft_loss` -- C-RLFT's class-weighted token log-likelihood.
* :func:`response_log_probs` -- per-token log-probabilities of the labels, gathered without a ``[B, L, V]``
  log-softmax (:func:`fusion_train.fuse.losses.student_log_probs_at`).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from fusion_train.fuse.losses import student_log_probs_at

__all__ = [
    "dpo_loss",
    "wrpo_loss",
    "AlphaSchedule",
    "weighted_sft_loss",
    "response_log_probs",
    "sequence_log_probs",
]


def _smoothed_logistic(z: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """``−(1−ε)·log σ(z) − ε·log σ(−z)``: the logistic loss with the preference label flipped with probability ε
    (cDPO; TRL's ``sigmoid`` loss with ``label_smoothing`` before 1.0)."""
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError("label_smoothing must be in [0, 0.5), got %r" % label_smoothing)
    loss = -F.logsigmoid(z)
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss - label_smoothing * F.logsigmoid(-z)
    return loss


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float,
    length_normalize: bool = False,
    chosen_lengths: Optional[torch.Tensor] = None,
    rejected_lengths: Optional[torch.Tensor] = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Per-example DPO loss ``[B]``: ``−log σ(β·h(y_w) − β·h(y_l))``.

    ``length_normalize=True`` uses ``h / |y|`` with ``chosen_lengths`` / ``rejected_lengths`` (response tokens,
    EOS included; required then) -- TRL's ``sigmoid_norm``, FuseChat-3.0's choice for Llama targets (β = 10);
    plain DPO with β = 0.01 for Qwen / Gemma targets.
    """
    h_w = policy_chosen_logps.float() - ref_chosen_logps.float()
    h_l = policy_rejected_logps.float() - ref_rejected_logps.float()
    if length_normalize:
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("length_normalize=True needs chosen_lengths and rejected_lengths")
        h_w = h_w / chosen_lengths.to(h_w).clamp_min(1.0)
        h_l = h_l / rejected_lengths.to(h_l).clamp_min(1.0)
    return _smoothed_logistic(beta * (h_w - h_l), label_smoothing)


def wrpo_loss(
    policy_source_logps: torch.Tensor,
    policy_target_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_source_logps: torch.Tensor,
    ref_target_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    alpha: float,
    beta: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Per-example WRPO loss ``[B]`` (Eq. 6): ``−log σ(α·β·h(y_ws) + (1−α)·β·h(y_wt) − β·h(y_l))``.

    ``y_ws`` is the source models' best response, ``y_wt`` the target's own best, ``y_l`` the target's worst.
    α = 0 is DPO on ``(y_wt, y_l)``, α = 1 DPO on ``(y_ws, y_l)``. Its gradient is Eq. 8:
    ``−β·σ(−z)·(α·∇ℓ(y_ws) + (1−α)·∇ℓ(y_wt) − ∇ℓ(y_l))``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be in [0, 1], got %r" % alpha)
    h_s = policy_source_logps.float() - ref_source_logps.float()
    h_t = policy_target_logps.float() - ref_target_logps.float()
    h_l = policy_rejected_logps.float() - ref_rejected_logps.float()
    z = alpha * beta * h_s + (1.0 - alpha) * beta * h_t - beta * h_l
    return _smoothed_logistic(z, label_smoothing)


class AlphaSchedule:
    """WRPO's fusion coefficient: ``α(s) = α_end · s / T`` for optimizer step ``s ≤ T`` (``T`` the run's total
    optimizer steps), ``α_end`` after; ``dynamic=False`` holds ``α_end`` (the static ablation).

    Paper defaults: ``α_end = 0.1``, β = 0.01, learning rate 3e-7. The trainer reads it once per optimizer step
    from ``state.global_step`` (constant inside a gradient-accumulation window, restored on resume).
    """

    def __init__(self, alpha_end: float, dynamic: bool = True) -> None:
        if not 0.0 <= float(alpha_end) <= 1.0:
            raise ValueError("alpha_end must be in [0, 1], got %r" % alpha_end)
        self.alpha_end = float(alpha_end)
        self.dynamic = bool(dynamic)

    def at(self, step: int, total_steps: int) -> float:
        if not self.dynamic:
            return self.alpha_end
        if total_steps <= 0 or step >= total_steps:
            return self.alpha_end
        return self.alpha_end * max(step, 0) / total_steps

    def __repr__(self) -> str:
        return "AlphaSchedule(alpha_end=%r, dynamic=%r)" % (self.alpha_end, self.dynamic)


def weighted_sft_loss(
    token_logps: torch.Tensor,
    mask: torch.Tensor,
    weights: Optional[torch.Tensor] = None,
    *,
    normalizer: Optional[torch.Tensor] = None,
    per_sequence: bool = False,
) -> torch.Tensor:
    """C-RLFT's weighted log-likelihood: ``−Σ_i w_i Σ_t log π(y_it | x_i, c_i) / Σ_i w_i n_i`` (a scalar).

    ``token_logps [B, T]`` and ``mask [B, T]`` (the assistant tokens), ``weights [B]`` (default 1: plain SFT,
    the token-mean cross-entropy). ``per_sequence=True`` averages each sequence over its own tokens first:
    ``−Σ_i w_i (1/n_i) Σ_t log π / Σ_i w_i``. ``normalizer`` replaces the denominator: the trainer passes the
    one of the **whole accumulated batch** (every micro-batch and process), so that the step's gradient is that
    of one big batch, whatever the split.
    """
    m = mask.to(token_logps.dtype)
    w = torch.ones(token_logps.shape[0], device=token_logps.device) if weights is None else weights.to(token_logps)
    per_seq = (token_logps * m).sum(-1)
    n = m.sum(-1)
    if per_sequence:
        num = (w * per_seq / n.clamp_min(1.0)).sum()
        den = (w * (n > 0).to(w)).sum()
    else:
        num = (w * per_seq).sum()
        den = (w * n).sum()
    if normalizer is not None:
        den = normalizer
    return -num / torch.as_tensor(den, dtype=num.dtype, device=num.device).clamp_min(1e-12)


def response_log_probs(logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities of the response tokens: ``(token_logps [B, L−1], mask [B, L−1])``.

    ``logits [B, L', V]`` may cover only the last ``L'`` positions (a forward with ``logits_to_keep``): the
    positions before them predict no response token. Gathered with
    :func:`~fusion_train.fuse.losses.student_log_probs_at` (no ``[B, L, V]`` log-softmax kept for the backward).
    """
    length = input_ids.shape[1]
    kept = logits.shape[1]
    if kept > length:
        raise ValueError("logits cover %d positions for %d tokens" % (kept, length))
    # position t predicts token t+1; logits[:, j] is position length - kept + j
    start = length - kept
    target = input_ids[:, start + 1:]
    mask = response_mask[:, start + 1:].bool()
    if start > 0 and response_mask[:, 1:start + 1].any():
        raise ValueError("logits_to_keep dropped positions that predict response tokens")
    logps = student_log_probs_at(logits[:, :-1, :], target.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    logps = logps.masked_fill(~mask, 0.0)
    if start > 0:
        pad = logps.new_zeros(logps.shape[0], start)
        logps = torch.cat([pad, logps], 1)
        mask = torch.cat([mask.new_zeros(mask.shape[0], start), mask], 1)
    return logps, mask


def sequence_log_probs(logits: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(ℓ [B], lengths [B])``: summed response log-probabilities and response token counts."""
    logps, mask = response_log_probs(logits, input_ids, response_mask)
    return logps.sum(-1), mask.sum(-1)
