"""Sparse-target distillation losses and MinCE fusion, in pure torch.

(About 430 lines on purpose: the tail modes, the registered losses and MinCE share one per-position function,
``_per_position``, which the fused output loss reuses too; splitting them would scatter that one definition.)

Every function here works on the student's logits ``[..., V]`` and sparse teacher targets
``ids [..., K]`` / ``probs [..., K]`` (``ids < 0`` marks an invalid slot) and never expands a
target to ``[..., V]``: the student's log-probabilities at the target ids are a ``gather`` minus
the student's log-sum-exp.

Targets are the teacher's *exact* top-k probabilities ``p_k = exp(logit_k - lse)`` (what
:class:`fusion_train.fuse.data.FusionCollator` yields); what happens to the probability mass outside
the top-k (the *tail*, ``1 - sum(p_k)``) is chosen explicitly with ``tail``:

``"renormalize"``
    ``p_k / sum(p)`` over the valid slots: the target is a distribution over the top-k only.
    This is FuseChat's / FuseLLM's behaviour (their collator applies ``softmax`` to the stored
    top-k logits). The teacher ``temperature`` applies here: ``softmax(logit_k / T)`` over
    the top-k equals ``p_k^(1/T) / sum(p^(1/T))`` because the teacher's log-sum-exp cancels.
``"exact"``
    keep the exact probabilities; the target sums to the retained mass (< 1) and the tail is
    simply not trained on.
``"bucket"``
    exact probabilities plus one extra "everything else" class: the teacher's tail mass is
    matched against the student's probability outside the top-k ids,
    ``log(1 - sum_k q(id_k))``. This makes ``kl`` a true KL divergence between the two
    distributions coarsened to ``top-k + 1`` classes (>= 0, 0 iff they agree there).

Top-k ids are assumed distinct within a position (``"bucket"`` sums the student's probability
over them). ``"exact"`` and ``"bucket"`` need the teacher's full log-sum-exp at the given temperature, which
the stores only hold at ``T = 1``; other temperatures are rejected for them.

MinCE fusion (FuseLLM / FuseChat, "minimum cross-entropy"): among the teachers (the pivot's own
store first, then the remapped sources), the target at a position is the one of the teacher with
the lowest cross-entropy on the gold text: per sequence (``seq_ce``, FuseChat's
``distill_greater_as_gt`` with ``metric_ce``) or per token (``token_ce``). See
:func:`min_ce_choice` for the exact tie and fallback rules and how they compare with the released
FuseChat trainer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .loss_registry import get as get_loss
from .loss_registry import register

__all__ = [
    "TAILS",
    "GRANULARITIES",
    "student_log_probs_at",
    "student_logsumexp",
    "target_log_probs",
    "sparse_cross_entropy",
    "sparse_kl_div",
    "sparse_distill_loss",
    "sft_loss",
    "min_ce_choice",
    "select_targets",
    "TeacherTargets",
    "FusionLossOutput",
    "fusion_loss",
    "combine_losses",
]

TAILS = ("renormalize", "exact", "bucket")
GRANULARITIES = ("sequence", "token")

# log(0) stand-in that stays finite under multiplication by 0 (0 * -inf = nan)
_NEG = -1e30
# keeps log(1 - sum q) finite when the student puts (numerically) all its mass on the top-k
_TAIL_EPS = 1e-12


def _chunk_rows(vocab: int) -> int:
    # ~64M elements (256 MB of float32) of temporaries per chunk, whatever the vocabulary size
    return max(1, (1 << 26) // max(vocab, 1))


def student_logsumexp(logits: torch.Tensor, chunk_rows: Optional[int] = None) -> torch.Tensor:
    """``logsumexp(logits.float(), -1)`` computed ``chunk_rows`` rows at a time (no gradient), float32."""
    flat = logits.detach().reshape(-1, logits.shape[-1])
    rows = chunk_rows or _chunk_rows(flat.shape[-1])
    out = torch.cat([torch.logsumexp(c.float(), dim=-1) for c in flat.split(rows)]) if flat.shape[0] else flat.new_zeros(0)
    return out.float().reshape(logits.shape[:-1])


class _GatherLogSoftmax(torch.autograd.Function):
    """``log_softmax(logits)[..., ids]`` without a ``[N, V]`` log-softmax in the autograd graph.

    Forward keeps only ``lse [N]`` (and a reference to the logits). Backward writes the gradient
    ``scatter(G) - sum(G) * softmax(x)`` straight into one tensor of the logits' shape, chunk by
    chunk, so the extra memory is that gradient plus one chunk of temporaries (autograd through
    ``log_softmax`` + ``gather`` would hold the log-softmax, a dense gather gradient and their sum).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, ids: torch.Tensor, chunk_rows: int):
        vocab = logits.shape[-1]
        flat = logits.reshape(-1, vocab)
        flat_ids = ids.reshape(flat.shape[0], -1).clamp_min(0).long()
        lse = student_logsumexp(flat, chunk_rows)
        out = flat.gather(-1, flat_ids).float() - lse.unsqueeze(-1)
        ctx.save_for_backward(logits, flat_ids, lse)
        ctx.chunk_rows = chunk_rows
        return out.reshape(ids.shape)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logits, flat_ids, lse = ctx.saved_tensors
        vocab = logits.shape[-1]
        flat = logits.reshape(-1, vocab)
        g = grad_out.reshape(flat_ids.shape).float()
        g_sum = g.sum(-1)
        grad = torch.empty_like(flat)
        rows = ctx.chunk_rows
        in_place = grad.dtype == torch.float32  # work directly in the gradient, no temporary
        for start in range(0, flat.shape[0], rows):
            stop = min(start + rows, flat.shape[0])
            if in_place:
                chunk = torch.sub(flat[start:stop], lse[start:stop, None], out=grad[start:stop])
            else:
                chunk = flat[start:stop].to(torch.float32, copy=True).sub_(lse[start:stop, None])
            chunk.exp_().mul_(-g_sum[start:stop, None])
            chunk.scatter_add_(-1, flat_ids[start:stop], g[start:stop])
            if not in_place:
                grad[start:stop].copy_(chunk)
        return grad.reshape(logits.shape), None, None


def student_log_probs_at(
    logits: torch.Tensor, ids: torch.Tensor, chunk_rows: Optional[int] = None
) -> torch.Tensor:
    """Student log-probabilities ``log_softmax(logits)[..., ids]``: float32, shape of ``ids``.

    ``logits [..., V]`` (any float dtype; math in float32), ``ids [..., J]`` (``-1`` allowed for
    invalid slots: their value is meaningless, mask them). Differentiable w.r.t. ``logits``
    with a memory-lean backward (:class:`_GatherLogSoftmax`). Gather all the ids a loss needs in
    one call (e.g. the label and the top-k) so that the backward builds one dense gradient.
    """
    rows = chunk_rows or _chunk_rows(logits.shape[-1])
    if ids.shape[:-1] != logits.shape[:-1]:
        raise ValueError("ids %s and logits %s disagree on leading dims" % (tuple(ids.shape), tuple(logits.shape)))
    return _GatherLogSoftmax.apply(logits, ids, rows)


def _check_tail(tail: str, temperature: float) -> None:
    if tail not in TAILS:
        raise ValueError("tail must be one of %s, got %r" % (", ".join(TAILS), tail))
    if temperature <= 0:
        raise ValueError("temperature must be > 0, got %r" % temperature)
    if tail != "renormalize" and temperature != 1.0:
        raise ValueError(
            "tail=%r keeps exact teacher probabilities, which the stores hold only at temperature 1 "
            "(got temperature=%r); use tail='renormalize' with a temperature" % (tail, temperature)
        )


def target_log_probs(
    ids: torch.Tensor, probs: torch.Tensor, *, tail: str = "renormalize", temperature: float = 1.0
):
    """Turn exact top-k probabilities into the training target.

    Returns ``(valid, logp, p, tail_mass)``: ``valid`` bool ``[..., K]``; ``logp`` / ``p`` float32
    ``[..., K]`` the target's log-probabilities / probabilities on the slots (``p = 0`` and
    ``logp`` a large negative number on invalid slots); ``tail_mass`` float32 ``[...]``
    (the teacher's mass outside the valid slots; 0 for ``"renormalize"``).
    """
    _check_tail(tail, temperature)
    probs = probs.float()
    valid = (ids >= 0) & (probs > 0)
    logp = torch.where(valid, torch.log(probs.clamp_min(1e-45)), torch.full_like(probs, _NEG))
    if tail == "renormalize":
        scaled = logp / temperature if temperature != 1.0 else logp
        scaled = torch.where(valid, scaled, torch.full_like(scaled, _NEG))
        norm = torch.logsumexp(scaled, dim=-1, keepdim=True)
        logp = torch.where(valid, scaled - norm, torch.full_like(scaled, _NEG))
        p = torch.where(valid, logp.exp(), torch.zeros_like(logp))
        tail_mass = torch.zeros(probs.shape[:-1], dtype=torch.float32, device=probs.device)
    else:
        p = torch.where(valid, probs, torch.zeros_like(probs))
        tail_mass = (1.0 - p.sum(-1)).clamp_min(0.0)
    return valid, logp, p, tail_mass


def _student_tail_log(logq: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``log(1 - sum_k q_k)`` over the valid slots: the student's log-mass outside the top-k."""
    q_in = torch.where(valid, logq.exp(), torch.zeros_like(logq)).sum(-1)
    return torch.log((1.0 - q_in).clamp_min(_TAIL_EPS))


@register("ce", help="cross-entropy to the target (FuseChat's default)")
def _cross_entropy(p: torch.Tensor, logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    return -(p * logq).sum(-1)


@register("kl", help="KL divergence of the student from the target")
def _kl_divergence(p: torch.Tensor, logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    return (p * (logp - logq)).sum(-1)


def _per_position(kind: str, logq: torch.Tensor, ids, probs, tail, temperature) -> tuple:
    """Per-position loss ``[...]`` and ``has_target`` (at least one valid slot) ``[...]`` from the
    student's log-probabilities ``logq [..., K]`` at ``ids``; ``kind`` names a registered loss
    (:mod:`fusion_train.fuse.loss_registry`)."""
    loss_fn = get_loss(kind).fn
    valid, logp, p, tail_mass = target_log_probs(ids, probs, tail=tail, temperature=temperature)
    logq = torch.where(valid, logq, torch.zeros_like(logq))
    loss = loss_fn(p, torch.where(valid, logp, torch.zeros_like(logp)), logq)
    if tail == "bucket":
        # the tail is one more class: the teacher's mass outside the top-k against the student's
        tail_logq = _student_tail_log(logq, valid)
        tail_logp = torch.log(tail_mass.clamp_min(_TAIL_EPS))
        loss = loss + loss_fn(tail_mass.unsqueeze(-1), tail_logp.unsqueeze(-1), tail_logq.unsqueeze(-1))
    has_target = valid.any(-1)
    return loss, has_target


def _reduce(loss: torch.Tensor, weight: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return loss * weight
    if reduction == "sum":
        return (loss * weight).sum()
    if reduction == "mean":
        return (loss * weight).sum() / weight.sum().clamp_min(1.0)
    raise ValueError("reduction must be 'mean', 'sum' or 'none', got %r" % reduction)


def sparse_distill_loss(
    logits: torch.Tensor,
    ids: torch.Tensor,
    probs: torch.Tensor,
    *,
    kind: str = "ce",
    tail: str = "renormalize",
    temperature: float = 1.0,
    mask: Optional[torch.Tensor] = None,
    reduction: str = "mean",
    logq: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Cross-entropy (``kind="ce"``), KL (``"kl"``) or another registered loss
    (:mod:`~fusion_train.fuse.loss_registry`) of the student against sparse targets.

    ``logits [..., V]``; ``ids``/``probs [..., K]`` exact teacher top-k probabilities (``ids < 0``
    invalid); ``mask [...]`` positions to train on. ``"mean"`` averages over masked positions
    that have at least one valid slot (a position with an empty target contributes nothing).
    ``logq``: the student's log-probabilities at ``ids`` if already gathered
    (:func:`student_log_probs_at`); ``logits`` is then not used.
    """
    if logq is None:
        logq = student_log_probs_at(logits, ids)
    loss, has_target = _per_position(kind, logq, ids, probs, tail, temperature)
    weight = has_target.float()
    if mask is not None:
        weight = weight * mask.float()
    return _reduce(loss, weight, reduction)


def sparse_cross_entropy(logits, ids, probs, **kwargs) -> torch.Tensor:
    """``-sum_k p_k log q(id_k)`` (+ tail term for ``tail="bucket"``); see :func:`sparse_distill_loss`."""
    return sparse_distill_loss(logits, ids, probs, kind="ce", **kwargs)


def sparse_kl_div(logits, ids, probs, **kwargs) -> torch.Tensor:
    """``sum_k p_k (log p_k - log q(id_k))`` (+ tail term for ``tail="bucket"``); see :func:`sparse_distill_loss`."""
    return sparse_distill_loss(logits, ids, probs, kind="kl", **kwargs)


def sft_loss(
    logits: Optional[torch.Tensor],
    labels: torch.Tensor,
    logq_labels: Optional[torch.Tensor] = None,
    *,
    normalizer: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Causal-LM cross-entropy, mean over ``labels != -100`` (labels shifted here, as HF does).

    Equals the model's own ``outputs.loss``. ``logq_labels [B, L]``: the student's log-probability
    of ``labels[:, t + 1]`` at position ``t`` if already gathered (see :func:`fusion_loss`).
    ``normalizer``: divide the summed NLL by this instead of this batch's label count (a trainer passes
    the count of the whole accumulated batch, so that micro-batches and processes add up to one mean).
    """
    target = labels[..., 1:]
    keep = target.ne(-100)
    if logq_labels is None:
        ids = target.clamp_min(0).unsqueeze(-1)
        logq_labels = student_log_probs_at(logits[..., :-1, :], ids).squeeze(-1)
    else:
        logq_labels = logq_labels[..., :-1]
    total = -(logq_labels * keep).sum()
    return total / (keep.sum().clamp_min(1) if normalizer is None else _as_den(normalizer, total))


def _as_den(normalizer, like: torch.Tensor) -> torch.Tensor:
    """A given normaliser in the dtype and device of the sum it divides (a float64 count would promote a float32
    loss: both are 0-dim)."""
    return torch.as_tensor(normalizer, device=like.device).to(like.dtype)


@dataclass
class TeacherTargets:
    """One teacher's sparse targets for a batch (teacher 0 is the pivot's own store).

    ``ids``/``probs`` ``[B, L, K]`` (exact top-k probabilities, ``ids < 0`` invalid), ``mass [B, L]``
    retained top-k mass, ``seq_ce [B]``, ``token_ce [B, L]``.
    """

    ids: torch.Tensor
    probs: torch.Tensor
    mass: torch.Tensor
    seq_ce: torch.Tensor
    token_ce: torch.Tensor

    @classmethod
    def from_dict(cls, d) -> "TeacherTargets":
        return cls(d["ids"], d["probs"], d["mass"], d["seq_ce"], d["token_ce"])


def min_ce_choice(
    teachers: Sequence[TeacherTargets],
    *,
    granularity: str = "sequence",
    include_pivot: bool = True,
) -> torch.Tensor:
    """Index of the teacher whose target each position uses, ``[B, L]`` int64.

    - ``"sequence"``: the teacher with the lowest ``seq_ce`` for the whole sequence (FuseChat).
    - ``"token"``: at each position the teacher with the lowest ``token_ce``; teachers without a
      valid slot there, and non-finite ``token_ce``, are not candidates.
    - Ties go to the lower index (the pivot first), like FuseChat's ``argmax`` over stacked
      ``[base, aligned_0, aligned_1]`` rewards. FuseChat compares ``1/exp(ce)`` in bfloat16, which
      ties CEs closer than ~0.4% relative; we compare the CEs in float32.
    - A chosen teacher with no valid slot at a position (a source token the vocabulary map could
      not map) falls back to the pivot there, as FuseChat's collator does ("bad case": the aligned
      distribution is replaced by the base one).
    - ``include_pivot=False`` drops the pivot from the candidates (FuseChat's
      ``distill_with_ref_model=False``); the fallback still uses the pivot's target.
    """
    if granularity not in GRANULARITIES:
        raise ValueError("granularity must be one of %s, got %r" % (", ".join(GRANULARITIES), granularity))
    if not teachers:
        raise ValueError("min_ce_choice needs at least one teacher")
    has_slot = torch.stack([(t.ids >= 0).any(-1) for t in teachers])  # [T, B, L]
    inf = float("inf")
    if granularity == "sequence":
        ce = torch.stack([t.seq_ce.float() for t in teachers])  # [T, B]
        ce = torch.where(torch.isfinite(ce), ce, torch.full_like(ce, inf))
        if not include_pivot and len(teachers) > 1:
            ce[0] = inf
        choice = ce.argmin(0)  # first minimum on ties
        choice = choice.unsqueeze(-1).expand(has_slot.shape[1:])
    else:
        ce = torch.stack([t.token_ce.float() for t in teachers])  # [T, B, L]
        ce = torch.where(torch.isfinite(ce) & has_slot, ce, torch.full_like(ce, inf))
        if not include_pivot and len(teachers) > 1:
            ce[0] = inf
        choice = ce.argmin(0)
    chosen_has_slot = has_slot.gather(0, choice.unsqueeze(0)).squeeze(0)
    return torch.where(chosen_has_slot, choice, torch.zeros_like(choice))


def choose_teachers(
    teachers: Sequence[TeacherTargets], *, fusion: str = "minCE", granularity: str = "sequence",
    include_pivot: bool = True,
) -> torch.Tensor:
    """The teacher index per position ``[B, L]``: :func:`min_ce_choice` (``fusion="minCE"``) or always the
    pivot's own store (``"pivot"``)."""
    if fusion == "minCE":
        return min_ce_choice(teachers, granularity=granularity, include_pivot=include_pivot)
    if fusion == "pivot":
        return torch.zeros(teachers[0].ids.shape[:-1], dtype=torch.long, device=teachers[0].ids.device)
    raise ValueError("fusion must be 'minCE' or 'pivot', got %r" % fusion)


def loss_counts(
    labels: Optional[torch.Tensor],
    teachers: Optional[Sequence[TeacherTargets]] = None,
    *,
    mask: Optional[torch.Tensor] = None,
    fusion: str = "minCE",
    granularity: str = "sequence",
    include_pivot: bool = True,
    tail: str = "renormalize",
    temperature: float = 1.0,
) -> torch.Tensor:
    """``[sft_count, fusion_count]`` (float64): the label tokens the SFT loss averages over and the positions the
    fusion loss averages over (under ``mask``, with a target of the chosen teacher) — the denominators of
    :func:`sft_loss` / :func:`fusion_loss` for this batch. A trainer sums them over the micro-batches and processes
    of one optimizer step and passes the sums back as ``sft_normalizer`` / ``fusion_normalizer``."""
    sft = labels[..., 1:].ne(-100).sum().double() if labels is not None else torch.zeros((), dtype=torch.float64)
    if not teachers:
        return torch.stack([sft, torch.zeros_like(sft)])
    choice = choose_teachers(teachers, fusion=fusion, granularity=granularity, include_pivot=include_pivot)
    ids, probs = select_targets(teachers, choice)
    valid, _, _, _ = target_log_probs(ids, probs, tail=tail, temperature=temperature)
    weight = valid.any(-1).double()
    if mask is not None:
        weight = weight * mask.double()
    return torch.stack([sft.to(weight.device), weight.sum()])


def select_targets(teachers: Sequence[TeacherTargets], choice: torch.Tensor):
    """``(ids, probs)`` ``[B, L, Kmax]`` taking each position's target from teacher ``choice[b, l]``.

    Teachers with smaller K are padded with invalid slots; nothing is ever ``[B, L, V]``.
    """
    kmax = max(t.ids.shape[-1] for t in teachers)
    ids, probs = [], []
    for t in teachers:
        pad = kmax - t.ids.shape[-1]
        i, p = t.ids, t.probs.float()
        if pad:
            i = torch.nn.functional.pad(i, (0, pad), value=-1)
            p = torch.nn.functional.pad(p, (0, pad), value=0.0)
        ids.append(i)
        probs.append(p)
    index = choice.unsqueeze(0).unsqueeze(-1).expand(1, *choice.shape, kmax)
    sel_ids = torch.stack(ids).gather(0, index).squeeze(0)
    sel_probs = torch.stack(probs).gather(0, index).squeeze(0)
    return sel_ids, sel_probs


@dataclass
class FusionLossOutput:
    """Result of :func:`fusion_loss`: ``loss`` (scalar), ``choice [B, L]`` teacher index per position,
    ``choice_counts [T]`` positions (under the mask, with a target) that used each teacher,
    ``positions`` their total (a 0-dim tensor), ``sft`` the SFT loss when ``labels`` were given."""

    loss: torch.Tensor
    choice: torch.Tensor
    choice_counts: torch.Tensor
    positions: torch.Tensor
    sft: Optional[torch.Tensor] = None


def fusion_loss(
    logits: torch.Tensor,
    teachers: Sequence[TeacherTargets],
    *,
    mask: Optional[torch.Tensor] = None,
    fusion: str = "minCE",
    granularity: str = "sequence",
    include_pivot: bool = True,
    kind: str = "ce",
    tail: str = "renormalize",
    temperature: float = 1.0,
    labels: Optional[torch.Tensor] = None,
    sft_normalizer: Optional[torch.Tensor] = None,
    fusion_normalizer: Optional[torch.Tensor] = None,
) -> FusionLossOutput:
    """MinCE fusion loss: pick a teacher per sequence/position (:func:`min_ce_choice`), then the
    sparse CE/KL of the student against that teacher's target, averaged over masked positions
    with a target (FuseChat averages over ``attention_mask``; pass the mask you want).
    ``sft_normalizer`` / ``fusion_normalizer``: divide the summed SFT NLL / fusion loss by these instead of
    this batch's own counts (:func:`loss_counts`; a trainer passes those of the whole accumulated batch).

    ``fusion="minCE"`` picks the argmin; ``"pivot"`` always uses teacher 0 (plain distillation
    from the pivot's own store, a useful ablation). With ``labels [B, L]`` the SFT loss is computed
    in the same gather (one dense gradient for both) and returned as ``.sft``.
    """
    choice = choose_teachers(teachers, fusion=fusion, granularity=granularity, include_pivot=include_pivot)
    ids, probs = select_targets(teachers, choice)
    sft = None
    if labels is not None:
        next_label = torch.nn.functional.pad(labels[..., 1:], (0, 1), value=-100)
        all_ids = torch.cat([next_label.clamp_min(0).unsqueeze(-1).to(ids.dtype), ids], -1)
        logq_all = student_log_probs_at(logits, all_ids)
        sft = sft_loss(None, labels, logq_labels=logq_all[..., 0], normalizer=sft_normalizer)
        logq = logq_all[..., 1:]
    else:
        logq = student_log_probs_at(logits, ids)
    per_pos, has_target = _per_position(kind, logq, ids, probs, tail, temperature)
    weight = has_target.float() if mask is None else has_target.float() * mask.float()
    total = (per_pos * weight).sum()
    loss = total / (weight.sum().clamp_min(1.0) if fusion_normalizer is None else _as_den(fusion_normalizer, total))
    counted = weight > 0
    counts = torch.bincount(choice[counted].reshape(-1), minlength=len(teachers))
    return FusionLossOutput(loss=loss, choice=choice, choice_counts=counts, positions=counted.sum(), sft=sft)


def combine_losses(sft: torch.Tensor, fusion: torch.Tensor, lambda_sft: float = 0.9) -> torch.Tensor:
    """``lambda_sft * sft + (1 - lambda_sft) * fusion`` (FuseChat's ``lm_loss_weight``, 0.9)."""
    return lambda_sft * sft + (1.0 - lambda_sft) * fusion
