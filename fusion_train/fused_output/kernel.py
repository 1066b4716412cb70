"""The fused output layer: log-probabilities at chosen ids straight from hidden states, chunk by chunk.

``logits = transform(hidden @ weight.T + bias)`` (``transform``: an optional scale, then Gemma-2's
``cap * tanh(z / cap)``) is computed for a chunk of positions at a time, reduced to what the losses need —
the log-sum-exp and ``log_softmax(logits)[ids]`` — and dropped; no ``[N, V]`` tensor outlives a chunk.
Every loss of :mod:`fusion_train.fuse.losses` (SFT, sparse CE / KL with every tail, MinCE) and the
preference log-probabilities is a function of those gathered log-probabilities ``logq [N, J]`` alone, so
the loss math itself is reused unchanged on top.

Two autograd functions, one chunk routine:

* :func:`log_probs_at` -- returns ``logq [N, J]``; the backward recomputes each chunk's logits
  (4 matmuls per chunk in all instead of 3). Any downstream use: per-sequence sums for DPO / WRPO, ...
* :func:`linear_loss` -- for a scalar loss that is a sum of per-chunk terms (every loss here: positions
  are independent once the normalisers are known). The forward computes each chunk's ``d loss / d logq``
  with a small autograd graph on ``[C, J]``, and with it the chunk's gradients of the hidden states,
  weight and bias, so the backward only scales them (Liger-Kernel's trick: 3 matmuls, like the unfused path).

Math in float32 whatever the inputs' dtype; the matmuls run in the inputs' dtype (or autocast's), the
weight gradient is accumulated over chunks in float32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ["OutputHead", "DEFAULT_CHUNK_MB", "chunk_rows_for", "log_probs_at", "linear_loss"]

from .options import DEFAULT_CHUNK_MB  # noqa: E402  (one definition, shared with the configs)


@dataclass(frozen=True)
class OutputHead:
    """A model's output layer: ``weight [V, H]`` (tied or not), ``bias [V]`` or None, ``scale`` multiplying
    the logits (Cohere's ``logit_scale``, Granite's ``1 / logits_scaling``) and ``softcap`` (Gemma-2's
    ``final_logit_softcapping``: ``cap * tanh(logits / cap)``, applied after the scale)."""

    weight: torch.Tensor
    bias: Optional[torch.Tensor] = None
    softcap: Optional[float] = None
    scale: float = 1.0

    @property
    def vocab(self) -> int:
        return int(self.weight.shape[0])

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The unfused logits ``[..., V]``, in the matmul's dtype, ops in the order the models apply them."""
        out = F.linear(hidden, self.weight, self.bias)
        if self.scale != 1.0:
            out = out * self.scale
        if self.softcap:
            out = torch.tanh(out / self.softcap) * self.softcap
        return out


def chunk_rows_for(vocab: int, chunk_mb: float = DEFAULT_CHUNK_MB, *, low_precision: bool = False,
                   softcap: bool = False) -> int:
    """Positions per chunk so that the chunk's ``[C, V]`` temporaries stay within ``chunk_mb``: one float32
    logits buffer (reused in place for the softmax and its gradient), plus the low-precision matmul output
    and the soft-cap derivative where they exist."""
    per_row = vocab * (4 + (2 if low_precision else 0) + (4 if softcap else 0))
    return max(1, int(chunk_mb * (1 << 20)) // max(per_row, 1))


def _mm_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    dev = hidden.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return torch.promote_types(hidden.dtype, weight.dtype)


class _Chunks:
    """What every chunk shares: the weight (and bias) in the matmul dtype and the output transform."""

    def __init__(self, hidden, weight, bias, scale, softcap, rows, mm_dtype):
        self.hidden, self.weight, self.bias = hidden, weight, bias
        self.scale, self.softcap, self.rows, self.mm = float(scale), softcap, int(rows), mm_dtype
        # one cast of the weight per call (autocast would cast it per matmul)
        self.w = weight if weight.dtype == mm_dtype else weight.to(mm_dtype)
        self.b = None if bias is None else (bias if bias.dtype == mm_dtype else bias.to(mm_dtype))
        # float32 at least (float64 inputs stay float64: gradcheck)
        self.acc = torch.promote_types(mm_dtype, torch.float32)

    def ranges(self):
        n = self.hidden.shape[0]
        for start in range(0, n, self.rows):
            yield start, min(start + self.rows, n)

    def logits(self, start: int, stop: int, want_deriv: bool):
        """float32 logits ``z [C, V]`` of the chunk and ``dz/dx`` (a tensor with soft-capping, else None)."""
        x = F.linear(self.hidden[start:stop].to(self.mm), self.w, self.b)
        z = x if x.dtype == self.acc else x.to(self.acc)
        del x
        if self.scale != 1.0:
            z.mul_(self.scale)
        deriv = None
        if self.softcap:
            z.div_(self.softcap).tanh_()
            if want_deriv:  # d(cap * tanh(s x / cap)) / dx = s (1 - tanh^2)
                deriv = torch.mul(z, z).neg_().add_(1.0)
                if self.scale != 1.0:
                    deriv.mul_(self.scale)
            z.mul_(self.softcap)
        return z, deriv

    def backprop(self, e, deriv, start, stop, grad_h, grad_w, grad_b, scratch):
        """``e [C, V]`` holds d loss / d logits of the chunk: chain through the transform, then write the
        hidden-state rows and add to the weight / bias gradients (float32 accumulators)."""
        if deriv is not None:
            e.mul_(deriv)
        elif self.scale != 1.0:
            e.mul_(self.scale)
        h = self.hidden[start:stop].to(self.mm)
        e_mm = e if self.mm == self.acc else e.to(self.mm)
        if grad_h is not None:
            grad_h[start:stop] = e_mm @ self.w
        if grad_w is not None:
            if e_mm.dtype == grad_w.dtype:
                grad_w.addmm_(e_mm.t(), h)
            else:  # low-precision matmul, float32 sum over chunks
                torch.mm(e_mm.t(), h, out=scratch)
                grad_w.add_(scratch)
        if grad_b is not None:
            grad_b.add_(e.sum(0))

    def buffers(self, needs):
        """Float32 weight / bias accumulators, the hidden-state gradient, the low-precision scratch."""
        h, w, b = self.hidden, self.weight, self.bias
        grad_h = torch.zeros_like(h) if needs[0] else None
        grad_w = torch.zeros(w.shape, dtype=self.acc, device=w.device) if needs[1] else None
        grad_b = torch.zeros(b.shape, dtype=self.acc, device=b.device) if b is not None and needs[2] else None
        scratch = None
        if grad_w is not None and self.mm != self.acc and h.shape[0]:
            scratch = torch.empty(w.shape, dtype=self.mm, device=w.device)
        return grad_h, grad_w, grad_b, scratch


def _shift_exp_(z: torch.Tensor, ids: torch.Tensor):
    """In place ``z <- exp(z - max)``; returns ``(lse [C], logq [C, J], sum [C, 1])`` with
    ``softmax = z / sum`` afterwards."""
    m = z.max(-1, keepdim=True).values
    z.sub_(m)
    picked = z.gather(-1, ids)
    z.exp_()
    s = z.sum(-1, keepdim=True)
    log_s = s.log()
    return (m + log_s).squeeze(-1), picked - log_s, s


def _grad_logits_(e: torch.Tensor, s: Optional[torch.Tensor], ids: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """In place: ``e`` = exp(z - c) with ``softmax = e / s`` (``s`` None: already the softmax) becomes
    ``d/dz sum_j g_j logq_j = scatter(g) - sum(g) * softmax``."""
    coef = -g.sum(-1, keepdim=True)
    e.mul_(coef if s is None else coef / s)
    e.scatter_add_(-1, ids, g)
    return e


def _out_grads(ctx_hidden_dtype, ctx_weight_dtype, grad_h, grad_w, grad_b, bias_dtype):
    gw = None if grad_w is None else (grad_w if grad_w.dtype == ctx_weight_dtype else grad_w.to(ctx_weight_dtype))
    gb = None if grad_b is None else (grad_b if grad_b.dtype == bias_dtype else grad_b.to(bias_dtype))
    return grad_h, gw, gb


class _LogProbsAt(torch.autograd.Function):
    """``logq [N, J]`` forward; backward recomputes each chunk's logits."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, ids, scale, softcap, rows, mm_dtype):
        chunks = _Chunks(hidden, weight, bias, scale, softcap, rows, mm_dtype)
        n = hidden.shape[0]
        out = torch.empty(n, ids.shape[1], dtype=chunks.acc, device=hidden.device)
        lse = torch.empty(n, dtype=chunks.acc, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):
            for start, stop in chunks.ranges():
                z, _ = chunks.logits(start, stop, want_deriv=False)
                lse[start:stop], out[start:stop], _ = _shift_exp_(z, ids[start:stop])
                del z
        ctx.save_for_backward(hidden, weight, bias, ids, lse)
        ctx.params = (scale, softcap, rows, mm_dtype)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, bias, ids, lse = ctx.saved_tensors
        chunks = _Chunks(hidden, weight, bias, *ctx.params)
        grad_h, grad_w, grad_b, scratch = chunks.buffers(ctx.needs_input_grad)
        g_all = grad_out.to(chunks.acc)
        with torch.autocast(hidden.device.type, enabled=False):
            for start, stop in chunks.ranges():
                z, deriv = chunks.logits(start, stop, want_deriv=True)
                e = z.sub_(lse[start:stop, None]).exp_()  # the softmax
                _grad_logits_(e, None, ids[start:stop], g_all[start:stop])
                chunks.backprop(e, deriv, start, stop, grad_h, grad_w, grad_b, scratch)
                del z, e, deriv
        gh, gw, gb = _out_grads(hidden.dtype, weight.dtype, grad_h, grad_w, grad_b,
                                None if bias is None else bias.dtype)
        return gh, gw, gb, None, None, None, None, None


class _LinearLoss(torch.autograd.Function):
    """Scalar loss (and detached parts) forward, gradients computed in the forward; backward scales them."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, ids, scale, softcap, rows, mm_dtype, chunk_loss, n_parts, needs):
        chunks = _Chunks(hidden, weight, bias, scale, softcap, rows, mm_dtype)
        want_grad = any(needs)
        grad_h, grad_w, grad_b, scratch = chunks.buffers(needs)
        total = torch.zeros((), dtype=chunks.acc, device=hidden.device)
        parts = torch.zeros(n_parts, dtype=chunks.acc, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):
            for start, stop in chunks.ranges():
                ids_c = ids[start:stop]
                z, deriv = chunks.logits(start, stop, want_deriv=want_grad)
                _, logq, s = _shift_exp_(z, ids_c)
                with torch.enable_grad():
                    lq = logq.detach().requires_grad_(want_grad)
                    value, part = chunk_loss(lq, start, stop)
                    g = None
                    if want_grad and value.requires_grad:
                        (g,) = torch.autograd.grad(value, lq, allow_unused=True)
                total += value.detach().to(chunks.acc)
                if n_parts:
                    parts += part.detach().to(chunks.acc)
                if want_grad:
                    g = torch.zeros_like(logq) if g is None else g.to(chunks.acc)
                    _grad_logits_(z, s, ids_c, g)
                    chunks.backprop(z, deriv, start, stop, grad_h, grad_w, grad_b, scratch)
                del z, deriv
        ctx.grads = _out_grads(hidden.dtype, weight.dtype, grad_h, grad_w, grad_b,
                               None if bias is None else bias.dtype)
        ctx.mark_non_differentiable(parts)
        return total, parts

    @staticmethod
    def backward(ctx, grad_total, grad_parts):
        grads = ctx.grads
        if grads is None:
            raise RuntimeError("linear_loss computed its gradients in the forward and has handed them out: "
                               "backward through it runs once (recompute the loss, or use log_probs_at)")
        # dropped here so that autograd can take the weight gradient as .grad instead of copying it
        ctx.grads = None
        if not torch.equal(grad_total, torch.ones_like(grad_total)):
            grads = tuple(None if g is None else g * grad_total.to(g.dtype) for g in grads)
        return (*grads, None, None, None, None, None, None, None, None)


def _prepare(hidden, head: OutputHead, ids, chunk_mb, chunk_rows):
    if hidden.dim() != 2:
        raise ValueError("hidden must be [N, H] (the selected positions), got %s" % (tuple(hidden.shape),))
    if ids.dim() != 2 or ids.shape[0] != hidden.shape[0]:
        raise ValueError("ids %s do not match hidden %s" % (tuple(ids.shape), tuple(hidden.shape)))
    if head.weight.shape[1] != hidden.shape[1]:
        raise ValueError("weight %s does not match hidden %s" % (tuple(head.weight.shape), tuple(hidden.shape)))
    mm = _mm_dtype(hidden, head.weight)
    rows = chunk_rows or chunk_rows_for(head.vocab, chunk_mb, low_precision=mm != torch.float32,
                                        softcap=bool(head.softcap))
    return ids.clamp_min(0).long(), mm, rows


def log_probs_at(hidden: torch.Tensor, head: OutputHead, ids: torch.Tensor, *,
                 chunk_mb: float = DEFAULT_CHUNK_MB, chunk_rows: Optional[int] = None) -> torch.Tensor:
    """``log_softmax(head.logits(hidden))[n, ids[n, j]]`` ``[N, J]`` (float32; float64 for float64 inputs),
    differentiable w.r.t. the hidden states, weight and bias, never holding more than one chunk of ``[C, V]``.

    ``hidden [N, H]`` the selected positions; ``ids [N, J]`` (``< 0`` allowed: the value there is
    meaningless, mask it). Gather every id a loss needs in one call (the backward recomputes the logits once
    per call).
    """
    ids_l, mm, rows = _prepare(hidden, head, ids, chunk_mb, chunk_rows)
    return _LogProbsAt.apply(hidden, head.weight, head.bias, ids_l, head.scale, head.softcap, rows, mm)


ChunkLoss = Callable[[torch.Tensor, int, int], Tuple[torch.Tensor, torch.Tensor]]


def linear_loss(hidden: torch.Tensor, head: OutputHead, ids: torch.Tensor, chunk_loss: ChunkLoss, *,
                n_parts: int = 0, chunk_mb: float = DEFAULT_CHUNK_MB, chunk_rows: Optional[int] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """A scalar loss ``sum over chunks of chunk_loss(logq_c, start, stop)[0]`` and its detached parts.

    ``chunk_loss(logq [C, J], start, stop) -> (value, parts [n_parts])`` gets the chunk's student
    log-probabilities at ``ids[start:stop]`` (float32, differentiable) and returns its (already normalised)
    contribution to the loss; it must not mix positions of different chunks. The gradients w.r.t. the hidden
    states, weight and bias are computed here, in the forward (no logits recomputed in the backward); under
    ``torch.no_grad`` only the value is computed.
    """
    ids_l, mm, rows = _prepare(hidden, head, ids, chunk_mb, chunk_rows)
    grad_on = torch.is_grad_enabled()
    bias = head.bias
    needs = (grad_on and hidden.requires_grad, grad_on and head.weight.requires_grad,
             grad_on and bias is not None and bias.requires_grad)
    return _LinearLoss.apply(hidden, head.weight, bias, ids_l, head.scale, head.softcap, rows, mm, chunk_loss,
                             n_parts, needs)
