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

import inspect
from typing import Any, Optional, Tuple

import torch

from .kernel import OutputHead
from .losses import token_log_probs

__all__ = ["unwrap", "fuse_unsupported", "output_head", "forward_hidden", "head_mismatch",
           "fused_response_log_probs"]


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
    low = head.weight.dtype != torch.float32
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
