"""Token sequence alignment between two tokenizations (the *align* stage).

Three ways to align a pivot token sequence with a source token sequence, all returning one
compact :class:`Alignment`:

* :func:`dtw` -- FuseChat's dynamic time warping over token strings. The cell cost is the
  Levenshtein distance (over Unicode code points) of the two token strings with the word-boundary
  markers ``▁`` (U+2581) and ``Ġ`` (U+0120) removed; when either stripped string is empty the raw
  strings are compared instead. ``D[i][j] = cost + min(D[i-1][j-1], D[i-1][j], D[i][j-1])``,
  traceback from the end. ``tie_break="fusechat"`` reproduces FuseChat's published ``dtw()``
  called as ``dtw(pivot_tokens, source_tokens)``: on equal predecessors the diagonal wins, then
  the step that decrements the pivot index, then the one that decrements the source index.
  ``tie_break="source_first"`` swaps the last two, which is what FuseChat's own training code
  gets because it calls ``dtw(blending_tokens, base_tokens)`` (source first).
  ``band="auto"`` (or an int) gives exactly the full DTW's result (same path, same tie-breaks)
  at a fraction of the cost: DTW inside a band around the diagonal of cumulative text lengths
  (widened while the traced path touches its edge) yields a candidate path of cost U; a pruned
  forward pass (PrunedDTW) then computes the exact D of every cell that can lie on a path of
  cost <= U (two rows of memory) and checks that the full DTW's traceback takes the candidate's
  moves; if not, the pruned pass is rerun keeping its moves (O(kept cells) memory). On real text
  the work stays near the band for a few thousand tokens and grows roughly quadratically with
  length (100k tokens: seconds); inputs that do not follow the band at all (unrelated or highly
  repetitive sequences) degrade toward the full matrix and are refused above ``max_cells``.
* :func:`span` -- exact O(n + m) alignment from character offsets into one text: groups are the
  minimal chunks whose boundaries coincide in both tokenizations. Where the two texts differ
  (e.g. different chat templates) the differing stretches fall back to DTW.
* :func:`batch` -- many pairs at once in C++ (GIL released, OpenMP over pairs), with token ids
  looked up in :class:`TokenTable` objects built once per vocabulary.

Span conventions (documented behaviour for unusual offsets):

* Several tokens with identical offsets (byte-level pieces of one character) cover the same
  characters, so they always fall into one group together with whatever covers that character
  on the other side.
* A zero-width token (``start == end``, e.g. an added special token without text) joins the
  group that starts at its position; at the very end of the text it joins the last group.
* Characters covered by one side only (a tokenizer that drops whitespace) join the following
  group; tokens left over after the other side ran out join the last group.
* Inside a group, ``pivot_to_source`` links the tokens whose character spans overlap (a
  monotone staircase), so every token has at least one partner.

Empty input: if either sequence is empty the result has no path and no groups (every token is
unaligned); no error is raised, so corpus-level batches do not stop on one empty sample.
"""
from __future__ import annotations

from functools import partial
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from .._native import _core, call
from ..errors import TokalignError

__all__ = ["Alignment", "TokenTable", "dtw", "span", "batch", "KINDS"]

KINDS = ("1:1", "1:n", "n:1", "n:m")
_TIE_BREAKS = {"fusechat": 0, "pivot_first": 0, "source_first": 1}
_call = partial(call, what="align")  # a _core call whose input errors become TokalignError("align: ...")



class TokenTable(_core.TokenTable):
    """TokenTable(tokens, weights=None): a vocabulary's token strings converted to code points once in C++
    (index = token id; None counts as an empty string). Optional integer weights (one per token) drive the
    DTW band; pass the UTF-8 byte length of each token's text when known (tok.token_texts()), otherwise an
    approximation from the strings is used. The strings are kept (``tokens``) so that ``device="cuda"`` can
    build the GPU copy of the table on first use."""

    def __init__(self, tokens: Sequence[Optional[str]], weights: Optional[Sequence[int]] = None):
        tokens = list(tokens)
        super().__init__(tokens, weights)
        self.tokens: List[Optional[str]] = tokens
        self.weights: Optional[List[int]] = None if weights is None else [int(w) for w in weights]
        self._cuda_table = None  # tokalign._cuda.DtwTable, made by tokalign.align.cuda on first use


BandArg = Union[None, str, int]


class Alignment:
    """One alignment of a pivot sequence (length ``n``) with a source sequence (length ``m``).

    Stored compactly as the monotone path (``path``, shape [L, 2]) and CSR maps both ways
    (``p2s_indptr``/``p2s_indices``, ``s2p_indptr``/``s2p_indices``). ``groups`` (int64 [G, 4]:
    pivot_start, pivot_end, source_start, source_end, half-open) are the connected components
    of the path, contiguous and in order. ``cost`` is the DTW cost (-1 for span alignment);
    ``band`` the final band radius when the banded candidate was exact, -1 when the full matrix
    or the exact pruned pass produced the path.
    """

    __slots__ = ("n", "m", "path", "p2s_indptr", "p2s_indices", "s2p_indptr", "s2p_indices", "groups",
                 "kind_counts", "cost", "band", "method")

    def __init__(self, raw: dict, method: str):
        self.n: int = int(raw["n"])
        self.m: int = int(raw["m"])
        self.path: np.ndarray = raw["path"]
        self.p2s_indptr: np.ndarray = raw["p2s_indptr"]
        self.p2s_indices: np.ndarray = raw["p2s_indices"]
        self.s2p_indptr: np.ndarray = raw["s2p_indptr"]
        self.s2p_indices: np.ndarray = raw["s2p_indices"]
        self.groups: np.ndarray = raw["groups"]
        self.kind_counts: Dict[str, int] = dict(zip(KINDS, (int(k) for k in raw["kinds"])))
        self.cost: int = int(raw["cost"])
        self.band: int = int(raw["band"])
        self.method: str = method

    @property
    def pivot_to_source(self) -> List[List[int]]:
        """For each pivot position, the sorted source positions on the path."""
        return _csr_lists(self.p2s_indptr, self.p2s_indices)

    @property
    def source_to_pivot(self) -> List[List[int]]:
        """For each source position, the sorted pivot positions on the path."""
        return _csr_lists(self.s2p_indptr, self.s2p_indices)

    def __len__(self) -> int:
        return int(self.groups.shape[0])

    def __repr__(self) -> str:
        return "Alignment(method=%r, n=%d, m=%d, groups=%d, kinds=%s, cost=%d)" % (
            self.method, self.n, self.m, len(self), self.kind_counts, self.cost)


def _from_flat(flat: dict, method: str) -> List[Alignment]:
    """Alignments viewing the concatenated arrays of a ``_core.*_batch_flat`` result."""
    path, path_p, path_s = flat["path"], flat["path_p"], flat["path_s"]
    p2s, s2p, groups = flat["p2s_indptr"], flat["s2p_indptr"], flat["groups"]
    new = Alignment.__new__
    out = []
    for n, m, l0, ln, pp0, sp0, g0, gn, k11, k1n, kn1, knm, cost, band in flat["items"].tolist():
        a = new(Alignment)
        a.n, a.m, a.method, a.cost, a.band = n, m, method, cost, band
        a.path = path[l0:l0 + ln]
        a.s2p_indices = path_p[l0:l0 + ln]
        a.p2s_indices = path_s[l0:l0 + ln]
        a.p2s_indptr = p2s[pp0:pp0 + n + 1]
        a.s2p_indptr = s2p[sp0:sp0 + m + 1]
        a.groups = groups[g0:g0 + gn]
        a.kind_counts = {"1:1": k11, "1:n": k1n, "n:1": kn1, "n:m": knm}
        out.append(a)
    return out


def _csr_lists(indptr: np.ndarray, indices: np.ndarray) -> List[List[int]]:
    flat = indices.tolist()
    bounds = indptr.tolist()
    return [flat[bounds[k]:bounds[k + 1]] for k in range(len(bounds) - 1)]


def _tie_code(tie_break: str) -> int:
    try:
        return _TIE_BREAKS[tie_break]
    except KeyError:
        raise TokalignError("align: tie_break must be one of %s, got %r" % (sorted(_TIE_BREAKS), tie_break)) from None


def _band_code(band: BandArg) -> int:
    if band is None or band == "full":
        return -1
    if band == "auto":
        return 0
    if isinstance(band, (int, np.integer)) and not isinstance(band, bool) and band > 0:
        return int(band)
    raise TokalignError("align: band must be None, 'auto' or a positive int (initial radius), got %r" % (band,))


def _cells_code(max_cells: Optional[int]) -> int:
    if max_cells is None:
        return int(_core.DTW_MAX_CELLS)
    if isinstance(max_cells, (int, np.integer)) and not isinstance(max_cells, bool) and max_cells > 0:
        return int(max_cells)
    raise TokalignError("align: max_cells must be None or a positive int, got %r" % (max_cells,))


def dtw(pivot_tokens: Sequence[Optional[str]], source_tokens: Sequence[Optional[str]], *,
        tie_break: str = "fusechat", band: BandArg = None, max_cells: Optional[int] = None) -> Alignment:
    """FuseChat DTW alignment of two token-string sequences.

    Args:
        pivot_tokens: pivot vocabulary strings as stored (``"▁Hello"``, ``"Ġworld"``, ``"<0x0A>"``).
        source_tokens: source vocabulary strings.
        tie_break: ``"fusechat"`` (= ``"pivot_first"``) or ``"source_first"``; see the module doc.
        band: ``None`` full matrix; ``"auto"`` or a positive int (initial radius in approximate
            bytes of text) for the exact banded DTW (same result as ``None``, see the module doc).
        max_cells: cell budget (default 2**32): the full matrix, and each pass of the banded
            DTW, refuse to evaluate more cells than this (TokalignError) instead of running for
            minutes or exhausting memory.

    Returns:
        An :class:`Alignment` (``cost`` = DTW cost). Either sequence empty: empty alignment.
    """
    if isinstance(pivot_tokens, str) or isinstance(source_tokens, str):
        raise TokalignError("align.dtw: expected sequences of token strings, got a plain str")
    raw = _call(_core.dtw_tokens, list(pivot_tokens), list(source_tokens), _tie_code(tie_break), _band_code(band),
                _cells_code(max_cells))
    return Alignment(raw, "dtw")


def _offsets(offsets, side: str) -> np.ndarray:
    arr = np.asarray(offsets)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise TokalignError("align.span: %s_offsets must be an integer array of shape (n, 2), got %s %s"
                            % (side, arr.dtype, arr.shape))
    return np.ascontiguousarray(arr, dtype=np.int64)


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _merged_coords(blocks: np.ndarray, len_a: int, len_b: int):
    """Maps both texts into one coordinate system: shared characters (diff blocks) get one position;
    inside each differing hunk the pivot's characters come first, then the source's. Returns, per side,
    the merged position of every character plus one past the end, and a mask of shared characters."""
    pos_a = np.empty(len_a + 1, dtype=np.int64)
    pos_b = np.empty(len_b + 1, dtype=np.int64)
    shared_a = np.zeros(len_a, dtype=bool)
    shared_b = np.zeros(len_b, dtype=bool)
    x = y = z = 0  # next char of a, of b, next merged position
    for a0, b0, ln in list(blocks.tolist()) + [[len_a, len_b, 0]]:
        da, db = a0 - x, b0 - y  # hunk before this block
        pos_a[x:a0] = np.arange(z, z + da)
        z += da
        pos_b[y:b0] = np.arange(z, z + db)
        z += db
        pos_a[a0:a0 + ln] = np.arange(z, z + ln)
        pos_b[b0:b0 + ln] = np.arange(z, z + ln)
        shared_a[a0:a0 + ln] = True
        shared_b[b0:b0 + ln] = True
        z += ln
        x, y = a0 + ln, b0 + ln
    pos_a[len_a] = z
    pos_b[len_b] = z
    return pos_a, pos_b, shared_a, shared_b


def _map_offsets(off: np.ndarray, pos: np.ndarray, shared: np.ndarray, text_len: int, side: str):
    if off.size and (off.min() < 0 or off.max() > text_len):
        raise TokalignError("align.span: %s_offsets reach beyond the %s text (%d characters)" % (side, side, text_len))
    s, e = off[:, 0], off[:, 1]
    merged = np.empty_like(off)
    merged[:, 0] = pos[s]
    nonzero = e > s
    merged[:, 1] = np.where(nonzero, pos[np.maximum(e - 1, 0)] + 1, merged[:, 0])
    outside = np.concatenate([[0], np.cumsum(~shared)])
    dirty = (outside[e] - outside[s]) > 0
    return merged, dirty.astype(np.uint8)


def span(pivot_offsets, source_offsets, *, pivot_text: Optional[str] = None, source_text: Optional[str] = None,
         pivot_tokens: Optional[Sequence[str]] = None, source_tokens: Optional[Sequence[str]] = None,
         tie_break: str = "fusechat", max_diff: int = 2048) -> Alignment:
    """Alignment from character offsets (``Encoding.offsets``, int [n, 2], half-open).

    With no texts (or equal texts) both offset arrays index the same text: exact O(n + m). When
    ``pivot_text != source_text`` the texts are diffed (Myers, at most ``max_diff`` edits, beyond
    that the whole differing middle is one stretch); groups that touch a character present in only
    one text are merged into stretches and re-aligned with banded DTW over the token strings
    (``pivot_tokens``/``source_tokens`` if given, else the text slices of the offsets).
    """
    po = _offsets(pivot_offsets, "pivot")
    so = _offsets(source_offsets, "source")
    if pivot_text is None and source_text is None or pivot_text == source_text:
        text = pivot_text if pivot_text is not None else source_text
        if text is not None:
            for off, side in ((po, "pivot"), (so, "source")):
                if off.size and off.max() > len(text):
                    raise TokalignError("align.span: %s_offsets reach beyond the text (%d characters)"
                                        % (side, len(text)))
        return Alignment(_call(_core.span, po, so), "span")
    if pivot_text is None or source_text is None:
        raise TokalignError("align.span: give both pivot_text and source_text, or neither")
    for toks, off, side in ((pivot_tokens, po, "pivot"), (source_tokens, so, "source")):
        if toks is not None and len(toks) != len(off):
            raise TokalignError("align.span: %d %s_tokens but %d %s_offsets" % (len(toks), side, len(off), side))
    blocks = _call(_core.text_blocks, _codepoints(pivot_text), _codepoints(source_text), int(max_diff))
    pos_a, pos_b, shared_a, shared_b = _merged_coords(blocks, len(pivot_text), len(source_text))
    pm, pd = _map_offsets(po, pos_a, shared_a, len(pivot_text), "pivot")
    sm, sd = _map_offsets(so, pos_b, shared_b, len(source_text), "source")
    raw, stretches = _call(_core.span_dirty, pm, sm, pd, sd)
    if len(stretches) == 0:
        return Alignment(raw, "span")
    pstr = list(pivot_tokens) if pivot_tokens is not None else [pivot_text[s:e] for s, e in po.tolist()]
    sstr = list(source_tokens) if source_tokens is not None else [source_text[s:e] for s, e in so.tolist()]
    path_p, path_s = raw["path_p"], raw["path_s"]
    pieces_p, pieces_s, at = [], [], 0
    tie = _tie_code(tie_break)
    for p0, p1, s0, s1 in stretches.tolist():
        a = int(np.searchsorted(path_p, p0, side="left"))
        b = int(np.searchsorted(path_p, p1, side="left"))
        sub = _call(_core.dtw_tokens, pstr[p0:p1], sstr[s0:s1], tie, 0)
        pieces_p += [path_p[at:a], sub["path_p"] + p0]
        pieces_s += [path_s[at:a], sub["path_s"] + s0]
        at = b
    pieces_p.append(path_p[at:])
    pieces_s.append(path_s[at:])
    full = _call(_core.path_result, np.concatenate(pieces_p).astype(np.int32),
                 np.concatenate(pieces_s).astype(np.int32), len(po), len(so), -1)
    return Alignment(full, "span+dtw")


def _ids(seq, table, side: str, k: int) -> np.ndarray:
    arr = np.asarray(seq)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int32)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise TokalignError("align.batch: %s sequence %d must be a 1-D integer array, got %s %s"
                            % (side, k, arr.dtype, arr.shape))
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= len(table):
        bad = lo if lo < 0 else hi
        raise TokalignError("align.batch: %s sequence %d has token id %d outside the table (size %d)"
                            % (side, k, bad, len(table)))
    return np.ascontiguousarray(arr, dtype=np.int32)


def batch(pivot_ids: Optional[Sequence] = None, source_ids: Optional[Sequence] = None, *,
          pivot_table: Optional["TokenTable"] = None, source_table: Optional["TokenTable"] = None,
          method: str = "dtw", band: BandArg = "auto", tie_break: str = "fusechat",
          pivot_offsets: Optional[Sequence] = None, source_offsets: Optional[Sequence] = None,
          num_threads: int = 0, max_cells: Optional[int] = None, device: str = "cpu") -> List[Alignment]:
    """Aligns many pairs in C++ with the GIL released, pairs spread over ``num_threads`` OpenMP
    threads (0 = all cores).

    ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``; see :mod:`tokalign.device`): with ``"cuda"``
    ``method="dtw"`` runs on the GPU (``tokalign._cuda``), giving the same paths and costs as the
    CPU (pairs the GPU does not take run on the CPU in the same call; docs/cuda.md). Span
    alignment is O(n + m) and always runs on the CPU.

    ``method="dtw"``: ``pivot_ids[k]``/``source_ids[k]`` are integer id arrays looked up in
    ``pivot_table``/``source_table`` (:class:`TokenTable`, built once per vocabulary), or lists of
    token strings when no tables are given. ``method="span"``: ``pivot_offsets[k]``/``source_offsets[k]``
    are [n, 2] char offsets of one shared text per pair (no text diff in batch mode; use :func:`span`).
    ``max_cells`` is the per-pair DTW cell budget (see :func:`dtw`).
    """
    tie = _tie_code(tie_break)
    if method == "span":
        if pivot_offsets is None or source_offsets is None:
            raise TokalignError("align.batch: method='span' needs pivot_offsets and source_offsets")
        if len(pivot_offsets) != len(source_offsets):
            raise TokalignError("align.batch: %d pivot_offsets but %d source_offsets"
                                % (len(pivot_offsets), len(source_offsets)))
        # Validation, alignment and result assembly in C++; the results come back concatenated
        # and each Alignment holds views of them (no per-pair arrays built in C++ or Python).
        flat = _call(_core.span_batch_flat, [np.asarray(o) for o in pivot_offsets],
                     [np.asarray(o) for o in source_offsets], int(num_threads))
        return _from_flat(flat, "span")
    if method != "dtw":
        raise TokalignError("align.batch: method must be 'dtw' or 'span', got %r" % (method,))
    if pivot_ids is None or source_ids is None:
        raise TokalignError("align.batch: method='dtw' needs pivot_ids and source_ids")
    if len(pivot_ids) != len(source_ids):
        raise TokalignError("align.batch: %d pivot sequences but %d source sequences" % (len(pivot_ids), len(source_ids)))
    if (pivot_table is None) != (source_table is None):
        raise TokalignError("align.batch: give both pivot_table and source_table, or neither")
    code = _band_code(band)
    if pivot_table is None:
        # Token strings: one table per side over the distinct strings of the whole batch.
        tables = []
        id_lists = []
        for seqs in (pivot_ids, source_ids):
            index: Dict[str, int] = {}
            ids = [np.fromiter((index.setdefault(t, len(index)) for t in seq), dtype=np.int32, count=len(seq))
                   for seq in seqs]
            tables.append(TokenTable(list(index)))
            id_lists.append(ids)
        pt, st = tables
        pids, sids = id_lists
    else:
        pt, st = pivot_table, source_table
        pids = [_ids(s, pt, "pivot", k) for k, s in enumerate(pivot_ids)]
        sids = [_ids(s, st, "source", k) for k, s in enumerate(source_ids)]
    from ..device import resolve_device

    if resolve_device(device) == "cuda" and (getattr(pt, "tokens", None) is not None or device == "cuda"):
        from .cuda import dtw_batch as _dtw_batch_cuda

        raws, _ = _dtw_batch_cuda(pt, pids, st, sids, tie, code, int(num_threads))
    else:
        raws = _call(_core.dtw_batch, pt, pids, st, sids, tie, code, int(num_threads), _cells_code(max_cells))
    return [Alignment(r, "dtw") for r in raws]
