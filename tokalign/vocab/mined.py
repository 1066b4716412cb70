"""MinED: each source token maps to the pivot token(s) of minimum edit distance.

Distances are Levenshtein distances over text units of the canonical texts (code points; stray
bytes of partial UTF-8 sequences count one unit each; see :mod:`tokalign.vocab._common`).
Candidates are the ordinary (non-special) pivot tokens; special source tokens map by role.

Order of results and tie-break: (distance, |length difference|, preference, pivot id), smaller
first, where preference puts ordinary tokens before byte-fallback pieces. An exact text match
(distance 0) short-circuits: that row is one-hot even with ``top_n > 1``.

``top_n`` keeps the n best; their weights are ``1 / (1 + distance)`` normalised per row
(``weighting="inverse"``) or equal (``weighting="uniform"``).

The search is native (``tokalign._core.MinEDIndex``) and exact: pivot tokens bucketed by length;
a few seed candidates (the query's neighbours in prefix / suffix order of the pivot texts) give an
initial bound; buckets are scanned outward from the source length (the length difference bounds
the distance, so the scan stops once it exceeds the worst kept distance); a character-signature
lower bound; then a bit-parallel (Myers/Hyyro) Levenshtein with early exit. OpenMP over source
tokens, GIL released.

``device="cuda"`` (or ``"auto"`` with a GPU) runs the same exact search on the GPU
(``tokalign._cuda``, one warp per source token; docs/cuda.md) with identical results and ties.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from . import _common as C
from .registry import CliOption, MapMethod, positive, register
from .vocab_map import VocabMap

WEIGHTINGS = ("inverse", "uniform")


def search(
    pivot: Any,
    source: Any,
    *,
    query: Optional[np.ndarray] = None,
    top_n: int = 1,
    threads: int = 0,
    progress: bool = False,
    chunk: int = 16384,
    device: str = "cpu",
) -> Tuple[np.ndarray, np.ndarray, Dict[str, int]]:
    """Raw MinED search.

    Args:
        query: bool (source_vocab,) of source tokens to search; default: all ordinary tokens.
        top_n: results per source token.
        threads: OpenMP threads (0: all).
        progress: tqdm bar over chunks of source tokens (CPU path).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (:func:`tokalign.device.resolve_device`).

    Returns:
        ids, dists: int32 (source_vocab, top_n), -1 where empty; stats: counters of the search
        (``exact``: answered by the exact-match table, ``filtered``: pairs bounded,
        ``evaluated``: pairs whose distance was computed).
    """
    if top_n < 1:
        raise ValueError("top_n must be >= 1, got %r" % top_n)
    p_texts, s_texts = C.texts(pivot), C.texts(source)
    if query is None:
        query = ~C.special_mask(source)
    query = np.asarray(query, dtype=bool)
    from ..device import resolve_device

    if resolve_device(device) == "cuda":
        from .mined_cuda import mined_search as _mined_cuda

        cand = ~C.special_mask(pivot)
        ids, dists, gstats = _mined_cuda(p_texts, cand, C.preference_rank(pivot), s_texts, query, top_n, threads)
        return ids, dists, gstats
    from .._native import _core

    index = _core.MinEDIndex(p_texts, ~C.special_mask(pivot), C.preference_rank(pivot))
    n = len(s_texts)
    ids = np.full((n, top_n), -1, dtype=np.int32)
    dists = np.full((n, top_n), -1, dtype=np.int32)
    stats = {"exact": 0, "filtered": 0, "evaluated": 0}
    todo = np.flatnonzero(query)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=int(todo.size), desc="MinED", unit="tok", leave=False)
    for start in range(0, todo.size, chunk):
        sel = todo[start : start + chunk]
        i, d, st = index.query([s_texts[k] for k in sel], None, top_n, threads)
        ids[sel], dists[sel] = i, d
        for k in stats:
            stats[k] += int(st[k])
        if bar is not None:
            bar.update(int(sel.size))
    if bar is not None:
        bar.close()
    stats["candidates"] = int(index.candidates)
    return ids, dists, stats


def weights_for(dists: np.ndarray, weighting: str) -> np.ndarray:
    """Unnormalised row weights for top-n results (``dists`` >= 0 where valid)."""
    if weighting == "inverse":
        return 1.0 / (1.0 + np.maximum(dists, 0).astype(np.float64))
    if weighting == "uniform":
        return np.ones(dists.shape, dtype=np.float64)
    raise ValueError("weighting must be one of %s, got %r" % (", ".join(WEIGHTINGS), weighting))


def add_rows(builder: C.MapBuilder, ids: np.ndarray, dists: np.ndarray, origin_exact: str, origin_fuzzy: str, weighting: str) -> None:
    """Adds MinED results (rows with at least one id) to ``builder``."""
    valid = ids >= 0
    has = valid.any(axis=1)
    exact = has & (dists[:, 0] == 0)
    fuzzy = has & ~exact
    e = np.flatnonzero(exact)
    builder.set_one_hot(e, ids[e, 0], origin_exact)
    f = np.flatnonzero(fuzzy)
    if f.size:
        sub_ids, sub_d, sub_v = ids[f], dists[f], valid[f]
        w = weights_for(sub_d, weighting)
        rows = np.repeat(f[:, None], ids.shape[1], axis=1)
        builder.set_weighted(f, rows[sub_v], sub_ids[sub_v], w[sub_v], origin_fuzzy)


def build(
    pivot: Any,
    source: Any,
    *,
    top_n: int = 1,
    weighting: str = "inverse",
    threads: int = 0,
    progress: bool = False,
    device: str = "cpu",
) -> VocabMap:
    """MinED vocabulary map ``source -> pivot`` (see module docstring)."""
    C.check_tokenizer(pivot, "pivot")
    C.check_tokenizer(source, "source")
    weights_for(np.zeros(1), weighting)  # validates the name early
    ids, dists, stats = search(pivot, source, top_n=top_n, threads=threads, progress=progress, device=device)
    b = C.MapBuilder(pivot, source)
    add_rows(b, ids, dists, "exact", "mined", weighting)
    pairs = C.special_pairs(pivot, source)
    b.set_one_hot(np.array(list(pairs), dtype=np.int64), np.array(list(pairs.values()), dtype=np.int64), "special")
    return b.build("mined", {"top_n": int(top_n), "weighting": weighting}, {"search": stats})


@register
class MinED(MapMethod):
    name = "mined"
    description = "minimum edit distance (native, exact; --device cuda on the GPU)"
    runtime = ("threads", "progress")
    origins = {3: "mined"}  # minimum edit distance
    cli_options = (
        CliOption("--top-n", "top_n", "keep the N nearest (default 1)", default=1, type=int, metavar="N"),
        CliOption("--weighting", "weighting", "top-n weights: inverse 1/(1+d) (default) or uniform",
                  default="inverse", choices=WEIGHTINGS),
        CliOption("--device", "device", "where the search runs: auto (GPU when tokalign._cuda and a device are "
                  "available, default), cpu or cuda", default="auto", choices=("auto", "cpu", "cuda")),
    )
    build = staticmethod(build)

    @classmethod
    def options_from_cli(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        from ..device import resolve_device

        out = super().options_from_cli(values)
        positive(out["top_n"], "--top-n")
        out["device"] = resolve_device(out["device"])  # --device cuda without a GPU: one-line error before any work
        return out
