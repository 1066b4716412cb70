"""The ``fusion-train`` command line: explicit fusion (``fuse``, ``merge``), implicit fusion's data side
(``sample``, ``score``, ``build-pairs``) and its trainers (``sft``, ``dpo``, ``wrpo``, ``crlft``).

Each subcommand lives in its own module with ``register(subparsers)``; listed in SUBCOMMANDS.
"""
import argparse
import sys
from pathlib import Path

from tokalign.cli import parser_cache
from tokalign.cli.common import dispatch, register_modules

SUBCOMMANDS = {
    "fuse": "fusion_train.fuse.cli",
    "merge": "fusion_train.merge.cli",
    "sample": "fusion_train.implicit.cli.sample",
    "score": "fusion_train.implicit.cli.score",
    "build-pairs": "fusion_train.implicit.cli.build_pairs",
    "sft": "fusion_train.preference.cli.sft",
    "dpo": "fusion_train.preference.cli.dpo",
    "wrpo": "fusion_train.preference.cli.wrpo",
    "crlft": "fusion_train.preference.cli.crlft",
}

EPILOG = """examples:
  fusion-train fuse --model pivot/ --pivot-store pivot.zarr --teacher-store src.zarr --output-dir target/
  fusion-train merge --method sce --base pivot/ --models t1/ t2/ --out merged/
  fusion-train merge --config merge.yml --out merged/
  fusion-train sample --models a/ b/ --prompts prompts.jsonl --n 5 --out responses.jsonl
  fusion-train score --in responses.jsonl --verify math --out scored.jsonl
  fusion-train build-pairs --recipe fusechat3 --in scored.jsonl --out data/
  fusion-train sft --model target/ --data data/sft.jsonl --output-dir sft/
  fusion-train dpo --model sft/ --data data/pairs.jsonl --loss ln_dpo --beta 10 --output-dir dpo/
"""


def build_parser(only=None) -> argparse.ArgumentParser:
    """The parser; ``only`` names the one subcommand to load (``fuse`` imports transformers'
    TrainingArguments, seconds of start-up that ``merge`` should not pay)."""
    parser = argparse.ArgumentParser(
        prog="fusion-train",
        description="Fuse (sparse-target distillation with MinCE), merge (SCE, VaRM, TIES, ...) and implicitly fuse "
                    "(sample, score, build pairs; SFT, DPO, WRPO, C-RLFT) LLMs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register_modules(sub, [SUBCOMMANDS[only]] if only in SUBCOMMANDS else SUBCOMMANDS.values())
    return parser


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    only = args[0] if args and args[0] in SUBCOMMANDS else None
    # --help and argument errors from the cached copy of the parser, without importing torch (seconds);
    # a command line that parses goes on to the real parser
    key = parser_cache.cache_key(only or "*", [Path(__file__).resolve().parent])
    fast = parser_cache.load(key)
    if fast is not None:
        fast.parse_args(args)
    parser = build_parser(only)
    parser_cache.save(key, lambda: parser)
    return dispatch(parser, args, "fusion-train")


if __name__ == "__main__":
    sys.exit(main())
