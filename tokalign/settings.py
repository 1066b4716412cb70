"""Every ``TOKALIGN_*`` environment variable, in one table, with typed accessors.

Code reads these variables only through :func:`get_bool` / :func:`get_int` / :func:`get_path` /
:func:`get_str`, so a misspelled or undeclared name is a ``KeyError`` at the call site and a bad
value is a one-line :class:`~tokalign.errors.TokalignError` naming the variable (not a traceback
from ``int()`` deep inside a stage). An empty value counts as unset. Values are read on every call
(nothing cached), so tests and long-running processes see changes.

Build-time variables (``build_time=True``) are listed here for the README and the docs, but
``setup.py`` reads them from ``os.environ`` itself: it runs before the package can be imported.

``python -m tokalign.settings`` prints the README's table (:func:`markdown_table`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .errors import TokalignError

__all__ = ["Setting", "SETTINGS", "get_bool", "get_int", "get_path", "get_str", "markdown_table"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Setting:
    """One environment variable: its type, its value when unset, what it changes and where it is read."""

    name: str
    kind: str  # "bool" | "int" | "path" | "choice" | "text": which accessor reads it
    default: Any  # the typed value when unset; None: unset, the reader decides (see default_text)
    meaning: str
    read_by: str  # the module that reads it
    build_time: bool = False  # read by setup.py while building the extensions
    choices: Tuple[str, ...] = ()  # kind "choice": the accepted values (lower case)
    minimum: Optional[int] = None  # kind "int": the smallest accepted value
    default_text: str = ""  # the default as the table shows it, when not the value itself

    @property
    def shown_default(self) -> str:
        """The default as the README table shows it (markdown)."""
        if self.default_text:
            return self.default_text
        if self.default is None:
            return "unset"
        return "`%s`" % (int(self.default) if self.kind == "bool" else self.default)


SETTINGS: Dict[str, Setting] = {s.name: s for s in (
    # run time
    Setting("TOKALIGN_TOKENIZER_DIR", "path", None,
            "folder of alias-named tokenizer directories, searched before the HF cache and the hub",
            "tokalign.tokenize.loader, tokalign.paths"),
    Setting("TOKALIGN_MODEL_CACHE", "path", None,
            "folder the model aliases (smollm2-135m-instruct, gemma3-270m) are fetched, verified and converted into",
            "tokalign.models.cache", default_text="`$XDG_CACHE_HOME/tokalign/models` (`~/.cache/...`)"),
    Setting("TOKALIGN_SHARED", "path", None,
            "folder of the shared tokenizers and corpora that tests and benchmarks use",
            "tokalign.paths", default_text="`../shared` beside the checkout"),
    Setting("TOKALIGN_DEVICE_INDEX", "int", 0,
            "the CUDA device the GPU kernels use (or use `CUDA_VISIBLE_DEVICES`)", "tokalign.device", minimum=0),
    Setting("TOKALIGN_STORE_THREADS", "int", None,
            "blosc threads of a store reader (decode) and writer (encode)", "tokalign.store.reader, .writer",
            minimum=1, default_text="reader `min(4, cores)`, writer `min(2, cores)`"),
    Setting("TOKALIGN_STORE_DIRECT", "bool", True,
            "0: stores read and write every chunk through zarr instead of the direct shard path",
            "tokalign.store.reader, .writer"),
    Setting("TOKALIGN_MERGE_NATIVE", "bool", True,
            "0: model merging uses the torch path instead of the native CPU kernels",
            "fusion_train.merge.native"),
    # build time (setup.py)
    Setting("TOKALIGN_CUDA", "choice", "auto",
            "build `tokalign._cuda`: 0 never, 1 always (a missing nvcc is an error), auto when nvcc is found",
            "setup.py", build_time=True, choices=("0", "1", "auto")),
    Setting("TOKALIGN_CUDA_ARCHS", "text", "90",
            "CUDA architectures, `;`- or `,`-separated (PTX of the highest is embedded too)", "setup.py",
            build_time=True),
    Setting("TOKALIGN_CUDA_VERBOSE", "bool", False,
            "1: pass `-Xptxas -v` to nvcc (registers and spills per kernel in the build log)", "setup.py",
            build_time=True),
    Setting("TOKALIGN_NATIVE", "bool", False,
            "1: compile the C++ core with `-march=native` (faster here, not portable)", "setup.py", build_time=True),
)}


def _setting(name: str, kind: str) -> Setting:
    try:
        s = SETTINGS[name]
    except KeyError:
        raise KeyError("%s is not declared in tokalign.settings.SETTINGS" % name) from None
    if s.kind != kind and not (kind == "str" and s.kind in ("choice", "text")):
        raise TypeError("%s is a %s setting, not %s" % (name, s.kind, kind))
    return s


def _raw(name: str) -> Optional[str]:
    value = os.environ.get(name)
    value = None if value is None else value.strip()
    return value or None


def get_bool(name: str) -> bool:
    """``1/true/yes/on`` -> True, ``0/false/no/off`` -> False (any case), unset -> the default."""
    s = _setting(name, "bool")
    raw = _raw(name)
    if raw is None:
        return bool(s.default)
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise TokalignError("%s must be 0 or 1 (or true/false, yes/no, on/off), got %r" % (name, raw))


def get_int(name: str) -> Optional[int]:
    """The integer value (at least the setting's minimum), or the default (None: the reader decides)."""
    s = _setting(name, "int")
    raw = _raw(name)
    if raw is None:
        return s.default
    try:
        value = int(raw)
    except ValueError:
        raise TokalignError("%s must be an integer, got %r" % (name, raw)) from None
    if s.minimum is not None and value < s.minimum:
        raise TokalignError("%s must be an integer >= %d, got %r" % (name, s.minimum, raw))
    return value


def get_path(name: str) -> Optional[Path]:
    """The path (``~`` expanded), or None when unset: the reader applies its default."""
    _setting(name, "path")
    raw = _raw(name)
    return None if raw is None else Path(raw).expanduser()


def get_str(name: str) -> Optional[str]:
    """A ``choice`` setting (lower-cased, one of its choices) or a ``text`` setting; the default when unset."""
    s = _setting(name, "str")
    raw = _raw(name)
    if raw is None:
        return s.default
    if s.kind == "choice":
        raw = raw.lower()
        if raw not in s.choices:
            raise TokalignError("%s must be one of %s, got %r" % (name, ", ".join(s.choices), raw))
    return raw


def markdown_table() -> str:
    """The README's "Environment variables" table (one row per setting, in the order above)."""
    rows: List[str] = ["| Variable | Default | Read | Meaning |", "|---|---|---|---|"]
    for s in SETTINGS.values():
        when = "build (setup.py)" if s.build_time else "run (%s)" % s.read_by
        rows.append("| `%s` | %s | %s | %s |" % (s.name, s.shown_default, when, s.meaning))
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
