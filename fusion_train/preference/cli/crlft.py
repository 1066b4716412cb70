"""``fusion-train crlft``: OpenChat's C-RLFT: SFT conditioned on each record's class (its source) through a
class tag in every turn's role prefix, weighted by the class's weight; the saved tokenizer's chat template is the
expert class's prompt."""
from __future__ import annotations

__all__ = ["register", "run"]

EPILOG = """examples:
  fusion-train crlft --model base/ --data mixed_sft.jsonl --class-weights GPT4=1,GPT3=0.1 --output-dir oc/
  # classes and weights from scored responses (class = source model; best mean score = expert 1, others 0.1)
  fusion-train crlft --model base/ --data scored.jsonl --from-scored --output-dir oc/

A row's class is its "class" field (--class-key), else its "model". An <|end_of_turn|> token is added when the
tokenizer lacks it (embedding = mean of the existing ones; recorded in the summary).
"""

OWN = ("class_weights", "class_key", "placement", "end_of_turn", "max_length", "per_sequence", "pad_to_multiple_of")


def _extra(group) -> None:
    group.add_argument("--from-scored", action="store_true",
                       help="--data holds scored responses (fusion-train score): one record per prompt and source")


def register(subparsers):
    from .common import add_trainer_subcommand
    from ..config import CRLFTConfig

    return add_trainer_subcommand(subparsers, "crlft", CRLFTConfig, OWN, title="crlft",
                                  help="OpenChat C-RLFT: class-conditioned, class-weighted SFT", description=__doc__,
                                  epilog=EPILOG, func=run, extra_flags=_extra)


def run(args) -> int:
    from .common import build_config, print_summary
    from ..run import run_crlft

    config = build_config(args)
    summary = run_crlft(config, args.model, args.data, from_scored=args.from_scored, model_dtype=args.model_dtype,
                        trust_remote_code=args.trust_remote_code, overwrite_output_dir=args.overwrite_output_dir,
                             allow_pickle=args.allow_pickle)
    return print_summary(config, args, summary)
