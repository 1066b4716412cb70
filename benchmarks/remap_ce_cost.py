"""Cost of the remapped store's token_ce (tokalign.remap.ce.source_nll_by_group, the source's NLL carried through
the alignment groups) against the previous token_ce (remapped_token_ce_packed, now the optional ``remap_ce``
extra), measured in the same run, process CPU seconds, best of ``--repeat``.

    python benchmarks/remap_ce_cost.py [--repeat 3] [--store] [--json]

* array: one batch of 131 072 pivot positions (512 sequences, random 1:1 / 1:n / n:1 / n:m groups).
* ``--store``: ``remap_stores`` end to end (openchat-3.5 pivot, internlm2 source, 1 500 corpus texts, zstd
  level 1 like the CLI) writing the output without and with the ``remap_ce`` extra.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from remap_reference import random_groups  # noqa: E402

from tokalign.remap.ce import source_nll_by_group  # noqa: E402
from tokalign.remap.stores import remapped_token_ce_packed  # noqa: E402


def best_cpu(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def array_mode(repeat: int) -> dict:
    rng = np.random.default_rng(0)
    groups, lp, ls = [], [], []
    for _ in range(512):
        n_s = int(rng.integers(200, 257))
        groups.append(random_groups(rng, 256, n_s, allow_empty_side=False))
        lp.append(256)
        ls.append(n_s)
    g = np.concatenate(groups)
    go = np.r_[0, np.cumsum([len(x) for x in groups])]
    po, so = np.r_[0, np.cumsum(lp)], np.r_[0, np.cumsum(ls)]
    ce = rng.exponential(2.0, int(so[-1])).astype(np.float32)
    lse = np.zeros(int(so[-1]), np.float32)
    n, k = int(po[-1]), 10
    ids = rng.integers(0, 32000, (n, k)).astype(np.int32)
    logits = np.log(rng.dirichlet(np.ones(k), n) * 0.9).astype(np.float32)
    mass, valid = np.full(n, 0.9, np.float32), np.ones(n, bool)
    nxt = rng.integers(0, 32000, n).astype(np.int32)
    new = best_cpu(lambda: source_nll_by_group(ce, so, g, go, po, source_lse=lse), repeat)
    old = best_cpu(lambda: remapped_token_ce_packed(ids, logits, mass, valid, nxt, po), repeat)
    return {"positions": n, "groups": int(len(g)), "source_nll_ns_per_position": new / n * 1e9,
            "remap_ce_ns_per_position": old / n * 1e9, "ratio_new_to_old": new / old}


def store_mode(repeat: int, tmp: Path) -> dict:
    from tokalign.testing import build_pair, read_items

    from tokalign import load_tokenizer, vocab
    from tokalign.paths import shared_corpora, shared_tokenizers
    from tokalign.remap import prepare_map
    from tokalign.remap.stores import REMAP_CE_EXTRA, REMAP_EXTRAS, TokenBytes, remap_stores
    from tokalign.store import StoreSchema, StoreWriter, open_store

    td, cd = shared_tokenizers(), shared_corpora()
    tp = load_tokenizer("openchat", tokenizer_dir=td)
    ts = load_tokenizer("internlm2", tokenizer_dir=td)
    items = read_items([cd / "code_math.jsonl", cd / "chat_multiturn_zh.jsonl", cd / "alpacaeval_parallel.jsonl"],
                       seed=1)[:1500]
    build_pair(tmp, tp, ts, items, seed=3, max_length=2048)
    pm = prepare_map(vocab.em(tp, ts).matrix)
    a, b = open_store(str(tmp / "pivot.zarr")), open_store(str(tmp / "source.zarr"))
    runs = {"without_remap_ce": REMAP_EXTRAS, "with_remap_ce": REMAP_EXTRAS + (REMAP_CE_EXTRA,)}
    best = {name: float("inf") for name in runs}
    positions = 0
    for _ in range(repeat):
        for name, extras in runs.items():
            out = tmp / "out.zarr"
            shutil.rmtree(out, ignore_errors=True)
            w = StoreWriter.create(str(out), StoreSchema(
                model="bench", tokenizer_fingerprint=a.schema.tokenizer_fingerprint, vocab_size=pm.pivot_vocab, k=10,
                logits_dtype="float32", kind="remapped", extras=extras, compression_level=1), flush_tokens=1 << 19)
            totals = remap_stores(a, b, pm, w, a.sample_ids, TokenBytes.of(tp), TokenBytes.of(ts), threads=2)
            w.close()
            best[name] = min(best[name], totals.cpu_seconds["total"])
            positions = totals.positions
    return {"positions": positions, **{f"{k}_us_cpu_per_position": v / positions * 1e6 for k, v in best.items()},
            "ratio_with_to_without": best["with_remap_ce"] / best["without_remap_ce"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--store", action="store_true", help="also time remap_stores end to end")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    report = {"load_average": os.getloadavg(), "array": array_mode(args.repeat)}
    if args.store:
        with tempfile.TemporaryDirectory() as tmp:
            report["store"] = store_mode(args.repeat, Path(tmp))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    r = report["array"]
    print(f"array: {r['positions']} positions: source_nll_by_group {r['source_nll_ns_per_position']:.1f} ns CPU/position, "
          f"remapped_token_ce_packed {r['remap_ce_ns_per_position']:.1f} ns; ratio {r['ratio_new_to_old']:.2f}")
    if "store" in report:
        s = report["store"]
        print(f"store: {s['positions']} positions: {s['without_remap_ce_us_cpu_per_position']:.2f} us CPU/position "
              f"without remap_ce, {s['with_remap_ce_us_cpu_per_position']:.2f} with; ratio {s['ratio_with_to_without']:.3f}")
    print("load average %.2f %.2f %.2f" % report["load_average"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
