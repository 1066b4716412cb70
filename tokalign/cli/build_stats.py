"""tokalign build-stats: the mapping-statistics matrix of a tokenizer pair over a corpus."""
from .common import add_tokenizer_options, formatter, load_pair, print_json

EPILOG = """examples:
  tokalign build-stats --pivot openchat --source internlm2 --corpus data.jsonl --out stats/
  tokalign build-stats --pivot openchat --source qwen2 --corpus 'corpora/*.jsonl' --assistant-only \\
      --method dtw --tokenizer-dir ../shared/tokenizers --out stats-dtw/
  # scale out: 4 shards, then sum them
  for i in 0 1 2 3; do tokalign build-stats ... --shard $i/4 --out stats-$i/; done
  tokalign merge-stats stats-0 stats-1 stats-2 stats-3 --out stats/
  # FuseChat DTW on the GPU (same counts as on the CPU; needs tokalign._cuda, docs/cuda.md)
  tokalign build-stats --pivot openchat --source qwen2 --method dtw --device cuda --out stats-dtw/

writes OUT/stats.npz (scipy.sparse CSR int64, pivot_vocab x source_vocab) and OUT/meta.json;
the same inputs always give a byte-identical stats.npz.
"""


def register(sub):
    p = sub.add_parser("build-stats", help="count co-aligned token pairs over a corpus (mapping statistics)",
                       description=__doc__, epilog=EPILOG, formatter_class=formatter())
    p.add_argument("--pivot", required=True, help="pivot tokenizer: alias or path")
    p.add_argument("--source", required=True, help="source tokenizer: alias or path")
    p.add_argument("--corpus", nargs="+", default=["builtin:sample"],
                   help="JSON Lines (messages or text) / plain text files or globs (default: builtin:sample)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--method", choices=["span", "dtw"], default="span",
                   help="span: exact alignment from character offsets (default); dtw: FuseChat's DP")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where --method dtw runs: auto (GPU when tokalign._cuda and a device are available, "
                        "default), cpu or cuda; span always runs on the CPU")
    p.add_argument("--template", choices=["plain", "chat"], default="plain",
                   help="render messages as plain concatenation (default) or with each side's chat template")
    p.add_argument("--assistant-only", action="store_true", help="align only assistant turns (FuseChat)")
    p.add_argument("--max-chars", type=int, help="truncate each item to this many characters")
    p.add_argument("--shard", default="0/1", help="process items with index %% N == I (I/N)")
    p.add_argument("--batch-size", type=int, default=256, help="items per batch (default 256)")
    p.add_argument("--skip-bad", action="store_true", help="skip and count malformed lines instead of failing")
    p.add_argument("--allow-empty", action="store_true",
                   help="write empty statistics when no item is aligned (default: an error)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print meta.json as JSON instead of the summary line")
    add_tokenizer_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..artifacts import prepare_out_dir
    from ..stats import BuildOptions, build_stats, parse_shard, summary_line

    prepare_out_dir(args.out, args.overwrite)  # fail before the long run, not after
    opts = BuildOptions(method=args.method, template=args.template, assistant_only=args.assistant_only,
                        max_chars=args.max_chars, shard=parse_shard(args.shard), batch_size=args.batch_size,
                        skip_bad=args.skip_bad, device=args.device, allow_empty=args.allow_empty)
    if args.method == "dtw":
        from ..device import resolve_device

        resolve_device(args.device)  # a one-line error for --device cuda without a GPU, before loading anything
    pivot, source = load_pair(args)
    stats = build_stats(pivot, source, args.corpus, opts, progress=not args.no_progress)
    stats.save(args.out, overwrite=args.overwrite)
    if args.json:
        print_json(dict(stats.meta, out=str(args.out), seconds=round(stats.seconds, 3)))
    else:
        print(summary_line(stats))
        print("wrote %s/stats.npz and meta.json" % args.out)
    return 0
