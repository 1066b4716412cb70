"""``fusion-train wrpo``: WRPO on triples ``{"messages", "chosen": [y_ws, y_wt], "rejected": [y_l]}``: the
hybrid reward α·β·h(y_ws) + (1−α)·β·h(y_wt) against β·h(y_l), with α ramping from 0 to ``--alpha`` over the run."""
from __future__ import annotations

__all__ = ["register", "run"]

EPILOG = """examples:
  # the WRPO paper's settings: alpha_end 0.1 (dynamic), beta 0.01, lr 3e-7
  fusion-train wrpo --model target-sft/ --data build/wrpo.jsonl --alpha 0.1 --beta 0.01 --learning-rate 3e-7 \\
      --output-dir target-wrpo/ --bf16

alpha is read once per optimizer step (constant inside gradient accumulation) and follows resumed runs.
"""

OWN = ("beta", "alpha", "alpha_dynamic", "label_smoothing", "max_length", "max_prompt_length", "reference",
       "pad_to_multiple_of")


def register(subparsers):
    from .common import add_trainer_subcommand
    from .dpo import add_ref_logps_flag
    from ..config import PreferenceConfig

    return add_trainer_subcommand(subparsers, "wrpo", PreferenceConfig, OWN, title="wrpo",
                                  help="WRPO on source/target/rejected triples", description=__doc__, epilog=EPILOG,
                                  func=run, exclude=("loss",), extra_flags=add_ref_logps_flag)


def run(args) -> int:
    from .common import build_config, print_summary
    from ..run import run_preference

    config = build_config(args, loss="wrpo")
    summary = run_preference(config, args.model, args.data, ref_logps=args.ref_logps, model_dtype=args.model_dtype,
                             trust_remote_code=args.trust_remote_code, overwrite_output_dir=args.overwrite_output_dir,
                             allow_pickle=args.allow_pickle)
    return print_summary(config, args, summary)
