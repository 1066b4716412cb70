"""Hidden states and the output layer of a ``transformers`` causal LM, for the fused losses.

:func:`forward_hidden` runs the model's own forward (so DDP's hooks and the model's pre-processing run as
usual) with ``logits_to_keep=1`` — logits for the last position only — and captures the decoder body's
final (normed) hidden states with a forward hook. :func:`output_head` reads the output layer: the weight
(the embedding's when tied, the same Parameter), the bias and the logit transform the config declares
(Gemma-2/3 ``final_logit_softcapping``, Cohere ``logit_scale``, Granite ``logits_scaling``).
:func:`head_mismatch` compares the model's own last-position logits with the head's on the captured
hidden states, so a model that does anything else to its logits is caught on the first batch.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
from typing import Any, Dict, Optional, Set, Tuple

import torch

from .kernel import DEFAULT_CHUNK_MB, OutputHead
from .losses import token_log_probs

__all__ = ["unwrap", "fuse_unsupported", "trainer_unsupported", "output_head", "forward_hidden", "head_mismatch",
           "fused_response_log_probs", "FusedOutput"]

logger = logging.getLogger(__name__)


def unwrap(model):
    """The ``PreTrainedModel`` inside DDP / DataParallel wrappers."""
    while hasattr(model, "module") and not hasattr(model, "get_output_embeddings"):
        model = model.module
    return model


def fuse_unsupported(model) -> Optional[str]:
    """Why the fused path cannot run on ``model`` (None when it can)."""
    inner = unwrap(model)
    name = type(inner).__name__
    if not hasattr(inner, "get_output_embeddings") or inner.get_output_embeddings() is None:
        return "%s has no output embeddings" % name
    if not isinstance(getattr(inner.get_output_embeddings(), "weight", None), torch.Tensor):
        return "%s's output layer has no weight tensor" % name
    decoder = inner.get_decoder() if hasattr(inner, "get_decoder") else None
    if decoder is None or decoder is inner:
        return "%s has no separate decoder body (get_decoder)" % name
    try:
        if "logits_to_keep" not in inspect.signature(inner.forward).parameters:
            return "%s's forward takes no logits_to_keep" % name
    except (TypeError, ValueError):
        return "%s's forward signature is unreadable" % name
    return None


def trainer_unsupported(trainer) -> Optional[str]:
    """Why a ``transformers.Trainer``'s setup rules the fused path out: FSDP and DeepSpeed ZeRO-3 shard the
    output layer's weight outside its module's forward, where the fused loss reads it."""
    if trainer is None:
        return None
    if getattr(trainer, "is_fsdp_enabled", False):
        return "FSDP shards the output layer's weight outside its forward"
    if getattr(trainer, "is_deepspeed_enabled", False):
        plugin = getattr(getattr(getattr(trainer, "accelerator", None), "state", None), "deepspeed_plugin", None)
        if getattr(plugin, "zero_stage", 0) == 3:
            return "DeepSpeed ZeRO-3 partitions the output layer's weight outside its forward"
    return None


def _text_config(config):
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def output_head(model) -> OutputHead:
    """The model's output layer as an :class:`OutputHead` (weight, bias, scale, soft-cap)."""
    inner = unwrap(model)
    layer = inner.get_output_embeddings()
    cfg = _text_config(inner.config)
    scale = 1.0
    logit_scale = getattr(cfg, "logit_scale", None)  # Cohere: logits * logit_scale
    if isinstance(logit_scale, (int, float)) and not isinstance(logit_scale, bool):
        scale *= float(logit_scale)
    logits_scaling = getattr(cfg, "logits_scaling", None)  # Granite: logits / logits_scaling
    if isinstance(logits_scaling, (int, float)) and not isinstance(logits_scaling, bool) and logits_scaling:
        scale /= float(logits_scaling)
    softcap = getattr(cfg, "final_logit_softcapping", None)
    return OutputHead(weight=layer.weight, bias=getattr(layer, "bias", None),
                      softcap=float(softcap) if softcap else None, scale=scale)


def forward_hidden(model, **inputs: Any) -> Tuple[torch.Tensor, Any]:
    """``(hidden [B, L, H], outputs)``: the decoder body's final hidden states and the model's outputs
    (``outputs.logits`` is ``[B, 1, V]``: the last position only)."""
    captured = []

    def hook(_module, _args, out):
        captured.append(out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0])

    handle = unwrap(model).get_decoder().register_forward_hook(hook)
    try:
        outputs = model(**inputs, use_cache=False, logits_to_keep=1)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError("the decoder body ran %d times in one forward" % len(captured))
    return captured[0], outputs


@torch.no_grad()
def head_mismatch(head: OutputHead, hidden: torch.Tensor, outputs) -> Optional[str]:
    """None when ``head`` applied to the last position of ``hidden`` reproduces the model's logits there."""
    theirs = outputs.logits[:, -1].float()
    ours = head.logits(hidden[:, -1].to(head.weight.dtype)).float()
    if ours.shape != theirs.shape:
        return "logits shape %s, the output layer gives %s" % (tuple(theirs.shape), tuple(ours.shape))
    low = head.weight.dtype != torch.float32 or torch.is_autocast_enabled(hidden.device.type)
    tol = (2e-2 if low else 1e-4) * max(1.0, float(theirs.abs().max()))
    err = float((ours - theirs).abs().max())
    if not err <= tol:
        return "the output layer's logits differ from the model's by %.3g (tolerance %.3g)" % (err, tol)
    return None


def fused_response_log_probs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                             response_mask: torch.Tensor, **kwargs: Any) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(token_logps [B, L-1], mask [B, L-1])`` of ``model`` on a batch, like
    :func:`fusion_train.preference.trainer.policy_forward`, without ``[B, L, V]`` logits."""
    hidden, _ = forward_hidden(model, input_ids=input_ids, attention_mask=attention_mask)
    return token_log_probs(hidden, output_head(model), input_ids, response_mask, **kwargs)


class FusedOutput:
    """A trainer's switch for the fused output loss (``fused_output_loss`` / ``fused_output_chunk_mb``).

    Decides once per model whether the fused path can run (:func:`trainer_unsupported`,
    :func:`fuse_unsupported`) and checks the output layer against the model's own logits on the model's first
    batch (:func:`head_mismatch`); either failing logs one warning and the caller falls back to the logits.
    """

    def __init__(self, enabled: bool = True, chunk_mb: float = DEFAULT_CHUNK_MB) -> None:
        self.enabled = bool(enabled)
        self.chunk_mb = float(chunk_mb)
        self._off: Dict[int, str] = {}  # id(model) -> "" (fused) or why not
        self._checked: Set[int] = set()

    def off_reason(self, model, trainer=None) -> Optional[str]:
        """None when the fused path runs on ``model``, else why not."""
        if not self.enabled:
            return "fused_output_loss is off"
        key = id(unwrap(model))
        if key not in self._off:
            reason = trainer_unsupported(trainer) or fuse_unsupported(model)
            self._off[key] = reason or ""
            if reason:
                logger.warning("fused_output_loss: %s; computing the loss from the model's logits", reason)
        return self._off[key] or None

    def hidden(self, model, trainer=None, **inputs: Any) -> Optional[Tuple[torch.Tensor, OutputHead, Any]]:
        """``(hidden [B, L, H], head, outputs)`` from one forward of ``model`` on ``inputs``; None when the
        fused path is off for it or the output layer disagrees with the model's logits (first batch)."""
        if self.off_reason(model, trainer) is not None:
            return None
        hidden, outputs = forward_hidden(model, **inputs)
        head = output_head(model)
        key = id(unwrap(model))
        if key not in self._checked:
            self._checked.add(key)
            with self.autocast(trainer):
                reason = head_mismatch(head, hidden, outputs)
            if reason:
                self._off[key] = "%s: %s" % (type(unwrap(model)).__name__, reason)
                logger.warning("fused_output_loss: %s; computing the loss from the model's logits", self._off[key])
                return None
        return hidden, head, outputs

    @staticmethod
    def autocast(trainer=None):
        """The mixed precision the model's forward runs under: accelerate wraps the model's forward in autocast
        (``--bf16`` / ``--fp16``), not ``compute_loss``, so the fused output layer enters it itself, to run its
        matmuls in the same dtype as the model's own output layer would."""
        accelerator = getattr(trainer, "accelerator", None)
        return accelerator.autocast() if accelerator is not None else contextlib.nullcontext()

    def response_log_probs(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           response_mask: torch.Tensor, trainer=None) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """``(token_logps [B, L-1], mask [B, L-1])`` as :func:`fusion_train.preference.trainer.policy_forward`
        returns them, or None: then call ``policy_forward``."""
        got = self.hidden(model, trainer, input_ids=input_ids, attention_mask=attention_mask)
        if got is None:
            return None
        hidden, head, _ = got
        with self.autocast(trainer):
            return token_log_probs(hidden, head, input_ids, response_mask, chunk_mb=self.chunk_mb)
