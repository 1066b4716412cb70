"""tokalign report: coverage, mapping kinds and the most frequent mappings of stats / vocab-map folders."""
from .common import add_tokenizer_options, formatter, print_json

EPILOG = """examples:
  tokalign report stats/                                   # group kinds, most frequent pairs
  tokalign report map-ms/ --stats stats/ --json            # coverage incl. corpus-mass coverage
  tokalign report map-em/ map-mined/ map-ms/ --stats stats/ --plot compare.png   # side by side
token texts are shown when the tokenizers named in meta.json load (--tokenizer-dir helps offline).
"""


def register(sub):
    p = sub.add_parser("report", help="coverage and mapping report for stats and vocab-map folders",
                       description=__doc__, epilog=EPILOG, formatter_class=formatter())
    p.add_argument("dirs", nargs="+", help="stats and/or vocab-map folders of one tokenizer pair")
    p.add_argument("--stats", help="a stats folder for corpus-frequency weighting (also accepted among DIRS)")
    p.add_argument("--top", type=int, default=30, help="how many frequent mappings to list (default 30)")
    p.add_argument("--plot", metavar="PNG", help="write a figure (matplotlib) to this file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_tokenizer_options(p)
    p.set_defaults(func=run)


def _tokenizer(name, args):
    from ..errors import TokalignError
    from ..tokenize import load_tokenizer

    if not name:
        return None
    try:
        return load_tokenizer(name, tokenizer_dir=args.tokenizer_dir, trust_remote_code=args.trust_remote_code)
    except TokalignError:
        return None  # ids only


def run(args) -> int:
    from ..report import build_report, format_report, load_any, plot_report

    items = [load_any(d) for d in args.dirs]
    if args.stats and not any(x.kind == "stats" for x in items):
        items.insert(0, load_any(args.stats))
    first = items[0].obj.meta
    if items[0].kind == "stats":
        names = first.get("pivot_name"), first.get("source_name")
    else:
        names = (first.get("pivot") or {}).get("name"), (first.get("source") or {}).get("name")
    pivot, source = _tokenizer(names[0], args), _tokenizer(names[1], args)
    for tok, side in ((pivot, "pivot"), (source, "source")):
        want = first.get(side + "_fingerprint") or (first.get(side) or {}).get("fingerprint")
        if tok is not None and tok.fingerprint != want:
            pivot = source = None  # a different vocabulary under that name: show ids, not wrong texts
    report = build_report(items, pivot, source, n_top=args.top)
    if args.plot:
        plot_report(report, args.plot)
        report["plot"] = args.plot
    if args.json:
        print_json(report)
    else:
        print(format_report(report))
        if args.plot:
            print("wrote figure %s" % args.plot)
    return 0
