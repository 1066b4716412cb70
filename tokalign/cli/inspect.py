"""``tokalign inspect STORE``: schema, counts, size on disk, bytes/token, NaN counts and completeness of a store."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict

import numpy as np

EPILOG = """examples:
  tokalign inspect /data/openchat-sharegpt.zarr
  tokalign inspect file:///data/openchat-sharegpt.zarr --json
  tokalign inspect s3://bucket/stores/qwen.zarr --scan     # re-count NaN/Inf by reading every array
exit status: 0 complete, 1 incomplete (a part missing or not closed), 2 not a readable store.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="describe a logit store (schema, counts, size, NaN counts, completeness)",
        description="Describe a tokalign logit store: schema attributes, samples and tokens per part, size on "
                    "storage and bytes per token, NaN/Inf counts and whether every part was closed.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("store", help="store URL or path (any fsspec URL: file://, memory://, s3://, ...)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--scan", action="store_true",
                   help="read every token array and count NaN/Inf values (slow on large stores)")
    p.set_defaults(func=run)


def _scan_nonfinite(reader) -> Dict[str, int]:
    """Count NaN/Inf per float array by streaming every part in token blocks."""
    from tqdm import tqdm

    from ..store.schema import bf16_bits_nonfinite

    names = [n for n, (dt, _) in reader.schema.token_array_specs().items()
             if n == "topk_logits" or np.dtype(dt).kind == "f"]
    counts = dict.fromkeys(names, 0)
    block = reader.schema.shard_tokens
    with tqdm(total=reader.num_tokens, unit="tok", desc="scan", disable=not sys.stderr.isatty()) as bar:
        for part in reader.parts:
            for lo in range(0, part.num_tokens, block):
                hi = min(lo + block, part.num_tokens)
                ids = part.arrays["topk_ids"][lo:hi]
                for name in names:
                    raw = part.arrays[name][lo:hi]
                    if name == "topk_logits":
                        nf = bf16_bits_nonfinite(raw) if reader.schema.logits_dtype == "bfloat16" else ~np.isfinite(raw)
                        nf &= ids >= 0
                    else:
                        nf = ~np.isfinite(raw)
                    counts[name] += int(nf.sum())
                bar.update(hi - lo)
    counts["seq_ce_nan"] = int(np.isnan(reader.seq_ce).sum())
    return counts


def build_report(url: str, scan: bool = False) -> Dict[str, Any]:
    from ..store import open_store, store_status

    status = store_status(url)
    if not status["exists"]:
        from ..errors import TokalignError

        raise TokalignError("no tokalign store at %s" % url)
    reader = open_store(url, allow_incomplete=True)
    attrs = dict(reader.attrs)
    arrays: Dict[str, Any] = {}
    for name, spec in attrs.get("arrays", {}).items():
        stored = sum(int(p.arrays[name].nbytes_stored()) for p in reader.parts)
        arrays[name] = dict(spec, stored_bytes=stored,
                            bytes_per_token=(stored / reader.num_tokens) if reader.num_tokens else None)
    total = reader.stored_bytes()
    parts = {}
    for p in reader.parts:
        c = p.committed
        parts[p.name] = {"complete": p.complete, "samples": p.num_samples, "tokens": p.num_tokens,
                         "invalid_samples": int(c.get("invalid_samples", 0)),
                         "nonfinite_values": int(c.get("nonfinite_values", 0)),
                         "skipped_empty": int(c.get("skipped_empty", 0)),
                         "skipped_duplicate": int(c.get("skipped_duplicate", 0)),
                         "created_at": p.group.attrs.get("created_at"), "updated_at": p.group.attrs.get("updated_at")}
    lengths = reader.lengths
    valid = reader.valid
    report: Dict[str, Any] = {
        "url": url,
        "complete": status["complete"],
        "missing_parts": status["missing_parts"],
        "schema": {k: attrs[k] for k in ("format", "format_version", "tokalign_version", "model", "kind",
                                          "tokenizer_fingerprint", "vocab_size", "k", "logits_dtype", "ids_dtype",
                                          "template", "options", "extras", "chunks", "num_parts") if k in attrs},
        "samples": len(reader),
        "tokens": reader.num_tokens,
        "tokens_per_sample": {"min": int(lengths.min()), "mean": float(lengths.mean()), "max": int(lengths.max())}
        if len(lengths) else None,
        "stored_bytes": total,
        "bytes_per_token": (total / reader.num_tokens) if reader.num_tokens else None,
        "invalid_samples": int((~valid).sum()),
        "nonfinite_values": int(sum(p.nonfinite.sum() for p in reader.parts)),
        "seq_ce_mean": float(np.nanmean(reader.seq_ce)) if len(reader) and np.isfinite(reader.seq_ce).any() else None,
        "parts": parts,
        "arrays": arrays,
    }
    if scan:
        report["nonfinite_scan"] = _scan_nonfinite(reader)
    return report


def _print_text(r: Dict[str, Any]) -> None:
    s = r["schema"]
    state = "complete" if r["complete"] else "INCOMPLETE"
    print("%s  [%s]" % (r["url"], state))
    print("  model %s  kind %s  vocab %d  k %d  logits %s  ids %s" % (s["model"], s["kind"], s["vocab_size"], s["k"],
                                                                    s["logits_dtype"], s["ids_dtype"]))
    print("  tokenizer fingerprint %s" % s["tokenizer_fingerprint"])
    print("  tokalign %s, format v%s, template %s" % (s.get("tokalign_version"), s.get("format_version"),
                                                      "yes" if s.get("template") else "none"))
    if s.get("extras"):
        print("  extra arrays: %s" % ", ".join("%s %s%s" % (n, e["dtype"], e["shape"] or "")
                                              for n, e in s["extras"].items()))
    ch = s.get("chunks", {})
    print("  chunks %s tokens / shards %s tokens; blosc-%s level %s" % (
        ch.get("chunk_tokens"), ch.get("shard_tokens"), ch.get("compressor", {}).get("cname"),
        ch.get("compressor", {}).get("clevel")))
    print("  %d samples, %d tokens" % (r["samples"], r["tokens"]), end="")
    if r["tokens_per_sample"]:
        t = r["tokens_per_sample"]
        print(" (per sample min %d / mean %.1f / max %d)" % (t["min"], t["mean"], t["max"]))
    else:
        print()
    bpt = r["bytes_per_token"]
    print("  %.2f MiB on storage, %s bytes/token" % (r["stored_bytes"] / 2**20, "%.2f" % bpt if bpt else "-"))
    print("  invalid samples (NaN/Inf) %d, non-finite values %d" % (r["invalid_samples"], r["nonfinite_values"]))
    if "nonfinite_scan" in r:
        print("  scan: " + ", ".join("%s %d" % kv for kv in r["nonfinite_scan"].items()))
    print("  parts (%d expected):" % s.get("num_parts", 0))
    for name, p in r["parts"].items():
        print("    %s  %-10s %8d samples %10d tokens  skipped %d empty / %d duplicate" % (
            name, "complete" if p["complete"] else "INCOMPLETE", p["samples"], p["tokens"], p["skipped_empty"],
            p["skipped_duplicate"]))
    for name in r["missing_parts"]:
        print("    %s  MISSING" % name)
    print("  arrays:")
    for name, a in r["arrays"].items():
        bpt = a.get("bytes_per_token")
        print("    %-14s %-6s %-8s %-9s %10d B%s" % (name, a["axis"], a.get("logical_dtype", a["dtype"]),
                                                  str(a["shape"]), a["stored_bytes"],
                                                  "  %.2f B/token" % bpt if bpt is not None else ""))
    if not r["complete"]:
        print("  incomplete: resume the writer (StoreWriter.resume(url, part=N) or the dump's --resume)")


def run(args: argparse.Namespace) -> int:
    report = build_report(args.store, scan=args.scan)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=False, default=str))
    else:
        _print_text(report)
    return 0 if report["complete"] else 1
