"""Array-level remap speed: positions/s of the C++ kernel (tokalign.remap.remap_batch) vs the slow
Python reference (tests/remap_reference.py), measured in the same run on the same data.

Data: ragged batch of sequences (default 4096 x 512 = 2.1 M pivot positions), K = 10 source top-k
ids drawn like a real model's (gold next token + a popular pool + random), groups with a realistic
mix (about 80 % 1:1), and the real vocabulary-map density: an exact-match map between two shared
tokenizers (default source qwen2 -> pivot openchat-3.5) when ../shared is present, else a random map
with 1-3 pivot ids per row. Goal: >= 5 M positions/s on 2 cores.

    python benchmarks/remap_speed.py --threads 2 [--torch] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from remap_reference import exact_match_map, random_map, reference_remap_sequence, token_bytes  # noqa: E402

from tokalign.paths import shared_tokenizers  # noqa: E402
from tokalign.remap import concat_groups, prepare_map, remap_batch  # noqa: E402


def realistic_groups(rng: np.random.Generator, n: int) -> np.ndarray:
    """Groups over about n pivot positions: 80 % 1:1, 8 % 1:n, 8 % n:1, 4 % n:m (vectorised)."""
    g = max(1, int(n / 1.12))
    r = rng.random(g)
    dp = np.where(r < 0.88, 1, rng.integers(2, 4, g))
    ds = np.where((r < 0.8) | ((r >= 0.88) & (r < 0.96)), 1, rng.integers(2, 4, g))
    pe, se = np.cumsum(dp), np.cumsum(ds)
    return np.stack([pe - dp, pe, se - ds, se], axis=1).astype(np.int64)


def build_data(rng, n_seq: int, length: int, k: int, vmap):
    vs, vp = vmap.shape
    groups = [realistic_groups(rng, length) for _ in range(n_seq)]
    lp = np.array([int(g[-1, 1]) for g in groups])
    ls = np.array([int(g[-1, 3]) for g in groups])
    ns, np_ = int(ls.sum()), int(lp.sum())
    popular = rng.integers(0, vs, 4000)
    src_tokens = rng.integers(0, vs, ns).astype(np.int32)
    ids = np.where(rng.random((ns, k)) < 0.7, popular[rng.integers(0, len(popular), (ns, k))],
                   rng.integers(0, vs, (ns, k))).astype(np.int32)
    ids[:-1, 0] = src_tokens[1:]  # the gold next token on top
    logits = np.sort(rng.normal(0, 2.5, (ns, k)).astype(np.float32), axis=1)[:, ::-1].copy()
    lse = (np.logaddexp.reduce(logits.astype(np.float64), axis=1) + 0.2).astype(np.float32)
    return dict(groups=groups, ids=ids, lg=logits, lse=lse, pivot_ids=rng.integers(0, vp, np_).astype(np.int32),
                s_off=np.r_[0, np.cumsum(ls)].astype(np.int64), p_off=np.r_[0, np.cumsum(lp)].astype(np.int64))


def load_map(rng, pivot: str, source: str):
    d = shared_tokenizers()
    pj, sj = d / pivot / "tokenizer.json", d / source / "tokenizer.json"
    if pj.is_file() and sj.is_file():
        return exact_match_map(token_bytes(sj), token_bytes(pj)), f"exact-match {source} -> {pivot}"
    return random_map(rng, 150000, 32000, unmapped=0.3), "random (1-3 ids per row; shared tokenizers not found)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sequences", type=int, default=4096)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--k-out", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reference-sequences", type=int, default=40, help="sequences timed with the slow reference")
    ap.add_argument("--pivot", default="openchat-3.5")
    ap.add_argument("--source", default="qwen2")
    ap.add_argument("--map-npz", default=None, help="use a saved vocabulary map (DIR/map.npz) instead")
    ap.add_argument("--torch", action="store_true", help="also time the torch path (CPU, or --device)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    if args.map_npz:
        from tokalign.artifacts import load_sparse_npz

        vmap, map_desc = load_sparse_npz(args.map_npz), f"saved map {args.map_npz}"
    else:
        vmap, map_desc = load_map(rng, args.pivot, args.source)
    pm = prepare_map(vmap)
    data = build_data(rng, args.sequences, args.length, args.k, vmap)
    groups, g_off = concat_groups(data["groups"])
    n_pos = int(data["p_off"][-1])

    def run_kernel(inside="onehot", otm="last"):
        return remap_batch(groups, data["ids"], data["lg"], data["lse"], pm, data["pivot_ids"], group_offsets=g_off,
                           source_offsets=data["s_off"], pivot_offsets=data["p_off"], k_out=args.k_out,
                           inside=inside, one_to_many=otm, num_threads=args.threads)

    run_kernel()  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        res = run_kernel()
        times.append(time.perf_counter() - t0)
    t_kernel = min(times)
    t0 = time.perf_counter()
    run_kernel(otm="weighted")
    t_weighted = time.perf_counter() - t0

    # slow reference on the first sequences, same data
    n_ref = min(args.reference_sequences, args.sequences)
    t0 = time.perf_counter()
    ref_pos = 0
    for i in range(n_ref):
        s0, s1, p0, p1 = data["s_off"][i], data["s_off"][i + 1], data["p_off"][i], data["p_off"][i + 1]
        reference_remap_sequence(data["groups"][i], data["ids"][s0:s1], data["lg"][s0:s1], data["lse"][s0:s1], vmap,
                                 data["pivot_ids"][p0:p1], k_out=args.k_out)
        ref_pos += int(p1 - p0)
    t_ref = time.perf_counter() - t0

    report = {
        "command": "python benchmarks/remap_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "map": map_desc,
        "map_nnz_per_mapped_row": round(pm.nnz / max(1, int(np.sum(np.diff(pm.indptr) > 0))), 3),
        "map_mapped_rows": round(float(np.mean(np.diff(pm.indptr) > 0)), 4),
        "positions": n_pos,
        "k": args.k,
        "k_out": args.k_out,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "kernel_seconds": round(t_kernel, 4),
        "kernel_positions_per_s": round(n_pos / t_kernel),
        "kernel_weighted_positions_per_s": round(n_pos / t_weighted),
        "reference_positions": ref_pos,
        "reference_positions_per_s": round(ref_pos / t_ref),
        "speedup_vs_reference": round((n_pos / t_kernel) / (ref_pos / t_ref), 1),
        "goal_positions_per_s": 5_000_000,
        "mean_retained_mass": round(res.summary()["mean_retained_mass"], 4),
    }
    if args.torch:
        import torch

        from tokalign.remap_torch import prepare_map_torch, remap_batch_torch

        dev = torch.device(args.device)
        tm = prepare_map_torch(vmap, dev)
        tens = {k: torch.as_tensor(data[k], device=dev) for k in ("ids", "lg", "lse", "pivot_ids", "s_off", "p_off")}
        tg, tgo = torch.as_tensor(groups, device=dev), torch.as_tensor(g_off, device=dev)

        def run_torch():
            out = remap_batch_torch(tg, tens["ids"], tens["lg"], tens["lse"], tm, tens["pivot_ids"],
                                    group_offsets=tgo, source_offsets=tens["s_off"], pivot_offsets=tens["p_off"],
                                    k_out=args.k_out)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return out

        run_torch()
        t0 = time.perf_counter()
        run_torch()
        t_torch = time.perf_counter() - t0
        report["torch_device"] = str(dev)
        report["torch_threads"] = torch.get_num_threads()
        report["torch_positions_per_s"] = round(n_pos / t_torch)

    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for k, v in report.items():
            print(f"{k:34s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
