"""GPU vs CPU speed of the CUDA kernels (tokalign._cuda), both measured in the same run.

1. MinED, every ordinary mistral-tekken token (131k) against openchat-3.5 (32k): the kernel time
   (cudaEvent, returned by the extension), the GPU call's wall time, and the CPU path
   (tokalign._core.MinEDIndex, --threads) on the same queries; the results must be identical.
2. Batched FuseChat DTW over >= --pairs real pairs of --length pivot tokens (openchat-3.5 vs qwen2,
   windows over the shared corpora): device cells/s (band pass + full-matrix check), time of the kernels vs the CPU path
   (tokalign._core.dtw_batch, --threads), and their ratio; paths and costs must be identical.
3. tokalign.remap's torch path on CUDA (benchmarks/remap_speed.py --torch --device cuda).

Without a usable GPU it prints why and exits 0.

    python benchmarks/gpu_speed.py --threads 2 [--pairs 1000 --length 2048] [--json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tokalign.device import cuda_available  # noqa: E402
from tokalign.paths import shared_corpora, shared_tokenizers  # noqa: E402


def mined_bench(threads: int) -> dict:
    import tokalign
    from tokalign import _core
    from tokalign.vocab.mined_cuda import mined_search
    from tokalign.vocab import _common as C

    pivot = tokalign.load_tokenizer(str(shared_tokenizers() / "openchat-3.5"))
    source = tokalign.load_tokenizer(str(shared_tokenizers() / "mistral-tekken"))
    pt, st = C.texts(pivot), C.texts(source)
    cand, rank = ~C.special_mask(pivot), C.preference_rank(pivot)
    query = ~C.special_mask(source)
    t0 = time.perf_counter()
    gi, gd, gstats = mined_search(pt, cand, rank, st, query, 1, threads)
    t_gpu = time.perf_counter() - t0
    index = _core.MinEDIndex(pt, cand, rank)
    t0 = time.perf_counter()
    ci, cd, _ = index.query(st, query, 1, threads)
    t_cpu = time.perf_counter() - t0
    same = bool(np.array_equal(gi, ci) and np.array_equal(gd, cd))
    return {
        "queries": int(query.sum()), "candidates": int(cand.sum()), "identical": same,
        "gpu_kernel_s": round(gstats["kernel_ms"] / 1e3, 4), "gpu_call_s": round(t_gpu, 3),
        "cpu_s": round(t_cpu, 3), "cpu_threads": threads,
        "speedup_kernel": round(t_cpu / max(gstats["kernel_ms"] / 1e3, 1e-9), 1),
        "speedup_call": round(t_cpu / t_gpu, 1), "gpu_evaluated_pairs": int(gstats["evaluated"]),
    }


def dtw_pairs(n_pairs: int, length: int):
    """Windows of `length` pivot tokens over the concatenated corpora, with the source tokens covering
    the same characters (by offsets)."""
    import tokalign

    pivot = tokalign.load_tokenizer(str(shared_tokenizers() / "openchat-3.5"))
    source = tokalign.load_tokenizer(str(shared_tokenizers() / "qwen2"))
    texts = []
    for f in sorted(shared_corpora().glob("*.jsonl")):
        for line in f.open(encoding="utf-8"):
            obj = json.loads(line)
            t = obj.get("text") or "\n".join(m.get("content", "") for m in obj.get("messages", []))
            if t:
                texts.append(t)
    big = "\n\n".join(texts)
    pe, se = pivot.encode(big), source.encode(big)
    p_ids, p_off = np.asarray(pe.ids, np.int32), np.asarray(pe.offsets)
    s_ids, s_off = np.asarray(se.ids, np.int32), np.asarray(se.offsets)
    P, S = [], []
    step = max(1, (len(p_ids) - length) // max(1, n_pairs))
    for start in range(0, len(p_ids) - length, step):
        a, b = int(p_off[start, 0]), int(p_off[start + length - 1, 1])
        j0, j1 = np.searchsorted(s_off[:, 0], a), np.searchsorted(s_off[:, 1], b, side="right")
        if j1 - j0 < 2:
            continue
        P.append(p_ids[start:start + length])
        S.append(s_ids[j0:j1])
        if len(P) == n_pairs:
            break
    return pivot.raw_tokens(), source.raw_tokens(), P, S


def dtw_bench(threads: int, n_pairs: int, length: int) -> dict:
    from tokalign import _core
    from tokalign.align import TokenTable
    from tokalign.align.cuda import dtw_batch

    p_raw, s_raw, P, S = dtw_pairs(n_pairs, length)
    tp, ts = TokenTable(p_raw), TokenTable(s_raw)
    dtw_batch(tp, P[:4], ts, S[:4], 0, 0, threads)  # warm-up: table upload, module load
    t0 = time.perf_counter()
    gpu, gstats = dtw_batch(tp, P, ts, S, 0, 0, threads)
    t_gpu = time.perf_counter() - t0
    t0 = time.perf_counter()
    cpu = _core.dtw_batch(tp, P, ts, S, 0, 0, threads)
    t_cpu = time.perf_counter() - t0
    same = all(np.array_equal(c["path_p"], g["path_p"]) and np.array_equal(c["path_s"], g["path_s"])
               and c["cost"] == g["cost"] for c, g in zip(cpu, gpu))
    # cells evaluated on the device: the band pass (the CPU's band, same widening) plus the full-matrix
    # check that makes the GPU results exact (the CPU uses a pruned pass instead)
    cells = int(gstats["cells"])
    k_s = gstats["kernel_ms"] / 1e3
    return {
        "pairs": len(P), "pivot_tokens_per_pair": length,
        "source_tokens_mean": round(float(np.mean([len(s) for s in S])), 1), "identical": bool(same),
        "device_cells": cells, "rounds": int(gstats["rounds"]), "cpu_fallback_pairs": int(gstats["cpu_pairs"]),
        "band_kernel_s": round(gstats.get("band_kernel_ms", 0.0) / 1e3, 4),
        "verify_kernel_s": round(gstats.get("verify_kernel_ms", 0.0) / 1e3, 4),
        "verify_replaced": int(gstats.get("verify_replaced", 0)),
        "gpu_kernel_s": round(k_s, 4), "gpu_call_s": round(t_gpu, 3), "cpu_s": round(t_cpu, 3),
        "cpu_threads": threads, "gpu_kernel_cells_per_s": round(cells / max(k_s, 1e-9)),
        "cpu_cells_per_s": round(cells / t_cpu), "speedup_kernel": round(t_cpu / max(k_s, 1e-9), 1),
        "speedup_call": round(t_cpu / t_gpu, 1),
    }


def remap_bench(threads: int) -> dict:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "remap_speed.py"), "--threads", str(threads), "--torch",
           "--device", "cuda", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1], "command": " ".join(cmd)}
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return {"output": proc.stdout.strip()[-2000:], "command": " ".join(cmd)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of the baseline (default 2)")
    ap.add_argument("--pairs", type=int, default=1000, help="DTW pairs (default 1000)")
    ap.add_argument("--length", type=int, default=2048, help="pivot tokens per DTW pair (default 2048)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["mined", "dtw", "remap"], help="parts to skip")
    ap.add_argument("--json", action="store_true", help="print one JSON report")
    args = ap.parse_args()
    ok, reason = cuda_available()
    if not ok:
        print("gpu_speed: nothing to measure: %s" % reason)
        return 0
    from tokalign import _cuda

    report = {"device": _cuda.device_info()}
    if "mined" not in args.skip:
        report["mined"] = mined_bench(args.threads)
    if "dtw" not in args.skip:
        report["dtw"] = dtw_bench(args.threads, args.pairs, args.length)
    if "remap" not in args.skip:
        report["remap_torch_cuda"] = remap_bench(args.threads)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print("device: %s (cc %s)" % (report["device"]["name"], report["device"]["compute_capability"]))
    if "mined" in report:
        m = report["mined"]
        print("MinED tekken->openchat (%d x %d): kernel %.3fs, GPU call %.2fs, CPU %d threads %.2fs -> "
              "x%.1f (kernel) / x%.1f (call); identical=%s"
              % (m["queries"], m["candidates"], m["gpu_kernel_s"], m["gpu_call_s"], m["cpu_threads"], m["cpu_s"],
                 m["speedup_kernel"], m["speedup_call"], m["identical"]))
    if "dtw" in report:
        d = report["dtw"]
        print("DTW %d pairs x %d tokens: %d device cells (band + full-matrix check); kernel %.3fs (%.2e cells/s), GPU call %.2fs, CPU %d threads "
              "%.2fs (%.2e cells/s) -> x%.1f (kernel) / x%.1f (call); identical=%s; CPU fallback %d"
              % (d["pairs"], d["pivot_tokens_per_pair"], d["device_cells"], d["gpu_kernel_s"], d["gpu_kernel_cells_per_s"],
                 d["gpu_call_s"], d["cpu_threads"], d["cpu_s"], d["cpu_cells_per_s"], d["speedup_kernel"],
                 d["speedup_call"], d["identical"], d["cpu_fallback_pairs"]))
    if "remap_torch_cuda" in report:
        print("remap torch path on CUDA: %s" % json.dumps(report["remap_torch_cuda"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
