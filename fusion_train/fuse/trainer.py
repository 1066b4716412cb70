"""``FusionTrainer``: a plain ``transformers.Trainer`` whose loss is ``lambda * SFT + (1 - lambda) * MinCE
fusion`` against sparse teacher targets (FuseChat / FuseLLM ``DistillTrainer``, without dense targets).

Because only ``compute_loss`` (and logging) change, everything else — torchrun / accelerate,
DeepSpeed, FSDP, gradient accumulation, checkpointing and resuming — is Trainer's own.

How it matches FuseChat's ``DistillTrainer.compute_loss`` (``distill_greater_as_gt``, type "hard"):

- SFT: the causal-LM cross-entropy over ``labels != -100`` (FuseChat: the model's own loss). We gather
  it together with the fusion targets from the logits
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
- Normalisation (``loss_normalization``). ``"global"`` (the default): each part is a token mean over the
  **whole optimizer step** — every micro-batch of the accumulation window and every process
  (:meth:`FusionTrainer.get_batch_samples` counts the SFT labels and the fusion positions of the step with
  :func:`~fusion_train.fuse.losses.loss_counts` and all-reduces them), so a step's gradient does not depend on
  how its batch is split: ``torchrun --nproc_per_node 2`` with half the per-device batch, or gradient
  accumulation 2 x 4 instead of 8, give the same loss as one batch. ``"micro_batch"``: FuseChat's semantics —
  each micro-batch's own mean, divided by the accumulation steps and averaged over processes (micro-batches
  with fewer tokens weigh as much as full ones). Both are the same with one process and no accumulation.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch
from transformers import Trainer

from .config import FusionConfig
from .data import FusionCollator
from .losses import TeacherTargets, combine_losses, fusion_loss, loss_counts, sft_loss

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

    @property
    def loss_is_scaled_for_ga(self) -> bool:
        # "global": normalised by the step's counts already; "micro_batch": Trainer divides by the accumulation steps
        return self.args.loss_normalization == "global"

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

    def _counts(self, labels, teachers, fusion_mask) -> torch.Tensor:
        """``[sft_count, fusion_count]`` of one micro-batch (the denominators of its two loss parts)."""
        args: FusionConfig = self.args
        use_fusion = args.lambda_sft < 1.0
        return loss_counts(labels, teachers if use_fusion else None, mask=fusion_mask, fusion=args.fusion,
                           granularity=args.granularity, include_pivot=args.include_pivot, tail=args.tail,
                           temperature=args.temperature)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Trainer prefetches one optimizer step's micro-batches here; with ``loss_normalization="global"`` the
        step's ``[sft_count, fusion_count]`` summed over them and over the processes rides along as
        ``num_items_in_batch``."""
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.args.loss_normalization != "global" or not batch_samples:
            return batch_samples, num_items
        total = sum(
            self._counts(b["labels"], [TeacherTargets.from_dict(t) for t in b[TEACHER_KEY]], b[FUSION_MASK_KEY])
            for b in batch_samples
        ).to(device)
        if self.accelerator.num_processes > 1:
            total = self.accelerator.gather(total.unsqueeze(0)).sum(0)
        return batch_samples, total

    def _normalizers(self, num_items_in_batch) -> Dict[str, Any]:
        """The step's counts per process (DDP averages the processes' gradients), as the losses' denominators."""
        if num_items_in_batch is None or self.args.loss_normalization != "global":
            return {}  # evaluation, or micro-batch means
        per_process = num_items_in_batch.clamp_min(1.0) / self.accelerator.num_processes
        return {"sft_normalizer": per_process[0], "fusion_normalizer": per_process[1]}

    def _fused_loss(self, model, inputs, labels, teachers, fusion_mask, normalizers):
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
                **normalizers,
            )
        fusion_value = fused.fusion if use_fusion else torch.zeros((), device=hidden.device)
        return fused.loss, fused.sft, fusion_value, (fused if use_fusion else None), outputs

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        """``lambda_sft * SFT + (1 - lambda_sft) * fusion``; records the parts for logging."""
        args: FusionConfig = self.args
        teachers = [TeacherTargets.from_dict(t) for t in inputs.pop(TEACHER_KEY)]
        fusion_mask = inputs.pop(FUSION_MASK_KEY)
        labels = inputs.pop("labels")
        norms = self._normalizers(num_items_in_batch)
        result = None
        if args.fused_output_loss:
            result = self._fused_loss(model, inputs, labels, teachers, fusion_mask, norms)
        if result is None:
            result = self._logits_loss(model, inputs, labels, teachers, fusion_mask, norms)
        loss, sft, fusion_value, fused, outputs = result
        if model.training:
            self._record(sft, fusion_value, fused, teachers, fusion_mask)
        if return_outputs:
            outputs.loss = loss
            return loss, outputs
        return loss

    def _logits_loss(self, model, inputs, labels, teachers, fusion_mask, normalizers):
        """The loss from the model's ``[B, L, V]`` logits (``fused_output_loss=False``)."""
        args: FusionConfig = self.args
        outputs = model(**inputs, use_cache=False)
        logits = outputs.logits
        if args.lambda_sft < 1.0:
            # SFT and fusion share one gather of the student's log-probabilities (one dense backward)
            fused = fusion_loss(logits, teachers, mask=fusion_mask, labels=labels, **self._fusion_options(),
                                **normalizers)
            sft, fusion_value = fused.sft, fused.loss
        else:
            fused = None
            sft = sft_loss(logits, labels, normalizer=normalizers.get("sft_normalizer"))
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
        # the logged parts average like Trainer's logged loss: per optimizer step ("global": a step's micro-batch
        # parts add up to its mean) or per micro-batch ("micro_batch": each part is its micro-batch's mean)
        steps = getattr(self, "current_gradient_accumulation_steps", 1)  # set by Trainer's loop per optimizer step
        unit = 1.0 / max(steps, 1) if self.loss_is_scaled_for_ga else 1.0
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
        self._fm_steps += unit

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
