"""The ``fusion-train`` command line: ``fuse`` (distillation with MinCE fusion) and ``merge``.

Each subcommand lives in its own module with ``register(subparsers)``; listed in SUBCOMMANDS.
"""
import argparse
import importlib
import importlib.util
import sys

from tokalign.errors import TokalignError

SUBCOMMANDS = {"fuse": "fusion_train.fuse_cli", "merge": "fusion_train.merge.cli"}

EPILOG = """examples:
  fusion-train fuse --model pivot/ --pivot-store pivot.zarr --teacher-store src.zarr --output-dir target/
  fusion-train merge --method sce --base pivot/ --models t1/ t2/ --out merged/
  fusion-train merge --config merge.yml --out merged/
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusion-train",
        description="Fuse (sparse-target distillation with MinCE) and merge (SCE, VaRM, TIES, ...) LLMs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS.values():
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module).register(sub)
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
        print("fusion-train: error: %s" % exc, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("fusion-train: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
