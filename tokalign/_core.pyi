# Typed stub of tokalign._core, the C++17 core (csrc/module.cpp + csrc/bind_<stage>.cpp), by stage.
# Every entry point releases the GIL. Array arguments are converted (copied when needed) to C-contiguous
# arrays of the dtype named in the comment, except the merge kernels' `.noconvert()` float32 buffers.
# Python code calls these through tokalign._native (one-line TokalignError when unbuilt or on bad input);
# tests/test_native.py checks that this stub and the module export the same names.
from typing import Any, Dict, List, Optional, Sequence, Tuple, TypedDict

import numpy as np
from numpy.typing import ArrayLike, NDArray

# ---- module ---------------------------------------------------------------------------------------------
openmp: bool  # built with OpenMP

def max_threads() -> int: ...  # OpenMP threads available (1 without OpenMP)

# ---- tokenize (bind_tokenize.cpp) ---------------------------------------------------------------------------
class CanonicalOffsets:
    """Canonical token bytes of a vocabulary, for exact_offsets_batch (built once per tokenizer)."""

    # texts: canonical bytes per id; added_mask: uint8 0/1 per id; prepend: "never" | "always" | "first".
    # ValueError when added_mask's length differs from texts', TypeError for non-bytes texts.
    def __init__(self, texts: Sequence[bytes], added_mask: ArrayLike, prepend: str) -> None: ...
    @property
    def size(self) -> int: ...  # vocabulary size
    @property
    def prepend(self) -> str: ...

# texts: str (or UTF-8 bytes) per item; ids: int list/array per item; inserted: per item None or a bool mask
# of post-processor tokens, or sequence_ids: per item None or a list where None marks them.
# Returns (ids: int32 arrays, offsets: [n, 2] int64 arrays or None where the canonical texts do not add up).
# IndexError for ids outside the table; ValueError / TypeError for malformed items.
def exact_offsets_batch(
    table: CanonicalOffsets,
    texts: Sequence[Any],
    ids: Sequence[Any],
    inserted: Optional[Sequence[Optional[ArrayLike]]] = None,
    sequence_ids: Optional[Sequence[Optional[Sequence[Optional[int]]]]] = None,
) -> Tuple[List[NDArray[np.int32]], List[Optional[NDArray[np.int64]]]]: ...

# ---- align (bind_align.cpp) ------------------------------------------------------------------------------
DTW_MAX_CELLS: int  # default cell limit of a full DTW matrix (larger pairs raise ValueError)

class _AlignResult(TypedDict):
    """One alignment: the monotone path, its CSR views and the groups (tokalign.align.Alignment wraps it)."""

    n: int  # pivot tokens
    m: int  # source tokens
    path: NDArray[np.int32]  # (L, 2) pairs (pivot index, source index)
    path_p: NDArray[np.int32]  # path[:, 0]; also s2p_indices
    path_s: NDArray[np.int32]  # path[:, 1]; also p2s_indices
    p2s_indptr: NDArray[np.int64]  # [n + 1]
    p2s_indices: NDArray[np.int32]
    s2p_indptr: NDArray[np.int64]  # [m + 1]
    s2p_indices: NDArray[np.int32]
    groups: NDArray[np.int64]  # (G, 4) rows (p0, p1, s0, s1)
    kinds: Tuple[int, int, int, int]  # group counts of kinds 1:1, 1:n, n:1, n:m
    cost: int  # DTW cost (-1 for span alignments)
    band: int  # band radius that gave the exact result (-1: full matrix)

class _FlatResults(TypedDict):
    """Many alignments as concatenated arrays (tokalign.align._from_flat splits them)."""

    # (count, 14) per pair: n, m, path start, path length, p2s / s2p indptr starts, group start, group count,
    # four kind counts, cost, band
    items: NDArray[np.int64]
    path: NDArray[np.int32]
    path_p: NDArray[np.int32]
    path_s: NDArray[np.int32]
    p2s_indptr: NDArray[np.int64]
    s2p_indptr: NDArray[np.int64]
    groups: NDArray[np.int64]

class TokenTable:
    """Code-point strings of a vocabulary (index = token id); items are str or None (empty). Optional weights
    (int >= 0, one per token) drive the DTW band: the UTF-8 byte length of each token's text when known."""

    def __init__(self, tokens: Sequence[Optional[str]], weights: Optional[Sequence[int]] = None) -> None: ...
    def __len__(self) -> int: ...
    def weight(self, arg0: int) -> int: ...  # band weight of a token id (IndexError outside the table)

# FuseChat DTW of two token-string lists. tie: 0 pivot first, 1 source first; band: -1 full, 0 auto,
# > 0 initial radius (exact either way); ValueError when the full matrix needs more than max_cells cells.
def dtw_tokens(pivot: Sequence[str], source: Sequence[str], tie: int = 0, band: int = -1,
               max_cells: int = ...) -> _AlignResult: ...

# DTW of two id sequences (int32) over token tables; ValueError for ids outside a table.
def dtw_ids(pivot_table: TokenTable, pivot_ids: ArrayLike, source_table: TokenTable, source_ids: ArrayLike,
            tie: int = 0, band: int = -1, max_cells: int = ...) -> _AlignResult: ...

# Many id-sequence pairs on `threads` OpenMP threads (0: all); ValueError "pair k: ..." for the first bad pair.
def dtw_batch(pivot_table: TokenTable, pivot_ids: Sequence[ArrayLike], source_table: TokenTable,
              source_ids: Sequence[ArrayLike], tie: int = 0, band: int = 0, threads: int = 0,
              max_cells: int = ...) -> List[_AlignResult]: ...

# Span alignment of (n, 2) int64 character offsets of two tokenizations of one text.
def span(pivot_offsets: ArrayLike, source_offsets: ArrayLike) -> _AlignResult: ...

# Span alignment where uint8 dirty masks mark tokens outside text shared by both sides. Returns the result
# and the (k, 4) int64 stretches (p0, p1, s0, s1) that tokalign.align.span re-aligns with DTW.
def span_dirty(pivot_offsets: ArrayLike, source_offsets: ArrayLike, pivot_dirty: ArrayLike,
               source_dirty: ArrayLike) -> Tuple[_AlignResult, NDArray[np.int64]]: ...

# Span alignment of many pairs (lists of (n, 2) integer arrays), results concatenated.
def span_batch_flat(pivot_offsets: List[ArrayLike], source_offsets: List[ArrayLike],
                    threads: int = 0) -> _FlatResults: ...

# The full result of a given DTW path (int32 columns from (0, 0) to (n-1, m-1)); ValueError for a bad path.
def path_result(path_p: ArrayLike, path_s: ArrayLike, n: int, m: int, cost: int = -1) -> _AlignResult: ...

# Matching blocks of two uint32 code-point arrays (diff with at most max_d edits): flat int64
# (a_start, b_start, length) triples.
def text_blocks(a: ArrayLike, b: ArrayLike, max_d: int = 2048) -> NDArray[np.int64]: ...

# ---- vocab (bind_vocab.cpp) ------------------------------------------------------------------------------
# Text units of UTF-8 bytes: code points, and U+DC00+byte for bytes outside well-formed sequences.
def decode_units(text: bytes) -> List[int]: ...

# Levenshtein distance between the text units of two byte strings (bit-parallel).
def levenshtein(a: bytes, b: bytes) -> int: ...

# For each k: distance between texts_a[ia[k]] and texts_b[ib[k]] (int32) and whether either contains the other
# (bool). IndexError for indexes past the texts; TypeError for non-bytes texts.
def levenshtein_pairs(texts_a: Sequence[bytes], texts_b: Sequence[bytes], ia: ArrayLike, ib: ArrayLike,
                      threads: int = 0) -> Tuple[NDArray[np.int32], NDArray[np.bool_]]: ...

class MinEDIndex:
    """All-pairs minimum edit distance against a fixed pivot vocabulary. Result key: (distance, |length
    difference|, rank, pivot id), smaller first; an exact text match short-circuits."""

    # candidate: bool per pivot text (may be a result); rank: int64 per pivot text (tie-break).
    def __init__(self, pivot_texts: Sequence[bytes], candidate: ArrayLike, rank: ArrayLike) -> None: ...
    @property
    def candidates(self) -> int: ...  # pivot texts that may be results
    @property
    def alphabet_size(self) -> int: ...  # distinct text units of the candidates
    # query: bool per source text (None: all); returns (ids, dists) int32 (n, top_n), -1 where empty, and
    # stats {"exact", "filtered", "evaluated"}.
    def query(self, source_texts: Sequence[bytes], query: Optional[ArrayLike] = None, top_n: int = 1,
              threads: int = 0) -> Tuple[NDArray[np.int32], NDArray[np.int32], Dict[str, int]]: ...

# ---- stats (bind_stats.cpp) ------------------------------------------------------------------------------
# Co-aligned (pivot, source) token pairs of a batch of aligned sequences (ragged: ids[offsets[k]:offsets[k+1]],
# groups (G, 4) int64 per group_offsets). Returns (sorted unique keys p * source_vocab + s as uint64,
# int64 counts); ValueError for ids outside the vocabularies or groups out of range.
def count_pairs(pivot_ids: ArrayLike, pivot_offsets: ArrayLike, source_ids: ArrayLike, source_offsets: ArrayLike,
                groups: ArrayLike, group_offsets: ArrayLike, pivot_vocab: int,
                source_vocab: int) -> Tuple[NDArray[np.uint64], NDArray[np.int64]]: ...

# ---- remap (bind_remap.cpp) ------------------------------------------------------------------------------
# Ragged source top-k distributions remapped into the pivot vocabulary through a CSR vocabulary map.
# inside: 0 onehot, 1 pivot, 2 mask; one_to_many: 0 last, 1 weighted. Returns arrays topk_ids,
# topk_logits, group_kind, retained_mass, valid (uint8), source_position and counts n_masked, n_nonfinite,
# n_empty. Low-level: use tokalign.remap.remap_batch.
def remap_topk(groups: ArrayLike, group_offsets: ArrayLike, source_ids: ArrayLike, source_logits: ArrayLike,
               source_lse: ArrayLike, source_offsets: ArrayLike, map_indptr: ArrayLike, map_indices: ArrayLike,
               map_data: ArrayLike, pivot_vocab: int, pivot_ids: ArrayLike, pivot_offsets: ArrayLike,
               pivot_topk_ids: Optional[ArrayLike] = None, pivot_topk_logits: Optional[ArrayLike] = None,
               pivot_lse: Optional[ArrayLike] = None, k_out: int = 10, inside: int = 0, one_to_many: int = 0,
               num_threads: int = 0) -> Dict[str, Any]: ...

# Stored id sequences aligned like tokalign.align.span on the texts their token bytes spell (uint8 bytes +
# int64 byte offsets per tokenizer). tie: 0 pivot first, 1 source first. Returns (groups (G, 4) int64,
# group_offsets [S + 1] int64, path uint8 [S]: 0 same text, 1 diff, 2 diff + DTW, 3 empty).
def remap_align_batch(pivot_bytes: ArrayLike, pivot_byte_offsets: ArrayLike, pivot_ids: ArrayLike,
                      pivot_offsets: ArrayLike, source_bytes: ArrayLike, source_byte_offsets: ArrayLike,
                      source_ids: ArrayLike, source_offsets: ArrayLike, max_diff: int = 2048, tie: int = 0,
                      num_threads: int = 0) -> Tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.uint8]]: ...

# token_ce of remapped positions: each group's source NLL (float32 source_ce, optional float32 source_lse)
# spread over the pivot positions predicting its tokens. Returns float32 [Np].
def source_nll_by_group(source_ce: ArrayLike, source_offsets: ArrayLike, groups: ArrayLike, group_offsets: ArrayLike,
                        pivot_offsets: ArrayLike, source_lse: Optional[ArrayLike] = None,
                        num_threads: int = 0) -> NDArray[np.float32]: ...

# The remap_ce diagnostic: -log q(next pivot token) when kept, else -log(max(1 - retained, 1e-6)); 0 at each
# sequence's last position and where invalid. Returns float32 [N].
def remapped_token_ce(topk_ids: ArrayLike, topk_logits: ArrayLike, retained_mass: ArrayLike, valid: ArrayLike,
                      input_ids: ArrayLike, offsets: ArrayLike, num_threads: int = 0) -> NDArray[np.float32]: ...

# ---- merge (bind_merge.cpp) ------------------------------------------------------------------------------
# The float32 buffers (base, model, values, out) must be C-contiguous float32 as given (TypeError otherwise:
# never a silently discarded copy); models: a list of such arrays of the same size. Low-level: use
# fusion_train.merge.native.

# Fused generalized task arithmetic (TIES / DARE / task arithmetic) into `out`. Per model: weight, sparsify
# (0 keep all, 1 drop all, 2 magnitude top-k with ks, 3 random keep with keep_below and stream key).
# Returns {"thresholds": [...], "scales": [...]}.
def merge_gta(base: NDArray[np.float32], models: List[NDArray[np.float32]], out: NDArray[np.float32],
              weights: Sequence[float], sparsify: Sequence[int], ks: Sequence[int], keep_below: Sequence[int],
              keys: Sequence[int], consensus: bool, normalize: bool, rescale: bool, lambda_: float, divisor: float,
              num_threads: int = 0) -> Dict[str, List[float]]: ...

# The k-th largest |model - base| (exact radix select: torch.kthvalue(|d|, n - k + 1)).
def merge_topk_abs_threshold(base: NDArray[np.float32], model: NDArray[np.float32], k: int,
                             num_threads: int = 0) -> float: ...

# The k-th largest value (exact radix select; no NaN): torch.kthvalue(values, n - k + 1).
def merge_kth_largest(values: NDArray[np.float32], k: int, num_threads: int = 0) -> float: ...

# Linear merge into out: sum_j w_j x_j (/ divisor when normalize).
def merge_linear(models: List[NDArray[np.float32]], out: NDArray[np.float32], weights: Sequence[float],
                 normalize: bool, divisor: float, num_threads: int = 0) -> None: ...

# SCE: population variance across models of (model - base), into out.
def merge_sce_variance(base: NDArray[np.float32], models: List[NDArray[np.float32]], out: NDArray[np.float32],
                       num_threads: int = 0) -> None: ...

# SCE merge into out. variances: float32 or None; mask_mode: 0 none, 1 variances >= threshold, 2 empty.
# Returns eta (one weight per model).
def merge_sce(base: NDArray[np.float32], models: List[NDArray[np.float32]], variances: Optional[NDArray[np.float32]],
              out: NDArray[np.float32], mask_mode: int, threshold: float, mergekit: bool,
              num_threads: int = 0) -> List[float]: ...

# DARE keep mask (uint8, 1 = kept) of n elements for one stream key (fusion_train.merge.rng).
def merge_random_keep_mask(key: int, keep_below: int, n: int, num_threads: int = 0) -> NDArray[np.uint8]: ...
