"""Vocabulary maps ``source -> pivot`` (``tokalign.vocab``).

One method per module, registered in :mod:`tokalign.vocab.registry` (a module plus one line there
adds a method; the CLI and the demo read the registry):

* :func:`em` (``em.py``): exact canonical-text match, special tokens by role;
* :func:`mined` (``mined.py``): minimum edit distance (native, exact, multi-threaded);
* :func:`ms` (``ms.py``): from mapping statistics (argmax / soft / FuseChat's weighted distance),
  with a fallback for tokens never seen in the corpus.

Each returns a :class:`VocabMap` (CSR float32 (source_vocab, pivot_vocab), rows sum to 1 or are
empty, plus meta); :meth:`VocabMap.save` / :func:`load` store it as ``map.npz`` + ``arrays.npz`` +
``meta.json``. Conventions shared by all methods (text units, tie-breaks, special tokens) are
documented in :mod:`tokalign.vocab._common`.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

# The built-in method modules are imported here, before the shorthands below are defined: importing a
# submodule later would rebind ``tokalign.vocab.em`` (etc.) from the function to the module.
from . import em as _em, mined as _mined, ms as _ms  # noqa: F401  (registers them)
from .registry import CliOption, MapMethod, get_method, method_names, register
from .vocab_map import ORIGIN_CODES, ORIGINS, VocabMap, load


class _Builders(Mapping[str, Callable[..., VocabMap]]):
    """method name -> builder(pivot, source, **options) -> VocabMap, read from the registry."""

    def __getitem__(self, name: str) -> Callable[..., VocabMap]:
        if name not in method_names():
            raise KeyError(name)
        return get_method(name).build

    def __iter__(self) -> Iterator[str]:
        return iter(method_names())

    def __len__(self) -> int:
        return len(method_names())


METHODS: Mapping[str, Callable[..., VocabMap]] = _Builders()


def em(pivot: Any, source: Any, **options: Any) -> VocabMap:
    """Exact-match map; see :func:`tokalign.vocab.em.build`."""
    return get_method("em").build(pivot, source, **options)


def mined(pivot: Any, source: Any, **options: Any) -> VocabMap:
    """Minimum-edit-distance map; see :func:`tokalign.vocab.mined.build`."""
    return get_method("mined").build(pivot, source, **options)


def ms(pivot: Any, source: Any, stats: Any, **options: Any) -> VocabMap:
    """Mapping-statistics map; see :func:`tokalign.vocab.ms.build`."""
    return get_method("ms").build(pivot, source, stats, **options)


def build(method: str, pivot: Any, source: Any, **options: Any) -> VocabMap:
    """Dispatch by method name (the registry); TokalignError naming the known methods otherwise."""
    return get_method(method).build(pivot, source, **options)


__all__ = ["CliOption", "METHODS", "MapMethod", "ORIGIN_CODES", "ORIGINS", "VocabMap", "build", "em", "get_method", "load",
           "method_names", "mined", "ms", "register"]
