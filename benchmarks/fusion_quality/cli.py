"""Command line of the fusion-quality benchmark (``python -m benchmarks.fusion_quality``)."""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from .config import SOURCES, VARIANTS, BenchConfig, config_presets, json_default, results_stem
from .report import format_markdown, write_outputs
from .real import RealConfig, real_presets
from .run import run_benchmark

REPO = Path(__file__).resolve().parents[2]
DESCRIPTION = "A miniature FuseChat reproduction: does MS beat MinED beat EM for pairwise fusion? Measured."


EPILOG = """examples:
  python -m benchmarks.fusion_quality                         # real models: SmolLM2-135M-Instruct <- Gemma-3-270M
  python -m benchmarks.fusion_quality --config real-gpu --device cuda     # full fine-tuning, more data and steps
  python -m benchmarks.fusion_quality --quick                 # tiny from-scratch models: pipeline smoke run
  python -m benchmarks.fusion_quality --config default        # tiny from-scratch models, <= 60 min on 2 cores
  python -m benchmarks.fusion_quality --source qwen2 --seeds 5 --variants sft,em,mined,ms,self
  python benchmarks/fusion_quality --config gpu --device cuda --json   # the same, run as a folder

outputs: benchmarks/results/fusion_quality[-<config>].{json,md,png}; cache: benchmarks/.cache/fusion_quality/
real-model configurations (real, real-reduced, real-reduced-full, real-gpu): variants sft, em, mined, ms, best@low,
self; real-reduced-full trains every parameter (real-reduced: the top 2 layers), and
python -m benchmarks.fusion_quality.compare A.json B.json says whether two runs order the variants alike
(delete it to recompute everything; changed options recompute only the stages they affect).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fusion_quality", description=DESCRIPTION,
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(config_presets()) + sorted(real_presets()), default="real",
                   help="preset (default: real, the real-model configuration; default = tiny from-scratch models)")
    p.add_argument("--quick", action="store_true", help="same as --config quick")
    p.add_argument("--source", choices=SOURCES, help="source model's tokenizer family (default internlm2)")
    p.add_argument("--seeds", type=int, help="fusion seeds per target (>= 3 for a mean ± std)")
    p.add_argument("--variants", help="comma list of targets among %s (default sft,em,mined,ms)" % ",".join(VARIANTS))
    p.add_argument("--lambda-sft", type=float, dest="lambda_sft", help="SFT weight of the fused targets (default 0.9)")
    p.add_argument("--minCE-metric", choices=("fusechat", "store"), dest="minCE_metric",
                   help="source CE compared by MinCE: fusechat (default; the source's CE on its own tokens) or "
                        "store (the remapped store's seq_ce: the source's NLL per pivot token)")
    p.add_argument("--fusion-steps", type=int, help="training steps of every fusion target")
    p.add_argument("--device", help="cpu (default), cuda, cuda:N")
    p.add_argument("--threads", type=int, help="torch / native threads (default 2)")
    p.add_argument("--cache-dir", default=str(REPO / "benchmarks" / ".cache" / "fusion_quality"))
    p.add_argument("--results-dir", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of the markdown table")
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    if not args.quick and args.config in real_presets():
        return real_config_from_args(args)
    cfg = copy.deepcopy(config_presets()["quick" if args.quick else args.config])
    if args.source:
        cfg.source = args.source
    if args.seeds is not None:
        cfg.seeds = args.seeds
    if args.variants:
        cfg.variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    if args.lambda_sft is not None:
        cfg.lambda_sft = args.lambda_sft
    if args.minCE_metric:
        cfg.minCE_metric = args.minCE_metric
    if args.fusion_steps is not None:
        cfg.fusion_train.steps = args.fusion_steps
    if args.device:
        cfg.device = args.device
    if args.threads:
        cfg.threads = args.threads
    from tokalign.errors import TokalignError

    if cfg.seeds < 1:
        raise TokalignError("--seeds must be >= 1")
    if not 0.0 <= cfg.lambda_sft <= 1.0:
        raise TokalignError("--lambda-sft must be in [0, 1]")
    bad = [v for v in cfg.variants if v not in VARIANTS]
    if bad or not cfg.variants:
        raise TokalignError("--variants: unknown %s (choose from %s)" % (", ".join(bad) or "(empty)", ",".join(VARIANTS)))
    return cfg


def real_config_from_args(args: argparse.Namespace) -> RealConfig:
    from tokalign.errors import TokalignError

    cfg = copy.deepcopy(real_presets()[args.config])
    if args.source:
        raise TokalignError("--source picks a from-scratch source (--quick / --config default); the real-model "
                            "configurations fuse Gemma-3-270M into SmolLM2-135M-Instruct")
    for name in ("seeds", "lambda_sft", "minCE_metric", "device", "threads"):
        if getattr(args, name, None) is not None:
            setattr(cfg, name, getattr(args, name))
    if args.variants:
        cfg.variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    if args.fusion_steps is not None:
        cfg.fusion_train.steps = args.fusion_steps
    if cfg.seeds < 1:
        raise TokalignError("--seeds must be >= 1")
    if not 0.0 <= cfg.lambda_sft <= 1.0:
        raise TokalignError("--lambda-sft must be in [0, 1]")
    known = ("sft", "em", "mined", "ms", "best@low", "self")
    bad = [v for v in cfg.variants if v not in known]
    if bad or not cfg.variants:
        raise TokalignError("--variants: unknown %s (choose from %s)" % (", ".join(bad) or "(empty)", ",".join(known)))
    return cfg


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from tokalign.errors import TokalignError

    try:
        cfg = config_from_args(args)
        log = (lambda s: print(s, file=sys.stderr, flush=True))
        if isinstance(cfg, RealConfig):
            from .real_run import format_real_markdown, run_real_benchmark, write_real_outputs

            results = run_real_benchmark(cfg, Path(args.cache_dir), log=log)
            paths = write_real_outputs(results, Path(args.results_dir), plot=not args.no_plot)
            print(json.dumps(results, indent=2, default=json_default) if args.json else format_real_markdown(results))
            print("fusion_quality: %s in %.0fs -> %s" % (cfg.name, results["total_s"], ", ".join(paths.values())),
                  file=sys.stderr)
            return 0
        results = run_benchmark(cfg, Path(args.cache_dir), log=log)
        paths = write_outputs(results, Path(args.results_dir), results_stem(cfg), plot=not args.no_plot)
    except TokalignError as exc:
        print("fusion_quality: error: %s" % exc, file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results, indent=2, default=json_default))
    else:
        print(format_markdown(results))
    print("fusion_quality: %s in %.0fs -> %s" % (cfg.name, results["total_s"], ", ".join(paths.values())),
          file=sys.stderr)
    return 0
