"""The one boundary to the compiled extensions: ``tokalign._core`` (always built) and the optional
``tokalign._cuda`` (built when ``nvcc`` was found at install time; docs/cuda.md).

Python code reaches them only through here:

* ``from tokalign._native import _core`` (or ``_cuda``): the extension module, imported once; when it
  is missing or fails to load, a one-line :class:`~tokalign.errors.TokalignError` that says how to
  build it (instead of an ``ImportError`` deep inside a stage). Type checkers see the typed stubs
  ``tokalign/_core.pyi`` / ``_cuda.pyi`` through the ``TYPE_CHECKING`` import below.
* :func:`load` -- ``(module or None, reason)`` without raising, for code that falls back (the device
  probe, the merge kernels' torch fallback).
* :func:`call` -- runs a native function and turns the errors pybind11 raises for bad input
  (``ValueError`` from ``std::invalid_argument``, ``TypeError`` from argument conversion) and native
  runtime failures (``RuntimeError``: CUDA out of memory, launch errors) into one
  :class:`TokalignError`. ``IndexError`` / ``MemoryError`` are left alone: callers that promise them
  (``exact_offsets_batch``) keep them, and a lack of memory is not an input problem.

The translation is done here, not by a C++ exception translator, because some Python wrappers
(``tokalign.tokenize.exact_offsets_batch``, ``StatsAccumulator.add``) document the plain
``ValueError`` / ``TypeError`` of the binding, and tests of the raw bindings assert them.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple, TypeVar

from .errors import TokalignError

if TYPE_CHECKING:  # the stubs _core.pyi / _cuda.pyi type the lazy attributes below
    from . import _core, _cuda  # noqa: F401

# _core / _cuda are lazy attributes (``__getattr__``), left out of __all__ so a star import never needs _cuda
__all__ = ["EXTENSIONS", "call", "load", "not_built_message"]

#: extension -> how to get it built (quoted in the one-line message of a missing extension)
EXTENSIONS: Dict[str, str] = {
    "_core": "reinstall with a C++17 compiler and pybind11 available: pip install -e .",
    "_cuda": "no nvcc at install time, or TOKALIGN_CUDA=0; reinstall with nvcc on PATH",
}

_loaded: Dict[str, Tuple[Optional[ModuleType], str]] = {}
T = TypeVar("T")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def not_built_message(name: str, exc: BaseException) -> str:
    """The one-line message for extension ``name`` (``"_core"`` / ``"_cuda"``) that failed to import."""
    if isinstance(exc, ImportError):
        return "tokalign.%s is not built (%s): %s" % (name, EXTENSIONS[name], _one_line(exc))
    return "tokalign.%s failed to load (%s): %s" % (name, EXTENSIONS[name], _one_line(exc))


def load(name: str) -> Tuple[Optional[ModuleType], str]:
    """``(module, "")`` for extension ``name``, or ``(None, one-line reason)``; imported once."""
    if name not in EXTENSIONS:
        raise KeyError("unknown tokalign extension %r (one of %s)" % (name, ", ".join(EXTENSIONS)))
    if name not in _loaded:
        try:
            _loaded[name] = (importlib.import_module("tokalign." + name), "")
        except (ImportError, OSError) as exc:  # OSError: a broken shared object or missing runtime library
            _loaded[name] = (None, not_built_message(name, exc))
    return _loaded[name]


def __getattr__(attr: str) -> ModuleType:
    """``_core`` / ``_cuda``: the extension, or a one-line TokalignError when it is not built (PEP 562)."""
    if attr not in EXTENSIONS:
        raise AttributeError("module %r has no attribute %r" % (__name__, attr))
    module, reason = load(attr)
    if module is None:
        raise TokalignError(reason)
    globals()[attr] = module  # later lookups skip __getattr__
    return module


def call(fn: Callable[..., T], *args: Any, what: str = "", **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` for a native ``fn``; its input errors become ``TokalignError("<what>: <message>")``
    (just the message without ``what``), its runtime failures ``TokalignError(<message>)``: they name their
    origin already (``CUDA error: out of memory``)."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        raise TokalignError("%s: %s" % (what, exc) if what else str(exc)) from None
    except RuntimeError as exc:
        raise TokalignError(str(exc)) from None
