"""Vocabulary maps ``source -> pivot`` (``tokalign.vocab``).

One method per module, behind :data:`METHODS`:

* :func:`em` (``em.py``): exact canonical-text match, special tokens by role;
* :func:`mined` (``mined.py``): minimum edit distance (native, exact, multi-threaded);
* :func:`ms` (``ms.py``): from mapping statistics (argmax / soft / FuseChat's weighted distance),
  with a fallback for tokens never seen in the corpus.

Each returns a :class:`VocabMap` (CSR float32 (source_vocab, pivot_vocab), rows sum to 1 or are
empty, plus meta); :meth:`VocabMap.save` / :func:`load` store it as ``map.npz`` + ``meta.json``.
Conventions shared by all methods (text units, tie-breaks, special tokens) are documented in
:mod:`tokalign.vocab._common`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict

from . import em as _em
from . import mined as _mined
from . import ms as _ms
from .ms import load_stats
from .vocab_map import ORIGINS, VocabMap, load

# method name -> builder(pivot, source, **options) -> VocabMap
METHODS: Dict[str, Callable[..., VocabMap]] = {
    "em": _em.build,
    "mined": _mined.build,
    "ms": _ms.build,
}


def em(pivot: Any, source: Any, **options: Any) -> VocabMap:
    """Exact-match map; see :func:`tokalign.vocab.em.build`."""
    return _em.build(pivot, source, **options)


def mined(pivot: Any, source: Any, **options: Any) -> VocabMap:
    """Minimum-edit-distance map; see :func:`tokalign.vocab.mined.build`."""
    return _mined.build(pivot, source, **options)


def ms(pivot: Any, source: Any, stats: Any, **options: Any) -> VocabMap:
    """Mapping-statistics map; see :func:`tokalign.vocab.ms.build`."""
    return _ms.build(pivot, source, stats, **options)


def build(method: str, pivot: Any, source: Any, **options: Any) -> VocabMap:
    """Dispatch by method name (``METHODS``)."""
    try:
        fn = METHODS[method]
    except KeyError:
        from ..errors import TokalignError

        raise TokalignError("unknown vocab-map method %r (choose from %s)" % (method, ", ".join(METHODS))) from None
    return fn(pivot, source, **options)


__all__ = ["METHODS", "ORIGINS", "VocabMap", "build", "em", "load", "load_stats", "mined", "ms"]
