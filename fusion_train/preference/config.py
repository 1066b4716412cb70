"""Configs of the preference and conditioned trainers: ``transformers.TrainingArguments`` plus their options.

Being TrainingArguments subclasses, they go wherever Trainer's arguments go (torchrun, accelerate, DeepSpeed,
FSDP, ``HfArgumentParser``); ``fusion-train sft|dpo|wrpo|crlft`` build their flags from these fields.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, Optional

from transformers import TrainingArguments

from tokalign.errors import TokalignError

from ..fused_output.options import check_chunk_mb, fused_output_chunk_mb_field, fused_output_loss_field

__all__ = ["PreferenceConfig", "SFTConfig", "CRLFTConfig", "LOSSES", "REFERENCES", "PLACEMENTS"]

logger = logging.getLogger(__name__)

LOSSES = ("dpo", "ln_dpo", "wrpo")
REFERENCES = ("live", "precomputed")
PLACEMENTS = ("role", "system", "assistant")


def _keep_columns(args) -> None:
    # the batch carries masks and weights the model's forward does not take: never drop them
    if args.remove_unused_columns:
        logger.warning("remove_unused_columns=True would drop the response masks; using False")
        args.remove_unused_columns = False


@dataclass
class PreferenceConfig(TrainingArguments):
    """Training arguments for :class:`fusion_train.preference.trainer.PreferenceTrainer`.

    FuseChat-3.0: ``ln_dpo`` with β = 10 for Llama targets, ``dpo`` with β = 0.01 for Qwen / Gemma targets;
    WRPO: β = 0.01, α_end = 0.1 (dynamic), learning rate 3e-7.
    """

    loss: Literal["dpo", "ln_dpo", "wrpo"] = field(
        default="dpo", metadata={"help": "dpo, ln_dpo (length-normalised DPO) or wrpo (needs WRPO triples)"})
    beta: float = field(default=0.01, metadata={"help": "DPO / WRPO β (FuseChat-3.0: 0.01 DPO, 10 ln_dpo)"})
    alpha: float = field(default=0.1, metadata={"help": "WRPO α_end, the final weight of the source response"})
    alpha_dynamic: bool = field(
        default=True, metadata={"help": "WRPO α ramps linearly from 0 to alpha over the run (False: constant)"})
    label_smoothing: float = field(
        default=0.0, metadata={"help": "cDPO label smoothing ε in [0, 0.5): the preference is flipped with prob. ε"})
    max_length: Optional[int] = field(
        default=None, metadata={"help": "prompt + response tokens; longer responses are cut at the end (counted)"})
    max_prompt_length: Optional[int] = field(
        default=None, metadata={"help": "longer prompts keep their last tokens (counted); unset: a prompt that "
                                        "leaves no room under max_length is an error"})
    reference: Literal["live", "precomputed"] = field(
        default="precomputed",
        metadata={"help": "precomputed: reference log-probs from one no-grad pass, stored beside the data (one "
                          "model in memory); live: a frozen copy of the starting model"})
    pad_to_multiple_of: Optional[int] = field(
        default=None, metadata={"help": "pad batches to a multiple of this length (e.g. 8 for tensor cores)"})
    fused_output_loss: bool = fused_output_loss_field()
    fused_output_chunk_mb: float = fused_output_chunk_mb_field()
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "kept False: the batch carries masks the model does not take"})

    def __post_init__(self) -> None:
        check_chunk_mb(self.fused_output_chunk_mb)
        if self.loss not in LOSSES:
            raise TokalignError("loss must be one of %s, got %r" % (", ".join(LOSSES), self.loss))
        if self.beta <= 0:
            raise TokalignError("beta must be > 0, got %r" % self.beta)
        if not 0.0 <= self.alpha <= 1.0:
            raise TokalignError("alpha must be in [0, 1], got %r" % self.alpha)
        if not 0.0 <= self.label_smoothing < 0.5:
            raise TokalignError("label_smoothing must be in [0, 0.5), got %r" % self.label_smoothing)
        if self.reference not in REFERENCES:
            raise TokalignError("reference must be one of %s, got %r" % (", ".join(REFERENCES), self.reference))
        if self.max_length is not None and self.max_length < 2:
            raise TokalignError("max_length must be >= 2, got %r" % self.max_length)
        if self.max_prompt_length is not None and self.max_length is not None \
                and not 0 < self.max_prompt_length < self.max_length:
            raise TokalignError("max_prompt_length must be in [1, max_length), got %r" % self.max_prompt_length)
        if self.label_smoothing_factor:
            raise TokalignError("label_smoothing_factor is not used by preference losses; use label_smoothing")
        _keep_columns(self)
        super().__post_init__()

    @property
    def n_responses(self) -> int:
        return 3 if self.loss == "wrpo" else 2


@dataclass
class SFTConfig(TrainingArguments):
    """Training arguments for :class:`fusion_train.preference.trainer.WeightedSFTTrainer`: SFT on the assistant
    tokens, normalised over the whole accumulated batch (every micro-batch and process)."""

    max_length: Optional[int] = field(
        default=None, metadata={"help": "truncate conversations to this many tokens (counted in the summary)"})
    per_sequence: bool = field(
        default=False, metadata={"help": "average each sequence over its own tokens first (default: token mean)"})
    pad_to_multiple_of: Optional[int] = field(
        default=None, metadata={"help": "pad batches to a multiple of this length (e.g. 8 for tensor cores)"})
    fused_output_loss: bool = fused_output_loss_field()
    fused_output_chunk_mb: float = fused_output_chunk_mb_field()
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "kept False: the batch carries masks the model does not take"})

    def __post_init__(self) -> None:
        check_chunk_mb(self.fused_output_chunk_mb)
        if self.max_length is not None and self.max_length < 2:
            raise TokalignError("max_length must be >= 2, got %r" % self.max_length)
        if self.label_smoothing_factor:
            raise TokalignError("label_smoothing_factor is not supported here (got %r)" % self.label_smoothing_factor)
        _keep_columns(self)
        super().__post_init__()


@dataclass
class CRLFTConfig(SFTConfig):
    """OpenChat's C-RLFT: class-conditioned, class-weighted SFT (docs/implicit.md)."""

    class_weights: Optional[str] = field(
        default=None, metadata={"help": "CLASS=WEIGHT,... (paper: GPT4=1,GPT3=0.1); every class in the data needs one"})
    class_key: str = field(
        default="class", metadata={"help": "row field naming the class; rows without it use their 'model' (source)"})
    placement: Literal["role", "system", "assistant"] = field(
        default="role",
        metadata={"help": "where the class tag goes: role (every turn's role prefix, OpenChat), system (one "
                          "leading tag line) or assistant (assistant prefixes only)"})
    end_of_turn: str = field(
        default="<|end_of_turn|>", metadata={"help": "end-of-turn special token (added if the tokenizer lacks it)"})

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise TokalignError("placement must be one of %s, got %r" % (", ".join(PLACEMENTS), self.placement))
        if not self.end_of_turn:
            raise TokalignError("end_of_turn must be a non-empty token")
        super().__post_init__()
