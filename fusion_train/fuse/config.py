"""``FusionConfig``: ``transformers.TrainingArguments`` plus the fusion options.

Being a TrainingArguments subclass, it goes wherever Trainer's arguments go (torchrun, accelerate,
DeepSpeed, FSDP, ``HfArgumentParser``); ``fusion-train fuse`` builds its flags from these fields.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, Optional

from transformers import TrainingArguments

from tokalign.errors import TokalignError

from ..fused_output.options import check_chunk_mb, fused_output_chunk_mb_field, fused_output_loss_field
from . import loss_registry
from .losses import GRANULARITIES, TAILS

__all__ = ["FusionConfig"]

logger = logging.getLogger(__name__)


@dataclass
class FusionConfig(TrainingArguments):
    """Training arguments for :class:`fusion_train.fuse.trainer.FusionTrainer`.

    Total loss ``lambda_sft * SFT + (1 - lambda_sft) * fusion`` (FuseChat: ``lm_loss_weight`` 0.9,
    ``distill_loss_type`` "ce", ``distill_teacher_temperature`` 1.0, ``distill_greater_as_gt``
    with "hard" = MinCE per sequence).
    """

    lambda_sft: float = field(
        default=0.9, metadata={"help": "weight of the SFT loss; the fusion loss gets 1 - lambda_sft (FuseChat: 0.9)"}
    )
    fusion: Literal["minCE", "pivot"] = field(
        default="minCE",
        metadata={"help": "minCE: the teacher with the lowest cross-entropy; pivot: always the pivot's own store"},
    )
    granularity: Literal["sequence", "token"] = field(
        default="sequence",
        metadata={"help": "MinCE per sequence (seq_ce, FuseChat) or per token (token_ce)"},
    )
    include_pivot: bool = field(
        default=True, metadata={"help": "the pivot's own store is a MinCE candidate (FuseChat distill_with_ref_model)"}
    )
    # choices and help come from the loss registry (HfArgumentParser passes metadata to add_argument)
    distill_loss: str = field(
        default="ce", metadata={"help": loss_registry.help_text(), "choices": loss_registry.names()}
    )
    tail: Literal["renormalize", "exact", "bucket"] = field(
        default="renormalize",
        metadata={
            "help": "mass outside the top-k: renormalize over the top-k (FuseChat), exact (keep exact "
            "probabilities), bucket (one extra 'rest' class)"
        },
    )
    temperature: float = field(
        default=1.0, metadata={"help": "teacher temperature (renormalize only), as FuseChat's distill_teacher_temperature"}
    )
    fusion_positions: Literal["all", "response"] = field(
        default="all",
        metadata={
            "help": "positions trained on the fusion loss: all real tokens (FuseChat: attention_mask) "
            "or only those predicting a response token (loss_mask)"
        },
    )
    on_missing: Literal["error", "skip"] = field(
        default="error", metadata={"help": "a pivot sample absent from a source store: error or skip (counted)"}
    )
    max_length: Optional[int] = field(default=None, metadata={"help": "truncate samples to this many tokens"})
    pad_to_multiple_of: Optional[int] = field(
        default=None, metadata={"help": "pad batches to a multiple of this length (e.g. 8 for tensor cores)"}
    )
    loss_normalization: Literal["global", "micro_batch"] = field(
        default="global",
        metadata={
            "help": "global: each loss part is a token mean over the whole optimizer step (all accumulated "
            "micro-batches and processes: the same loss however the batch is split); micro_batch: each "
            "micro-batch's own mean, averaged (FuseChat)"
        },
    )
    fused_output_loss: bool = fused_output_loss_field()
    fused_output_chunk_mb: float = fused_output_chunk_mb_field()
    # the batch carries sparse teacher targets the model's forward does not take: never drop them
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "kept False: the batch carries teacher targets the model does not take"}
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.lambda_sft <= 1.0:
            raise TokalignError("lambda_sft must be in [0, 1], got %r" % self.lambda_sft)
        if self.fusion not in ("minCE", "pivot"):
            raise TokalignError("fusion must be minCE or pivot, got %r" % self.fusion)
        if self.granularity not in GRANULARITIES:
            raise TokalignError("granularity must be one of %s, got %r" % (", ".join(GRANULARITIES), self.granularity))
        if self.distill_loss not in loss_registry.names():
            raise TokalignError(
                "distill_loss must be one of %s, got %r" % (", ".join(loss_registry.names()), self.distill_loss)
            )
        if self.tail not in TAILS:
            raise TokalignError("tail must be one of %s, got %r" % (", ".join(TAILS), self.tail))
        if self.temperature <= 0:
            raise TokalignError("temperature must be > 0, got %r" % self.temperature)
        if self.tail != "renormalize" and self.temperature != 1.0:
            raise TokalignError(
                "tail=%s keeps exact probabilities, known only at temperature 1 (got %r); "
                "use --tail renormalize with a temperature" % (self.tail, self.temperature)
            )
        if self.fusion_positions not in ("all", "response"):
            raise TokalignError("fusion_positions must be all or response, got %r" % self.fusion_positions)
        if self.loss_normalization not in ("global", "micro_batch"):
            raise TokalignError("loss_normalization must be global or micro_batch, got %r" % self.loss_normalization)
        if self.on_missing not in ("error", "skip"):
            raise TokalignError("on_missing must be error or skip, got %r" % self.on_missing)
        if self.max_length is not None and self.max_length < 2:
            raise TokalignError("max_length must be >= 2, got %r" % self.max_length)
        check_chunk_mb(self.fused_output_chunk_mb)
        if self.label_smoothing_factor:
            raise TokalignError("label_smoothing_factor is not supported by the fusion loss (got %r)" % self.label_smoothing_factor)
        if self.remove_unused_columns:
            logger.warning("remove_unused_columns=True would drop the teacher targets; using False")
            self.remove_unused_columns = False
        super().__post_init__()
