"""Command line of the implicit-fusion benchmark (``python -m benchmarks.implicit_quality``)."""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from .config import ARMS, presets

REPO = Path(__file__).resolve().parents[2]
EPILOG = """examples:
  python -m benchmarks.implicit_quality                       # default: 65 min on 2 CPU cores (measured)
  python -m benchmarks.implicit_quality --config reduced --jobs 3   # what fits a loaded shared machine
  python -m benchmarks.implicit_quality --config gpu --device cuda  # full fine-tuning, more data / steps / seeds
  python -m benchmarks.implicit_quality --quick               # smoke run (minutes; numbers mean nothing)

outputs: benchmarks/results/implicit_quality[-<config>].{json,md,png}; cache: benchmarks/.cache/implicit_quality/
(delete it to recompute; changed options recompute only the stages they affect; a killed run resumes).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="implicit_quality", epilog=EPILOG,
                                description="FuseChat-3.0 (SFT -> DPO), WRPO and C-RLFT against SFT-only on real "
                                            "models and a verifiable task, measured.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(presets()), default="default")
    p.add_argument("--quick", action="store_true", help="same as --config quick")
    p.add_argument("--seeds", type=int, help="training seeds per arm (>= 3 for a mean ± std)")
    p.add_argument("--arms", help="comma list among %s" % ",".join(ARMS))
    p.add_argument("--device", help="cpu (default), cuda")
    p.add_argument("--threads", type=int, help="torch threads per process (default 2; 1 is faster on a loaded "
                                               "machine)")
    p.add_argument("--jobs", type=int, default=1, help="seeds run in this many processes at once (default 1)")
    p.add_argument("--only-seed", type=int, help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", default=str(REPO / "benchmarks" / ".cache" / "implicit_quality"))
    p.add_argument("--results-dir", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of the markdown")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from tokalign.errors import TokalignError

    from .config import json_default
    from .report import format_markdown, write_outputs
    from .run import run_benchmark

    try:
        cfg = copy.deepcopy(presets()["quick" if args.quick else args.config])
        for name in ("seeds", "device", "threads"):
            if getattr(args, name) is not None:
                setattr(cfg, name, getattr(args, name))
        if args.arms:
            cfg.arms = tuple(a.strip() for a in args.arms.split(",") if a.strip())
        bad = [a for a in cfg.arms if a not in ARMS]
        if bad or not cfg.arms:
            raise TokalignError("--arms: unknown %s (choose from %s)" % (", ".join(bad) or "(empty)", ",".join(ARMS)))
        if cfg.seeds < 1:
            raise TokalignError("--seeds must be >= 1")
        log = (lambda s: print(s, file=sys.stderr, flush=True))
        child = [a for i, a in enumerate(argv) if a != "--jobs" and (i == 0 or argv[i - 1] != "--jobs")]
        results = run_benchmark(cfg, Path(args.cache_dir), log=log, jobs=args.jobs, only_seed=args.only_seed,
                                argv=child)
        if args.only_seed is not None:
            return 0
        paths = write_outputs(results, Path(args.results_dir), do_plot=not args.no_plot)
    except TokalignError as exc:
        print("implicit_quality: error: %s" % exc, file=sys.stderr)
        return 2
    print(json.dumps(results, indent=2, default=json_default) if args.json else format_markdown(results))
    print("implicit_quality: %s in %.0fs -> %s" % (cfg.name, results["total_s"], ", ".join(paths.values())),
          file=sys.stderr)
    return 0
