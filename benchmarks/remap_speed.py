"""Remap speed, two modes (both by default), each against a slow baseline measured in the same run.

``--mode array``: positions/s of the C++ kernel alone (tokalign.remap.remap_batch) vs the slow Python
reference (tests/remap_reference.py) on the same data. Ragged batch of sequences (default 4096 x 512 = 2.1 M
pivot positions), K = 10 source top-k ids drawn like a real model's (gold next token + a popular pool +
random), groups with a realistic mix (about 80 % 1:1), and the real vocabulary-map density: an exact-match
map between two shared tokenizers (default source qwen2 -> pivot openchat-3.5) when ../shared is present,
else a random map with 1-3 pivot ids per row.

``--mode store``: ``tokalign remap`` end to end, store to store. A pivot store (openchat-3.5) and a source
store (internlm2) are built with the store writer from real texts of ../shared/corpora tokenized like
``dump-logits --template plain`` (each store in its own length order, samples truncated at 2048 tokens),
with random but realistic top-10 distributions (tokalign/testing.py), about ``--positions`` pivot
positions (default 2 M, so that the CLI's fixed costs do not dominate), and a real vocabulary map
(``vocab.ms`` argmax from ``build_stats`` span statistics over the corpora, ``em`` fallback). They are cached
under benchmarks/.cache (git-ignored). Timed: the CLI call (tokalign.cli.main, incl. loading tokenizers and
map: ``cli_fixed_seconds``), the engine pipelined as in the CLI (reader and writer threads), the engine with
every stage alone (``engine_cpu_us_per_position``: process CPU per stage; "write" is the store writer of
tokalign/store, "read" the store reader + ChunkGather, "align" / "kernel" the remap's own C++ stages), both
at the CLI's output compression level, the engine at the store default (zstd 5), and the per-sample path the
CLI used before (tests/remap_store_reference.py, zstd 5 output) on 150 samples from 5 places of the pivot
order as the baseline. ``store_io_floor_cpu_us_per_position``: the store I/O alone (decode the inputs, encode
and write the output, nothing else; :func:`store_io_floor`), a floor no remap engine goes below with these
stores.

Goal: >= 5 M positions/s on 2 cores. The machine is shared: the load average is printed, and
``engine_cpu_positions_per_s`` (positions per process-CPU second) is the load-independent figure.

    python benchmarks/remap_speed.py --threads 2 [--mode store|array|both] [--positions 2000000] [--torch] [--json]
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
    ap.add_argument("--mode", choices=("array", "store", "both"), default="both")
    ap.add_argument("--positions", type=int, default=2_000_000,
                    help="store mode: pivot positions (about; large enough that the CLI's fixed costs do not dominate)")
    ap.add_argument("--batch-tokens", type=int, default=1 << 17, help="store mode: positions per batch")
    ap.add_argument("--baseline-samples", type=int, default=150,
                    help="store mode: samples timed with the per-sample path (baseline)")
    ap.add_argument("--cache-dir", default=str(ROOT / "benchmarks" / ".cache"))
    args = ap.parse_args(argv)
    report = {"command": "python benchmarks/remap_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "cpu_count": os.cpu_count(), "threads": args.threads}
    if args.mode in ("array", "both"):
        report["array"] = array_mode(args)
    if args.mode in ("store", "both"):
        report["store"] = store_mode(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            if isinstance(value, dict):
                print(f"[{key}]")
                for k, v in value.items():
                    print(f"  {k:40s} {v}")
            else:
                print(f"{key:42s} {value}")
    return 0


def array_mode(args) -> dict:
    """Kernel alone on synthetic ragged arrays vs the Python reference."""

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

        from tokalign.remap.torch_path import prepare_map_torch, remap_batch_torch

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

    return report


# ---- store-to-store mode ----------------------------------------------------------------------------------

PIVOT_TOKENIZER, SOURCE_TOKENIZER = "openchat", "internlm2"
CHARS_PER_POSITION = 3.65  # openchat-3.5 on the shared corpora (plain template): chars of text per token


def build_store_pair(cache_dir: Path, positions: int, seed: int = 0) -> Path:
    """Pivot / source stores and an MS vocabulary map, built once and cached (a finished build has done.json)."""
    from tokalign.testing import build_pair, read_items

    from tokalign import load_tokenizer, vocab
    from tokalign.stats.build import BuildOptions, build_stats
    from tokalign.paths import shared_corpora

    d = cache_dir / f"remap-store-{PIVOT_TOKENIZER}-{SOURCE_TOKENIZER}-{positions}-seed{seed}-v1"
    if (d / "done.json").is_file():
        return d
    if d.exists():
        import shutil

        shutil.rmtree(d)
    tdir = shared_tokenizers()
    tp = load_tokenizer(PIVOT_TOKENIZER, tokenizer_dir=tdir)
    ts = load_tokenizer(SOURCE_TOKENIZER, tokenizer_dir=tdir)
    corpora = [shared_corpora() / f for f in ("alpacaeval_parallel.jsonl", "chat_multiturn_zh.jsonl", "code_math.jsonl")]
    t0 = time.perf_counter()
    items = read_items(corpora, limit_chars=int(positions * CHARS_PER_POSITION), seed=seed)
    counts = build_pair(d, tp, ts, items, seed=seed)
    stats = build_stats(tp, ts, [str(c) for c in corpora], BuildOptions(method="span"), progress=False)
    vocab.ms(tp, ts, stats.matrix, fallback="em").save(d / "map")
    (d / "done.json").write_text(json.dumps({"items": len(items), **counts, "pairs": int(stats.matrix.nnz),
                                             "build_seconds": round(time.perf_counter() - t0, 1)}))
    return d


def _remap_schema(pivot, pm, clevel=None):
    from tokalign.remap.stores import REMAP_EXTRAS
    from tokalign.store import StoreSchema

    extra = {} if clevel is None else {"compression_level": clevel}
    return StoreSchema(model="bench", tokenizer_fingerprint=pivot.schema.tokenizer_fingerprint, vocab_size=pm.pivot_vocab,
                       k=10, logits_dtype="float32", kind="remapped",
                       extras=REMAP_EXTRAS, **extra)


def store_io_floor(pivot, source, out, p_fields, s_fields, threads: int, batch_tokens: int, scratch: Path) -> dict:
    """Process CPU of the store I/O alone, in us per pivot position: decoding every input row the engine reads
    (both stores, in store order, batch by batch, the direct shard path), encoding the output's token arrays
    into shards (``_shards.encode_shard`` on ``threads`` threads, as the writer does) and writing the shard
    files (plain file writes under ``scratch``): no alignment, no remap, no checks, no zarr metadata. The
    output as written (the CLI's default) and with lz4 + float16 log-probs (the cheapest output
    ``tokalign remap`` offers). Whatever the remap itself costs comes on top."""
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace

    from tokalign.store._shards import encode_shard

    n_pos = out.num_tokens
    c0 = time.process_time()
    for store, fields in ((pivot, p_fields), (source, s_fields)):
        for i, part in enumerate(store.parts):
            for lo in range(0, part.num_tokens, batch_tokens):  # batches of the engine's size
                store.read_tokens(i, lo, min(lo + batch_tokens, part.num_tokens), fields)
    us = {"decode_inputs": time.process_time() - c0}
    part = out.parts[0]
    rows = {name: raw.astype(part.layouts[name].dtype) for name, raw in out.read_tokens(0, 0, n_pos).items()}
    variants = {"as_written": {}, "lz4_float16": {"cname": "lz4", "logits": np.dtype(np.float16)}}
    scratch.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for label, v in variants.items():
            shards = []
            c0 = time.process_time()
            for name, data in rows.items():
                lay = part.layouts[name]
                if v:
                    lay = replace(lay, cname=v["cname"])
                    if name == "topk_logits":
                        lay = replace(lay, dtype=v["logits"], typesize=2)
                for a in range(0, n_pos, lay.shard_rows):
                    shards.append(encode_shard(lay, data[a:a + lay.shard_rows].astype(lay.dtype, copy=False), pool.map))
            c1 = time.process_time()
            for i, parts in enumerate(shards):  # a shard object as its consecutive byte strings
                with open(scratch / f"{label}-{i}", "wb") as f:
                    for piece in parts:
                        f.write(piece)
            us[f"encode_output_{label}"] = c1 - c0
            us[f"write_files_{label}"] = time.process_time() - c1
    us = {k: round(v / n_pos * 1e6, 3) for k, v in us.items()}
    for k in variants:
        floor = us["decode_inputs"] + us[f"encode_output_{k}"] + us[f"write_files_{k}"]
        us[f"store_io_{k}"] = round(floor, 3)
        us[f"bound_2_cores_store_io_only_{k}_positions_per_s"] = round(2e6 / floor) if floor > 0 else 0
    return us


def store_mode(args) -> dict:
    """``tokalign remap`` store to store: CLI end to end, engine breakdown, per-sample baseline."""
    import contextlib
    import io
    import shutil

    from remap_store_reference import remap_per_sample

    from tokalign import load_tokenizer
    from tokalign.cli import main as cli_main
    from tokalign.remap.run import FLUSH_TOKENS, OUTPUT_COMPRESSION_LEVEL
    from tokalign.remap.stores import SOURCE_FIELDS, TokenBytes, remap_stores
    from tokalign.store import StoreWriter, open_store, open_writer
    from tokalign.vocab import VocabMap

    cache = Path(args.cache_dir)
    d = build_store_pair(cache, args.positions)
    built = json.loads((d / "done.json").read_text())
    work = cache / "remap-store-out"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tdir = shared_tokenizers()
    load_before = os.getloadavg()

    # 1. the CLI, end to end (opens the stores, loads tokenizers and map, remaps, writes, closes)
    argv = ["remap", "--pivot-store", str(d / "pivot.zarr"), "--source-store", str(d / "source.zarr"), "--map",
            str(d / "map"), "--out", str(work / "cli.zarr"), "--tokenizer-dir", str(tdir), "--threads",
            str(args.threads), "--batch-tokens", str(args.batch_tokens), "--json"]
    buf = io.StringIO()
    t0, c0 = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(buf):
        rc = cli_main(argv)
    t_cli, c_cli = time.perf_counter() - t0, time.process_time() - c0
    assert rc == 0, rc
    cli = json.loads(buf.getvalue())
    n_pos = int(cli["positions"])

    # 2. the engine alone (no tokenizer / map loading): pipelined like the CLI (read-ahead and write-behind
    #    threads) at the CLI's output level; sequential at that level (every stage alone: exact process CPU per
    #    stage); pipelined at the store default level 5 (what the per-sample path wrote)
    a, b = open_store(str(d / "pivot.zarr")), open_store(str(d / "source.zarr"))
    tp = load_tokenizer(PIVOT_TOKENIZER, tokenizer_dir=tdir)
    ts = load_tokenizer(SOURCE_TOKENIZER, tokenizer_dir=tdir)
    pm = prepare_map(VocabMap.load(d / "map").matrix)
    pb, sb = TokenBytes.of(tp), TokenBytes.of(ts)
    runs = {}
    level = OUTPUT_COMPRESSION_LEVEL
    for name, prefetch, clevel in ((f"pipelined_clevel{level}", True, level),
                                   (f"sequential_clevel{level}", False, level), ("clevel5", True, 5)):
        w = open_writer(str(work / f"{name}.zarr"), _remap_schema(a, pm, clevel), flush_tokens=FLUSH_TOKENS)
        runs[name] = remap_stores(a, b, pm, w, a.sample_ids, pb, sb, threads=args.threads,
                                  batch_tokens=args.batch_tokens, prefetch=prefetch)
        w.close()
        runs[name].stored_bytes = open_store(str(work / f"{name}.zarr")).stored_bytes()
    pipe, seq, slow = runs[f"pipelined_clevel{level}"], runs[f"sequential_clevel{level}"], runs["clevel5"]
    floor = store_io_floor(a, b, open_store(str(work / f"sequential_clevel{level}.zarr")), ["input_ids", "loss_mask"],
                           list(SOURCE_FIELDS), args.threads, args.batch_tokens, work / "floor")

    # 3. baseline: the per-sample path (same stores, same map) on 5 runs of consecutive samples spread over the
    #    pivot order (the store is sorted by length: the first samples alone would be the longest ones)
    n_all, n_base = len(a), min(args.baseline_samples, len(a))
    starts = [int(f * (n_all - n_base // 5)) for f in (0.1, 0.3, 0.5, 0.7, 0.9)]
    ids = list(dict.fromkeys(i for s0 in starts for i in a.sample_ids[s0:s0 + max(1, n_base // 5)]))
    w = StoreWriter.create(str(work / "baseline.zarr"), _remap_schema(a, pm))
    t0, c0 = time.perf_counter(), time.process_time()
    base_pos = remap_per_sample(a, b, pm, w, ids, tp.token_texts(), ts.token_texts(), threads=args.threads)
    w.close()
    t_base, c_base = time.perf_counter() - t0, time.process_time() - c0
    load_after = os.getloadavg()
    shutil.rmtree(work, ignore_errors=True)

    def per_s(n, t):
        return round(n / t) if t > 0 else 0

    cpu_us = {k: round(v / n_pos * 1e6, 3) for k, v in seq.cpu_seconds.items()}
    remap_us = round(cpu_us["read"] + cpu_us["align"] + cpu_us["kernel"], 3)
    return {
        "stores": str(d), "samples": built["samples"] if "samples" in built else built["pivot"]["samples"],
        "pivot_positions": n_pos, "source_positions": built["source"]["tokens"],
        "map": f"ms argmax ({built['pairs']} stat pairs), em fallback",
        "alignment": cli["alignment"], "mean_retained_mass": round(cli["mean_retained_mass"], 4),
        "load_average_before_after": [round(x, 2) for x in load_before[:1] + load_after[:1]],
        # end to end: the CLI call, and what of it was fixed cost (tokenizers, map, opening and closing stores)
        "cli_seconds": round(t_cli, 3), "cli_cpu_seconds": round(c_cli, 3),
        "cli_positions_per_s": per_s(n_pos, t_cli),
        "cli_fixed_seconds": round(t_cli - cli["seconds"]["total"], 3),
        "cli_engine_positions_per_s": cli["positions_per_s"],
        "cli_engine_seconds": cli["seconds"],
        # the engine pipelined as in the CLI (wall): read-ahead, align + kernel, write-behind overlap
        f"engine_pipelined_clevel{level}_positions_per_s": round(pipe.positions_per_s),
        f"engine_pipelined_clevel{level}_seconds": {k: round(v, 3) for k, v in pipe.seconds.items()},
        f"engine_pipelined_clevel{level}_cpu_us_per_position": round(pipe.cpu_seconds["total"] / n_pos * 1e6, 3),
        # per-stage process CPU, every stage alone (sequential run). "write" is the store writer
        # (tokalign/store: zstd + zarr), owned by the store work; "read" is the store reader + ChunkGather
        f"engine_sequential_clevel{level}_seconds": {k: round(v, 3) for k, v in seq.seconds.items()},
        "engine_cpu_us_per_position": cpu_us,
        "engine_cpu_us_per_position_read_align_kernel": remap_us,
        "engine_cpu_us_per_position_write_store_writer": cpu_us["write"],
        "engine_cpu_positions_per_s": per_s(n_pos, seq.cpu_seconds["total"]),
        "engine_bound_2_cores_positions_per_s": per_s(2 * n_pos, seq.cpu_seconds["total"]),
        "engine_bound_2_cores_without_writer_positions_per_s": round(2e6 / remap_us) if remap_us > 0 else 0,
        "engine_chunks_read": seq.chunks_read,
        f"output_bytes_per_position_clevel{level}": round(seq.stored_bytes / n_pos, 1),
        # the store I/O alone (decode the inputs, encode and write the output; nothing else): a floor for any remap
        "store_io_floor_cpu_us_per_position": floor,
        "engine_clevel5_positions_per_s": round(slow.positions_per_s),
        "engine_clevel5_cpu_positions_per_s": per_s(n_pos, slow.cpu_seconds["total"]),
        "engine_clevel5_seconds": {k: round(v, 3) for k, v in slow.seconds.items()},
        "output_bytes_per_position_clevel5": round(slow.stored_bytes / n_pos, 1),
        "baseline_samples": len(ids), "baseline_positions": base_pos,
        "baseline_positions_per_s": per_s(base_pos, t_base),
        "baseline_cpu_positions_per_s": per_s(base_pos, c_base),
        "speedup_cli_vs_baseline": round(per_s(n_pos, t_cli) / max(per_s(base_pos, t_base), 1), 1),
        "speedup_engine_cpu_vs_baseline_cpu": round(per_s(n_pos, seq.cpu_seconds["total"])
                                                    / max(per_s(base_pos, c_base), 1), 1),
        "speedup_engine_clevel5_cpu_vs_baseline_cpu": round(per_s(n_pos, slow.cpu_seconds["total"])
                                                            / max(per_s(base_pos, c_base), 1), 1),
        "speedup_engine_pipelined_vs_baseline": round(pipe.positions_per_s / max(per_s(base_pos, t_base), 1), 1),
        "goal_positions_per_s": 5_000_000,
    }


if __name__ == "__main__":
    sys.exit(main())
