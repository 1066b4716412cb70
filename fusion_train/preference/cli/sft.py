"""``fusion-train sft``: SFT on the conversational SFT set, assistant tokens only (the first stage of both
FuseChat-3.0 and WRPO). A ``transformers.Trainer`` run: the same under ``python -m``, ``torchrun`` or
``accelerate launch``; every ``TrainingArguments`` field is a flag."""
from __future__ import annotations

__all__ = ["register", "run"]

EPILOG = """examples:
  fusion-train sft --model target/ --data build/sft.jsonl --output-dir target-sft/ --bf16 \\
      --learning-rate 5e-6 --num-train-epochs 3 --per-device-train-batch-size 4 --gradient-accumulation-steps 8

The loss is the token-mean cross-entropy over every assistant turn, normalised over the whole accumulated batch.
"""


def register(subparsers):
    from .common import add_trainer_subcommand
    from ..config import SFTConfig

    return add_trainer_subcommand(subparsers, "sft", SFTConfig, ("max_length", "per_sequence", "pad_to_multiple_of"),
                                  title="sft", help="supervised fine-tuning on an SFT set (assistant tokens only)",
                                  description=__doc__, epilog=EPILOG, func=run)


def run(args) -> int:
    from .common import build_config, print_summary
    from ..run import run_sft

    config = build_config(args)
    summary = run_sft(config, args.model, args.data, model_dtype=args.model_dtype,
                      trust_remote_code=args.trust_remote_code, overwrite_output_dir=args.overwrite_output_dir,
                             allow_pickle=args.allow_pickle)
    return print_summary(config, args, summary)
