"""``PreferenceTrainer`` (DPO, length-normalised DPO, WRPO) and ``WeightedSFTTrainer`` (SFT, C-RLFT): plain
``transformers.Trainer`` subclasses that override ``compute_loss`` (and logging), so torchrun / accelerate,
DeepSpeed, FSDP, gradient accumulation, checkpoints and resume are Trainer's own.

Both normalise by the **whole accumulated batch**: :meth:`get_batch_samples` (Trainer's public hook that
prefetches one optimizer step's micro-batches) returns the step's example count (preference) or summed weighted
token count (SFT), over all processes; each micro-batch's loss is its sum divided by that, times the number of
processes (DDP averages gradients). So a step's gradient is that of one batch of the global size, whatever the
split into micro-batches and processes (a last, short micro-batch included), and ``loss_is_scaled_for_ga``.

The policy runs once per batch on all responses (``[R·B, L]``); logits are computed only from the first
position that predicts a response token (``logits_to_keep``) and the labels' log-probabilities are gathered
without a ``[B, L, V]`` log-softmax (:func:`fusion_train.preference.losses.response_log_probs`).
"""
from __future__ import annotations

import copy
import inspect
from typing import Any, Dict, Optional

import torch
from transformers import Trainer

from tokalign.errors import TokalignError

from .config import PreferenceConfig, SFTConfig
from .data import PreferenceCollator, SFTCollator
from .losses import AlphaSchedule, dpo_loss, response_log_probs, weighted_sft_loss, wrpo_loss

__all__ = ["PreferenceTrainer", "WeightedSFTTrainer", "policy_forward"]

REF_KEY = "ref_logps"
WEIGHTS_KEY = "weights"


def _accepts_logits_to_keep(model) -> bool:
    inner = getattr(model, "module", model)
    try:
        return "logits_to_keep" in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False


def policy_forward(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor,
                   *, keep_logits: Optional[bool] = None):
    """Per-token response log-probabilities ``(token_logps [N, L−1], mask [N, L−1])`` of ``model`` on a batch.

    Logits are kept from the first position that predicts a response token on (``logits_to_keep``, when the
    model's forward takes it): prompt positions before it get no ``[*, V]`` row.
    """
    length = input_ids.shape[1]
    kwargs: Dict[str, Any] = {"use_cache": False}
    if keep_logits is None:
        keep_logits = _accepts_logits_to_keep(model)
    if keep_logits:
        cols = response_mask.any(0).nonzero()
        first = int(cols[0]) if len(cols) else length - 1
        kwargs["logits_to_keep"] = length - max(first - 1, 0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).logits
    return response_log_probs(logits, input_ids, response_mask)


class _SummedLossTrainer(Trainer):
    """Shared machinery: the per-step normaliser from :meth:`get_batch_samples`, float32 side inputs, eval, and
    the response log-probs (fused output loss by default: no ``[B, L, V]`` logits)."""

    loss_is_scaled_for_ga = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from ..fused_output import FusedOutput

        self.fused_output = FusedOutput(self.args.fused_output_loss, self.args.fused_output_chunk_mb)

    def _token_logps(self, model, input_ids, attention_mask, response_mask):
        """``(token_logps [B, L-1], mask [B, L-1])`` of the responses: fused where the model allows (the
        first batch is checked against the model's own logits), else :func:`policy_forward`."""
        out = self.fused_output.response_log_probs(model, input_ids, attention_mask, response_mask, trainer=self)
        return out if out is not None else policy_forward(model, input_ids, attention_mask, response_mask)

    def _normaliser(self, batch: Dict[str, Any]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        if not batch_samples:
            return batch_samples, None
        total = sum(self._normaliser(b).double() for b in batch_samples).to(device)
        if self.accelerator.num_processes > 1:
            total = self.accelerator.gather(total.reshape(1)).sum()
        return batch_samples, total

    def _scale(self, summed: torch.Tensor, count: torch.Tensor, num_items_in_batch) -> torch.Tensor:
        if num_items_in_batch is None:  # evaluation, or a caller outside the training loop: this batch alone
            return summed / count.clamp_min(1e-12)
        return summed / num_items_in_batch.to(summed) * self.accelerator.num_processes

    def _prepare_inputs(self, inputs: Dict[str, Any]) -> Dict[str, Any]:
        # Trainer casts floating inputs to the DeepSpeed dtype; reference log-probs and weights stay float32
        side = {k: inputs.pop(k) for k in (REF_KEY, WEIGHTS_KEY) if k in inputs}
        inputs = super()._prepare_inputs(inputs)
        for k, v in side.items():
            inputs[k] = v.to(self.args.device, non_blocking=True)
        return inputs

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # the batch has no "labels": Trainer would skip the loss; evaluate it like training does
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None


class PreferenceTrainer(_SummedLossTrainer):
    """DPO / length-normalised DPO / WRPO on batches of :class:`~fusion_train.preference.data.PreferenceCollator`.

    Args:
        model: the policy (causal LM).
        args: a :class:`PreferenceConfig`.
        train_dataset: a :class:`~fusion_train.preference.data.PreferenceDataset` (with ``ref_logps`` attached
            for ``reference="precomputed"``).
        ref_model: the frozen reference for ``reference="live"`` (default: a copy of ``model`` taken here, before
            any training step).

    Logged next to ``loss``: ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``,
    ``rewards/accuracies`` (rewards are β·h, β·h/|y| for ln_dpo; for WRPO "chosen" is the hybrid
    α·β·h(y_ws) + (1−α)·β·h(y_wt)); WRPO adds ``alpha``, ``rewards/source_chosen``, ``rewards/target_chosen``,
    ``rewards/source_accuracies`` and ``rewards/target_accuracies``.
    """

    def __init__(self, model=None, args: Optional[PreferenceConfig] = None, train_dataset=None, ref_model=None,
                 data_collator=None, **kwargs: Any) -> None:
        if not isinstance(args, PreferenceConfig):
            raise TypeError("PreferenceTrainer args must be a PreferenceConfig, got %s" % type(args).__name__)
        if data_collator is None:
            pad_id = getattr(getattr(model, "config", None), "pad_token_id", None)
            data_collator = PreferenceCollator(pad_token_id=pad_id if isinstance(pad_id, int) else 0,
                                               pad_to_multiple_of=args.pad_to_multiple_of)
        if args.reference == "live":
            if args.deepspeed or args.fsdp:
                raise TokalignError("reference=live keeps an unsharded copy of the model; with DeepSpeed / FSDP "
                                    "use reference=precomputed")
            if ref_model is None:
                ref_model = copy.deepcopy(model)
            ref_model.eval()
            ref_model.requires_grad_(False)
        self.ref_model = ref_model
        super().__init__(model=model, args=args, train_dataset=train_dataset, data_collator=data_collator, **kwargs)
        if self.ref_model is not None:
            self.ref_model.to(self.args.device)
        self.alpha_schedule = AlphaSchedule(args.alpha, dynamic=args.alpha_dynamic)
        self._metrics: Optional[torch.Tensor] = None
        self._alpha = 0.0

    def _normaliser(self, batch: Dict[str, Any]) -> torch.Tensor:
        return torch.tensor(batch["input_ids"].shape[0] // self.args.n_responses)

    def current_alpha(self) -> float:
        """α of the current optimizer step: read from ``state.global_step`` (constant within an accumulation
        window, restored on resume) and ``state.max_steps``."""
        return self.alpha_schedule.at(self.state.global_step, self.state.max_steps)

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        args: PreferenceConfig = self.args
        n = args.n_responses
        ids, attn, resp = inputs["input_ids"], inputs["attention_mask"], inputs["response_mask"]
        batch = ids.shape[0] // n
        token_logps, mask = self._token_logps(model, ids, attn, resp)
        logps = token_logps.sum(-1).view(n, batch)
        lengths = mask.sum(-1).view(n, batch)
        if REF_KEY in inputs:
            ref = inputs[REF_KEY].t().float()
        elif self.ref_model is not None:
            with torch.no_grad():
                ref_tok, _ = self._token_logps(self.ref_model, ids, attn, resp)
            ref = ref_tok.sum(-1).view(n, batch)
        else:
            raise TokalignError("no reference: the batch has no ref_logps and the trainer no ref_model "
                                "(precompute them with fusion_train.preference.reference or use reference=live)")
        h = logps - ref
        if args.loss == "wrpo":
            alpha = self.current_alpha()
            per_example = wrpo_loss(logps[0], logps[1], logps[2], ref[0], ref[1], ref[2], alpha=alpha,
                                    beta=args.beta, label_smoothing=args.label_smoothing)
        else:
            alpha = None
            per_example = dpo_loss(logps[0], logps[1], ref[0], ref[1], beta=args.beta,
                                   length_normalize=args.loss == "ln_dpo", chosen_lengths=lengths[0],
                                   rejected_lengths=lengths[1], label_smoothing=args.label_smoothing)
        loss = self._scale(per_example.sum(), torch.tensor(float(batch), device=per_example.device),
                           num_items_in_batch)
        if model.training:
            self._record(h.detach(), lengths, alpha)
        return (loss, {"per_example": per_example}) if return_outputs else loss

    # ---- logging ------------------------------------------------------------------------------------

    @torch.no_grad()
    def _record(self, h: torch.Tensor, lengths: torch.Tensor, alpha: Optional[float]) -> None:
        beta = self.args.beta
        if self.args.loss == "ln_dpo":
            h = h / lengths.to(h).clamp_min(1.0)
        r = beta * h.float()
        if alpha is None:
            chosen, rejected = r[0], r[1]
            extra = []
        else:
            chosen, rejected = alpha * r[0] + (1 - alpha) * r[1], r[2]
            extra = [r[0].sum(), r[1].sum(), (r[0] > r[2]).float().sum(), (r[1] > r[2]).float().sum()]
            self._alpha = alpha
        row = torch.stack([torch.tensor(float(chosen.numel()), device=r.device), chosen.sum(), rejected.sum(),
                           (chosen - rejected).sum(), (chosen > rejected).float().sum(), *extra])
        self._metrics = row if self._metrics is None else self._metrics + row

    def log(self, logs: Dict[str, float], start_time: Optional[float] = None) -> None:
        """Adds the reward metrics accumulated since the last training log (over all processes)."""
        if "loss" in logs and self._metrics is not None:
            packed = self._metrics
            if self.accelerator.num_processes > 1:
                packed = self.accelerator.reduce(packed, reduction="sum")
            v = packed.tolist()
            count = max(v[0], 1.0)
            names = ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"]
            if self.args.loss == "wrpo":
                names += ["rewards/source_chosen", "rewards/target_chosen", "rewards/source_accuracies",
                          "rewards/target_accuracies"]
                logs["alpha"] = round(self._alpha, 8)
            for name, value in zip(names, v[1:]):
                logs[name] = round(value / count, 6)
            self._metrics = None
        super().log(logs, start_time)


class WeightedSFTTrainer(_SummedLossTrainer):
    """SFT on the assistant tokens (``fusion-train sft``) and C-RLFT's class-weighted SFT (``crlft``).

    The loss is :func:`~fusion_train.preference.losses.weighted_sft_loss` with the weights of
    :class:`~fusion_train.preference.data.SFTCollator` (all 1 for plain SFT: the token-mean cross-entropy),
    normalised by ``Σ w_i n_i`` (``Σ w_i`` with ``per_sequence``) of the whole accumulated batch.
    """

    def __init__(self, model=None, args: Optional[SFTConfig] = None, train_dataset=None, data_collator=None,
                 **kwargs: Any) -> None:
        if not isinstance(args, SFTConfig):
            raise TypeError("WeightedSFTTrainer args must be an SFTConfig, got %s" % type(args).__name__)
        if data_collator is None:
            pad_id = getattr(getattr(model, "config", None), "pad_token_id", None)
            data_collator = SFTCollator(pad_token_id=pad_id if isinstance(pad_id, int) else 0,
                                        pad_to_multiple_of=args.pad_to_multiple_of)
        super().__init__(model=model, args=args, train_dataset=train_dataset, data_collator=data_collator, **kwargs)

    def _normaliser(self, batch: Dict[str, Any]) -> torch.Tensor:
        w = batch[WEIGHTS_KEY].double()
        n = batch["response_mask"][:, 1:].sum(-1).double()
        return (w * (n > 0)).sum() if self.args.per_sequence else (w * n).sum()

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        token_logps, mask = self._token_logps(model, inputs["input_ids"], inputs["attention_mask"],
                                              inputs["response_mask"])
        weights = inputs[WEIGHTS_KEY]
        # the sum over this micro-batch (normaliser 1), then the step's normaliser
        summed = weighted_sft_loss(token_logps, mask, weights, normalizer=torch.ones((), device=weights.device),
                                   per_sequence=self.args.per_sequence)
        loss = self._scale(summed, self._normaliser(inputs).to(summed), num_items_in_batch)
        return (loss, {}) if return_outputs else loss
