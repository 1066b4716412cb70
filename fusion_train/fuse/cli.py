"""``fusion-train fuse``: train the pivot model on SFT + MinCE fusion against sparse teacher stores.

A plain ``transformers.Trainer`` run (:class:`fusion_train.fuse.trainer.FusionTrainer`), so it runs the
same under ``python -m``, ``torchrun`` or ``accelerate launch``; every ``TrainingArguments`` field is
a flag (``--max-steps``, ``--learning-rate``, ``--bf16``, ``--gradient-checkpointing``,
``--deepspeed``, ``--fsdp``, ``--save-steps``, ``--resume-from-checkpoint`` ...).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any, Dict, List, Sequence

from fusion_train.cli_args import dataclass_parent as _dataclass_parent
from tokalign.errors import TokalignError

__all__ = ["register", "run", "build_config"]

EPILOG = """examples:
  # FuseChat-style pairwise fusion: pivot's own store + one remapped source store
  fusion-train fuse --model openchat-3.5/ --pivot-store pivot.zarr --teacher-store internlm2-remapped.zarr \\
      --output-dir fused/ --bf16 --activation-checkpointing --learning-rate 5e-6 \\
      --per-device-train-batch-size 4 --num-train-epochs 3 --save-steps 500

  # FuseLLM-style multi-teacher, MinCE per token, 8 GPUs with DeepSpeed ZeRO-3
  torchrun --nproc-per-node 8 -m fusion_train.cli fuse --model pivot/ --pivot-store p.zarr \\
      --teacher-store a.zarr --teacher-store b.zarr --granularity token --output-dir out/ \\
      --deepspeed zero3.json --bf16

  # resume the latest checkpoint in the output directory
  fusion-train fuse ... --output-dir fused/ --resume-from-checkpoint last

Every transformers.TrainingArguments field is a flag (--max-steps, --save-steps, --deepspeed, --fsdp, ...;
--gradient-checkpointing on transformers < 5). The loss is lambda_sft * SFT + (1 - lambda_sft) * fusion (lambda_sft 0.9, FuseChat's lm_loss_weight).
The output directory must be empty unless --overwrite-output-dir or --resume-from-checkpoint is given.
"""

# flags we define ourselves (not TrainingArguments fields)
_OWN_DESTS = ("model", "pivot_store", "teacher_store", "teacher_name", "overwrite_output_dir", "model_dtype", "json",
              "trust_remote_code", "allow_pickle")
_FUSION_FIELDS = (
    "lambda_sft",
    "fusion",
    "granularity",
    "include_pivot",
    "distill_loss",
    "tail",
    "temperature",
    "fusion_positions",
    "on_missing",
    "max_length",
    "pad_to_multiple_of",
    "fused_output_loss",
    "fused_output_chunk_mb",
)


def _own_flags() -> argparse.ArgumentParser:
    from .run import MODEL_DTYPES

    parser = argparse.ArgumentParser(add_help=False)
    io = parser.add_argument_group("model and stores")
    io.add_argument("--model", required=True,
                    help="pivot model: a directory (safetensors), a .gguf file or an alias (smollm2-135m-instruct)")
    io.add_argument("--pivot-store", required=True, help="store of the pivot model's own top-k distributions")
    io.add_argument(
        "--teacher-store",
        action="append",
        default=[],
        help="source store remapped to the pivot vocabulary; repeat for several teachers",
    )
    io.add_argument(
        "--teacher-name",
        action="append",
        default=None,
        help="name of each --teacher-store in logs, in the same order (default: the store's file name)",
    )
    io.add_argument(
        "--model-dtype",
        choices=MODEL_DTYPES,
        default="float32",
        help="dtype to load the model weights in (default float32 master weights; --bf16 autocasts)",
    )
    io.add_argument(
        "--overwrite-output-dir",
        action="store_true",
        help="write into a non-empty --output-dir (existing files are not deleted)",
    )
    io.add_argument("--trust-remote-code", action="store_true",
                    help="run the model repository's own code (config.json auto_map); only for code you trust")
    io.add_argument("--allow-pickle", action="store_true",
                    help="load a model folder with only pickled weights (pytorch_model.bin); safetensors otherwise")
    io.add_argument("--json", action="store_true", help="print the final summary as JSON")
    return parser


def _config_fields() -> List[dataclasses.Field]:
    from .config import FusionConfig

    return [f for f in dataclasses.fields(FusionConfig) if f.init and f.name not in _OWN_DESTS]


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``fuse`` subcommand."""
    from typing import get_type_hints

    from .config import FusionConfig

    hints = get_type_hints(FusionConfig)
    fields = _config_fields()
    fusion = _dataclass_parent("fusion", [f for f in fields if f.name in _FUSION_FIELDS], hints)
    trainer = _dataclass_parent(
        "trainer (transformers.TrainingArguments)",
        [f for f in fields if f.name not in _FUSION_FIELDS and f.name != "remove_unused_columns"],
        hints,
    )
    parser = subparsers.add_parser(
        "fuse",
        help="distil teacher stores into the pivot model (SFT + MinCE fusion)",
        usage="fusion-train fuse --model DIR --pivot-store URL [--teacher-store URL ...] --output-dir DIR "
        "[fusion options] [TrainingArguments flags]",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_own_flags(), fusion, trainer],
    )
    parser.set_defaults(func=run)
    return parser


def build_config(args: argparse.Namespace):
    """The :class:`FusionConfig` from parsed flags (TokalignError on invalid values)."""
    from .config import FusionConfig

    values = {f.name: getattr(args, f.name) for f in _config_fields() if hasattr(args, f.name)}
    try:
        return FusionConfig(**values)
    except (ValueError, TypeError) as exc:
        raise TokalignError("invalid trainer arguments: %s" % exc) from exc


def run(args: argparse.Namespace) -> int:
    """Train (:func:`fusion_train.fuse.run.run`) and print the summary; returns 0. Raises TokalignError on bad
    input (printed as one line, exit 2)."""
    from .run import run as fuse, summary_line

    if not args.output_dir:
        raise TokalignError("--output-dir is required")
    config = build_config(args)
    summary = fuse(config, args.model, args.pivot_store, args.teacher_store, teacher_names=args.teacher_name,
                   model_dtype=args.model_dtype, overwrite_output_dir=args.overwrite_output_dir,
                   trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle)
    if config.process_index == 0:
        print(json.dumps(summary, default=str) if args.json else summary_line(summary))
    return 0
