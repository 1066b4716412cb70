"""``tokalign bench``: run a benchmark script of the source checkout's ``benchmarks/`` folder.

``tokalign bench fusion [options]`` runs ``benchmarks/fusion_quality.py`` (a miniature FuseChat
reproduction: EM vs MinED vs MS vocabulary maps for pairwise fusion, measured on small models trained from
scratch with real tokenizers). Every option after ``fusion`` goes to the script; ``tokalign bench fusion
--help`` prints the script's own help. The benchmarks are not part of an installed package: they are found
next to the ``tokalign`` package (a source checkout) or under ``$TOKALIGN_BENCHMARKS``.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Optional

from ..errors import TokalignError
from .common import formatter

#: ``tokalign bench <name>`` -> script in benchmarks/ (each has ``main(argv) -> int``)
BENCHMARKS: Dict[str, str] = {"fusion": "fusion_quality.py"}

EPILOG = """examples:
  tokalign bench fusion --quick                  # EM vs MinED vs MS fusion quality, ~10 min on 2 CPU cores
  tokalign bench fusion                          # the default configuration, <= 60 min on 2 CPU cores
  tokalign bench fusion --config gpu --device cuda --seeds 5
  tokalign bench fusion --help                   # the benchmark's own options
results: benchmarks/results/fusion_quality[-quick].{json,md,png}
"""


def benchmarks_dir() -> Path:
    """``$TOKALIGN_BENCHMARKS`` or the ``benchmarks/`` folder next to the ``tokalign`` package."""
    env = os.environ.get("TOKALIGN_BENCHMARKS")
    return Path(env) if env else Path(__file__).resolve().parent.parent.parent / "benchmarks"


def load_benchmark(name: str, directory: Optional[Path] = None) -> ModuleType:
    """Import the script of benchmark ``name`` as a module (TokalignError when it is not there)."""
    if name not in BENCHMARKS:
        raise TokalignError("unknown benchmark %r (have: %s)" % (name, ", ".join(sorted(BENCHMARKS))))
    path = (directory or benchmarks_dir()) / BENCHMARKS[name]
    if not path.is_file():
        raise TokalignError("benchmark script %s not found: `tokalign bench` runs from a source checkout "
                            "(or set TOKALIGN_BENCHMARKS to its benchmarks/ folder)" % path)
    spec = importlib.util.spec_from_file_location("tokalign_bench_" + path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through the module while it executes
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException:
        sys.modules.pop(spec.name, None)
        raise
    if not callable(getattr(module, "main", None)):
        raise TokalignError("benchmark script %s has no main(argv)" % path)
    return module


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="run a benchmark of the source checkout (fusion quality)",
                              description=__doc__, epilog=EPILOG, formatter_class=formatter())
    sub = p.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    # prefix_chars="+": every "-"-option after `fusion` is a plain argument handed to the script untouched
    fusion = sub.add_parser("fusion", add_help=False, prefix_chars="+", help="EM vs MinED vs MS pairwise fusion quality "
                            "(benchmarks/fusion_quality.py; options are passed through, --help for them)")
    fusion.add_argument("script_args", nargs="*", help=argparse.SUPPRESS)
    fusion.set_defaults(func=run, benchmark="fusion")
    p.set_defaults(func=_no_benchmark(p))


def _no_benchmark(parser: argparse.ArgumentParser):
    def run_none(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return run_none


def run(args: argparse.Namespace) -> int:
    module = load_benchmark(args.benchmark)
    argv: List[str] = list(args.script_args or [])
    try:
        return int(module.main(argv) or 0)
    except SystemExit as exc:  # argparse inside the script (--help, bad option)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
