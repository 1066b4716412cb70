"""tokalign merge-stats: sum mapping-statistics shards built with the same tokenizers."""
from .common import formatter, print_json

EPILOG = """examples:
  tokalign merge-stats stats-0/ stats-1/ stats-2/ --out stats/
  tokalign merge-stats shards/* --out stats/ --json
"""


def register(sub):
    p = sub.add_parser("merge-stats", help="sum build-stats shards (refuses mismatched tokenizers)",
                       description=__doc__, epilog=EPILOG, formatter_class=formatter())
    p.add_argument("dirs", nargs="+", help="stats folders (each with stats.npz and meta.json)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--json", action="store_true", help="print the merged meta.json")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..artifacts import prepare_out_dir, refuse_output_over_inputs
    from ..stats import MappingStats, merge_stats

    out = refuse_output_over_inputs(args.out, [("stats folder", d) for d in args.dirs])
    prepare_out_dir(out, args.overwrite)
    merged = merge_stats(MappingStats.load(d) for d in args.dirs)
    merged.save(out, overwrite=args.overwrite)
    if args.json:
        print_json(dict(merged.meta, out=str(args.out)))
    else:
        m = merged.meta
        print("merge-stats: %d shards, %d items, %d pivot tokens, %d distinct pairs -> %s"
              % (len(args.dirs), m["items"], m["pivot_tokens"], merged.matrix.nnz, args.out))
    return 0
