"""EM: exact match of canonical token texts.

A source token maps (one-hot) to the pivot token with the identical canonical text; among pivot
tokens sharing a text the preferred one wins (ordinary before byte-fallback, then lower id).
Special tokens match by role / literal content (see :mod:`tokalign.vocab._common`).
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from . import _common as C
from .registry import MapMethod, register
from .vocab_map import VocabMap


def exact_matches(pivot: Any, source: Any) -> np.ndarray:
    """int64 (source_vocab,): the preferred pivot token with the identical text, -1 if none.

    Only ordinary tokens take part on both sides (special tokens are matched by role instead).
    """
    p_texts, s_texts = C.texts(pivot), C.texts(source)
    p_special, s_special = C.special_mask(pivot), C.special_mask(source)
    rank = C.preference_rank(pivot)
    table: Dict[bytes, int] = {}
    for pid in np.lexsort((np.arange(rank.size), rank)):  # preferred first; setdefault keeps it
        if not p_special[pid]:
            table.setdefault(p_texts[pid], int(pid))
    out = np.full(len(s_texts), -1, dtype=np.int64)
    for sid, t in enumerate(s_texts):
        if not s_special[sid]:
            out[sid] = table.get(t, -1)
    return out


def build(pivot: Any, source: Any, *, specials: bool = True) -> VocabMap:
    """Exact-match vocabulary map ``source -> pivot``.

    Args:
        pivot, source: Tokenizer objects (docs/architecture.md contract).
        specials: map special tokens by role / literal content (else they stay unmapped).
    """
    C.check_tokenizer(pivot, "pivot")
    C.check_tokenizer(source, "source")
    b = C.MapBuilder(pivot, source)
    em = exact_matches(pivot, source)
    hit = np.flatnonzero(em >= 0)
    b.set_one_hot(hit, em[hit], "exact")
    if specials:
        pairs = C.special_pairs(pivot, source)
        b.set_one_hot(np.array(list(pairs), dtype=np.int64), np.array(list(pairs.values()), dtype=np.int64), "special")
    return b.build("em", {"specials": specials})


@register
class ExactMatch(MapMethod):
    name = "em"
    description = "exact canonical-text match (special tokens by role)"
    build = staticmethod(build)
