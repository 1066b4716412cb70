"""The ``fusion-train`` command line: ``fuse`` (distillation with MinCE fusion) and ``merge``.

Each subcommand lives in its own module with ``register(subparsers)``; listed in SUBCOMMANDS.
"""
import argparse
import sys

from tokalign.cli.common import dispatch, register_modules

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
    register_modules(sub, SUBCOMMANDS.values())
    return parser


def main(argv=None) -> int:
    return dispatch(build_parser(), argv, "fusion-train")


if __name__ == "__main__":
    sys.exit(main())
