"""A name -> entry registry whose built-in entries live one per module and are imported on first use.

The extension points (vocabulary-map methods, merge methods) each keep one :class:`Registry`: a method's
module registers it with a decorator, and the registry's ``builtin`` table (name -> module) is the one line a
built-in method adds; command lines read their choices from :meth:`Registry.names`.
"""
from __future__ import annotations

import importlib
from typing import Dict, Generic, List, Mapping, TypeVar

from .errors import TokalignError

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """Entries by name. ``kind`` names them in errors ("vocab-map method"); ``builtin`` maps each built-in
    name to the module whose import registers it (several names may share a module)."""

    def __init__(self, kind: str, builtin: Mapping[str, str]):
        self.kind = kind
        self.builtin = dict(builtin)
        self.entries: Dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` as ``name``; ValueError for a missing name or a second, different entry."""
        if not name:
            raise ValueError("%s %r has no name" % (self.kind, entry))
        if name in self.entries and self.entries[name] is not entry:
            raise ValueError("%s %r registered twice" % (self.kind, name))
        self.entries[name] = entry
        return entry

    def get(self, name: str, unknown: str = "unknown {kind} {name!r} (choose from {names})") -> T:
        """The entry ``name`` (importing its built-in module if needed); TokalignError listing the known
        names otherwise (``unknown`` formats it)."""
        if name not in self.entries and name in self.builtin:
            importlib.import_module(self.builtin[name])
        try:
            return self.entries[name]
        except KeyError:
            raise TokalignError(unknown.format(kind=self.kind, name=name, names=", ".join(self.names()))) from None

    def names(self) -> List[str]:
        """Built-in names in table order, then the other registered ones; imports nothing."""
        return list(self.builtin) + sorted(n for n in self.entries if n not in self.builtin)

    def load_builtin(self) -> None:
        """Import every built-in module."""
        for module in dict.fromkeys(self.builtin.values()):
            importlib.import_module(module)
