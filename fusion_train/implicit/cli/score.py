"""``fusion-train score``: reward-model scores and/or verifier verdicts for sampled responses
(:func:`fusion_train.implicit.score`)."""
from __future__ import annotations

import argparse

EPILOG = """examples:
  # chat: a reward model (any AutoModelForSequenceClassification with one output, its own chat template)
  fusion-train score --reward-model Skywork-Reward-Gemma-2-27B/ --in responses.jsonl --out scored.jsonl
  # math: final answers against "gold" (\\boxed{}, "The answer is", last number); no reward model needed
  fusion-train score --verify math --in math_responses.jsonl --out math_scored.jsonl
  # dual scoring (FuseChat-3.0): reward-model scores rank, verifiers decide "correct"
  fusion-train score --reward-model rm/ --verify math code --in r.rank*-of-8.jsonl --out scored.jsonl --json
  # code tests: 5 s wall clock and 512 MiB per run, 8 sandboxes at a time
  fusion-train score --verify code --code-timeout 5 --code-memory-mb 512 --code-workers 8 --in r.jsonl --out s.jsonl

Output: one line per prompt with its "responses" (docs/implicit.md). Code runs in a sandbox (no network,
resource limits, a temporary folder, the nobody user when run as root); the --json report says which layers.
"""


def register(subparsers) -> argparse.ArgumentParser:
    from ..score import VERIFIERS
    from ..verify.code import CODE_BLOCKS

    p = subparsers.add_parser("score", help="score sampled responses (reward model, math / code verifiers)",
                              description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("input and output")
    io.add_argument("--in", dest="inputs", nargs="+", required=True, metavar="JSONL",
                    help="sample files (or scored files to re-score)")
    io.add_argument("--out", required=True, metavar="JSONL", help="scored prompts, one per line")
    rm = p.add_argument_group("reward model")
    rm.add_argument("--reward-model", metavar="DIR", help="sequence-classification reward model folder")
    rm.add_argument("--reward-template", metavar="JINJA", help="chat template (file or text) instead of the RM's own")
    rm.add_argument("--batch-size", type=int, default=8)
    rm.add_argument("--max-length", type=int, default=4096, help="tokens per conversation (longer ones are cut)")
    rm.add_argument("--dtype", default="auto", help="auto, bf16, fp16, fp32")
    rm.add_argument("--device", default="auto")
    rm.add_argument("--trust-remote-code", action="store_true", help="run the reward model's own code")
    rm.add_argument("--allow-pickle", action="store_true",
                    help="load a reward model with only pickled weights (pytorch_model.bin): runs code from the "
                         "file, so for checkpoints you trust only (default: safetensors only)")
    v = p.add_argument_group("verifiers")
    v.add_argument("--verify", nargs="+", choices=VERIFIERS, default=[], help="math and/or code")
    v.add_argument("--code-timeout", type=float, default=10.0, help="wall-clock seconds per code run")
    v.add_argument("--code-memory-mb", type=int, default=1024)
    v.add_argument("--code-workers", type=int, default=None, help="sandboxes at a time (default: up to 4)")
    v.add_argument("--code-blocks", choices=CODE_BLOCKS, default="all", help="which ``` blocks form the program")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from tokalign.cli.common import print_json

    from ..score import ScoreOptions, score, summary_line

    options = ScoreOptions(
        inputs=args.inputs, out=args.out, reward_model=args.reward_model, verify=args.verify,
        batch_size=args.batch_size, max_length=args.max_length, reward_template=args.reward_template,
        dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle,
        code_timeout=args.code_timeout, code_memory_mb=args.code_memory_mb, code_blocks=args.code_blocks,
        progress=not args.no_progress)
    if args.code_workers is not None:
        options.code_workers = args.code_workers
    report = score(options)
    if args.json:
        print_json(report)
    else:
        print(summary_line(report))
    return 0
