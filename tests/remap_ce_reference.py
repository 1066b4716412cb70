"""numpy references for the two CE fields of remapped stores, now computed in C++ (csrc/remap_ce.cpp):
the vectorised versions the library used before, compared with the native ones in tests/test_remap_ce.py."""
from __future__ import annotations

from typing import Optional

import numpy as np

from tokalign.errors import TokalignError


def source_nll_by_group_reference(source_ce: np.ndarray, source_offsets: np.ndarray, groups: np.ndarray,
                        group_offsets: np.ndarray, pivot_offsets: np.ndarray, *,
                        source_lse: Optional[np.ndarray] = None) -> np.ndarray:
    """numpy version of :func:`tokalign.remap.ce.source_nll_by_group` (what the library used before its C++ port).

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


def remapped_token_ce_packed_reference(topk_ids: np.ndarray, topk_logits: np.ndarray, retained_mass: np.ndarray,
                             valid: np.ndarray, input_ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """numpy version of :func:`tokalign.remap.stores.remapped_token_ce_packed` (before its C++ port)."""
    n = int(topk_ids.shape[0])
    ce = np.zeros(n, np.float32)
    if n < 2:
        return ce
    nxt = np.asarray(input_ids[1:], dtype=np.int64)
    hit = topk_ids[:-1] == nxt[:, None]
    found = hit.any(axis=1)
    q = np.where(found, np.where(hit, topk_logits[:-1], 0).sum(axis=1), 0.0)
    tail = np.maximum(1.0 - retained_mass[:-1].astype(np.float64), 1e-6)
    ce[:-1] = np.where(found, -q, -np.log(tail)).astype(np.float32)
    offsets = np.asarray(offsets, np.int64)
    ends = offsets[1:][offsets[1:] > offsets[:-1]] - 1  # last position of every non-empty sequence
    ce[ends] = 0.0
    ce[~np.asarray(valid, bool)] = 0.0
    return ce
