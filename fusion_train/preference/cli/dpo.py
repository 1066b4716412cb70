"""``fusion-train dpo``: DPO (``--loss dpo``) or length-normalised DPO (``--loss ln_dpo``) on preference pairs.
Reference log-probs are precomputed once and stored beside the data (``--reference precomputed``, default: one
model in memory) or come from a frozen copy of the starting model (``--reference live``)."""
from __future__ import annotations

__all__ = ["register", "run", "add_ref_logps_flag"]

EPILOG = """examples:
  # FuseChat-3.0, Llama target: length-normalised DPO, beta 10
  fusion-train dpo --model target-sft/ --data build/pairs.jsonl --loss ln_dpo --beta 10 --output-dir target-dpo/ \\
      --bf16 --learning-rate 8e-7 --per-device-train-batch-size 2 --gradient-accumulation-steps 64
  # Qwen / Gemma target: plain DPO, beta 0.01, on 8 GPUs
  torchrun --nproc-per-node 8 -m fusion_train.cli dpo --model t/ --data pairs.jsonl --beta 0.01 --output-dir out/

Reference log-probs go to DATA.ref-logps.json (or --ref-logps FILE) and are reused while data and model match.
"""

OWN = ("loss", "beta", "label_smoothing", "max_length", "max_prompt_length", "reference", "pad_to_multiple_of")


def add_ref_logps_flag(group) -> None:
    group.add_argument("--ref-logps", default=None, metavar="FILE",
                       help="precomputed reference log-probs (default DATA.ref-logps.json; computed when absent)")


def register(subparsers):
    from .common import add_trainer_subcommand
    from ..config import PreferenceConfig

    return add_trainer_subcommand(subparsers, "dpo", PreferenceConfig, OWN, title="dpo",
                                  help="DPO / length-normalised DPO on preference pairs", description=__doc__,
                                  epilog=EPILOG, func=run, exclude=("alpha", "alpha_dynamic"),
                                  extra_flags=add_ref_logps_flag)


def run(args) -> int:
    from tokalign.errors import TokalignError

    from .common import build_config, print_summary
    from ..run import run_preference

    if args.loss == "wrpo":
        raise TokalignError("--loss wrpo trains WRPO triples: use fusion-train wrpo")
    config = build_config(args)
    summary = run_preference(config, args.model, args.data, ref_logps=args.ref_logps, model_dtype=args.model_dtype,
                             trust_remote_code=args.trust_remote_code, overwrite_output_dir=args.overwrite_output_dir,
                             allow_pickle=args.allow_pickle)
    return print_summary(config, args, summary)
