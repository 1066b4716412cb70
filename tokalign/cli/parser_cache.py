"""A cached copy of a slow-to-build command-line parser, for fast ``--help`` and argument errors.

``fusion-train``'s trainer subcommands turn every ``transformers.TrainingArguments`` field into a flag, and
importing ``TrainingArguments`` imports torch: seconds before ``--help`` can print. The first real run saves
what the parser is made of (groups, flags, help texts, choices, defaults) as JSON; later calls rebuild an
equivalent ``argparse`` parser from it without importing anything heavy and let it answer ``--help`` and
reject unknown flags, missing required flags and bad choices at once. A command line that parses fine still
goes to the real parser (which also converts and checks the values), so the copy never decides what runs.

The cache key covers the Python, tokalign and transformers versions and the size and modification time of
every module of the package that builds the parser, so an upgrade or an edit rebuilds it. The copy lives in
``$XDG_CACHE_HOME/tokalign/cli`` (default ``~/.cache``); where that cannot be written, nothing is cached.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

__all__ = ["cache_key", "load", "save", "snapshot", "restore"]

FORMAT = 2

# argparse's action classes by the name ``add_argument(action=...)`` registers them under
_ACTIONS = {
    "_StoreAction": "store", "_StoreTrueAction": "store_true", "_StoreFalseAction": "store_false",
    "_StoreConstAction": "store_const", "_AppendAction": "append", "_AppendConstAction": "append_const",
    "_CountAction": "count", "_HelpAction": "help", "_VersionAction": "version", "_ExtendAction": "extend",
    "BooleanOptionalAction": "boolean_optional",
}
# value types that survive the round trip; any other ``type=`` callable becomes "any string" in the copy
_TYPES = {"int": int, "float": float, "str": str}


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def _action_spec(action: argparse.Action) -> Optional[Dict[str, Any]]:
    kind = _ACTIONS.get(type(action).__name__)
    if kind is None or kind == "help":
        return None  # argparse adds -h itself; unknown custom actions are left to the real parser
    spec: Dict[str, Any] = {"kind": kind, "option_strings": list(action.option_strings), "dest": action.dest,
                            "help": action.help, "metavar": action.metavar, "required": bool(action.required),
                            "default": _jsonable(action.default)}
    if kind in ("store", "append", "extend"):
        spec["nargs"] = action.nargs
        spec["type"] = getattr(action.type, "__name__", None) if action.type in _TYPES.values() else None
        # the copy compares the raw strings: kept where every choice is a string (plain or, as transformers'
        # choice type functions do, mapped back from its own string)
        plain = action.choices is not None and all(isinstance(c, str) for c in action.choices)
        spec["choices"] = list(action.choices) if plain else None
    if kind in ("store_const", "append_const"):
        spec["const"] = _jsonable(action.const)
    if kind == "version":
        spec["version"] = getattr(action, "version", None)
    return spec


def snapshot(parser: argparse.ArgumentParser) -> Dict[str, Any]:
    """The parser (and its subcommands, recursively) as plain data."""
    # argparse keeps no public list of groups; the usage line follows the order flags were added (_actions),
    # the help follows the groups, so both are kept
    group_of = {id(a): i for i, g in enumerate(parser._action_groups) for a in g._group_actions}
    groups = [{"title": g.title, "description": g.description} for g in parser._action_groups]
    actions: List[Dict[str, Any]] = []
    subcommands: List[Dict[str, Any]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                subcommands.append({"name": name, "help": helps.get(name), "parser": snapshot(sub)})
            continue
        spec = _action_spec(action)
        if spec is not None:
            spec["group"] = group_of.get(id(action), 1)
            actions.append(spec)
    return {"prog": parser.prog, "usage": parser.usage, "description": parser.description, "epilog": parser.epilog,
            "raw": issubclass(parser.formatter_class, argparse.RawDescriptionHelpFormatter), "groups": groups,
            "actions": actions, "subcommands": subcommands}


def _add(container: Any, spec: Dict[str, Any]) -> None:
    kw: Dict[str, Any] = {"dest": spec["dest"], "help": spec["help"], "default": spec["default"]}
    kind = spec["kind"]
    if kind == "boolean_optional":
        kw["action"] = argparse.BooleanOptionalAction
    else:
        kw["action"] = kind
    if spec["metavar"] is not None:
        kw["metavar"] = spec["metavar"]
    if spec["option_strings"]:
        kw["required"] = spec["required"]
    else:
        kw.pop("dest")  # positionals take their dest from the name
    if kind in ("store", "append", "extend"):
        if spec.get("nargs") is not None:
            kw["nargs"] = spec["nargs"]
        if spec.get("type"):
            kw["type"] = _TYPES[spec["type"]]
        if spec.get("choices") is not None:
            kw["choices"] = spec["choices"]
    if "const" in spec:
        kw["const"] = spec["const"]
    if kind == "version":
        kw["version"] = spec["version"]
        kw.pop("default")
    names = spec["option_strings"] or [spec["dest"]]
    container.add_argument(*names, **kw)


def _build(spec: Dict[str, Any], parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    own = {g.title: g for g in parser._action_groups}  # "positional arguments" / "options" already exist
    containers = [own.get(g["title"]) or parser.add_argument_group(g["title"], g["description"])
                  for g in spec["groups"]]
    for a in spec["actions"]:
        _add(containers[a["group"]], a)
    if spec["subcommands"]:
        sub = parser.add_subparsers(dest="command", metavar="COMMAND")
        for s in spec["subcommands"]:
            p = s["parser"]
            child = sub.add_parser(s["name"], help=s["help"], prog=p["prog"], usage=p["usage"],
                                   description=p["description"], epilog=p["epilog"], formatter_class=_formatter(p))
            _build(p, child)
    return parser


def _formatter(spec: Dict[str, Any]):
    return argparse.RawDescriptionHelpFormatter if spec["raw"] else argparse.HelpFormatter


def restore(spec: Dict[str, Any]) -> argparse.ArgumentParser:
    """An ``argparse`` parser equivalent to the one :func:`snapshot` saw (for help and argument errors)."""
    parser = argparse.ArgumentParser(prog=spec["prog"], usage=spec["usage"], description=spec["description"],
                                     epilog=spec["epilog"], formatter_class=_formatter(spec))
    return _build(spec, parser)


def cache_key(name: str, package_dirs: Sequence[Path]) -> str:
    """A key that changes with the versions that shape the parser and with any edit of its modules."""
    from importlib import metadata

    from .. import __version__

    parts = [str(FORMAT), name, sys.version, __version__]
    for dist in ("transformers", "torch"):
        try:
            parts.append("%s=%s" % (dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            parts.append(dist + "=none")
    for d in package_dirs:
        for path in sorted(Path(d).rglob("*.py")):
            st = path.stat()
            parts.append("%s:%d:%d" % (path, st.st_size, st.st_mtime_ns))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _cache_file(key: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tokalign" / "cli" / ("%s.json" % key)


def load(key: str) -> Optional[argparse.ArgumentParser]:
    """The cached parser for ``key``, or None (no copy yet, or an unreadable one)."""
    try:
        spec = json.loads(_cache_file(key).read_text(encoding="utf-8"))
        if spec.get("format") != FORMAT:
            return None
        return restore(spec["parser"])
    except (OSError, ValueError, KeyError, TypeError, argparse.ArgumentError):
        return None


def save(key: str, build: Callable[[], argparse.ArgumentParser]) -> None:
    """Write the copy of ``build()``'s parser for ``key`` (atomically; silently nothing where the cache
    folder cannot be written)."""
    path = _cache_file(key)
    if path.is_file():
        return
    try:
        data = json.dumps({"format": FORMAT, "parser": snapshot(build())})
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".%d.tmp" % os.getpid())
        tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass
