"""tokalign demo: the whole alignment pipeline for one tokenizer pair in one command.

build-stats -> vocab-map with every registered method (em, mined, ms) -> report (text, JSON, and a
figure when matplotlib is installed). With no flags it runs offline on tokenizers shipped inside PyPI packages (openchat-3.5's
vocabulary and Mistral-NeMo's tekken, from mistral-common) and on the small built-in corpus.
"""
import sys

from .common import add_tokenizer_options, formatter

EPILOG = """examples:
  tokalign demo --out tokalign-demo                     # offline, embedded tokenizers, built-in corpus
  tokalign demo --models smollm2-135m-instruct,gemma3-270m --out demo-models   # two real models (fetched once)
  tokalign demo --source internlm2 --tokenizer-dir ../shared/tokenizers \\
      --corpus ../shared/corpora/alpacaeval_parallel.jsonl --out demo-internlm2
outputs: OUT/stats, %s, OUT/report.json, OUT/report.txt, OUT/report.png
"""


def register(sub):
    from ..vocab.registry import method_names

    names = method_names()
    p = sub.add_parser("demo", help="run build-stats, vocab-map (%s) and report for one pair" % ", ".join(names),
                       description=__doc__, epilog=EPILOG % ", ".join("OUT/map-" + n for n in names),
                       formatter_class=formatter())
    p.add_argument("--pivot", default="openchat", help="pivot tokenizer (default openchat)")
    p.add_argument("--source", default="mistral-nemo", help="source tokenizer (default mistral-nemo)")
    p.add_argument("--corpus", nargs="+", default=["builtin:sample"], help="corpus files (default builtin:sample)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--models", metavar="PIVOT,SOURCE",
                   help="run the model pipeline instead (dump-logits both, build-stats, em/mined/ms maps, remap, "
                        "inspect, next-token table + figure), e.g. smollm2-135m-instruct,gemma3-270m")
    p.add_argument("--samples", type=int, default=16, help="--models: records of the built-in slice (default 16)")
    add_tokenizer_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if getattr(args, "models", None):
        from .demo_models import run_models

        return run_models(args)
    import json
    import time
    from pathlib import Path

    from ..artifacts import atomic_dir
    from ..stats import BuildOptions, build_stats, summary_line
    from ..report import build_report, figures_missing, format_report, load_any, plot_report
    from ..vocab.registry import methods
    from .common import load_pair, print_json

    t0 = time.perf_counter()
    pivot, source = load_pair(args)
    print("demo: pivot %s (%s, %d tokens), source %s (%s, %d tokens)"
          % (pivot.name, pivot.source, pivot.vocab_size, source.name, source.source, source.vocab_size))
    with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        stats = build_stats(pivot, source, args.corpus, BuildOptions())
        stats.save(tmp / "stats")
        print(summary_line(stats))
        maps = []
        for method in methods():
            t = time.perf_counter()
            extra = {"stats": stats.matrix} if method.needs_stats else {}
            vm = method.build(pivot, source, **extra)
            vm.save(tmp / f"map-{method.name}")
            maps.append(f"map-{method.name}")
            print("vocab-map %-5s mapped %d/%d source tokens in %.1fs"
                  % (method.name, int(vm.mapped().sum()), vm.source_vocab, time.perf_counter() - t))
        items = [load_any(tmp / d) for d in ["stats"] + maps]
        report = build_report(items, pivot, source)
        missing = figures_missing()  # matplotlib is optional (the [plot] extra): say so, then go on
        if missing:
            print("demo: no report.png: %s" % missing, file=sys.stderr)
        else:
            plot_report(report, str(tmp / "report.png"))
        text = format_report(report)
        (tmp / "report.txt").write_text(text + "\n", encoding="utf-8")
        (tmp / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.json:
        print_json(report)
    else:
        print(text)
    print("demo: done in %.1fs; artifacts in %s (stats, %s, report.*)"
          % (time.perf_counter() - t0, Path(args.out), ", ".join(maps)))
    return 0
