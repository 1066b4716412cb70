"""``tokalign vocab-map``: build a source -> pivot vocabulary map (EM, MinED or MS)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..errors import TokalignError

EPILOG = """examples:
  # exact canonical-text match (special tokens by role)
  tokalign vocab-map --pivot openchat-3.5 --source mistral-tekken --method em --out maps/em/
  # minimum edit distance, the 3 nearest pivot tokens weighted 1/(1+d)
  tokalign vocab-map --pivot openchat-3.5 --source qwen2 --method mined --top-n 3 --out maps/mined3/
  # the same MinED search on the GPU (identical results; needs tokalign._cuda, docs/cuda.md)
  tokalign vocab-map --pivot openchat-3.5 --source mistral-tekken --method mined --device cuda --out maps/mined/
  # FuseChat's statistics-based map; unseen tokens fall back to MinED
  tokalign vocab-map --pivot openchat-3.5 --source internlm2 --method ms --stats stats/ \\
      --variant fusechat --fallback mined --out maps/ms/ --json

Output: OUT/map.npz (CSR float32, source_vocab x pivot_vocab, rows sum to 1 or are empty),
OUT/arrays.npz (distances, origin) and OUT/meta.json (method, options, fingerprints, coverage).
Edit distances count code points (stray bytes of partial UTF-8 tokens one unit each).
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "vocab-map",
        help="build a source -> pivot vocabulary map (em | mined | ms)",
        description="Build a vocabulary map from the source tokenizer to the pivot tokenizer.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--pivot", required=True, help="pivot tokenizer (alias or path)")
    p.add_argument("--source", required=True, help="source tokenizer (alias or path)")
    p.add_argument("--method", required=True, choices=("em", "mined", "ms"))
    p.add_argument("--stats", metavar="DIR", help="ms: mapping statistics folder (stats.npz + meta.json)")
    p.add_argument("--variant", choices=("argmax", "soft", "fusechat"), default="argmax", help="ms variant (default argmax)")
    p.add_argument("--top-n", type=int, default=None, metavar="N", help="mined: keep the N nearest; ms soft: keep the N largest counts")
    p.add_argument("--weighting", choices=("inverse", "uniform"), default="inverse", help="mined top-n weights (default 1/(1+d))")
    p.add_argument("--fallback", choices=("mined", "em", "unk", "none"), default="mined", help="ms: tokens never seen in the corpus (default mined)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where --method mined runs: auto (GPU when tokalign._cuda and a device are available, default), cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="native threads (default: all)")
    p.add_argument("--tokenizer-dir", metavar="DIR", default=None, help="folder holding tokenizer aliases")
    p.add_argument("--trust-remote-code", action="store_true", help="allow tokenizer code from the hub (off by default)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--json", action="store_true", help="print meta.json (coverage etc.) as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tokalign
    from .. import vocab

    if args.method == "ms" and not args.stats:
        raise TokalignError("--method ms needs --stats DIR")
    if args.method != "ms" and args.stats:
        raise TokalignError("--stats applies to --method ms only")
    if args.top_n is not None and args.top_n < 1:
        raise TokalignError("--top-n must be >= 1, got %d" % args.top_n)
    if args.method == "em" and args.top_n is not None:
        raise TokalignError("--top-n does not apply to --method em")
    if args.method == "ms" and args.top_n is not None and args.variant != "soft":
        raise TokalignError("--top-n applies to --method ms only with --variant soft")

    device = "cpu"
    if args.method == "mined":
        from ..device import resolve_device

        device = resolve_device(args.device)  # --device cuda without a GPU: one-line error before any work

    started = time.time()
    load = lambda name: tokalign.load_tokenizer(  # noqa: E731
        name, tokenizer_dir=args.tokenizer_dir, trust_remote_code=args.trust_remote_code
    )
    pivot, source = load(args.pivot), load(args.source)
    progress = not args.no_progress and sys.stderr.isatty()
    if args.method == "em":
        vm = vocab.em(pivot, source)
    elif args.method == "mined":
        vm = vocab.mined(pivot, source, top_n=args.top_n or 1, weighting=args.weighting, threads=args.threads, progress=progress,
                        device=device)
    else:
        stats, stats_meta = vocab.load_stats(args.stats, pivot, source)
        vm = vocab.ms(
            pivot, source, stats, variant=args.variant, top_n=args.top_n, fallback=args.fallback,
            threads=args.threads, progress=progress, stats_meta=stats_meta,
        )
    vm.meta["elapsed_s"] = round(time.time() - started, 3)
    vm.save(args.out)
    cov = vm.meta["coverage"]
    if args.json:
        print(json.dumps(vm.meta, indent=2, sort_keys=True, ensure_ascii=False))
    else:
        print(
            "vocab-map %s: %s -> %s: mapped %d/%d source tokens (ordinary %.1f%%), exact text %d, mean distance %.2f, %.1f s -> %s"
            % (
                vm.method, getattr(source, "name", args.source), getattr(pivot, "name", args.pivot), cov["mapped"],
                cov["source_tokens"], 100 * cov["ordinary_fraction"], cov["exact_text_top1"], cov["mean_distance_top1"],
                vm.meta["elapsed_s"], args.out,
            )
        )
    return 0
