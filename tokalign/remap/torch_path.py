"""Torch path of :mod:`tokalign.remap`: same inputs as tensors, same semantics, runs on any device.

Fully vectorised and sparse: every (target position, pivot id, probability) contribution becomes one
entry of flat tensors (gather the source rows, expand each top-k id into its vocabulary-map row with
``repeat_interleave``), duplicates are merged by sorting ``row * pivot_vocab + id`` keys, and the
top ``k_out`` per row are chosen with two stable sorts. Memory is O(number of entries); no
[N, vocab] tensor is ever built. Arithmetic is float64 (like the C++ kernel), outputs float32.

torch is imported lazily by callers (``from tokalign.remap.torch_path import remap_batch_torch``); the
rest of tokalign does not need it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import TokalignError
from .kernel import (
    INSIDE_POLICIES,
    KIND_1_1,
    KIND_1_N,
    KIND_N_1_END,
    KIND_N_1_INSIDE,
    KIND_N_M_END,
    KIND_N_M_INSIDE,
    KIND_PIVOT_ONLY,
    ONE_TO_MANY_POLICIES,
    PreparedMap,
    RemapResult,
    concat_groups,
    prepare_map,
)

TensorLike = Union[torch.Tensor, np.ndarray, Sequence]


@dataclass(frozen=True)
class TorchMap:
    """A vocabulary map as CSR tensors on one device (build once with :func:`prepare_map_torch`)."""

    indptr: torch.Tensor  # int64 [source_vocab + 1]
    indices: torch.Tensor  # int64 [nnz]
    data: torch.Tensor  # float64 [nnz]
    source_vocab: int
    pivot_vocab: int


def prepare_map_torch(vocab_map: Any, device: Union[str, torch.device, None] = None) -> TorchMap:
    """Validate a vocabulary map (scipy CSR / PreparedMap / TorchMap) and move it to ``device``."""
    if isinstance(vocab_map, TorchMap):
        if device is None or vocab_map.indptr.device == torch.device(device):
            return vocab_map
        return TorchMap(
            vocab_map.indptr.to(device),
            vocab_map.indices.to(device),
            vocab_map.data.to(device),
            vocab_map.source_vocab,
            vocab_map.pivot_vocab,
        )
    pm: PreparedMap = prepare_map(vocab_map)
    return TorchMap(
        indptr=torch.as_tensor(pm.indptr, dtype=torch.int64, device=device),
        indices=torch.as_tensor(pm.indices, dtype=torch.int64, device=device),
        data=torch.as_tensor(pm.data, device=device).to(torch.float64),
        source_vocab=pm.source_vocab,
        pivot_vocab=pm.pivot_vocab,
    )


def _t(x: TensorLike, dtype: torch.dtype, device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(x), device=device).to(dtype)


def _excl_cumsum(x: torch.Tensor) -> torch.Tensor:
    out = torch.zeros_like(x)
    if x.numel() > 1:
        torch.cumsum(x[:-1], 0, out=out[1:])
    return out


def _expand(counts: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """For counts c_i: (owner index i of each expanded item, its rank 0..c_i-1 within the owner)."""
    n = counts.shape[0]
    owner = torch.repeat_interleave(torch.arange(n, device=counts.device), counts)
    rank = torch.arange(owner.shape[0], device=counts.device) - _excl_cumsum(counts)[owner]
    return owner, rank


def _first_true(mask: torch.Tensor) -> int:
    return int(torch.nonzero(mask)[0, 0].item())


def _validate(groups, g_off, p_off, s_off, pivot_ids, pivot_vocab) -> torch.Tensor:
    """Vectorised version of the C++ pass 1; returns the sequence index of every group."""
    S = g_off.shape[0] - 1
    dev = groups.device
    if int(g_off[0]) != 0 or int(g_off[-1]) != groups.shape[0]:
        raise TokalignError("remap: group offsets must start at 0 and end at the number of groups")
    if int(p_off[0]) != 0 or int(p_off[-1]) != pivot_ids.shape[0]:
        raise TokalignError("remap: pivot offsets must start at 0 and end at the number of pivot positions")
    n_g = g_off[1:] - g_off[:-1]
    lp = p_off[1:] - p_off[:-1]
    ls = s_off[1:] - s_off[:-1]
    bad_seq = (n_g < 0) | (lp < 0) | (ls < 0)
    if bool(bad_seq.any()):
        raise TokalignError(f"remap: sequence {_first_true(bad_seq)}: offsets decrease")
    seq = torch.repeat_interleave(torch.arange(S, device=dev), n_g)
    G = groups.shape[0]
    first = torch.ones(G, dtype=torch.bool, device=dev)
    if G:
        first[1:] = seq[1:] != seq[:-1]
    prev_p = torch.zeros(G, dtype=torch.int64, device=dev)
    prev_s = torch.zeros(G, dtype=torch.int64, device=dev)
    if G > 1:
        prev_p[1:] = groups[:-1, 1]
        prev_s[1:] = groups[:-1, 3]
    prev_p = torch.where(first, torch.zeros_like(prev_p), prev_p)
    prev_s = torch.where(first, torch.zeros_like(prev_s), prev_s)
    bad_g = (groups[:, 0] != prev_p) | (groups[:, 2] != prev_s) | (groups[:, 1] < groups[:, 0]) | (
        groups[:, 3] < groups[:, 2]
    )
    # coverage: end of the last group (0 for sequences without groups) equals the lengths
    end_p = torch.zeros(S, dtype=torch.int64, device=dev)
    end_s = torch.zeros(S, dtype=torch.int64, device=dev)
    has = n_g > 0
    last = (g_off[1:] - 1).clamp(min=0)
    if G:
        end_p = torch.where(has, groups[last, 1], end_p)
        end_s = torch.where(has, groups[last, 3], end_s)
    bad_cov = (end_p != lp) | (end_s != ls)
    bad_ids = (pivot_ids < 0) | (pivot_ids >= pivot_vocab)
    if bool(bad_g.any()) or bool(bad_cov.any()) or bool(bad_ids.any()):
        cand = []
        if bool(bad_g.any()):
            g = _first_true(bad_g)
            s = int(seq[g])
            cand.append((s, f"group {g - int(g_off[s])} is not contiguous with the previous one or has end < start"))
        if bool(bad_cov.any()):
            s = _first_true(bad_cov)
            cand.append((s, f"groups cover pivot [0, {int(end_p[s])}) and source [0, {int(end_s[s])}) but the "
                            f"sequences have {int(lp[s])} pivot and {int(ls[s])} source positions"))
        if bool(bad_ids.any()):
            r = _first_true(bad_ids)
            s = int(torch.searchsorted(p_off, torch.tensor(r, device=dev), right=True)) - 1
            cand.append((s, f"pivot id {int(pivot_ids[r])} at position {r - int(p_off[s])} outside the pivot "
                            f"vocabulary ({pivot_vocab})"))
        s, msg = min(cand, key=lambda c: c[0])
        raise TokalignError(f"remap: sequence {s}: {msg}")
    return seq


def remap_batch_torch(
    groups_list: Union[Sequence[TensorLike], TensorLike],
    source_topk_ids: TensorLike,
    source_topk_logits: TensorLike,
    source_lse: TensorLike,
    vocab_map: Any,
    pivot_ids: TensorLike,
    *,
    source_offsets: TensorLike,
    pivot_offsets: TensorLike,
    group_offsets: Optional[TensorLike] = None,
    pivot_topk: Optional[Tuple[TensorLike, TensorLike, TensorLike]] = None,
    k_out: int = 10,
    inside: str = "onehot",
    one_to_many: str = "last",
    device: Union[str, torch.device, None] = None,
) -> RemapResult:
    """Torch version of :func:`tokalign.remap.remap_batch` (same arguments, plus ``device``).

    ``device`` defaults to the device of ``source_topk_logits`` when it is a tensor, else CPU.
    Returns a :class:`~tokalign.remap.RemapResult` whose fields are tensors on that device
    (``valid`` bool, ``group_kind`` uint8, ``topk_ids`` / ``source_position`` int32).
    """
    if inside not in INSIDE_POLICIES:
        raise TokalignError(f"inside: unknown policy {inside!r} (choose from {', '.join(INSIDE_POLICIES)})")
    if one_to_many not in ONE_TO_MANY_POLICIES:
        raise TokalignError(
            f"one_to_many: unknown policy {one_to_many!r} (choose from {', '.join(ONE_TO_MANY_POLICIES)})")
    if int(k_out) < 1:
        raise TokalignError(f"k_out must be >= 1, got {k_out}")
    k_out = int(k_out)
    if device is None:
        device = source_topk_logits.device if isinstance(source_topk_logits, torch.Tensor) else torch.device("cpu")
    dev = torch.device(device)
    i64, f64 = torch.int64, torch.float64

    if group_offsets is None:
        if isinstance(groups_list, (list, tuple)):
            arrs = [g.detach().cpu().numpy() if isinstance(g, torch.Tensor) else np.asarray(g) for g in groups_list]
            g_np, go_np = concat_groups(arrs)
            groups, g_off = _t(g_np, i64, dev), _t(go_np, i64, dev)
        else:
            raise TokalignError("remap: pass a list of [G_i, 4] groups or the concatenated groups with group_offsets")
    else:
        groups = _t(groups_list, i64, dev).reshape(-1, 4)
        g_off = _t(group_offsets, i64, dev)
    tm = prepare_map_torch(vocab_map, dev)
    Vp, Vs = tm.pivot_vocab, tm.source_vocab
    src_ids = _t(source_topk_ids, i64, dev)
    src_lg = _t(source_topk_logits, torch.float32, dev)
    src_lse = _t(source_lse, torch.float32, dev).reshape(-1)
    s_off = _t(source_offsets, i64, dev)
    piv = _t(pivot_ids, i64, dev).reshape(-1)
    p_off = _t(pivot_offsets, i64, dev)
    if src_ids.ndim != 2 or src_lg.shape != src_ids.shape or src_lse.shape[0] != src_ids.shape[0]:
        raise TokalignError("remap: source top-k ids / logits must have shape [N, K] and logsumexp [N]")
    if not (g_off.shape[0] == s_off.shape[0] == p_off.shape[0]) or g_off.shape[0] < 1:
        raise TokalignError("remap: group, source and pivot offsets must all have length S + 1")
    if int(s_off[0]) != 0 or int(s_off[-1]) != src_ids.shape[0]:
        raise TokalignError("remap: source offsets must start at 0 and end at the number of source positions")
    if inside == "pivot" and pivot_topk is None:
        raise TokalignError("inside='pivot' needs pivot_topk=(ids, logits, lse) of the pivot model")

    seq_g = _validate(groups, g_off, p_off, s_off, piv, Vp)
    Np = piv.shape[0]
    K = src_ids.shape[1]

    # ---- per pivot position: its group, kind, whether it is a source-target position -------------
    n_p = groups[:, 1] - groups[:, 0]
    n_s = groups[:, 3] - groups[:, 2]
    pos_g = torch.repeat_interleave(torch.arange(groups.shape[0], device=dev), n_p)  # [Np], in row order
    seq_p = seq_g[pos_g]
    t = torch.arange(Np, device=dev) - p_off[seq_p]
    gp = groups[pos_g]
    nsp = n_s[pos_g]
    npp = n_p[pos_g]
    is_end = t == gp[:, 1] - 1
    kind = torch.where(
        nsp == 0,
        KIND_PIVOT_ONLY,
        torch.where(
            ~is_end,
            torch.where(nsp == 1, KIND_N_1_INSIDE, KIND_N_M_INSIDE),
            torch.where(npp == 1, torch.where(nsp == 1, KIND_1_1, KIND_1_N),
                        torch.where(nsp == 1, KIND_N_1_END, KIND_N_M_END)),
        ),
    ).to(torch.uint8)
    from_source = is_end & (nsp > 0)
    source_position = torch.where(from_source, gp[:, 3] - 1, -1).to(torch.int32)

    rows_e, ids_e, q_e = [], [], []  # entries: target row, pivot id, probability
    nonfinite = torch.zeros(Np, dtype=torch.bool, device=dev)

    # ---- source targets ------------------------------------------------------------------------
    tgt = torch.nonzero(from_source).reshape(-1)  # target rows
    if tgt.numel():
        S0 = s_off[seq_p[tgt]]
        weighted = (nsp[tgt] > 1) if one_to_many == "weighted" else torch.zeros_like(tgt, dtype=torch.bool)
        n_contrib = torch.where(weighted, nsp[tgt], 1)
        start = torch.where(weighted, S0 + gp[tgt, 2], S0 + gp[tgt, 3] - 1)
        c_owner, c_rank = _expand(n_contrib)  # contribution -> index into tgt
        c_src = start[c_owner] + c_rank  # source row of each contribution
        ids = src_ids[c_src]  # [C, K]
        lg = src_lg[c_src].to(f64)
        lse = src_lse[c_src].to(f64)
        present = ids >= 0
        if bool((ids >= Vs).any()):
            c = _first_true((ids >= Vs).any(dim=1))
            row = int(tgt[c_owner[c]])
            s = int(seq_p[row])
            raise TokalignError(f"remap: sequence {s}, pivot position {row - int(p_off[s])}: source top-k id outside "
                                f"the source vocabulary ({Vs})")
        bad = (present & (torch.isnan(lg) | (lg == float("inf")))).any(dim=1) | ~torch.isfinite(lse)
        p = torch.exp(lg - lse[:, None])
        p = torch.where(present & ~bad[:, None] & (lg > float("-inf")), p, torch.zeros_like(p))
        flat_ids = torch.where(present, ids, 0).reshape(-1)
        row_len = (tm.indptr[flat_ids + 1] - tm.indptr[flat_ids]) * (p.reshape(-1) > 0)
        e_owner, e_rank = _expand(row_len)  # map entry -> flat (contribution, k)
        e = tm.indptr[flat_ids[e_owner]] + e_rank
        v = tm.indices[e]
        q = p.reshape(-1)[e_owner] * tm.data[e]
        e_contrib = torch.div(e_owner, K, rounding_mode="floor") if K else e_owner
        # mapped mass per contribution and the "weighted" weights m_j / sum_j m_j
        mass = torch.zeros(c_src.shape[0], dtype=f64, device=dev).index_add_(0, e_contrib, q)
        total = torch.zeros(tgt.shape[0], dtype=f64, device=dev).index_add_(0, c_owner, mass)
        w = torch.where(weighted[c_owner],
                        torch.where(total[c_owner] > 0, mass / total[c_owner].clamp(min=1e-300), 0.0),
                        torch.ones_like(mass))
        q = q * w[e_contrib]
        rows_e.append(tgt[c_owner[e_contrib]])
        ids_e.append(v)
        q_e.append(q)
        nf_any = torch.zeros(tgt.shape[0], dtype=i64, device=dev).index_add_(0, c_owner, bad.to(i64)) > 0
        nonfinite[tgt] = nf_any

    # ---- inside targets ------------------------------------------------------------------------
    inside_rows = ~from_source
    masked = torch.zeros(Np, dtype=torch.bool, device=dev)
    if inside == "onehot":
        has_next = inside_rows & (t + 1 < (p_off[seq_p + 1] - p_off[seq_p]))
        masked = inside_rows & ~has_next
        r = torch.nonzero(has_next).reshape(-1)
        rows_e.append(r)
        ids_e.append(piv[r + 1])
        q_e.append(torch.ones(r.shape[0], dtype=f64, device=dev))
    elif inside == "pivot":
        pid = _t(pivot_topk[0], i64, dev)
        plg = _t(pivot_topk[1], torch.float32, dev)
        plse = _t(pivot_topk[2], torch.float32, dev).reshape(-1)
        if pid.ndim != 2 or plg.shape != pid.shape or pid.shape[0] != Np or plse.shape[0] != Np:
            raise TokalignError("remap: pivot top-k ids / logits must have shape [Np, Kp] and pivot logsumexp [Np]")
        r = torch.nonzero(inside_rows).reshape(-1)
        ids = pid[r]
        lg = plg[r].to(f64)
        lse = plse[r].to(f64)
        present = ids >= 0
        if bool((ids >= Vp).any()):
            row = int(r[_first_true((ids >= Vp).any(dim=1))])
            s = int(seq_p[row])
            raise TokalignError(f"remap: sequence {s}, pivot position {row - int(p_off[s])}: pivot top-k id outside "
                                f"the pivot vocabulary ({Vp})")
        bad = (present & (torch.isnan(lg) | (lg == float("inf")))).any(dim=1) | ~torch.isfinite(lse)
        p = torch.exp(lg - lse[:, None])
        keep = present & ~bad[:, None] & (lg > float("-inf"))
        rr = r[:, None].expand_as(ids)[keep]
        rows_e.append(rr)
        ids_e.append(ids[keep])
        q_e.append(p[keep])
        nonfinite[r] = bad
    else:
        masked = inside_rows

    # ---- merge duplicates, keep the top k_out per row (prob desc, ties: smaller id) -------------
    rows = torch.cat(rows_e) if rows_e else torch.zeros(0, dtype=i64, device=dev)
    vids = torch.cat(ids_e) if ids_e else torch.zeros(0, dtype=i64, device=dev)
    qs = torch.cat(q_e) if q_e else torch.zeros(0, dtype=f64, device=dev)
    keep = (qs > 0) & ~nonfinite[rows]  # a non-finite input invalidates the whole row (as in C++)
    rows, vids, qs = rows[keep], vids[keep], qs[keep]
    keys = rows * Vp + vids
    uk, inv = torch.unique(keys, sorted=True, return_inverse=True)
    uq = torch.zeros(uk.shape[0], dtype=f64, device=dev).index_add_(0, inv, qs)
    o1 = torch.sort(-uq, stable=True).indices  # by prob desc; key order (row, id asc) kept for ties
    uk, uq = uk[o1], uq[o1]
    urow = torch.div(uk, Vp, rounding_mode="floor")
    o2 = torch.sort(urow, stable=True).indices
    uk, uq, urow = uk[o2], uq[o2], urow[o2]
    seg_start = torch.searchsorted(urow, urow, right=False)
    rank = torch.arange(uk.shape[0], device=dev) - seg_start
    sel = rank < k_out
    urow, rank, uq, uid = urow[sel], rank[sel], uq[sel], (uk[sel] % Vp)

    out_ids = torch.full((Np, k_out), -1, dtype=torch.int32, device=dev)
    out_lg = torch.full((Np, k_out), float("-inf"), dtype=torch.float32, device=dev)
    out_ids[urow, rank] = uid.to(torch.int32)
    out_lg[urow, rank] = torch.log(uq).to(torch.float32)
    retained = torch.zeros(Np, dtype=f64, device=dev).index_add_(0, urow, uq)
    valid = (retained > 0) & ~nonfinite & ~masked
    empty = ~masked & ~nonfinite & (retained <= 0)
    return RemapResult(
        topk_ids=out_ids,
        topk_logits=out_lg,
        logsumexp=torch.zeros(Np, dtype=torch.float32, device=dev),
        group_kind=kind,
        retained_mass=retained.to(torch.float32),
        valid=valid,
        source_position=source_position,
        offsets=p_off.clone(),
        counts={
            "masked": int(masked.sum()),
            "nonfinite": int(nonfinite.sum()),
            "empty": int(empty.sum()),
        },
    )
