"""The two trainer options of the fused output loss, shared by every trainer config (``FusionConfig``,
``PreferenceConfig``, ``SFTConfig``): one definition of their flags, defaults and help."""
from __future__ import annotations

from dataclasses import field

from tokalign.errors import TokalignError

#: memory budget (MB) of one chunk's temporaries (logits, probabilities, their gradient)
DEFAULT_CHUNK_MB = 256.0


def fused_output_loss_field():
    """``fused_output_loss: bool`` (default True)."""
    return field(default=True, metadata={
        "help": "compute the output layer and the loss together, chunk by chunk, from the model's hidden states: "
                "no [batch, length, vocab] logits (fusion_train.fused_output); false: the model's logits"})


def fused_output_chunk_mb_field():
    """``fused_output_chunk_mb: float`` (default :data:`DEFAULT_CHUNK_MB`)."""
    return field(default=DEFAULT_CHUNK_MB,
                 metadata={"help": "memory budget (MB) of one chunk of the fused output loss's temporaries"})


def check_chunk_mb(value: float) -> None:
    if value <= 0:
        raise TokalignError("fused_output_chunk_mb must be > 0, got %r" % value)
