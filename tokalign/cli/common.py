"""Options shared by several subcommands."""
import argparse
import json
import sys


def add_tokenizer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer-dir", metavar="DIR",
                   help="folder of alias-named tokenizer dirs (default: $TOKALIGN_TOKENIZER_DIR, then HF cache, hub, "
                        "embedded)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow tokenizers that need custom code from their repository (off by default)")


def load_pair(args):
    """(pivot, source) tokenizers from --pivot/--source and the common options."""
    from ..tokenize import load_tokenizer

    kw = dict(tokenizer_dir=args.tokenizer_dir, trust_remote_code=args.trust_remote_code)
    return load_tokenizer(args.pivot, **kw), load_tokenizer(args.source, **kw)


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def formatter():
    return argparse.RawDescriptionHelpFormatter


def register_modules(subparsers, modules) -> None:
    """Let each subcommand module add its parser (``register(subparsers)``). A module that is missing
    (a misspelled registry entry) raises ImportError here instead of silently dropping its command."""
    import importlib

    for module in modules:
        importlib.import_module(module).register(subparsers)


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error: what failed, on which file, and what to do."""
    import errno

    what = exc.strerror or str(exc) or type(exc).__name__
    where = " (%s)" % exc.filename if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "%s%s: free some space (or choose another output), then run the same command again" % (what, where)
    return what + where


def dispatch(parser: argparse.ArgumentParser, argv, prog: str) -> int:
    """Parse, run ``args.func`` and turn user errors into one line on stderr and a non-zero exit."""
    from ..errors import TokalignError

    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except TokalignError as exc:
        print("%s: error: %s" % (prog, exc), file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # full disk, permissions, a path that is a file: the machine's state, not a bug
        print("%s: error: %s" % (prog, os_error_line(exc)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("%s: interrupted" % prog, file=sys.stderr)
        return 130
