"""``fusion-train fuse``: train the pivot model on SFT + MinCE fusion against sparse teacher stores.

A plain ``transformers.Trainer`` run (:class:`fusion_train.fuse.trainer.FusionTrainer`), so it runs the
same under ``python -m``, ``torchrun`` or ``accelerate launch``; every ``TrainingArguments`` field is
a flag (``--max-steps``, ``--learning-rate``, ``--bf16``, ``--gradient-checkpointing``,
``--deepspeed``, ``--fsdp``, ``--save-steps``, ``--resume-from-checkpoint`` ...).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, get_type_hints

from tokalign.errors import TokalignError

__all__ = ["register", "run", "open_reader", "build_config"]

logger = logging.getLogger(__name__)

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
_OWN_DESTS = ("model", "pivot_store", "teacher_store", "teacher_name", "overwrite_output_dir", "model_dtype", "json")
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
)


def open_reader(url: str):
    """Open a teacher store (``tokalign.store.open_store``); the seam tests replace with fakes."""
    try:
        from tokalign.store import open_store
    except ImportError as exc:  # the store stage is a separate module
        raise TokalignError("cannot open store %s: tokalign.store is not available (%s)" % (url, exc)) from exc
    return open_store(url)


def _add_dataclass_fields(group, fields: List[dataclasses.Field], hints: Dict[str, Any]) -> None:
    from transformers import HfArgumentParser

    for f in fields:
        f = copy.copy(f)  # HfArgumentParser rewrites field.type in place
        f.type = hints[f.name]
        HfArgumentParser._parse_dataclass_field(group, f)


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``fuse`` subcommand."""
    parser = subparsers.add_parser(
        "fuse",
        help="distil teacher stores into the pivot model (SFT + MinCE fusion)",
        usage="fusion-train fuse --model DIR --pivot-store URL [--teacher-store URL ...] --output-dir DIR "
        "[fusion options] [TrainingArguments flags]",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = parser.add_argument_group("model and stores")
    io.add_argument("--model", required=True, help="pivot model directory (AutoModelForCausalLM)")
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
        choices=("float32", "bfloat16", "float16", "auto"),
        default="float32",
        help="dtype to load the model weights in (default float32 master weights; --bf16 autocasts)",
    )
    io.add_argument(
        "--overwrite-output-dir",
        action="store_true",
        help="write into a non-empty --output-dir (existing files are not deleted)",
    )
    io.add_argument("--json", action="store_true", help="print the final summary as JSON")

    from .config import FusionConfig

    hints = get_type_hints(FusionConfig)
    all_fields = [f for f in dataclasses.fields(FusionConfig) if f.init and f.name not in _OWN_DESTS]
    fusion_group = parser.add_argument_group("fusion")
    _add_dataclass_fields(fusion_group, [f for f in all_fields if f.name in _FUSION_FIELDS], hints)
    trainer_group = parser.add_argument_group("trainer (transformers.TrainingArguments)")
    _add_dataclass_fields(
        trainer_group,
        [f for f in all_fields if f.name not in _FUSION_FIELDS and f.name != "remove_unused_columns"],
        hints,
    )
    parser.set_defaults(func=run)
    return parser


def build_config(args: argparse.Namespace):
    """The :class:`FusionConfig` from parsed flags (TokalignError on invalid values)."""
    from .config import FusionConfig

    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(FusionConfig)
        if f.init and hasattr(args, f.name) and f.name not in _OWN_DESTS
    }
    try:
        return FusionConfig(**values)
    except (ValueError, TypeError) as exc:
        raise TokalignError("invalid trainer arguments: %s" % exc) from exc


def _resume_target(value: Optional[str], output_dir: Path):
    if value is None or value == "":
        return None
    if value.lower() in ("last", "latest", "true", "auto"):
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
        if last is None:
            raise TokalignError("--resume-from-checkpoint %s: no checkpoint-* folder in %s" % (value, output_dir))
        return last
    if not Path(value).is_dir():
        raise TokalignError("--resume-from-checkpoint: %s is not a checkpoint directory" % value)
    return value


def _model_fingerprint(model_dir: str) -> Optional[str]:
    """Fingerprint of the model's tokenizer when tokalign.tokenize and tokenizer files are present."""
    path = Path(model_dir)
    if not path.is_dir() or not any(
        (path / n).exists() for n in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
    ):
        return None
    try:
        from tokalign.tokenize import load_tokenizer
    except ImportError:
        logger.warning("tokalign.tokenize not available: the model's tokenizer fingerprint is not checked")
        return None
    return load_tokenizer(str(path)).fingerprint


def _load_processing_class(model_dir: str):
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_dir)
    except Exception:  # noqa: BLE001 - a model directory without a tokenizer is fine for training
        return None


def run(args: argparse.Namespace) -> int:
    """Train; returns 0. Raises TokalignError on bad input (printed as one line, exit 2)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from .data import FusionDataset
    from .trainer import FusionTrainer

    if not args.output_dir:
        raise TokalignError("--output-dir is required")
    output_dir = Path(args.output_dir)
    resume = _resume_target(args.resume_from_checkpoint, output_dir)
    args.resume_from_checkpoint = resume
    if output_dir.is_dir() and any(output_dir.iterdir()) and not (args.overwrite_output_dir or resume):
        raise TokalignError(
            "output directory %s is not empty: pass --overwrite-output-dir, "
            "or --resume-from-checkpoint last to continue a run" % output_dir
        )
    config = build_config(args)

    names = args.teacher_name or [Path(u.rstrip("/")).name or u for u in args.teacher_store]
    if len(names) != len(args.teacher_store):
        raise TokalignError(
            "%d --teacher-name for %d --teacher-store" % (len(names), len(args.teacher_store))
        )
    pivot_name = "pivot"
    if pivot_name in names or len(set(names)) != len(names):
        raise TokalignError("teacher names must be unique and not 'pivot': %s" % ", ".join(names))
    if not Path(args.model).exists():
        raise TokalignError("--model %s: no such model directory" % args.model)

    pivot = open_reader(args.pivot_store)
    sources = [open_reader(u) for u in args.teacher_store]

    # cheap checks (stores, vocabulary) before the weights are loaded
    try:
        model_config = AutoConfig.from_pretrained(args.model)
    except (OSError, ValueError) as exc:
        raise TokalignError("cannot load --model %s: %s" % (args.model, str(exc).splitlines()[0])) from exc
    vocab_size = getattr(model_config.get_text_config(), "vocab_size", None)
    dataset = FusionDataset(
        pivot,
        sources,
        names=[pivot_name, *names],
        on_missing=config.on_missing,
        expected_fingerprint=_model_fingerprint(args.model),
        vocab_size=vocab_size,
        max_length=config.max_length,
    )

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}[
        args.model_dtype
    ]
    try:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise TokalignError("cannot load --model %s: %s" % (args.model, str(exc).splitlines()[0])) from exc
    trainer = FusionTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=_load_processing_class(args.model),
    )
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(output_dir))
    trainer.save_state()

    last_train_log = next((h for h in reversed(trainer.state.log_history) if "sft_loss" in h), {})
    summary = {
        "output_dir": str(output_dir),
        "global_step": trainer.state.global_step,
        "train_loss": result.training_loss,
        "samples": len(dataset),
        "skipped_samples": dataset.skipped,
        "teachers": [pivot_name, *names],
        "last_log": last_train_log,
        "resumed_from": resume,
    }
    if trainer.is_world_process_zero():
        tmp = output_dir / "fuse_summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        os.replace(tmp, output_dir / "fuse_summary.json")
        if args.json:
            print(json.dumps(summary, default=str))
        else:
            rates = ", ".join(
                "%s %.0f%%" % (k.split("/", 1)[1], 100 * v) for k, v in last_train_log.items() if k.startswith("choice_rate/")
            )
            print(
                "fused %d samples (%d skipped), %d steps, train loss %.4f%s -> %s"
                % (len(dataset), dataset.skipped, trainer.state.global_step, result.training_loss,
                   (", MinCE choice " + rates) if rates else "", output_dir)
            )
    return 0
