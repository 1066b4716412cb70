"""Describing a store (``tokalign inspect``): schema, counts, size on storage, bytes per token, NaN counts and
completeness, as a dict (:func:`inspect`, exported as ``tokalign.store.inspect_store``) or as text
(:func:`format_text`)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from ..errors import TokalignError
from .reader import open_store, store_status
from .schema import bf16_bits_nonfinite


def _scan_nonfinite(reader) -> Dict[str, int]:
    """Count NaN/Inf per float array by streaming every part in token blocks."""
    from tqdm import tqdm

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


def inspect(url: Union[str, Path], scan: bool = False, *,
            storage_options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """What ``tokalign inspect`` reports about the store at ``url`` (an incomplete store too): schema
    attributes, samples and tokens per part, size on storage and bytes per token per array, the committed
    NaN/Inf counts, and with ``scan`` those counted again by reading every float token array.
    Raises TokalignError when there is no store at ``url``."""
    status = store_status(url, storage_options=storage_options)
    if not status["exists"]:
        raise TokalignError("no tokalign store at %s" % url)
    reader = open_store(url, allow_incomplete=True, storage_options=storage_options)
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
        "url": str(url),
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


def format_text(r: Dict[str, Any]) -> str:
    """The report of :func:`inspect` as the text ``tokalign inspect`` prints (no trailing newline)."""
    lines: List[str] = []
    add = lines.append
    s = r["schema"]
    state = "complete" if r["complete"] else "INCOMPLETE"
    add("%s  [%s]" % (r["url"], state))
    add("  model %s  kind %s  vocab %d  k %d  logits %s  ids %s" % (s["model"], s["kind"], s["vocab_size"], s["k"],
                                                                    s["logits_dtype"], s["ids_dtype"]))
    add("  tokenizer fingerprint %s" % s["tokenizer_fingerprint"])
    add("  tokalign %s, format v%s, template %s" % (s.get("tokalign_version"), s.get("format_version"),
                                                      "yes" if s.get("template") else "none"))
    if s.get("extras"):
        add("  extra arrays: %s" % ", ".join("%s %s%s" % (n, e["dtype"], e["shape"] or "")
                                              for n, e in s["extras"].items()))
    ch = s.get("chunks", {})
    add("  chunks %s tokens / shards %s tokens; blosc-%s level %s" % (
        ch.get("chunk_tokens"), ch.get("shard_tokens"), ch.get("compressor", {}).get("cname"),
        ch.get("compressor", {}).get("clevel")))
    counts = "  %d samples, %d tokens" % (r["samples"], r["tokens"])
    if r["tokens_per_sample"]:
        t = r["tokens_per_sample"]
        counts += " (per sample min %d / mean %.1f / max %d)" % (t["min"], t["mean"], t["max"])
    add(counts)
    bpt = r["bytes_per_token"]
    add("  %.2f MiB on storage, %s bytes/token" % (r["stored_bytes"] / 2**20, "%.2f" % bpt if bpt else "-"))
    add("  invalid samples (NaN/Inf) %d, non-finite values %d" % (r["invalid_samples"], r["nonfinite_values"]))
    if "nonfinite_scan" in r:
        add("  scan: " + ", ".join("%s %d" % kv for kv in r["nonfinite_scan"].items()))
    add("  parts (%d expected):" % s.get("num_parts", 0))
    for name, p in r["parts"].items():
        add("    %s  %-10s %8d samples %10d tokens  skipped %d empty / %d duplicate" % (
            name, "complete" if p["complete"] else "INCOMPLETE", p["samples"], p["tokens"], p["skipped_empty"],
            p["skipped_duplicate"]))
    for name in r["missing_parts"]:
        add("    %s  MISSING" % name)
    add("  arrays:")
    for name, a in r["arrays"].items():
        bpt = a.get("bytes_per_token")
        add("    %-14s %-6s %-8s %-9s %10d B%s" % (name, a["axis"], a.get("logical_dtype", a["dtype"]),
                                                  str(a["shape"]), a["stored_bytes"],
                                                  "  %.2f B/token" % bpt if bpt is not None else ""))
    if not r["complete"]:
        add("  incomplete: resume the writer (StoreWriter.resume(url, part=N) or the dump's --resume)")
    return "\n".join(lines)
