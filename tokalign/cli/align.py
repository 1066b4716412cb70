"""tokalign align: show how two tokenizers' tokens line up on the same text."""
from .common import add_tokenizer_options, formatter, load_pair, print_json

EPILOG = """examples:
  tokalign align --pivot openchat --source internlm2 --text "Hello world! 你好，世界。"
  tokalign align --pivot openchat --source qwen2 --corpus data.jsonl --limit 3 --method dtw --json
  tokalign align --pivot llama3 --source qwen2.5 --tokenizer-dir ../shared/tokenizers --text "x**2 + 1"

groups are printed as  [kind] pivot tokens  <->  source tokens  (1:1, 1:n, n:1 or n:m).
"""


def register(sub):
    p = sub.add_parser("align", help="align two tokenizations of the same text and print the groups",
                       description=__doc__, epilog=EPILOG, formatter_class=formatter())
    p.add_argument("--pivot", required=True, help="pivot tokenizer: alias or path")
    p.add_argument("--source", required=True, help="source tokenizer: alias or path")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="the text to align")
    src.add_argument("--corpus", nargs="+", help="JSON Lines / text files (see build-stats)")
    p.add_argument("--limit", type=int, default=5, help="items to align from --corpus (default 5)")
    p.add_argument("--method", choices=["span", "dtw"], default="span",
                   help="span: exact, from character offsets (default); dtw: FuseChat's DP over token strings")
    p.add_argument("--band", default="auto", help="dtw band: auto (default), full, or a radius")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where --method dtw runs (auto: the GPU when tokalign._cuda and a device are available)")
    p.add_argument("--json", action="store_true", help="print the alignments as JSON")
    add_tokenizer_options(p)
    p.set_defaults(func=run)


def _align_one(pivot, source, text, args):
    from .. import align

    pe, se = pivot.encode(text), source.encode(text)
    if args.method == "dtw":
        band = None if args.band == "full" else (int(args.band) if args.band.isdigit() else args.band)
        raw_p, raw_s = pivot.raw_tokens(), source.raw_tokens()
        ptoks, stoks = [raw_p[i] for i in pe.ids], [raw_s[i] for i in se.ids]
        if args.device_resolved == "cuda":
            (a,) = align.batch([ptoks], [stoks], band=band if band is not None else "auto", device="cuda")
        else:
            a = align.dtw(ptoks, stoks, band=band)
    else:
        a = align.span(pe.offsets, se.offsets)
    ptext, stext = pivot.token_texts(), source.token_texts()
    show = lambda texts, ids: [texts[int(i)].decode("utf-8", "backslashreplace") for i in ids]  # noqa: E731
    groups = []
    for p0, p1, s0, s1 in a.groups.tolist():
        kind = ("1" if p1 - p0 == 1 else "n") + ":" + ("1" if s1 - s0 == 1 else ("n" if p1 - p0 == 1 else "m"))
        groups.append({"kind": kind, "pivot": show(ptext, pe.ids[p0:p1]), "source": show(stext, se.ids[s0:s1]),
                       "pivot_range": [p0, p1], "source_range": [s0, s1]})
    return {"text": text, "method": a.method if hasattr(a, "method") else args.method,
            "pivot_tokens": int(len(pe.ids)), "source_tokens": int(len(se.ids)),
            "kind_counts": dict(a.kind_counts), "groups": groups}


def run(args) -> int:
    from ..corpus import Corpus
    from ..device import resolve_device

    args.device_resolved = resolve_device(args.device) if args.method == "dtw" else "cpu"
    pivot, source = load_pair(args)
    if args.text is not None:
        texts = [args.text]
    else:
        texts = []
        for item in Corpus(args.corpus):
            texts.append(item.text)
            if len(texts) >= args.limit:
                break
    results = [_align_one(pivot, source, t, args) for t in texts]
    if args.json:
        print_json({"pivot": pivot.name, "source": source.name, "alignments": results})
        return 0
    for r in results:
        print("%d pivot (%s) / %d source (%s) tokens, %s: %s" % (
            r["pivot_tokens"], pivot.name, r["source_tokens"], source.name, r["method"],
            ", ".join("%s %d" % kv for kv in r["kind_counts"].items())))
        for g in r["groups"]:
            print("  [%s] %s  <->  %s" % (g["kind"], " ".join(repr(t) for t in g["pivot"]),
                                         " ".join(repr(t) for t in g["source"])))
    return 0
