"""Registry of vocabulary-map methods: one method per module, each a :class:`MapMethod` subclass
registered with :func:`register`; :data:`BUILTIN` names the module of each built-in method, imported
only when that method (or the full list) is asked for.

Everything outside the method's own module reads the registry: :func:`tokalign.vocab.build`, the
``tokalign vocab-map`` command line (``--method`` choices and help, the method's own options, what it
needs) and ``tokalign demo`` (which methods it runs). Adding a method therefore touches its module
plus one :data:`BUILTIN` line (a method living outside tokalign just imports this module and uses
``@register``). A method declares:

* ``build(pivot, source, **options) -> VocabMap`` (a staticmethod);
* ``needs_stats``: ``build`` takes ``stats=`` (the mapping-statistics matrix) and ``stats_meta=``;
  the command line then requires ``--stats DIR`` and loads it with :meth:`tokalign.stats.MappingStats.load`;
* ``runtime``: which of ``threads`` / ``progress`` its ``build`` accepts;
* ``cli_options``: its own command-line options (:class:`CliOption`); :meth:`MapMethod.options_from_cli`
  turns their values into ``build`` keywords (override it for checks across options);
* ``origins``: the :data:`tokalign.vocab.vocab_map.ORIGINS` codes only it writes (codes are part of the
  on-disk format: a new method takes unused codes, never reuses one).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Tuple, Type

from ..errors import TokalignError
from ..registry import Registry

if TYPE_CHECKING:
    from .vocab_map import VocabMap

# built-in method name -> module that registers it (in the order ``tokalign demo`` runs them)
BUILTIN = {
    "em": "tokalign.vocab.em",
    "mined": "tokalign.vocab.mined",
    "ms": "tokalign.vocab.ms",
}

RUNTIME_OPTIONS = ("threads", "progress")


@dataclass(frozen=True)
class CliOption:
    """A command-line option of one method: ``flag`` (``--top-n``) gives ``build``'s keyword ``param``.

    Several methods may declare the same flag (same ``type`` / ``choices`` / ``metavar``); the
    command line shows one option whose help names each method's use. ``default`` is this method's
    value when the flag is not given.
    """

    flag: str
    param: str
    help: str
    default: Any = None
    type: Optional[Callable[[str], Any]] = None
    choices: Optional[Tuple[Any, ...]] = None
    metavar: Optional[str] = None

    @property
    def dest(self) -> str:
        """The argparse attribute name of ``flag``."""
        return self.flag.lstrip("-").replace("-", "_")


class MapMethod:
    """Base class: subclasses set the class attributes and ``build`` (see the module docstring)."""

    name: str = ""
    description: str = ""
    needs_stats: bool = False
    runtime: Tuple[str, ...] = ()
    cli_options: Tuple[CliOption, ...] = ()
    origins: Mapping[int, str] = {}

    @staticmethod
    def build(pivot: Any, source: Any, **options: Any) -> "VocabMap":
        raise NotImplementedError

    @classmethod
    def options_from_cli(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        """``build`` keywords from the command-line values of :attr:`cli_options` (keyed by ``dest``;
        None = not given, the option's default applies). Raise TokalignError for bad combinations."""
        out: Dict[str, Any] = {}
        for opt in cls.cli_options:
            value = values.get(opt.dest)
            out[opt.param] = opt.default if value is None else value
        return out


REGISTRY: "Registry[Type[MapMethod]]" = Registry("vocab-map method", BUILTIN)


def register(cls: Type[MapMethod]) -> Type[MapMethod]:
    """Class decorator: make ``cls`` available under ``cls.name`` and record its origin codes."""
    from .vocab_map import ORIGINS

    bad = [r for r in cls.runtime if r not in RUNTIME_OPTIONS]
    if bad:
        raise ValueError("vocab-map method %r: unknown runtime options %s (known: %s)" % (cls.name, bad, RUNTIME_OPTIONS))
    if cls.name and REGISTRY.entries.get(cls.name, cls) is cls:  # origins only for a registration that will stand
        ORIGINS.add(cls.origins, owner=cls.name)
    return REGISTRY.add(cls.name, cls)


def get_method(name: str) -> Type[MapMethod]:
    """The method class registered as ``name`` (importing its built-in module if needed);
    TokalignError listing the known names otherwise."""
    return REGISTRY.get(name)


def method_names() -> List[str]:
    """Names of the built-in methods (in :data:`BUILTIN` order), then the other registered ones; imports nothing."""
    return REGISTRY.names()


def methods() -> List[Type[MapMethod]]:
    """Every method class, built-in modules imported (in :func:`method_names` order)."""
    return [get_method(n) for n in method_names()]


def load_builtin() -> None:
    """Import every built-in method module (registering their origin codes)."""
    REGISTRY.load_builtin()


def cli_options() -> Dict[str, Tuple[CliOption, List[str]]]:
    """Every method's options by flag: (the first declaration, the names of the methods declaring it).

    Raises ValueError when two methods declare one flag with different type, choices or metavar.
    """
    out: Dict[str, Tuple[CliOption, List[str]]] = {}
    for cls in methods():
        for opt in cls.cli_options:
            if opt.flag in out:
                first, users = out[opt.flag]
                if (first.type, first.choices, first.metavar) != (opt.type, opt.choices, opt.metavar):
                    raise ValueError("vocab-map option %s is declared differently by %s and %s" % (opt.flag, users[0], cls.name))
                users.append(cls.name)
            else:
                out[opt.flag] = (opt, [cls.name])
    return out


def positive(value: Optional[int], flag: str) -> Optional[int]:
    """``value`` (None passes) if >= 1, else the command line's one-line error."""
    if value is not None and value < 1:
        raise TokalignError("%s must be >= 1, got %d" % (flag, value))
    return value
