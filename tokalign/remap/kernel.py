"""Remapping a source model's top-k next-token distributions into the pivot vocabulary.

Semantics (``docs/remap.md`` has the diagram): the distribution stored at position t predicts
token t + 1. For the pivot position that **ends** an alignment group, the target is the source
distribution at the source position that ends the same group, pushed through the vocabulary map
(duplicate pivot ids summed, the tail mass carried, the top ``k_out`` kept). Pivot positions
*inside* a group (their next token lies inside the same source token) follow ``inside``:

* ``"onehot"`` - the gold next pivot token with probability 1 (FuseChat's choice),
* ``"pivot"``  - the pivot model's own distribution (needs ``pivot_topk``),
* ``"mask"``   - no target (``valid`` = False, excluded from the fusion loss).

Group ends with more than one source token follow ``one_to_many``: ``"last"`` (the last source
position's distribution) or ``"weighted"`` (average of the group's source distributions, weights
proportional to their mapped mass; see :data:`WEIGHTED_DEFINITION`).

The heavy lifting runs in C++ (``tokalign._core.remap_topk``: OpenMP over groups, GIL released).
:mod:`tokalign.remap.torch_path` is the vectorised torch/GPU path with the same semantics.

Inputs (ragged, concatenated, as the store holds them)::

    groups          [G, 4] int64 per sequence: pivot_start, pivot_end, source_start, source_end
    source_topk_ids [Ns, K] int32 (-1 = empty slot), source_topk_logits [Ns, K] float32,
    source_lse      [Ns] float32 (p = exp(logit - lse), lse over the full source vocabulary)
    vocab_map       scipy CSR float32 (source_vocab, pivot_vocab), rows sum to 1 or are empty
    pivot_ids       [Np] int32 (the pivot tokens; the "onehot" targets)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import scipy.sparse as sp

from ..errors import TokalignError

# ---- group kind codes (uint8, one per pivot position) -------------------------------------------
KIND_1_1 = 1  #: end of a group with 1 pivot and 1 source token
KIND_1_N = 2  #: end of a group with 1 pivot and n > 1 source tokens
KIND_N_1_INSIDE = 3  #: inside a group with n > 1 pivot tokens and 1 source token
KIND_N_1_END = 4  #: last pivot position of an n:1 group
KIND_N_M_INSIDE = 5  #: inside a group with n > 1 pivot and m > 1 source tokens
KIND_N_M_END = 6  #: last pivot position of an n:m group
KIND_PIVOT_ONLY = 7  #: group without source tokens (inside policy applies to every position)
KIND_NAMES = {
    KIND_1_1: "1:1",
    KIND_1_N: "1:n",
    KIND_N_1_INSIDE: "n:1 inside",
    KIND_N_1_END: "n:1 end",
    KIND_N_M_INSIDE: "n:m inside",
    KIND_N_M_END: "n:m end",
    KIND_PIVOT_ONLY: "pivot only",
}
#: kinds whose target comes from the source model (the others follow the inside policy)
SOURCE_KINDS = (KIND_1_1, KIND_1_N, KIND_N_1_END, KIND_N_M_END)

INSIDE_POLICIES = ("onehot", "pivot", "mask")
ONE_TO_MANY_POLICIES = ("last", "weighted")

WEIGHTED_DEFINITION = (
    "For a group end whose group holds source positions j = s0..s1-1: m_j = sum_k p_j(k) * |M[id_jk, :]|_1 "
    "(the probability of distribution j that the vocabulary map carries into the pivot vocabulary), "
    "w_j = m_j / sum_j m_j, target = sum_j w_j * (p_j M). All m_j = 0 gives an empty target."
)

#: sentinel stored in empty slots: id -1, log-probability -inf
EMPTY_ID = -1
EMPTY_LOGIT = float("-inf")

VocabMapLike = Union[sp.spmatrix, "sp.sparray", "PreparedMap", Any]


@dataclass(frozen=True)
class PreparedMap:
    """A validated vocabulary map in the kernel's layout (reuse it across many calls).

    ``indptr`` int64 [source_vocab + 1], ``indices`` int32 [nnz] (pivot ids), ``data`` float32 [nnz].
    """

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    source_vocab: int
    pivot_vocab: int

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])


def prepare_map(vocab_map: VocabMapLike) -> PreparedMap:
    """Validate a vocabulary map (scipy sparse, or an object with a ``matrix`` attribute) once.

    Raises :class:`TokalignError` for negative / non-finite weights or rows summing above 1.
    """
    if isinstance(vocab_map, PreparedMap):
        return vocab_map
    m = getattr(vocab_map, "matrix", vocab_map)
    if not sp.issparse(m):
        raise TokalignError(f"vocab_map: expected a scipy sparse matrix, got {type(m).__name__}")
    m = sp.csr_matrix(m, dtype=np.float32)
    if m.data.size and (not np.all(np.isfinite(m.data)) or m.data.min() < 0):
        raise TokalignError("vocab_map: weights must be finite and >= 0")
    row_sums = np.asarray(m.sum(axis=1), dtype=np.float64).ravel()
    if row_sums.size and row_sums.max() > 1.0 + 1e-3:
        bad = int(np.argmax(row_sums))
        raise TokalignError(f"vocab_map: row {bad} sums to {row_sums[bad]:.4f} > 1 (rows must sum to 1 or be empty)")
    return PreparedMap(
        indptr=np.ascontiguousarray(m.indptr, dtype=np.int64),
        indices=np.ascontiguousarray(m.indices, dtype=np.int32),
        data=np.ascontiguousarray(m.data, dtype=np.float32),
        source_vocab=int(m.shape[0]),
        pivot_vocab=int(m.shape[1]),
    )


@dataclass
class RemapResult:
    """Remapped distributions for a batch of pivot sequences (rows = concatenated pivot positions).

    ``topk_ids`` int32 [Np, k_out] pivot ids (-1 empty), ``topk_logits`` float32 [Np, k_out]
    log-probabilities (-inf empty; ``logsumexp`` is 0 so ``exp(topk_logits)`` are probabilities and
    ``1 - retained_mass`` is the tail), ``group_kind`` uint8 [Np] (``KIND_*``), ``retained_mass``
    float32 [Np], ``valid`` bool [Np] (False: masked by policy, non-finite input, or nothing kept),
    ``source_position`` int32 [Np] (source position, relative to its sequence, whose distribution
    was used; -1 when none), ``offsets`` int64 [S + 1] (row ranges per sequence).
    The torch path returns the same fields as tensors.
    """

    topk_ids: Any
    topk_logits: Any
    logsumexp: Any
    group_kind: Any
    retained_mass: Any
    valid: Any
    source_position: Any
    offsets: Any
    counts: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.offsets.shape[0]) - 1

    def sequence(self, i: int) -> dict:
        """The arrays of sequence ``i`` as a dict (views, no copy)."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return {
            "topk_ids": self.topk_ids[a:b],
            "topk_logits": self.topk_logits[a:b],
            "logsumexp": self.logsumexp[a:b],
            "group_kind": self.group_kind[a:b],
            "retained_mass": self.retained_mass[a:b],
            "valid": self.valid[a:b],
            "source_position": self.source_position[a:b],
        }

    def summary(self) -> dict:
        """Counts per group kind, invalid positions and the mean retained mass of valid positions."""
        kind = np.asarray(_to_numpy(self.group_kind))
        valid = np.asarray(_to_numpy(self.valid)).astype(bool)
        kept = np.asarray(_to_numpy(self.retained_mass), dtype=np.float64)
        return {
            "positions": int(kind.shape[0]),
            "valid": int(valid.sum()),
            "kinds": {name: int(np.sum(kind == code)) for code, name in KIND_NAMES.items()},
            "mean_retained_mass": float(kept[valid].mean()) if valid.any() else 0.0,
            **{k: int(v) for k, v in self.counts.items()},
        }


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _policy_code(name: str, choices: Sequence[str], what: str) -> int:
    if name not in choices:
        raise TokalignError(f"{what}: unknown policy {name!r} (choose from {', '.join(choices)})")
    return choices.index(name)


def _offsets(lengths: Sequence[int]) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(np.asarray(lengths, dtype=np.int64), out=out[1:])
    return out


def concat_groups(groups_list: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Concatenate per-sequence [G_i, 4] group arrays into ([G, 4] int64, offsets [S + 1])."""
    arrs = [np.asarray(g, dtype=np.int64).reshape(-1, 4) for g in groups_list]
    offs = _offsets([a.shape[0] for a in arrs])
    cat = np.concatenate(arrs) if offs[-1] else np.zeros((0, 4), np.int64)
    return np.ascontiguousarray(cat), offs


def remap_batch(
    groups_list: Union[Sequence[np.ndarray], np.ndarray],
    source_topk_ids: np.ndarray,
    source_topk_logits: np.ndarray,
    source_lse: np.ndarray,
    vocab_map: VocabMapLike,
    pivot_ids: np.ndarray,
    *,
    source_offsets: np.ndarray,
    pivot_offsets: np.ndarray,
    group_offsets: Optional[np.ndarray] = None,
    pivot_topk: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None,
    k_out: int = 10,
    inside: str = "onehot",
    one_to_many: str = "last",
    num_threads: int = 0,
) -> RemapResult:
    """Remap a batch of sequences held as ragged concatenated arrays (numpy, C++ kernel).

    Args:
        groups_list: one [G_i, 4] int64 array per sequence, or the concatenated [G, 4] array together
            with ``group_offsets`` [S + 1].
        source_topk_ids, source_topk_logits: [Ns, K] source top-k ids (-1 empty) and logits.
        source_lse: [Ns] source logsumexp over the full vocabulary.
        vocab_map: CSR (source_vocab, pivot_vocab) map or a :class:`PreparedMap`.
        pivot_ids: [Np] pivot token ids.
        source_offsets, pivot_offsets: [S + 1] row ranges of each sequence.
        pivot_topk: optional (ids [Np, Kp], logits [Np, Kp], lse [Np]) of the pivot model (``inside="pivot"``).
        k_out: slots per output row (K').
        inside: "onehot" | "pivot" | "mask".
        one_to_many: "last" | "weighted".
        num_threads: OpenMP threads (0 = all).

    Raises:
        TokalignError: malformed groups / offsets / ids, or an unknown policy.
    """
    from .._native import _core, call

    inside_code = _policy_code(inside, INSIDE_POLICIES, "inside")
    otm_code = _policy_code(one_to_many, ONE_TO_MANY_POLICIES, "one_to_many")
    if int(k_out) < 1:
        raise TokalignError(f"k_out must be >= 1, got {k_out}")
    if group_offsets is None:
        groups, group_offsets = concat_groups(groups_list)
    else:
        groups = np.asarray(groups_list, dtype=np.int64).reshape(-1, 4)
    pm = prepare_map(vocab_map)
    ids = np.asarray(source_topk_ids)
    if ids.ndim != 2:
        raise TokalignError(f"source_topk_ids: expected shape [N, K], got {ids.shape}")
    if pivot_topk is None and inside == "pivot":
        raise TokalignError("inside='pivot' needs pivot_topk=(ids, logits, lse) of the pivot model")
    pt = (None, None, None) if pivot_topk is None else tuple(pivot_topk)
    out = call(
        _core.remap_topk,
        groups,
        np.asarray(group_offsets, dtype=np.int64),
        ids,
        np.asarray(source_topk_logits),
        np.asarray(source_lse).reshape(-1),
        np.asarray(source_offsets, dtype=np.int64),
        pm.indptr,
        pm.indices,
        pm.data,
        pm.pivot_vocab,
        np.asarray(pivot_ids),
        np.asarray(pivot_offsets, dtype=np.int64),
        pt[0],
        pt[1],
        None if pt[2] is None else np.asarray(pt[2]).reshape(-1),
        int(k_out),
        inside_code,
        otm_code,
        int(num_threads),
    )
    n = out["topk_ids"].shape[0]
    return RemapResult(
        topk_ids=out["topk_ids"],
        topk_logits=out["topk_logits"],
        logsumexp=np.zeros(n, np.float32),
        group_kind=out["group_kind"],
        retained_mass=out["retained_mass"],
        valid=out["valid"].astype(bool),
        source_position=out["source_position"],
        offsets=np.asarray(pivot_offsets, dtype=np.int64).copy(),
        counts={"masked": out["n_masked"], "nonfinite": out["n_nonfinite"], "empty": out["n_empty"]},
    )


def remap_sequence(
    groups: np.ndarray,
    source_topk_ids: np.ndarray,
    source_topk_logits: np.ndarray,
    source_lse: np.ndarray,
    vocab_map: VocabMapLike,
    pivot_ids: np.ndarray,
    *,
    pivot_topk: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None,
    k_out: int = 10,
    inside: str = "onehot",
    one_to_many: str = "last",
    num_threads: int = 0,
) -> RemapResult:
    """Remap one sequence; same arguments as :func:`remap_batch` without the offsets."""
    ids = np.asarray(source_topk_ids)
    ns = ids.shape[0] if ids.ndim == 2 else 0
    if ids.ndim == 1 and ids.size == 0:
        ids = ids.reshape(0, 1)
        source_topk_logits = np.asarray(source_topk_logits, np.float32).reshape(0, 1)
    np_ = int(np.asarray(pivot_ids).shape[0])
    return remap_batch(
        [groups],
        ids,
        source_topk_logits,
        source_lse,
        vocab_map,
        pivot_ids,
        source_offsets=np.array([0, ns], np.int64),
        pivot_offsets=np.array([0, np_], np.int64),
        pivot_topk=pivot_topk,
        k_out=k_out,
        inside=inside,
        one_to_many=one_to_many,
        num_threads=num_threads,
    )
