"""Fused output layer + loss (docs/fuse.md, "Fused output loss"): train on 128k–262k vocabularies without
ever holding ``[batch, length, vocab]`` logits.

* :mod:`~fusion_train.fused_output.kernel` -- :class:`OutputHead` and the chunked autograd functions
  (:func:`log_probs_at`, :func:`linear_loss`);
* :mod:`~fusion_train.fused_output.losses` -- SFT + MinCE fusion (:func:`fused_fusion_loss`), weighted SFT
  (:func:`fused_weighted_nll`), response / per-sequence log-probabilities for DPO / WRPO
  (:func:`token_log_probs`, :func:`fused_sequence_log_probs`);
* :mod:`~fusion_train.fused_output.model` -- hidden states and output layer of a ``transformers`` model
  (:func:`forward_hidden`, :func:`output_head`, :func:`fused_response_log_probs`) and :class:`FusedOutput`,
  a trainer's switch (what can run fused, the first-batch check, the fall-back).
"""
from .kernel import DEFAULT_CHUNK_MB, OutputHead, chunk_rows_for, linear_loss, log_probs_at
from .losses import (
    FusedFusionOutput,
    fused_fusion_loss,
    fused_sequence_log_probs,
    fused_weighted_nll,
    token_log_probs,
)
from .model import (
    FusedOutput,
    forward_hidden,
    fuse_unsupported,
    fused_response_log_probs,
    head_mismatch,
    output_head,
    trainer_unsupported,
    unwrap,
)

__all__ = [
    "DEFAULT_CHUNK_MB",
    "OutputHead",
    "chunk_rows_for",
    "linear_loss",
    "log_probs_at",
    "FusedFusionOutput",
    "fused_fusion_loss",
    "fused_sequence_log_probs",
    "fused_weighted_nll",
    "token_log_probs",
    "FusedOutput",
    "forward_hidden",
    "fuse_unsupported",
    "fused_response_log_probs",
    "head_mismatch",
    "output_head",
    "trainer_unsupported",
    "unwrap",
]
