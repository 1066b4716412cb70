"""``FusionTrainer``: a plain ``transformers.Trainer`` whose loss is ``lambda * SFT + (1 - lambda) * MinCE
fusion`` against sparse teacher targets (FuseChat / FuseLLM ``DistillTrainer``, without dense targets).

Because only ``compute_loss`` (and logging) change, everything else — torchrun / accelerate,
DeepSpeed, FSDP, gradient accumulation, checkpointing and resuming — is Trainer's own.

How it matches FuseChat's ``DistillTrainer.compute_loss`` (``distill_greater_as_gt``, type "hard"):

- SFT: the causal-LM cross-entropy over ``labels != -100``, mean per micro-batch (FuseChat: the
  model's own loss). We gather it together with the fusion targets from the logits
  (:func:`fusion_train.fuse.losses.student_log_probs_at`), so the backward builds one dense gradient
  and no ``[B, L, V]`` log-softmax is kept.
- Fusion target: per sequence, the teacher with the lowest ``metric_ce`` (``seq_ce``) among the
  pivot ("base") and the aligned source(s); ``torch.argmax`` of ``1/exp(ce)`` there, ``argmin`` of
  ``ce`` here (ties to the pivot in both); see :func:`fusion_train.fuse.losses.min_ce_choice`.
- Fusion loss: ``cross_entropy(logits, target_dist)`` (or KL) summed over ``attention_mask`` and
  divided by its sum (``fusion_positions="all"``); targets are the top-k renormalised with
  ``softmax(logits / T)`` (``tail="renormalize"``). We gather the student's log-probs at the top-k
  ids instead of materialising ``target_dist [B, L, V]``.
- ``loss = lm_loss_weight * loss + (1 - lm_loss_weight) * loss_lm`` with ``lm_loss_weight = 0.9``.
- ``fused_output_loss=True`` (the default): the same loss from the decoder's final hidden states and the
  output layer, chunk by chunk, never holding ``[B, L, V]`` logits (:mod:`fusion_train.fused_output`); the
  model runs with ``logits_to_keep=1`` and its last-position logits are checked against the output layer
  on the first batch. FSDP, ZeRO-3, models without a separate decoder body / ``logits_to_keep`` and a failed
  check fall back to the logits (one warning).
- Gradient accumulation: both FuseChat and we return a per-micro-batch mean that Trainer divides
  by the number of accumulation steps (``loss_is_scaled_for_ga = False``).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
from transformers import Trainer

from .config import FusionConfig
from .data import FusionCollator
from .losses import TeacherTargets, combine_losses, fusion_loss, sft_loss

__all__ = ["FusionTrainer"]

TEACHER_KEY = "teachers"
FUSION_MASK_KEY = "fusion_mask"


class FusionTrainer(Trainer):
    """Trainer for sparse-target MinCE fusion.

    Args:
        model: the student (pivot) causal LM.
        args: a :class:`FusionConfig`.
        train_dataset: typically a :class:`fusion_train.fuse.data.FusionDataset`.
        data_collator: default :class:`FusionCollator` with the model's pad token id and the
            config's ``pad_to_multiple_of`` / ``fusion_positions``.
        teacher_names: names used in logs, pivot first (default: ``train_dataset.names``).
        Other keyword arguments go to ``transformers.Trainer``.

    Logged every ``logging_steps`` next to ``loss``: ``sft_loss``, ``fusion_loss``,
    ``choice_rate/<teacher>`` (share of fusion positions whose target came from that teacher) and
    ``topk_mass/<teacher>`` (mean retained top-k probability mass of that teacher's targets).
    """

    # compute_loss returns a per-micro-batch mean; let Trainer divide it by the accumulation steps
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model=None,
        args: Optional[FusionConfig] = None,
        train_dataset=None,
        data_collator=None,
        teacher_names: Optional[Sequence[str]] = None,
        **kwargs: Any,
    ) -> None:
        if args is None:
            raise ValueError("FusionTrainer needs a FusionConfig (args=...)")
        if not isinstance(args, FusionConfig):
            raise TypeError("FusionTrainer args must be a FusionConfig, got %s" % type(args).__name__)
        if data_collator is None:
            pad_id = getattr(getattr(model, "config", None), "pad_token_id", None)
            data_collator = FusionCollator(
                pad_token_id=pad_id if isinstance(pad_id, int) else 0,
                pad_to_multiple_of=args.pad_to_multiple_of,
                fusion_positions=args.fusion_positions,
            )
        super().__init__(model=model, args=args, train_dataset=train_dataset, data_collator=data_collator, **kwargs)
        if teacher_names is None:
            teacher_names = getattr(train_dataset, "names", None)
        self.teacher_names: Optional[List[str]] = list(teacher_names) if teacher_names is not None else None
        self._reset_fusion_metrics()
        from fusion_train.fused_output import FusedOutput

        self.fused_output = FusedOutput(args.fused_output_loss, args.fused_output_chunk_mb)

    # ---- loss ---------------------------------------------------------------------------------

    def _prepare_inputs(self, inputs: Dict[str, Any]) -> Dict[str, Any]:
        # Trainer casts floating inputs to the DeepSpeed dtype; teacher probabilities and CEs must
        # stay float32 (bf16 CEs would tie, bf16 probabilities lose the tail), so move them ourselves.
        teachers = inputs.pop(TEACHER_KEY, None)
        inputs = super()._prepare_inputs(inputs)
        if teachers is not None:
            device = self.args.device
            inputs[TEACHER_KEY] = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in teachers]
        return inputs

    def _fusion_options(self) -> Dict[str, Any]:
        """The fusion-loss keywords from the config, one spelling for the fused and the logits path."""
        args: FusionConfig = self.args
        return dict(fusion=args.fusion, granularity=args.granularity, include_pivot=args.include_pivot,
                    kind=args.distill_loss, tail=args.tail, temperature=args.temperature)

    def _fused_loss(self, model, inputs, labels, teachers, fusion_mask):
        """The loss from the decoder's hidden states (:mod:`fusion_train.fused_output`); None when the fused
        path cannot run on this model (FSDP, ZeRO-3, no decoder body, a first-batch check that failed)."""
        from fusion_train.fused_output import fused_fusion_loss

        args: FusionConfig = self.args
        got = self.fused_output.hidden(model, self, **inputs)
        if got is None:
            return None
        hidden, head, outputs = got
        use_fusion = args.lambda_sft < 1.0
        with self.fused_output.autocast(self):  # the model's own output layer would run under --bf16's autocast
            fused = fused_fusion_loss(
                hidden,
                head,
                teachers if use_fusion else None,
                labels=labels,
                lambda_sft=args.lambda_sft,
                mask=fusion_mask,
                chunk_mb=args.fused_output_chunk_mb,
                **self._fusion_options(),
            )
        fusion_value = fused.fusion if use_fusion else torch.zeros((), device=hidden.device)
        return fused.loss, fused.sft, fusion_value, (fused if use_fusion else None), outputs

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        """``lambda_sft * SFT + (1 - lambda_sft) * fusion``; records the parts for logging."""
        args: FusionConfig = self.args
        teachers = [TeacherTargets.from_dict(t) for t in inputs.pop(TEACHER_KEY)]
        fusion_mask = inputs.pop(FUSION_MASK_KEY)
        labels = inputs.pop("labels")
        result = self._fused_loss(model, inputs, labels, teachers, fusion_mask) if args.fused_output_loss else None
        if result is not None:
            loss, sft, fusion_value, fused, outputs = result
        else:
            loss, sft, fusion_value, fused, outputs = self._logits_loss(model, inputs, labels, teachers, fusion_mask)
        if model.training:
            self._record(sft, fusion_value, fused, teachers, fusion_mask)
        if return_outputs:
            outputs.loss = loss
            return loss, outputs
        return loss

    def _logits_loss(self, model, inputs, labels, teachers, fusion_mask):
        """The loss from the model's ``[B, L, V]`` logits (``fused_output_loss=False``)."""
        args: FusionConfig = self.args
        outputs = model(**inputs, use_cache=False)
        logits = outputs.logits
        if args.lambda_sft < 1.0:
            # SFT and fusion share one gather of the student's log-probabilities (one dense backward)
            fused = fusion_loss(logits, teachers, mask=fusion_mask, labels=labels, **self._fusion_options())
            sft, fusion_value = fused.sft, fused.loss
        else:
            fused = None
            sft = sft_loss(logits, labels)
            fusion_value = torch.zeros((), device=logits.device)
        return combine_losses(sft, fusion_value, args.lambda_sft), sft, fusion_value, fused, outputs

    # ---- logging ------------------------------------------------------------------------------

    def _reset_fusion_metrics(self) -> None:
        self._fm_steps = 0
        self._fm_sft = None
        self._fm_fusion = None
        self._fm_counts = None
        self._fm_positions = None
        self._fm_mass = None

    @torch.no_grad()
    def _record(self, sft, fusion_value, fused, teachers: Sequence[TeacherTargets], mask) -> None:
        # accumulate on device; converted to floats only when logging (no per-step sync)
        n = len(teachers)
        weight = mask.float()
        mass = torch.stack([(t.mass.float() * weight).sum() for t in teachers])
        counts = fused.choice_counts.float() if fused is not None else torch.zeros(n, device=sft.device)
        positions = weight.sum()
        if self._fm_steps == 0:
            self._fm_sft = sft.detach().float()
            self._fm_fusion = fusion_value.detach().float()
            self._fm_counts, self._fm_positions, self._fm_mass = counts, positions, mass
        else:
            self._fm_sft = self._fm_sft + sft.detach().float()
            self._fm_fusion = self._fm_fusion + fusion_value.detach().float()
            self._fm_counts = self._fm_counts + counts
            self._fm_positions = self._fm_positions + positions
            self._fm_mass = self._fm_mass + mass
        self._fm_steps += 1

    def _fusion_logs(self) -> Dict[str, float]:
        packed = torch.cat(
            [
                torch.stack([self._fm_sft, self._fm_fusion, self._fm_positions.float()]),
                self._fm_counts.float(),
                self._fm_mass.float(),
            ]
        )
        steps = torch.tensor([float(self._fm_steps)], device=packed.device)
        packed = torch.cat([packed, steps])
        if self.accelerator.num_processes > 1:
            packed = self.accelerator.reduce(packed, reduction="sum")
        values = packed.tolist()
        n = len(self._fm_counts)
        steps_total = max(values[-1], 1.0)
        positions = max(values[2], 1.0)
        choice_total = max(sum(values[3 : 3 + n]), 1.0)
        names = self.teacher_names if self.teacher_names and len(self.teacher_names) == n else [
            "teacher%d" % i for i in range(n)
        ]
        logs = {"sft_loss": round(values[0] / steps_total, 6), "fusion_loss": round(values[1] / steps_total, 6)}
        for i, name in enumerate(names):
            logs["choice_rate/%s" % name] = round(values[3 + i] / choice_total, 6)
        for i, name in enumerate(names):
            logs["topk_mass/%s" % name] = round(values[3 + n + i] / positions, 6)
        return logs

    def log(self, logs: Dict[str, float], start_time: Optional[float] = None) -> None:
        """Adds the fusion metrics accumulated since the last training log to a training log."""
        if "loss" in logs and self._fm_steps > 0:
            logs.update(self._fusion_logs())
            self._reset_fusion_metrics()
        super().log(logs, start_time)
