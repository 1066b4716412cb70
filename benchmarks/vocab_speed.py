"""MinED speed: tokalign's native search against rapidfuzz brute force and a FuseLLM-style loop.

All three compute, for every ordinary source token, the minimum Levenshtein distance to the
ordinary pivot tokens over the same text units (code points; stray bytes one unit each), in one run:

* tokalign: ``tokalign.vocab.mined.search``, full source vocabulary (length buckets, signature
  bound, bit-parallel Levenshtein, OpenMP, exact-match short-circuit);
* rapidfuzz: ``process.cdist(..., scorer=Levenshtein.distance, workers=THREADS)`` brute force over
  all pivot tokens, row chunks + argmin; sampled rows extrapolated linearly (``--rf-full`` runs all
  rows); its minima are compared with ours on those rows;
* FuseLLM-style: the released FuseLLM ``vocab_mapping.py`` loop (exact-match check, then
  ``min([(y, editdistance.eval(x, y)) for y in base_tokens])``) in pure Python, one core, with
  rapidfuzz's ``Levenshtein.distance`` as the per-pair C call (``editdistance`` is not installed);
  sampled rows extrapolated.

  python benchmarks/vocab_speed.py                       # mistral-tekken -> openchat-3.5, 2 threads
  python benchmarks/vocab_speed.py --rf-full --json      # rapidfuzz on every row too
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def load(name: str, tokenizer_dir: Path):
    """A tokenizer by shared directory name (``openchat-3.5``) or alias (``openchat``)."""
    import tokalign

    path = tokenizer_dir / name
    tok = tokalign.load_tokenizer(str(path) if path.is_dir() else name, tokenizer_dir=str(tokenizer_dir))
    return tok, "tokalign.load_tokenizer"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pivot", default="openchat-3.5")
    ap.add_argument("--source", default="mistral-tekken")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rf-rows", type=int, default=4096, help="rapidfuzz: sampled source rows (default 4096)")
    ap.add_argument("--rf-full", action="store_true", help="rapidfuzz: all source rows")
    ap.add_argument("--py-rows", type=int, default=64, help="FuseLLM-style loop: sampled source rows (default 64)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    from tokalign.paths import shared_tokenizers
    from tokalign.vocab.mined import search

    tdir = shared_tokenizers()
    pivot, loader = load(args.pivot, tdir)
    source, _ = load(args.source, tdir)
    p_texts, s_texts = pivot.token_texts(), source.token_texts()
    p_ok = np.flatnonzero(~np.asarray(pivot.special_mask))
    s_ok = np.flatnonzero(~np.asarray(source.special_mask))
    p_units = [p_texts[i].decode("utf-8", "surrogateescape") for i in p_ok]
    s_units = [s_texts[i].decode("utf-8", "surrogateescape") for i in s_ok]
    n_rows = len(s_ok)

    # tokalign, full
    t0 = time.perf_counter()
    ids, dists, stats = search(pivot, source, top_n=1, threads=args.threads)
    t_ours = time.perf_counter() - t0
    ours_min = dists[s_ok, 0]

    rng = np.random.default_rng(args.seed)
    # rapidfuzz brute force
    rf_rows = np.arange(n_rows) if args.rf_full else np.sort(rng.choice(n_rows, min(args.rf_rows, n_rows), replace=False))
    t0 = time.perf_counter()
    rf_min = np.empty(rf_rows.size, dtype=np.int32)
    for start in range(0, rf_rows.size, 2048):
        part = rf_rows[start : start + 2048]
        m = process.cdist([s_units[k] for k in part], p_units, scorer=Levenshtein.distance, dtype=np.int32, workers=args.threads)
        rf_min[start : start + part.size] = m.min(axis=1)
    t_rf = time.perf_counter() - t0
    t_rf_full = t_rf * n_rows / rf_rows.size
    mismatches = int((rf_min != ours_min[rf_rows]).sum())

    # FuseLLM-style pure-Python loop
    py_rows = np.sort(rng.choice(n_rows, min(args.py_rows, n_rows), replace=False))
    base_tokens = p_units
    base_set = set(base_tokens)
    t0 = time.perf_counter()
    py_min = []
    for k in py_rows:
        x = s_units[k]
        if x in base_set:
            py_min.append(0)
            continue
        best = min([(y, Levenshtein.distance(x, y)) for y in base_tokens], key=lambda d: d[1])
        py_min.append(best[1])
    t_py = time.perf_counter() - t0
    t_py_full = t_py * n_rows / py_rows.size
    py_mismatches = int((np.array(py_min) != ours_min[py_rows]).sum())

    report = {
        "pivot": args.pivot,
        "source": args.source,
        "loader": loader,
        "pivot_candidates": int(p_ok.size),
        "source_rows": int(n_rows),
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "tokalign_s": round(t_ours, 3),
        "tokalign_search": stats,
        "rapidfuzz_rows": int(rf_rows.size),
        "rapidfuzz_rows_mode": "full" if args.rf_full else "sampled, extrapolated linearly",
        "rapidfuzz_measured_s": round(t_rf, 3),
        "rapidfuzz_full_s": round(t_rf_full, 3),
        "rapidfuzz_min_mismatches": mismatches,
        "fusellm_loop_rows": int(py_rows.size),
        "fusellm_loop_measured_s": round(t_py, 3),
        "fusellm_loop_full_s_extrapolated": round(t_py_full, 1),
        "fusellm_loop_min_mismatches": py_mismatches,
        "speedup_vs_rapidfuzz": round(t_rf_full / t_ours, 2),
        "speedup_vs_fusellm_loop": round(t_py_full / t_ours, 1),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("MinED %s (%d rows) -> %s (%d candidates), %d threads" % (args.source, n_rows, args.pivot, p_ok.size, args.threads))
        print("  tokalign (full)            : %8.2f s   pairs bounded %d, distances computed %d, exact %d"
              % (t_ours, stats["filtered"], stats["evaluated"], stats["exact"]))
        print("  rapidfuzz cdist (%s %d rows): %8.2f s measured -> %8.2f s full   (%d minima differ)"
              % ("all" if args.rf_full else "sampled", rf_rows.size, t_rf, t_rf_full, mismatches))
        print("  FuseLLM-style loop (%d rows): %8.2f s measured -> %8.1f s full   (%d minima differ)"
              % (py_rows.size, t_py, t_py_full, py_mismatches))
        print("  speed-up: %.1fx vs rapidfuzz brute force, %.0fx vs FuseLLM-style loop"
              % (report["speedup_vs_rapidfuzz"], report["speedup_vs_fusellm_loop"]))
    return 1 if mismatches or py_mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
