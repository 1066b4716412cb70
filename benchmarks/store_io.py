"""Store I/O benchmark: our Zarr store vs the FuseChat Arrow layout vs Parquet, on the same synthetic tokens.

The same top-K logits (bf16-rounded, as a bf16 model emits them) are written three ways:

* ``tokalign``: :class:`tokalign.store.StoreWriter` (bf16 logits, int16/int32 ids, blosc-zstd, sharded), which
  also stores logsumexp and token_ce per token (FuseChat's layout does not have them);
* ``fusechat-arrow``: a ``datasets`` dataset saved with ``save_to_disk`` with FuseChat's columns: per sample
  ``input_ids`` / ``labels`` lists, ``per_step_logits`` list<list<float32>>, ``per_step_indices``
  list<list<int64>> and ``metric_ce`` (float32/int64 is what ``datasets`` infers from torch.topk outputs;
  FuseChat's ``.tolist()`` path would give float64, i.e. a larger baseline);
* ``parquet``: the same nested table in Parquet (zstd).

Reads produce, for every token, float32 logits and integer ids as numpy arrays (what a trainer consumes):
``fusechat-arrow`` iterates rows as Python lists and converts each sample with ``np.asarray`` (FuseChat's
collator goes further and calls ``torch.tensor`` per token, so this baseline is generous); ``arrow-columnar``
reads the same Arrow files the fastest way we know (memory-mapped, zero-copy flat buffers: not what FuseChat
does, and only possible because Arrow stores them uncompressed); ``parquet`` reads row groups and flattens
the lists.
``tokalign`` reads every array (also logsumexp, token_ce, loss_mask); ``tokalign-3fields`` only input_ids,
topk_ids and topk_logits, what the FuseChat reads decode; ``tokalign-lz4`` is the same store written with
``StoreSchema(codec="lz4")`` (all arrays read); ``tokalign-nocrc`` the same store in format 1 (no per-chunk
crc32c, ``StoreWriter.create(..., format_version=1)``; all arrays read): the cost of checking every chunk's
checksum on every read is ``tokalign`` against it (the two reads alternate, best of 3 x ``--repeat`` each, wall
and process CPU time: the CPU figure is the steadier one on a shared machine). Reads include ``open_store``. Ratios are against the FuseChat
layout measured in the same run.

The second table is the writer's cost for remap-like packed batches (``StoreWriter.append_packed`` of 131072
positions: int16 ids x10, bf16 logits x10, float32 token_ce / retained_mass, int32 input_ids /
source_position, uint8 group_kind, bool loss_mask / remap_valid), in CPU microseconds per position (all
threads; the process's CPU time) and wall microseconds per position, per codec and write policy:
``zarr`` = the old path (zarr writes every flush; a flush that ends inside a shard makes the next one re-read
and rewrite it), ``direct`` = whole shards encoded by tokalign on ``encode_threads`` threads.

    python benchmarks/store_io.py                  # 500k tokens, K=10
    python benchmarks/store_io.py --tokens 1000000 --json
    python benchmarks/store_io.py --no-writer      # the read/size table only
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
from typing import Any, Callable, Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _timing import best_of  # noqa: E402
from tokalign.remap.stores import REMAP_EXTRAS  # noqa: E402
from tokalign.store import (  # noqa: E402
    StoreSchema,
    StoreWriter,
    bf16_bits_to_float32,
    float32_to_bf16_bits,
    open_store,
)


def synthetic(tokens: int, k: int, vocab: int, seed: int) -> Dict[str, Any]:
    """Realistic-looking top-k: sorted bf16 logits (top-1 ~ N(18, 3), exponential gaps), Zipf-ish ids."""
    rng = np.random.default_rng(seed)
    lengths: List[int] = []
    while sum(lengths) < tokens:
        lengths.append(int(np.clip(rng.lognormal(np.log(400), 0.7), 8, 4096)))
    lengths[-1] -= sum(lengths) - tokens
    if lengths[-1] <= 0:
        lengths.pop()
    lengths_a = np.asarray(lengths, dtype=np.int64)
    t = int(lengths_a.sum())
    top1 = rng.normal(18.0, 3.0, size=(t, 1)).astype(np.float32)
    gaps = rng.exponential(1.0, size=(t, k)).astype(np.float32)
    gaps[:, 0] = 0
    logits = bf16_bits_to_float32(float32_to_bf16_bits(top1 - np.cumsum(gaps, axis=1)))
    ids = np.minimum(rng.zipf(1.15, size=(t, k)) - 1, vocab - 1).astype(np.int32)
    input_ids = np.minimum(rng.zipf(1.15, size=t) - 1, vocab - 1).astype(np.int32)
    lse = (logits[:, 0] + rng.exponential(0.7, size=t)).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(lengths_a)])
    loss_mask = np.zeros(t, dtype=bool)
    for a, b in zip(offsets[:-1], offsets[1:]):  # assistant turn = the second half of each sample
        loss_mask[a + (b - a) // 2: b] = True
    token_ce = rng.exponential(1.5, size=t).astype(np.float32)
    return {"lengths": lengths_a, "offsets": offsets, "logits": logits, "ids": ids, "input_ids": input_ids,
            "lse": lse, "loss_mask": loss_mask, "token_ce": token_ce}


def _decoded(tokens: int) -> bool:
    """A read must have decoded tokens (the read functions return how many)."""
    return tokens > 0


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# -- tokalign store ------------------------------------------------------------------------------------------
def write_ours(d: Dict[str, Any], k: int, vocab: int, url: str, codec: str = "zstd", format_version: int = 2) -> None:
    schema = StoreSchema(model="synthetic", tokenizer_fingerprint="synthetic", vocab_size=vocab, k=k, codec=codec)
    o = d["offsets"]
    with StoreWriter.create(url, schema, overwrite=True, format_version=format_version) as w:
        batch = []
        for i in range(len(d["lengths"])):
            a, b = int(o[i]), int(o[i + 1])
            batch.append({"sample_id": "s%07d" % i, "input_ids": d["input_ids"][a:b], "loss_mask": d["loss_mask"][a:b],
                          "topk_ids": d["ids"][a:b], "topk_logits": d["logits"][a:b], "logsumexp": d["lse"][a:b],
                          "token_ce": d["token_ce"][a:b]})
            if len(batch) == 64:
                w.append(batch)
                batch = []
        w.append(batch)


def read_ours(url: str, fields=None) -> int:
    n = 0
    for b in open_store(url).iter_batches(256, packed=True, fields=fields):
        n += b["topk_logits"].shape[0]
        assert b["topk_logits"].dtype == np.float32 and b["topk_ids"].dtype == np.int32
    return n


# -- FuseChat layout ---------------------------------------------------------------------------------------
def fusechat_table(d: Dict[str, Any], k: int):
    import pyarrow as pa

    o = pa.array(d["offsets"].astype(np.int32))
    t = len(d["input_ids"])
    per_tok = pa.array(np.arange(0, (t + 1) * k, k, dtype=np.int32))
    logits = pa.ListArray.from_arrays(o, pa.ListArray.from_arrays(per_tok, pa.array(d["logits"].reshape(-1))))
    ids = pa.ListArray.from_arrays(o, pa.ListArray.from_arrays(per_tok, pa.array(d["ids"].reshape(-1).astype(np.int64))))
    labels = np.where(d["loss_mask"], d["input_ids"], -100).astype(np.int64)
    metric = []
    for a, b in zip(d["offsets"][:-1], d["offsets"][1:]):
        m = d["loss_mask"][a + 1:b]
        metric.append(float(d["token_ce"][a:b - 1][m].mean()) if m.any() else 0.0)
    return pa.table({
        "input_ids": pa.ListArray.from_arrays(o, pa.array(d["input_ids"].astype(np.int64))),
        "labels": pa.ListArray.from_arrays(o, pa.array(labels)),
        "per_step_logits": logits,
        "per_step_indices": ids,
        "metric_ce": pa.array(np.asarray(metric, dtype=np.float32)),
    })


def write_fusechat(table, path: Path) -> None:
    import datasets

    datasets.Dataset(table).save_to_disk(str(path))


def read_fusechat_rows(path: Path) -> int:
    """FuseChat-style: rows as Python lists, one np.asarray per sample and field."""
    import datasets

    ds = datasets.load_from_disk(str(path))
    n = 0
    for row in ds:
        logits = np.asarray(row["per_step_logits"], dtype=np.float32)
        ids = np.asarray(row["per_step_indices"], dtype=np.int32)
        np.asarray(row["input_ids"], dtype=np.int32)
        n += logits.shape[0]
        assert ids.shape == logits.shape
    return n


def read_arrow_columnar(path: Path) -> int:
    """Fastest Arrow path (not what FuseChat does): the memory-mapped table's flat child buffers, zero-copy."""
    import datasets

    table = datasets.load_from_disk(str(path)).data.table
    n = 0
    for rb in table.to_batches(max_chunksize=256):
        logits = rb.column("per_step_logits").flatten().flatten().to_numpy().reshape(-1, K_GLOBAL[0])
        ids = rb.column("per_step_indices").flatten().flatten().to_numpy().astype(np.int32)
        rb.column("input_ids").flatten().to_numpy().astype(np.int32)
        n += logits.shape[0]
        assert ids.size == logits.size
    return n


def write_parquet(table, path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, str(path), compression="zstd")


def read_parquet(path: Path) -> int:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(str(path))
    n = 0
    for rg in range(pf.num_row_groups):
        t = pf.read_row_group(rg, columns=["input_ids", "per_step_logits", "per_step_indices"])
        logits = t.column("per_step_logits").combine_chunks().flatten().flatten().to_numpy().reshape(-1, K_GLOBAL[0])
        ids = t.column("per_step_indices").combine_chunks().flatten().flatten().to_numpy().astype(np.int32)
        n += logits.shape[0]
        assert ids.size == logits.size
    return n


K_GLOBAL = [10]


# -- writer cost for remap-like batches --------------------------------------------------------------------
WRITER_SETTINGS = [  # (label, codec, level, writer options)
    ("zarr, flush 65536 (old default)", "zstd", 5, dict(flush_tokens=65536, whole_shards=False, direct=False)),
    ("zarr, flush 1<<19 (old remap CLI)", "zstd", 5, dict(flush_tokens=1 << 19, whole_shards=False, direct=False)),
    ("zarr, flush 1<<19 (old remap CLI)", "zstd", 1, dict(flush_tokens=1 << 19, whole_shards=False, direct=False)),
    ("zarr, flush 1<<19 (old remap CLI)", "lz4", 5, dict(flush_tokens=1 << 19, whole_shards=False, direct=False)),
    ("direct whole shards, 1 thread", "zstd", 1, dict(flush_tokens=1 << 19, encode_threads=1)),
    ("direct whole shards, 2 threads", "zstd", 5, dict(flush_tokens=1 << 19, encode_threads=2)),
    ("direct whole shards, 2 threads", "zstd", 1, dict(flush_tokens=1 << 19, encode_threads=2)),
    ("direct whole shards, 2 threads", "lz4", 5, dict(flush_tokens=1 << 19, encode_threads=2)),
    ("direct whole shards, 2 threads", "lz4", 1, dict(flush_tokens=1 << 19, encode_threads=2)),
]
REMAP_BATCH = 131072


def remap_batches(positions: int, k: int, seed: int) -> List[Any]:
    """Packed batches like the remap engine writes (samples of ~512 positions, log-probs sorted descending)."""
    out = []
    for b in range(max(1, positions // REMAP_BATCH)):
        rng = np.random.default_rng(seed + b)
        n = REMAP_BATCH
        lengths = np.full(n // 512, 512, dtype=np.int64)
        lp = -np.cumsum(rng.exponential(1.0, (n, k)).astype(np.float32), axis=1)
        ids = np.minimum(rng.zipf(1.15, (n, k)) - 1, 31999).astype(np.int16)
        arrays = {"input_ids": rng.integers(0, 32000, n).astype(np.int32), "loss_mask": rng.random(n) < 0.5,
                  "topk_ids": ids, "topk_logits": bf16_bits_to_float32(float32_to_bf16_bits(lp)),
                  "token_ce": rng.exponential(1.5, n).astype(np.float32),
                  "group_kind": rng.integers(0, 4, n).astype(np.uint8),
                  "retained_mass": rng.random(n).astype(np.float32),
                  "source_position": np.arange(n, dtype=np.int32), "remap_valid": rng.random(n) < 0.98}
        out.append((["b%d-%d" % (b, i) for i in range(len(lengths))], lengths, arrays))
    return out


def writer_cost(batches: List[Any], k: int, codec: str, level: int, options: Dict[str, Any], url: str) -> Dict[str, float]:
    schema = StoreSchema(model="remap-like", tokenizer_fingerprint="x", vocab_size=32000, k=k, kind="remapped",
                         codec=codec, compression_level=level,
                         extras=REMAP_EXTRAS)
    w = StoreWriter.create(url, schema, overwrite=True, **options)
    c0, t0 = time.process_time(), time.perf_counter()
    for ids, lengths, arrays in batches:
        w.append_packed(ids, lengths, arrays)
    w.close()
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    n = sum(int(lengths.sum()) for _, lengths, _ in batches)
    return {"cpu_us_per_position": cpu / n * 1e6, "wall_us_per_position": wall / n * 1e6,
            "bytes_per_position": dir_bytes(Path(url)) / n}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=500_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--repeat", type=int, default=3, help="reads: best of this many runs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="where to write (default: a temp dir, removed afterwards)")
    ap.add_argument("--no-writer", action="store_true", help="skip the writer-cost table")
    ap.add_argument("--writer-positions", type=int, default=1 << 20, help="positions per writer run")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    K_GLOBAL[0] = args.k

    d = synthetic(args.tokens, args.k, args.vocab, args.seed)
    tokens = int(d["lengths"].sum())
    work = Path(args.workdir or tempfile.mkdtemp(prefix="tokalign-store-io-"))
    work.mkdir(parents=True, exist_ok=True)
    rows: Dict[str, Dict[str, float]] = {}
    try:
        t0 = time.perf_counter()
        write_ours(d, args.k, args.vocab, str(work / "ours.zarr"))
        rows["tokalign"] = {"write_s": time.perf_counter() - t0}
        table = fusechat_table(d, args.k)
        t0 = time.perf_counter()
        write_fusechat(table, work / "fusechat")
        rows["fusechat-arrow"] = {"write_s": time.perf_counter() - t0}
        t0 = time.perf_counter()
        write_parquet(table, work / "fusechat.parquet")
        rows["parquet"] = {"write_s": time.perf_counter() - t0}

        # correctness: our store returns exactly the logits / ids that went in
        r = open_store(str(work / "ours.zarr"))
        got = next(r.iter_batches(10_000_000, packed=True))
        assert np.array_equal(got["topk_logits"], d["logits"]) and np.array_equal(got["topk_ids"], d["ids"])

        def timed(read: Callable[[], int]) -> float:  # best of --repeat reads, each must decode tokens
            return best_of(read, args.repeat, check=_decoded)

        # bytes of the fields the FuseChat layout also has (ours additionally keeps logsumexp and token_ce)
        same = sum(int(p.arrays[n].nbytes_stored()) for p in r.parts for n in p.arrays if n not in ("logsumexp", "token_ce"))
        rows["tokalign"].update(bytes_fusechat_fields=same,
                                bytes=dir_bytes(work / "ours.zarr"),
                                read_s=timed(lambda: read_ours(str(work / "ours.zarr"))))
        write_ours(d, args.k, args.vocab, str(work / "ours-nocrc.zarr"), format_version=1)
        crc_runs: Dict[str, List[float]] = {"tokalign": [], "tokalign-nocrc": []}
        crc_cpu: Dict[str, List[float]] = {"tokalign": [], "tokalign-nocrc": []}
        for _ in range(3 * args.repeat):  # alternate the two reads: load changes hit both alike
            for name, store in (("tokalign-nocrc", "ours-nocrc.zarr"), ("tokalign", "ours.zarr")):
                t0, c0 = time.perf_counter(), time.process_time()
                read_ours(str(work / store))
                crc_runs[name].append(time.perf_counter() - t0)
                crc_cpu[name].append(time.process_time() - c0)  # all threads: steadier than wall on a busy machine
        rows["tokalign"]["read_s"] = min(rows["tokalign"]["read_s"], min(crc_runs["tokalign"]))
        rows["tokalign-nocrc"] = {"write_s": rows["tokalign"]["write_s"], "bytes": dir_bytes(work / "ours-nocrc.zarr"),
                                  "read_s": min(crc_runs["tokalign-nocrc"])}
        for name in crc_cpu:
            rows[name]["read_cpu_s"] = min(crc_cpu[name])
        rows["tokalign-3fields"] = {
            "write_s": rows["tokalign"]["write_s"], "bytes": rows["tokalign"]["bytes"],
            "read_s": timed(lambda: read_ours(str(work / "ours.zarr"), ["input_ids", "topk_ids", "topk_logits"]))}
        t0 = time.perf_counter()
        write_ours(d, args.k, args.vocab, str(work / "ours-lz4.zarr"), codec="lz4")
        rows["tokalign-lz4"] = {"write_s": time.perf_counter() - t0, "bytes": dir_bytes(work / "ours-lz4.zarr"),
                                "read_s": timed(lambda: read_ours(str(work / "ours-lz4.zarr")))}
        rows["fusechat-arrow"].update(bytes=dir_bytes(work / "fusechat"),
                                      read_s=timed(lambda: read_fusechat_rows(work / "fusechat")))
        rows["arrow-columnar"] = {"write_s": rows["fusechat-arrow"]["write_s"], "bytes": rows["fusechat-arrow"]["bytes"],
                                  "read_s": timed(lambda: read_arrow_columnar(work / "fusechat"))}
        rows["parquet"].update(bytes=(work / "fusechat.parquet").stat().st_size,
                               read_s=timed(lambda: read_parquet(work / "fusechat.parquet")))
        writer: List[Dict[str, Any]] = []
        if not args.no_writer:
            batches = remap_batches(args.writer_positions, args.k, args.seed)
            for label, codec, level, options in WRITER_SETTINGS:
                runs = [writer_cost(batches, args.k, codec, level, options, str(work / "writer.zarr"))
                        for _ in range(args.repeat)]
                best = {key: min(r[key] for r in runs) for key in runs[0]}
                writer.append(dict(policy=label, codec=codec, level=level, **best))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    base = rows["fusechat-arrow"]
    for row in rows.values():
        row["bytes_per_token"] = row["bytes"] / tokens
        row["read_tokens_per_s"] = tokens / row["read_s"]
        row["size_vs_fusechat"] = base["bytes"] / row["bytes"]
        row["read_speed_vs_fusechat"] = base["read_s"] / row["read_s"]
    ours = rows["tokalign"]
    checksum_cost = {"read_slowdown": rows["tokalign"]["read_s"] / rows["tokalign-nocrc"]["read_s"] - 1.0,
                     "read_cpu_increase": rows["tokalign"]["read_cpu_s"] / rows["tokalign-nocrc"]["read_cpu_s"] - 1.0,
                     "bytes_per_token": (rows["tokalign"]["bytes"] - rows["tokalign-nocrc"]["bytes"]) / tokens}
    report = {"tokens": tokens, "samples": int(len(d["lengths"])), "k": args.k, "vocab": args.vocab, "layouts": rows,
              "load": os.getloadavg()[0], "writer": writer, "checksum_cost": checksum_cost,
              "goals": {"smaller_3x": ours["size_vs_fusechat"] >= 3.0, "read_10x": ours["read_speed_vs_fusechat"] >= 10.0}}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("store I/O: %d tokens, %d samples, K=%d, vocab %d (reads: best of %d)"
              % (tokens, report["samples"], args.k, args.vocab, args.repeat))
        print("%-17s %11s %12s %14s %9s %10s %8s" % ("layout", "bytes/token", "smaller (x)", "read tok/s",
                                                     "read (x)", "write s", "MiB"))
        for name, row in rows.items():
            print("%-17s %11.1f %12.2f %14.0f %9.1f %10.2f %8.1f" % (
                name, row["bytes_per_token"], row["size_vs_fusechat"], row["read_tokens_per_s"],
                row["read_speed_vs_fusechat"], row["write_s"], row["bytes"] / 2**20))
        print("tokalign without logsumexp/token_ce (the fields FuseChat's layout has): %.1f bytes/token"
              % (ours["bytes_fusechat_fields"] / tokens))
        print("per-chunk crc32c (tokalign vs tokalign-nocrc, best of %d alternating reads): wall %+.1f %%, CPU %+.1f %%, "
              "%+.2f bytes/token (goal: <= 10 %% slower)" % (3 * args.repeat, 100 * checksum_cost["read_slowdown"],
                                                             100 * checksum_cost["read_cpu_increase"],
                                                             checksum_cost["bytes_per_token"]))
        print("goals vs fusechat-arrow: >=3x smaller: %s (%.2fx); >=10x faster read: %s (%.1fx)" % (
            "PASS" if report["goals"]["smaller_3x"] else "FAIL", ours["size_vs_fusechat"],
            "PASS" if report["goals"]["read_10x"] else "FAIL", ours["read_speed_vs_fusechat"]))
        if writer:
            print("\nwriter, remap-like append_packed (%d positions in batches of %d, best of %d; load %.2f):"
                  % (args.writer_positions, REMAP_BATCH, args.repeat, report["load"]))
            print("%-36s %-5s %5s %12s %13s %10s" % ("policy", "codec", "level", "CPU us/pos", "wall us/pos",
                                                     "bytes/pos"))
            for row in writer:
                print("%-36s %-5s %5d %12.2f %13.2f %10.1f" % (row["policy"], row["codec"], row["level"],
                                                               row["cpu_us_per_position"],
                                                               row["wall_us_per_position"], row["bytes_per_position"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
