"""Registry of the distillation losses ``FusionConfig.distill_loss`` / ``--distill-loss`` chooses from.

A loss is a function ``loss(p, logp, logq) -> [...]``: the per-position loss of the student's
log-probabilities ``logq [..., C]`` against the target's probabilities ``p`` and log-probabilities
``logp [..., C]`` over ``C`` classes, summed over the classes (invalid slots carry ``p = logp = logq = 0``).
With ``tail="bucket"`` the same function is called a second time on the single "everything else"
class (``C = 1``: the teacher's tail mass, its log and the student's log-mass outside the top-k) and the
two are added, so every registered loss supports every tail.

Adding a loss: write the function in a module decorated with ``@register(name, help)``; built-in
losses live in :mod:`fusion_train.fuse.losses`, a loss in a new module also needs its module in
:data:`MODULES` (the one registry line). ``FusionConfig``'s choices and help, and so the CLI's, are read
from here. This module imports no torch.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Dict, Tuple

__all__ = ["MODULES", "DistillLoss", "register", "names", "get", "help_text"]

# modules whose import registers losses (imported on first lookup)
MODULES: Tuple[str, ...] = ("fusion_train.fuse.losses",)


@dataclass(frozen=True)
class DistillLoss:
    """A registered loss: its name, the per-position function and the one-line help the CLI shows."""

    name: str
    fn: Callable
    help: str


_LOSSES: Dict[str, DistillLoss] = {}


def register(name: str, help: str) -> Callable[[Callable], Callable]:
    """Decorator registering ``fn(p, logp, logq) -> per-position loss`` as the loss ``name``."""

    def deco(fn: Callable) -> Callable:
        known = _LOSSES.get(name)
        # a module imported twice under two names would register the same loss twice: refuse only a different one
        if known is not None and known.fn.__qualname__ != fn.__qualname__:
            raise ValueError("distillation loss %r is registered twice (%s and %s)"
                             % (name, known.fn.__module__, fn.__module__))
        _LOSSES[name] = DistillLoss(name, fn, help)
        return fn

    return deco


def _load() -> None:
    for module in MODULES:
        importlib.import_module(module)


def names() -> Tuple[str, ...]:
    """The registered loss names, in registration order (the first is the default)."""
    _load()
    return tuple(_LOSSES)


def get(name: str) -> DistillLoss:
    """The loss ``name``; ValueError naming the choices for an unknown one."""
    _load()
    try:
        return _LOSSES[name]
    except KeyError:
        raise ValueError("kind must be one of %s, got %r" % (", ".join(_LOSSES), name)) from None


def help_text() -> str:
    """The ``--distill-loss`` help: every loss with its one-line description."""
    return "fusion loss: " + "; ".join("%s = %s" % (n, _LOSSES[n].help) for n in names())
