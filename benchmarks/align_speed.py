"""Speed of tokalign.align against a pure-Python FuseChat DTW measured in the same run.

Builds ~2048-token texts by concatenating responses from ../shared/corpora, tokenizes them with
real tokenizer pairs (tokenizers.Tokenizer.from_file + id_to_token), and prints per pair:

* pure-Python DTW (FuseChat's numpy-matrix dtw() with rapidfuzz's C Levenshtein as the cell
  cost, i.e. a *fast* baseline) -- timed on the full pair, or on a prefix and scaled by cells
  with --baseline-tokens;
* C++ full DTW and banded DTW (single thread, best of --repeat) and their speed-ups;
* span alignment throughput in tokens/s (pivot + source tokens, single thread, core only and
  through the Python API), and ``batch(method="span")`` over thousands of small items (one
  sentence-sized chunk of the text each, as build-stats sends them) in microseconds per item.

Banded DTW is exact (asserted equal to the full DTW below), so its time includes the band, the
pruned verification pass and the cost table.

Goals (task): full >= 100x, banded >= 1000x, span >= 10 M tokens/s per core.
The load average of the machine is printed first: the baseline and the C++ share the cores with
whatever else runs, so compare ratios, not absolute times.

Examples:
    python benchmarks/align_speed.py
    python benchmarks/align_speed.py --pairs openchat-3.5:qwen2 --json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")  # single-thread figures

from _timing import best_of  # noqa: E402
from tokalign import _core, align  # noqa: E402
from tokalign.paths import shared_corpora, shared_tokenizers  # noqa: E402


def py_fusechat_dtw(pivot, source):
    """FuseChat's dtw() structure (numpy matrix, argmin traceback) with the tokalign cell cost."""
    from rapidfuzz.distance import Levenshtein

    strip = [t.replace("\u2581", "").replace("\u0120", "") for t in pivot]
    strip_s = [t.replace("\u2581", "").replace("\u0120", "") for t in source]
    matrix = np.zeros((len(pivot) + 1, len(source) + 1))
    matrix[0, :] = np.inf
    matrix[:, 0] = np.inf
    matrix[0, 0] = 0
    for i, a in enumerate(pivot):
        sa = strip[i]
        for j, b in enumerate(source):
            sb = strip_s[j]
            cost = Levenshtein.distance(sa, sb) if sa and sb else Levenshtein.distance(a, b)
            matrix[i + 1, j + 1] = cost + min(matrix[i, j + 1], matrix[i + 1, j], matrix[i, j])
    matrix = matrix[1:, 1:]
    i, j = matrix.shape[0] - 1, matrix.shape[1] - 1
    path = []
    while i > 0 or j > 0:
        path.append((i, j))
        diag = matrix[i - 1, j - 1] if i > 0 and j > 0 else np.inf
        up = matrix[i - 1, j] if i > 0 else np.inf
        left = matrix[i, j - 1] if j > 0 else np.inf
        move = np.argmin([diag, up, left])
        if move == 0:
            i, j = i - 1, j - 1
        elif move == 1:
            i -= 1
        else:
            j -= 1
    path.append((0, 0))
    return path[::-1], matrix[-1, -1]


def build_text(target_tokens: int, tok, corpus: Path) -> str:
    text = ""
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            for msg in json.loads(line)["messages"]:
                if msg["role"] == "assistant":
                    text += msg["content"] + "\n\n"
            if len(tok.encode(text, add_special_tokens=False).ids) >= target_tokens:
                break
    return text


def run_pair(pivot_name: str, source_name: str, args) -> dict:
    from tokenizers import Tokenizer

    tp = Tokenizer.from_file(str(shared_tokenizers() / pivot_name / "tokenizer.json"))
    ts = Tokenizer.from_file(str(shared_tokenizers() / source_name / "tokenizer.json"))
    text = build_text(args.tokens, tp, shared_corpora() / args.corpus)
    ep, es = tp.encode(text, add_special_tokens=False), ts.encode(text, add_special_tokens=False)
    pt = [tp.id_to_token(i) for i in ep.ids]
    st = [ts.id_to_token(i) for i in es.ids]
    n, m = len(pt), len(st)

    nb = args.baseline_tokens or n
    t0 = time.perf_counter()
    py_path, py_cost = py_fusechat_dtw(pt[:nb], st[: max(1, round(nb * m / n))])
    py_time = time.perf_counter() - t0
    cells_base = nb * max(1, round(nb * m / n))
    py_full = py_time * (n * m) / cells_base  # scaled to the full pair when a prefix was used

    full = align.dtw(pt, st)
    if nb == n:  # same result as the Python baseline
        assert [tuple(x) for x in full.path.tolist()] == py_path and full.cost == py_cost
    banded = align.dtw(pt, st, band="auto")
    assert banded.path.tolist() == full.path.tolist()
    t_full = best_of(lambda: align.dtw(pt, st), args.repeat)
    t_band = best_of(lambda: align.dtw(pt, st, band="auto"), args.repeat)

    po, so = np.asarray(ep.offsets, dtype=np.int64), np.asarray(es.offsets, dtype=np.int64)
    # Span: one long sequence (the text repeated) for the core rate, plus the per-call API rate.
    reps = max(1, args.span_tokens // (n + m))
    shift = np.arange(reps, dtype=np.int64)[:, None, None] * (len(text) + 1)
    po_long = (po[None] + shift).reshape(-1, 2)
    so_long = (so[None] + shift).reshape(-1, 2)
    t_span_core = best_of(lambda: _core.span(po_long, so_long), args.repeat)
    t_span_api = best_of(lambda: align.span(po, so), args.repeat * 20)
    span_rate_core = (len(po_long) + len(so_long)) / t_span_core
    span_rate_api = (n + m) / t_span_api
    # Batch of small items: consecutive chunks of ~32 pivot tokens (of the long input) with the
    # source tokens inside the same characters.
    items_p, items_s = [], []
    starts = so_long[:, 0]
    for k in range(0, min(len(po_long), 32 * args.batch_items), 32):
        p = po_long[k:k + 32]
        a, b = np.searchsorted(starts, p[0, 0]), np.searchsorted(starts, p[-1, 1])
        items_p.append(p)
        items_s.append(so_long[a:b])
    batch_tokens = sum(len(x) + len(y) for x, y in zip(items_p, items_s))
    t_batch = best_of(lambda: align.batch(method="span", pivot_offsets=items_p, source_offsets=items_s,
                                          num_threads=1), args.repeat)
    return {
        "pair": "%s x %s" % (pivot_name, source_name), "pivot_tokens": n, "source_tokens": m,
        "python_dtw_s": py_full, "python_measured_cells": cells_base,
        "cpp_full_s": t_full, "cpp_banded_s": t_band, "band_radius": banded.band,
        "speedup_full": py_full / t_full, "speedup_banded": py_full / t_band,
        "span_tokens_per_s_core": span_rate_core, "span_tokens_per_s_api": span_rate_api,
        "span_core_tokens": int(len(po_long) + len(so_long)),
        "span_batch_items": len(items_p), "span_batch_tokens_per_item": batch_tokens / len(items_p),
        "span_batch_us_per_item": t_batch / len(items_p) * 1e6, "span_batch_tokens_per_s": batch_tokens / t_batch,
        "goal_full_100x": py_full / t_full >= 100, "goal_banded_1000x": py_full / t_band >= 1000,
        "goal_span_10M": span_rate_core >= 10e6,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default="openchat-3.5:internlm2,openchat-3.5:qwen2",
                    help="comma-separated pivot:source tokenizer directory names")
    ap.add_argument("--tokens", type=int, default=2048, help="pivot tokens per text (default 2048)")
    ap.add_argument("--corpus", default="alpacaeval_parallel.jsonl")
    ap.add_argument("--baseline-tokens", type=int, default=0,
                    help="time the Python DTW on this many pivot tokens and scale by cells (0 = full pair)")
    ap.add_argument("--span-tokens", type=int, default=2_000_000, help="tokens in the long span-rate input")
    ap.add_argument("--batch-items", type=int, default=5000, help="small items in the batch span test")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    results = [run_pair(*p.split(":"), args) for p in args.pairs.split(",")]
    load = {"before": load_before, "after": os.getloadavg(), "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps({"openmp": bool(_core.openmp), "load_average": load, "results": results}, indent=2))
        return 0
    print("load average (1, 5, 15 min) before %s, after %s on %d CPUs" % (
        " ".join("%.2f" % x for x in load["before"]), " ".join("%.2f" % x for x in load["after"]), load["cpus"]))
    hdr = "%-26s %6s %6s %10s %9s %9s %8s %8s %9s %8s %10s" % (
        "pair", "n", "m", "python s", "full ms", "band ms", "full x", "band x", "span M/s", "api M/s",
        "batch us")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        print("%-26s %6d %6d %10.2f %9.2f %9.3f %8.0f %8.0f %9.1f %8.1f %10.2f" % (
            r["pair"], r["pivot_tokens"], r["source_tokens"], r["python_dtw_s"], r["cpp_full_s"] * 1e3,
            r["cpp_banded_s"] * 1e3, r["speedup_full"], r["speedup_banded"], r["span_tokens_per_s_core"] / 1e6,
            r["span_tokens_per_s_api"] / 1e6, r["span_batch_us_per_item"]))
    r0 = results[0]
    print("batch span: %d items of %.0f tokens, %.2f us/item = %.1f M tokens/s (single thread)" % (
        r0["span_batch_items"], r0["span_batch_tokens_per_item"], r0["span_batch_us_per_item"],
        r0["span_batch_tokens_per_s"] / 1e6))
    ok = all(r["goal_full_100x"] and r["goal_banded_1000x"] and r["goal_span_10M"] for r in results)
    print("goals (full >= 100x, banded >= 1000x, span >= 10 M tok/s): %s" % ("met" if ok else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
