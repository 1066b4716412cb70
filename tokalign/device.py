"""Where the heavy kernels run: ``--device auto|cpu|cuda``.

``resolve_device("auto")`` is ``"cuda"`` when the optional extension ``tokalign._cuda`` was built
(``nvcc`` found at install time, see docs/cuda.md) *and* a CUDA device is visible; otherwise
``"cpu"``. ``resolve_device("cuda")`` without a usable device raises a one-line
:class:`~tokalign.errors.TokalignError` that says why. Nothing here imports torch.

Set ``TOKALIGN_DEVICE_INDEX`` to pick another GPU than 0 (or use ``CUDA_VISIBLE_DEVICES``).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Optional, Tuple

from ._native import load
from .errors import TokalignError
from .settings import get_int

DEVICES = ("auto", "cpu", "cuda")

__all__ = ["DEVICES", "cuda_available", "cuda_module", "device_index", "resolve_device"]


@lru_cache(maxsize=1)
def _probe() -> Tuple[Optional[Any], str]:
    """(module, "") when usable, else (module or None, reason). Cached: the answer does not change."""
    _cuda, reason = load("_cuda")
    if _cuda is None:  # not built, or a broken shared object: the reason says which and how to fix it
        return None, reason
    info = _cuda.device_info()
    if int(info.get("count", 0)) < 1:
        return _cuda, "no usable CUDA device (%s)" % (info.get("error") or "none visible")
    index = device_index()
    if index >= int(info["count"]):
        return _cuda, "TOKALIGN_DEVICE_INDEX=%d but only %d CUDA device(s) are visible" % (index, info["count"])
    return _cuda, ""


def device_index() -> int:
    """The CUDA device the kernels use (``$TOKALIGN_DEVICE_INDEX``, default 0)."""
    return int(get_int("TOKALIGN_DEVICE_INDEX"))


def cuda_available() -> Tuple[bool, str]:
    """``(True, "")`` when the CUDA kernels can run here, else ``(False, reason)``."""
    module, reason = _probe()
    return (module is not None and not reason), reason


def cuda_module() -> Any:
    """The ``tokalign._cuda`` module; raises :class:`TokalignError` (with the reason) when unusable."""
    module, reason = _probe()
    if module is None or reason:
        raise TokalignError("--device cuda: %s" % reason)
    return module


def resolve_device(name: Optional[str] = "auto") -> str:
    """``"auto"`` / ``None`` -> ``"cuda"`` if usable else ``"cpu"``; ``"cpu"`` -> ``"cpu"``;
    ``"cuda"`` -> ``"cuda"`` or a one-line :class:`TokalignError` saying why it cannot run."""
    name = "auto" if name is None else str(name).strip().lower()
    if name not in DEVICES:
        raise TokalignError("device must be one of %s, got %r" % ("|".join(DEVICES), name))
    if name == "cpu":
        return "cpu"
    ok, reason = cuda_available()
    if name == "cuda" and not ok:
        raise TokalignError("--device cuda: %s" % reason)
    return "cuda" if ok else "cpu"
