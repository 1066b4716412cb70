"""build-stats throughput on all of ../shared/corpora (openchat-3.5 x internlm2 by default).

Prints end-to-end pivot tokens/s (tokenization included) and where the time goes, against a
FuseChat-style baseline measured in the same run on a sample and extrapolated: per item, both
tokenizations, FuseChat's dtw() in Python (rapidfuzz for the cell cost) and a Python dict of counts.

    python benchmarks/stats_speed.py [--pivot openchat-3.5] [--source internlm2] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import tokalign  # noqa: E402
from tokalign import align  # noqa: E402
from tokalign.stats.build import BuildOptions, build_stats  # noqa: E402
from tokalign.corpus import Corpus  # noqa: E402
from tokalign.paths import shared_corpora, shared_tokenizers  # noqa: E402


def fusechat_dtw(a, b):
    """FuseChat's dtw(): numpy DP matrix in Python loops, cost = edit distance of stripped tokens."""
    from rapidfuzz.distance import Levenshtein

    def cost(x, y):
        x2, y2 = x.replace("▁", "").replace("Ġ", ""), y.replace("▁", "").replace("Ġ", "")
        return Levenshtein.distance(x2, y2) if x2 and y2 else Levenshtein.distance(x, y)

    n, m = len(a), len(b)
    d = np.full((n + 1, m + 1), np.inf)
    d[0, 0] = 0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i, j] = cost(a[i - 1], b[j - 1]) + min(d[i - 1, j - 1], d[i - 1, j], d[i, j - 1])
    i, j, path = n, m, []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        k = int(np.argmin([d[i - 1, j - 1], d[i - 1, j], d[i, j - 1]]))
        i, j = (i - 1, j - 1) if k == 0 else ((i - 1, j) if k == 1 else (i, j - 1))
    return path[::-1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pivot", default="openchat-3.5")
    ap.add_argument("--source", default="internlm2")
    ap.add_argument("--corpus", nargs="+", default=None, help="default: every ../shared/corpora/*.jsonl")
    ap.add_argument("--baseline-items", type=int, default=20, help="items timed for the Python baseline")
    ap.add_argument("--quick", action="store_true", help="only code_math.jsonl")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tdir = shared_tokenizers()
    pivot = tokalign.load_tokenizer(str(tdir / args.pivot))
    source = tokalign.load_tokenizer(str(tdir / args.source))
    pivot.token_texts(), source.token_texts()  # build tables outside the timings
    corpus = args.corpus or sorted(str(p) for p in shared_corpora().glob("*.jsonl"))
    if args.quick:
        corpus = [str(shared_corpora() / "code_math.jsonl")]

    t = time.perf_counter()
    stats = build_stats(pivot, source, corpus, BuildOptions(), progress=False)
    total = time.perf_counter() - t
    ptok = stats.meta["pivot_tokens"]

    # Where the time goes: the same work in phases.
    texts = [it.text for it in Corpus(corpus)]
    t = time.perf_counter()
    raw_p = pivot.engine.encode_batch(texts, add_special_tokens=False)
    raw_s = source.engine.encode_batch(texts, add_special_tokens=False)
    t_engine = time.perf_counter() - t
    t = time.perf_counter()  # ids only, no library offsets: what encode_batch runs (offsets come from C++)
    fast_p = pivot.engine.encode_batch_fast(texts, add_special_tokens=False)
    fast_s = source.engine.encode_batch_fast(texts, add_special_tokens=False)
    t_engine_fast = time.perf_counter() - t
    del fast_p, fast_s
    t = time.perf_counter()
    pe = pivot.encode_batch(texts)
    se = source.encode_batch(texts)
    t_encode = time.perf_counter() - t
    t = time.perf_counter()
    alns = align.batch(method="span", pivot_offsets=[e.offsets for e in pe], source_offsets=[e.offsets for e in se])
    t_align = time.perf_counter() - t
    del raw_p, raw_s, alns

    # FuseChat-style baseline on a sample, extrapolated by pivot tokens.
    sample = texts[: args.baseline_items]
    rp, rs = pivot.raw_tokens(), source.raw_tokens()
    t = time.perf_counter()
    counts, btok = Counter(), 0
    for text in sample:
        a = [rp[i] for i in pivot.engine.encode(text, add_special_tokens=False).ids]
        b = [rs[i] for i in source.engine.encode(text, add_special_tokens=False).ids]
        btok += len(a)
        for i, j in fusechat_dtw(a, b):
            counts[(a[i], b[j])] += 1
    t_base = time.perf_counter() - t
    base_rate = btok / t_base

    res = {
        "machine": f"{os.cpu_count()} cores",
        "pair": f"{args.pivot} x {args.source}",
        "items": stats.meta["items"],
        "pivot_tokens": ptok,
        "source_tokens": stats.meta["source_tokens"],
        "end_to_end_s": round(total, 3),
        "end_to_end_pivot_tok_per_s": round(ptok / total),
        "phase_tokenizers_engine_s": round(t_engine, 3),
        "phase_tokenizers_engine_ids_only_s": round(t_engine_fast, 3),
        "phase_encode_with_exact_offsets_s": round(t_encode, 3),
        "phase_span_align_s": round(t_align, 3),
        "baseline_fusechat_python_tok_per_s": round(base_rate),
        "speedup_vs_fusechat_style": round(ptok / total / base_rate, 1),
        "goal_1M_tok_per_s": ptok / total >= 1e6,
    }
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"build-stats {res['pair']}: {res['items']} items, {ptok} pivot tokens in {total:.2f}s "
              f"= {ptok / total / 1e6:.2f} M pivot tok/s end to end (goal 1 M: {'met' if res['goal_1M_tok_per_s'] else 'NOT met'})")
        print(f"  phases: Rust tokenizers alone (both sides) {t_engine:.2f}s (ids only: {t_engine_fast:.2f}s); "
              f"tokalign encode_batch (ids + exact offsets) {t_encode:.2f}s; "
              f"span alignment (C++) {t_align:.2f}s")
        print(f"  FuseChat-style Python (dtw + dict), {len(sample)} items: {base_rate:.0f} tok/s -> "
              f"{res['speedup_vs_fusechat_style']}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
