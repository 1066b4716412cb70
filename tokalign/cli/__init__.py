"""The ``tokalign`` command line: one module per subcommand, listed in SUBCOMMANDS.

Each module defines ``register(subparsers)`` which adds its parser and sets
``func=run`` (``run(args) -> int``). Adding a subcommand touches its own file and one line here.
"""
import argparse
import sys

from .. import __version__
from .common import dispatch, register_modules

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
    "convert-gguf": "convert_gguf",
    "demo": "demo",
}

EPILOG = """examples:
  tokalign align --pivot openchat --source internlm2 --text "Hello world"
  tokalign build-stats --pivot openchat --source internlm2 --corpus data.jsonl --out stats/
  tokalign vocab-map --pivot openchat --source internlm2 --method ms --stats stats/ --out map-ms/
  tokalign report map-ms/ --stats stats/ --json
  tokalign dump-logits --model pivot-model/ --data data.jsonl --out pivot.zarr
  tokalign remap --pivot-store pivot.zarr --source-store source.zarr --map map-ms/ --out remapped.zarr
  tokalign demo --out tokalign-demo          # the whole alignment pipeline, offline
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
    register_modules(sub, ["tokalign.cli." + module for module in SUBCOMMANDS.values()])
    return parser


def main(argv=None) -> int:
    return dispatch(build_parser(), argv, "tokalign")


if __name__ == "__main__":
    sys.exit(main())
