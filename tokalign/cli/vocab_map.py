"""``tokalign vocab-map``: build a source -> pivot vocabulary map (EM, MinED or MS)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Dict

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
    from ..vocab import registry

    methods = registry.methods()
    p = subparsers.add_parser(
        "vocab-map",
        help="build a source -> pivot vocabulary map (%s)" % " | ".join(m.name for m in methods),
        description="Build a vocabulary map from the source tokenizer to the pivot tokenizer.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--pivot", required=True, help="pivot tokenizer (alias or path)")
    p.add_argument("--source", required=True, help="source tokenizer (alias or path)")
    p.add_argument("--method", required=True, choices=[m.name for m in methods],
                   help="; ".join("%s: %s" % (m.name, m.description) for m in methods))
    needs_stats = [m.name for m in methods if m.needs_stats]
    p.add_argument("--stats", metavar="DIR",
                   help="%s: mapping statistics folder (stats.npz + meta.json)" % ", ".join(needs_stats))
    # each method's own options (tokalign.vocab.registry.CliOption); None = not given
    for flag, (opt, _users) in registry.cli_options().items():
        declared = {m: o for m in methods for o in m.cli_options if o.flag == flag}
        p.add_argument(flag, default=None, type=opt.type, choices=opt.choices, metavar=opt.metavar,
                       help="; ".join("%s: %s" % (m.name, o.help) for m, o in declared.items()))
    p.add_argument("--threads", type=int, default=0, help="native threads (default: all)")
    p.add_argument("--tokenizer-dir", metavar="DIR", default=None, help="folder holding tokenizer aliases")
    p.add_argument("--trust-remote-code", action="store_true", help="allow tokenizer code from the hub (off by default)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier vocab map in --out")
    p.add_argument("--json", action="store_true", help="print meta.json (coverage etc.) as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def method_options(method: Any, args: argparse.Namespace) -> Dict[str, Any]:
    """``build`` keywords of ``method`` from the command line; TokalignError (before any work) when
    ``--stats`` is missing or extra, or an option of another method is given."""
    from ..vocab import registry

    if method.needs_stats and not args.stats:
        raise TokalignError("--method %s needs --stats DIR" % method.name)
    if args.stats and not method.needs_stats:
        users = [m.name for m in registry.methods() if m.needs_stats]
        raise TokalignError("--stats applies to --method %s only" % " / ".join(users))
    own = {o.flag for o in method.cli_options}
    for flag, (opt, users) in registry.cli_options().items():
        if flag not in own and getattr(args, opt.dest) is not None:
            raise TokalignError("%s does not apply to --method %s (only to %s)" % (flag, method.name, " / ".join(users)))
    return method.options_from_cli({o.dest: getattr(args, o.dest) for o in method.cli_options})


def _check_out(args: argparse.Namespace):
    """--out is never an input (the --stats folder) nor anything but a new/empty folder, or, with --overwrite,
    an earlier vocab map: the map replaces --out wholesale."""
    from ..artifacts import prepare_out_dir, refuse_output_over_inputs
    from ..vocab.vocab_map import MAP_FILES

    out = refuse_output_over_inputs(args.out, [("--stats", args.stats)])
    prepare_out_dir(out, args.overwrite)
    if out.is_dir() and any(p.name not in MAP_FILES for p in out.iterdir()):
        raise TokalignError("%s: not empty and not an earlier vocab map; --overwrite only replaces a vocab map: "
                            "choose a new or empty folder" % out)
    return out


def run(args: argparse.Namespace) -> int:
    import tokalign

    from ..stats import MappingStats
    from ..vocab import registry

    method = registry.get_method(args.method)
    options = method_options(method, args)
    out = _check_out(args)  # before the (possibly long) build
    started = time.time()
    load = lambda name: tokalign.load_tokenizer(  # noqa: E731
        name, tokenizer_dir=args.tokenizer_dir, trust_remote_code=args.trust_remote_code
    )
    pivot, source = load(args.pivot), load(args.source)
    runtime = {"threads": args.threads, "progress": not args.no_progress and sys.stderr.isatty()}
    options.update({k: runtime[k] for k in method.runtime})
    if method.needs_stats:
        stats = MappingStats.load(args.stats, expect_pivot=pivot.fingerprint, expect_source=source.fingerprint)
        options.update(stats=stats.matrix, stats_meta=stats.meta)
    vm = method.build(pivot, source, **options)
    vm.meta["elapsed_s"] = round(time.time() - started, 3)
    vm.save(out, overwrite=True)  # _check_out allowed only an empty folder or, with --overwrite, an earlier map
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
