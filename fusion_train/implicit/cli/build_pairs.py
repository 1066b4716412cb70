"""``fusion-train build-pairs``: SFT sets and preference pairs (FuseChat-3.0) or WRPO triples from scored
responses (:func:`fusion_train.implicit.build`)."""
from __future__ import annotations

import argparse

EPILOG = """examples:
  # FuseChat-3.0: SFT : DPO = 4 : 6, same-source pairs with a score gap in [0.01, 0.1]
  fusion-train build-pairs --recipe fusechat3 --in scored.jsonl --out data/
  # one pair per qualifying source, a wider window, another split
  fusion-train build-pairs --recipe fusechat3 --in scored.jsonl --policy all --window 0.01 0.5 --split 3:7 --out data/
  # WRPO, step 1: SFT set (1/3) and target_prompts.jsonl (2/3) to sample the SFT'd target on
  fusion-train build-pairs --recipe wrpo --in scored.jsonl --out wrpo/
  # WRPO, step 2: the target's scored samples -> wrpo.jsonl ({"chosen": [y_ws, y_wt], "rejected": [y_l]})
  fusion-train build-pairs --recipe wrpo --in scored.jsonl --target-samples target_scored.jsonl --out wrpo/ --json

Writes into --out: sft.jsonl, pairs.jsonl (fusechat3) or wrpo.jsonl (wrpo), split.jsonl (prompt_id -> sft | dpo |
dropped with the reason) and report.json (per-domain total / SFT / DPO counts and the options). A folder holding
an earlier build is rewritten; any other non-empty folder needs --overwrite.
"""


def register(subparsers) -> argparse.ArgumentParser:
    from ..build import POLICIES, RECIPES
    from ..formats import DOMAINS

    p = subparsers.add_parser("build-pairs", help="build SFT sets, DPO pairs or WRPO triples from scored responses",
                              description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=RECIPES, required=True)
    p.add_argument("--in", dest="input", required=True, metavar="JSONL", help="scored prompts (fusion-train score)")
    p.add_argument("--target-samples", metavar="JSONL", help="wrpo: the SFT'd target's scored samples")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    r = p.add_argument_group("recipe parameters")
    r.add_argument("--split", help="SFT : preference prompts per domain (default 4:6 fusechat3, 1:2 wrpo)")
    r.add_argument("--seed", type=int, default=0, help="seed of the split and of --policy random")
    r.add_argument("--window", type=float, nargs=2, default=[0.01, 0.1], metavar=("LOW", "HIGH"),
                   help="fusechat3: keep a pair when LOW <= chosen - rejected <= HIGH (inclusive)")
    r.add_argument("--window-domains", nargs="+", choices=DOMAINS, default=list(DOMAINS),
                   help="domains the window applies to (e.g. chat alone when math/code scores are 0/1)")
    r.add_argument("--policy", choices=POLICIES, default="best_chosen",
                   help="fusechat3, several qualifying sources: the best chosen score, a seeded random one, or all")
    r.add_argument("--no-require-correct", dest="require_correct", action="store_false",
                   help="math/code: do not require correct chosen / incorrect rejected responses")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from tokalign.cli.common import print_json

    from ..build import BuildOptions, build, summary_line

    report = build(BuildOptions(
        recipe=args.recipe, input=args.input, out=args.out, target_samples=args.target_samples, split=args.split,
        seed=args.seed, window=tuple(args.window), window_domains=args.window_domains, policy=args.policy,
        require_correct=args.require_correct, overwrite=args.overwrite))
    if args.json:
        print_json(report)
    else:
        print(summary_line(report))
    return 0
