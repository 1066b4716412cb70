"""``token_ce`` of a remapped store: the source model's exact NLL of the text, carried onto pivot positions
through the alignment groups (docs/remap.md, "token_ce and seq_ce of a remapped store").

Why not the CE under the remapped distribution q? ``-log q(next pivot token)`` is 0 at every ``inside``
position with ``onehot`` (q(gold) = 1) and only a lower bound (``-log tail``) when the gold token fell out
of the kept top-k, so the ``seq_ce`` of a remapped store was biased low and FuseChat's MinCE preferred
remapped teachers unfairly. The source store holds the model's exact per-token NLL over its full vocabulary
(source ``token_ce[j] = -log p_s(source token j + 1 | prefix)``); what differs between the two tokenizers
is only how the same text is cut. For a group covering pivot tokens ``[p0, p1)`` and source tokens
``[s0, s1)`` (same characters), the source NLL of the group's text is

    nll_g = sum(source token_ce[j - 1] for j in [s0, s1) if j >= 1)     (a sequence's first token: 0)

and it is spread evenly over the pivot positions predicting the group's pivot tokens, ``i - 1`` for
``i`` in ``[max(p0, 1), p1)``. So the output's ``token_ce`` sums, over any span of whole groups, to the
source model's NLL of that text, and the writer's ``seq_ce`` (mean over the pivot's loss positions) is
the source's total NLL of the response divided by the pivot's token count, exactly like the pivot store's.

Conventions:

* a pivot sequence's last position predicts nothing: 0 (the store convention);
* a group whose only pivot token is a sequence's first token (no predicting position) drops its NLL;
  a group without source tokens (pivot-only text, e.g. a truncated source) carries 0;
* a group whose NLL uses a source position with a non-finite ``token_ce`` or ``logsumexp`` (a broken
  source distribution; the source store flags that sample invalid) gives NaN at its pivot positions,
  so the writer flags the remapped sample invalid too (``valid = False``, its ``seq_ce`` NaN) and MinCE
  never picks it (fusion_train.losses.min_ce_choice treats non-finite CE as +inf). ``remap_valid`` /
  an empty remapped row does **not** change ``token_ce``: the source NLL of the text is still known.

Group sums are per-group segment sums (``np.add.reduceat`` in float64), so a sample's values do not
depend on which other samples share its batch: the per-sample path and the batched engine agree bit for bit.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .errors import TokalignError

#: value of the output store's ``options["ce_definition"]``
CE_DEFINITION = "source_nll_by_group"
#: optional per-position extra of the output: the CE under the stored remapped distribution (diagnostic)
REMAP_CE_FIELD = "remap_ce"


def source_nll_by_group(source_ce: np.ndarray, source_offsets: np.ndarray, groups: np.ndarray,
                        group_offsets: np.ndarray, pivot_offsets: np.ndarray, *,
                        source_lse: Optional[np.ndarray] = None) -> np.ndarray:
    """Per-pivot-position source NLL (float32 [Np]) of a batch of aligned sequences (module docstring).

    ``source_ce`` float [Ns]: the source store's ``token_ce`` of the concatenated source sequences
    (``source_offsets`` [S + 1]); ``groups`` int [G, 4] ``(p0, p1, s0, s1)`` relative to each sequence,
    ``group_offsets`` [S + 1]; ``pivot_offsets`` [S + 1]. ``source_lse`` [Ns] (optional): source
    positions with a non-finite logsumexp count as unknown NLL, like a non-finite ``token_ce``.
    Raises TokalignError when the groups do not cover both sequences' tokens.
    """
    s_off = np.asarray(source_offsets, np.int64)
    p_off = np.asarray(pivot_offsets, np.int64)
    g_off = np.asarray(group_offsets, np.int64)
    g = np.asarray(groups, np.int64).reshape(-1, 4)
    n_seq = int(p_off.shape[0]) - 1
    if s_off.shape[0] != n_seq + 1 or g_off.shape[0] != n_seq + 1 or int(g_off[-1]) != g.shape[0]:
        raise TokalignError("source_nll_by_group: %d pivot, %d source and %d group offsets for %d groups"
                            % (p_off.shape[0], s_off.shape[0], g_off.shape[0], g.shape[0]))
    ce = np.asarray(source_ce)
    if ce.shape != (int(s_off[-1]),):
        raise TokalignError("source_nll_by_group: source token_ce has shape %s, expected (%d,)"
                            % (ce.shape, int(s_off[-1])))
    n_piv = int(p_off[-1])
    seq = np.repeat(np.arange(n_seq, dtype=np.int64), np.diff(g_off))  # sequence of each group
    p0, p1, s0, s1 = g[:, 0], g[:, 1], g[:, 2], g[:, 3]
    p_len, s_len = p1 - p0, s1 - s0
    if g.shape[0] and (p_len.min() < 0 or s_len.min() < 0):
        raise TokalignError("source_nll_by_group: a group ends before it starts")
    covered_p = np.bincount(seq, weights=p_len, minlength=n_seq)
    covered_s = np.bincount(seq, weights=s_len, minlength=n_seq)
    bad = np.flatnonzero((covered_p != np.diff(p_off)) | (covered_s != np.diff(s_off)))
    if bad.size:
        k = int(bad[0])
        raise TokalignError("sequence %d: the groups cover %d pivot / %d source tokens, the sequences have %d / %d"
                            % (k, int(covered_p[k]), int(covered_s[k]), int(p_off[k + 1] - p_off[k]),
                               int(s_off[k + 1] - s_off[k])))

    # NLL of group g = source token_ce over the positions predicting its tokens: [lo, hi) (absolute)
    start = s_off[:-1][seq]
    lo = start + np.maximum(s0 - 1, 0)
    hi = start + np.maximum(s1 - 1, 0)
    unknown = ~np.isfinite(ce)
    if source_lse is not None:
        unknown |= ~np.isfinite(np.asarray(source_lse))
    values = np.where(unknown, 0.0, ce.astype(np.float64))
    nll = np.zeros(g.shape[0], np.float64)
    used = hi > lo
    if used.any():
        bounds = np.empty(2 * int(used.sum()), np.int64)  # segment [lo, hi) then the (ignored) gap [hi, next lo)
        bounds[0::2] = lo[used]
        bounds[1::2] = hi[used]
        nll[used] = np.add.reduceat(values, bounds)[0::2]
    n_unknown = np.concatenate([[0], np.cumsum(unknown, dtype=np.int64)])
    nll[(n_unknown[hi] - n_unknown[lo]) > 0] = np.nan

    # spread over the pivot positions predicting the group's tokens (token 0 of a sequence has none)
    predicting = p1 - np.maximum(p0, 1)
    share = np.zeros(g.shape[0], np.float64)
    has = predicting > 0
    share[has] = nll[has] / predicting[has]
    out = np.zeros(n_piv, np.float32)
    if n_piv > 1:
        group_of_token = np.repeat(np.arange(g.shape[0], dtype=np.int64), p_len)
        out[:-1] = share[group_of_token[1:]]  # position t predicts token t + 1
        ends = p_off[1:][p_off[1:] > p_off[:-1]] - 1
        out[ends] = 0.0  # a sequence's last position predicts nothing
    return out


def wants_remap_ce(writer: Any) -> bool:
    """Whether ``writer``'s schema declares the diagnostic :data:`REMAP_CE_FIELD` extra."""
    return any(e.name == REMAP_CE_FIELD for e in getattr(writer.schema, "extras", ()))
