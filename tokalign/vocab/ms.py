"""MS: vocabulary map from mapping statistics (FuseChat's method).

Input: the mapping-statistics matrix ``C`` (scipy CSR int64, shape pivot_vocab x source_vocab,
``C[p, s]`` = how often pivot token p and source token s fell into one alignment group; see
``tokalign.stats``). Variants, per source token s with at least one count:

* ``argmax`` (the paper): the pivot token most often aligned with s; ties: preferred pivot token
  (ordinary before byte-fallback), then lower id.
* ``soft``: the counts of column s normalised to sum 1; with ``top_n`` only the n largest
  (same tie order) are kept and renormalised.
* ``fusechat`` (the released FuseChat code, ``train/align_token_and_vocab.py::token_align_mapping``):
  among the pivot tokens p with ``C[p, s] > 0``, the one minimising
  ``editdistance(a, b) * (0.1 if a in b or b in a else 1) * sigmoid(C[p, s])``, first (lowest pivot
  id) on ties, where ``a`` / ``b`` are the *raw* vocabulary strings (``raw_tokens()``) of the source /
  pivot token with each tokenizer's word-boundary marker (``▁`` for SentencePiece, ``Ġ`` for
  byte-level vocabularies; FuseChat only handled ``▁``) removed, compared as code points. Note that
  sigmoid grows with the count, so among equally distant candidates a *rarer* one wins: that is
  what the released code does, reproduced as is.

Source tokens without counts (never seen in the corpus) fall back to ``fallback``: ``mined``
(minimum edit distance, one token), ``em`` (exact text match), ``unk`` (the pivot unk token, as
FuseChat does) or ``none`` (row stays empty). Special source tokens always map by role when both
tokenizers have that role (FuseChat does this for bos and eos), overriding the statistics.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import numpy as np
import scipy.sparse as sp

from ..errors import TokalignError
from . import _common as C
from . import em as em_method
from . import mined as mined_method
from .registry import CliOption, MapMethod, positive, register
from .vocab_map import VocabMap

VARIANTS = ("argmax", "soft", "fusechat")
FALLBACKS = ("mined", "em", "unk", "none")
FUSECHAT_SUBSTRING_WEIGHT = 0.1


def marker_of(tok: Any) -> str:
    """The word-boundary marker in ``tok.raw_tokens()``: ``▁`` (SentencePiece), ``Ġ`` (byte-level) or ``""``."""
    raw = tok.raw_tokens()
    n_sp = sum(1 for r in raw if r.startswith("\u2581"))
    n_bl = sum(1 for r in raw if r.startswith("\u0120"))
    if max(n_sp, n_bl) < max(1, len(raw) // 100):
        return ""
    return "\u2581" if n_sp >= n_bl else "\u0120"


def _check_stats(stats: Any, pivot: Any, source: Any) -> sp.csr_matrix:
    if not sp.issparse(stats):
        stats = sp.csr_matrix(np.asarray(stats))
    want = (int(pivot.vocab_size), int(source.vocab_size))
    if tuple(stats.shape) != want:
        raise TokalignError("mapping statistics have shape %s, expected (pivot_vocab, source_vocab) = %s" % (stats.shape, want))
    m = sp.csr_matrix(stats)
    if m.nnz and m.data.min() < 0:
        raise TokalignError("mapping statistics contain negative counts")
    m.eliminate_zeros()
    return m


def _per_row_order(rows: np.ndarray, *keys: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Sorts entries by row then keys (lexsort: last key most significant after row); returns
    (order, position of each sorted entry inside its row)."""
    order = np.lexsort(tuple(reversed(keys)) + (rows,))
    r = rows[order]
    starts = np.r_[0, np.flatnonzero(np.diff(r)) + 1] if r.size else np.zeros(0, np.int64)
    pos = np.arange(r.size) - np.repeat(starts, np.diff(np.r_[starts, r.size]))
    return order, pos


def fusechat_scores(pivot: Any, source: Any, s_ids: np.ndarray, p_ids: np.ndarray, counts: np.ndarray,
                    markers: Tuple[Optional[str], Optional[str]] = (None, None)) -> np.ndarray:
    """FuseChat's weighted distance for entries (source s_ids[k], pivot p_ids[k], count counts[k])."""
    p_marker = markers[0] if markers[0] is not None else marker_of(pivot)
    s_marker = markers[1] if markers[1] is not None else marker_of(source)
    p_raw = [r.replace(p_marker, "") if p_marker else r for r in pivot.raw_tokens()]
    s_raw = [r.replace(s_marker, "") if s_marker else r for r in source.raw_tokens()]
    enc = lambda xs: [x.encode("utf-8", "surrogateescape") for x in xs]  # noqa: E731 - code points survive
    from .._native import _core

    dist, contains = _core.levenshtein_pairs(enc(s_raw), enc(p_raw), s_ids.astype(np.int64), p_ids.astype(np.int64))
    w = np.where(contains, FUSECHAT_SUBSTRING_WEIGHT, 1.0)
    sig = 1.0 / (1 + np.exp(-counts.astype(np.float64)))
    return (dist.astype(np.float64) * w) * sig


def build(
    pivot: Any,
    source: Any,
    stats: Any,
    *,
    variant: str = "argmax",
    top_n: Optional[int] = None,
    fallback: str = "mined",
    markers: Tuple[Optional[str], Optional[str]] = (None, None),
    threads: int = 0,
    progress: bool = False,
    stats_meta: Optional[Dict[str, Any]] = None,
) -> VocabMap:
    """MS vocabulary map ``source -> pivot`` (see module docstring).

    Args:
        stats: CSR (pivot_vocab, source_vocab) counts, a :class:`tokalign.stats.MappingStats`, or its
            folder (read with :meth:`~tokalign.stats.MappingStats.load`, which refuses statistics of
            other tokenizers).
        variant: ``argmax`` | ``soft`` | ``fusechat``.
        top_n: ``soft`` only: keep the n largest counts per source token.
        fallback: ``mined`` | ``em`` | ``unk`` | ``none`` for source tokens without counts.
        markers: ``fusechat`` only: (pivot, source) word-boundary markers; None = detect.
    """
    C.check_tokenizer(pivot, "pivot")
    C.check_tokenizer(source, "source")
    if variant not in VARIANTS:
        raise TokalignError("variant must be one of %s, got %r" % ("|".join(VARIANTS), variant))
    if fallback not in FALLBACKS:
        raise TokalignError("fallback must be one of %s, got %r" % ("|".join(FALLBACKS), fallback))
    if top_n is not None and (variant != "soft" or top_n < 1):
        raise TokalignError("top_n applies to variant 'soft' only and must be >= 1")
    from ..stats import MappingStats

    if isinstance(stats, (str, os.PathLike)):
        stats = MappingStats.load(stats, expect_pivot=pivot.fingerprint, expect_source=source.fingerprint)
    if isinstance(stats, MappingStats):
        stats, stats_meta = stats.matrix, stats.meta if stats_meta is None else stats_meta
    counts_ps = _check_stats(stats, pivot, source)
    cs = counts_ps.T.tocsr()  # (source, pivot)
    cs.sort_indices()
    rows = np.repeat(np.arange(cs.shape[0], dtype=np.int64), np.diff(cs.indptr))
    cols = cs.indices.astype(np.int64)
    vals = cs.data.astype(np.float64)
    seen = np.diff(cs.indptr) > 0
    rank = C.preference_rank(pivot)
    b = C.MapBuilder(pivot, source)
    seen_ids = np.flatnonzero(seen)
    if variant == "argmax":
        order, pos = _per_row_order(rows, -vals, rank[cols], cols)
        first = order[pos == 0]
        b.set_one_hot(rows[first], cols[first], "stats")
    elif variant == "soft":
        if top_n is not None:
            order, pos = _per_row_order(rows, -vals, rank[cols], cols)
            keep = order[pos < top_n]
        else:
            keep = np.arange(rows.size)
        b.set_weighted(seen_ids, rows[keep], cols[keep], vals[keep], "stats")
    else:  # fusechat
        score = fusechat_scores(pivot, source, rows, cols, vals, markers)
        order, pos = _per_row_order(rows, score, cols)
        first = order[pos == 0]
        b.set_one_hot(rows[first], cols[first], "stats")

    unseen = ~seen & ~C.special_mask(source)
    fb_stats: Dict[str, int] = {}
    if fallback == "mined" and unseen.any():
        ids, dists, fb_stats = mined_method.search(pivot, source, query=unseen, top_n=1, threads=threads, progress=progress)
        sel = np.flatnonzero(ids[:, 0] >= 0)
        b.set_one_hot(sel, ids[sel, 0], "fallback_mined")
    elif fallback == "em" and unseen.any():
        em = em_method.exact_matches(pivot, source)
        sel = np.flatnonzero(unseen & (em >= 0))
        b.set_one_hot(sel, em[sel], "fallback_em")
    elif fallback == "unk" and unseen.any():
        unk = (pivot.special_ids or {}).get("unk")
        if unk is None:
            raise TokalignError("fallback 'unk': pivot tokenizer %r has no unk token" % getattr(pivot, "name", "?"))
        sel = np.flatnonzero(unseen)
        b.set_one_hot(sel, np.full(sel.size, int(unk)), "fallback_unk")
    roles = C.special_pairs(pivot, source)
    role_ids = {sid: pid for sid, pid in roles.items()}
    b.set_one_hot(np.array(list(role_ids), dtype=np.int64), np.array(list(role_ids.values()), dtype=np.int64), "special")
    extra: Dict[str, Any] = {"stats": {"nnz": int(counts_ps.nnz), "total": int(counts_ps.sum()), "source_seen": int(seen.sum())}}
    if fb_stats:
        extra["search"] = fb_stats
    if stats_meta:
        extra["stats"]["meta"] = {k: v for k, v in stats_meta.items() if isinstance(v, (str, int, float, bool))}
    options = {"variant": variant, "top_n": top_n, "fallback": fallback}
    if variant == "fusechat":
        options["markers"] = [markers[0] if markers[0] is not None else marker_of(pivot),
                              markers[1] if markers[1] is not None else marker_of(source)]
    return b.build("ms", options, extra)


@register
class MappingStatistics(MapMethod):
    name = "ms"
    description = "from mapping statistics (FuseChat; needs --stats)"
    needs_stats = True
    runtime = ("threads", "progress")
    origins = {
        4: "stats",  # mapping statistics
        5: "fallback_mined",  # never seen in the corpus, MinED instead
        6: "fallback_em",  # never seen, exact match instead
        7: "fallback_unk",  # never seen, pivot unk token (as released FuseChat does)
    }
    cli_options = (
        CliOption("--variant", "variant", "argmax (default), soft or fusechat", default="argmax", choices=VARIANTS),
        CliOption("--top-n", "top_n", "with --variant soft, keep the N largest counts", type=int, metavar="N"),
        CliOption("--fallback", "fallback", "tokens never seen in the corpus: mined (default), em, unk or none",
                  default="mined", choices=FALLBACKS),
    )
    build = staticmethod(build)

    @classmethod
    def options_from_cli(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        out = super().options_from_cli(values)
        positive(out["top_n"], "--top-n")
        if out["top_n"] is not None and out["variant"] != "soft":
            raise TokalignError("--top-n applies to --method ms only with --variant soft")
        return out
