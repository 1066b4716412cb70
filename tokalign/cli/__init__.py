"""The ``tokalign`` command line: one module per subcommand, listed in SUBCOMMANDS.

Each module defines ``register(subparsers)`` which adds its parser and sets
``func=run`` (``run(args) -> int``). Adding a subcommand touches its own file and one line here.
"""
import argparse
import importlib
import importlib.util
import sys

from .. import __version__
from ..errors import TokalignError

# subcommand name -> module under tokalign.cli, in pipeline order
SUBCOMMANDS = {
    "align": "align",
    "build-stats": "build_stats",
    "merge-stats": "merge_stats",
    "vocab-map": "vocab_map",
    "report": "report",
    "dump-logits": "dump_logits",
    "inspect": "inspect",
    "remap": "remap",
    "bench": "bench",
    "demo": "demo",
}

EPILOG = """examples:
  tokalign align --pivot openchat --source internlm2 --text "Hello world"
  tokalign build-stats --pivot openchat --source internlm2 --corpus data.jsonl --out stats/
  tokalign vocab-map --pivot openchat --source internlm2 --method ms --stats stats/ --out map-ms/
  tokalign report map-ms/ --json
aliases resolve via --tokenizer-dir / $TOKALIGN_TOKENIZER_DIR, the local HF cache, then the hub.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokalign",
        description="Token alignment and distribution storage for knowledge fusion of LLMs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version="tokalign " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        full = "tokalign.cli." + module
        if importlib.util.find_spec(full) is None:
            continue
        importlib.import_module(full).register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except TokalignError as exc:
        print("tokalign: error: %s" % exc, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tokalign: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
