"""Describing a store (``tokalign inspect``): schema, counts, size on storage, bytes per token, NaN counts,
completeness and integrity, as a dict (:func:`inspect`, exported as ``tokalign.store.inspect_store``) or as text
(:func:`format_text`).

Integrity: every inspection checks that each object the committed rows need exists (shard objects and the
chunk entries of their indexes); ``scan`` reads every chunk and checks its crc32c (format 2), that it decodes to
its size, and the committed counts against the arrays. Each problem is one line in ``report["damage"]``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

from ..errors import TokalignError
from . import _shards
from .reader import open_store, store_status
from .schema import CHECKSUMMED_SINCE


def _scan_nonfinite(reader) -> Dict[str, int]:
    """Count NaN/Inf per float array by streaming every part in token blocks (through the reader: checked)."""
    from tqdm import tqdm

    names = [n for n, (dt, _) in reader.schema.token_array_specs().items()
             if n == "topk_logits" or np.dtype(dt).kind == "f"]
    counts = dict.fromkeys(names, 0)
    block = reader.schema.shard_tokens
    with tqdm(total=reader.num_tokens, unit="tok", desc="scan", disable=not sys.stderr.isatty()) as bar:
        for p_i, part in enumerate(reader.parts):
            for lo in range(0, part.num_tokens, block):
                hi = min(lo + block, part.num_tokens)
                rows = reader.read_tokens(p_i, lo, hi, sorted(set(names) | {"topk_ids"}))
                for name in names:
                    nf = ~np.isfinite(rows[name])
                    if name == "topk_logits":
                        nf &= rows["topk_ids"] >= 0
                    counts[name] += int(nf.sum())
                bar.update(hi - lo)
    counts["seq_ce_nan"] = int(np.isnan(reader.seq_ce).sum())
    return counts


def _committed_rows(reader, part, name: str) -> int:
    if name == "offsets":
        return part.num_samples + 1
    return part.num_samples if name in reader.schema.sample_array_specs() else part.num_tokens


def _presence(reader) -> List[str]:
    """One line per missing object (shard, or chunk entry of a format-2 shard) under the committed rows."""
    problems: List[str] = []
    for part in reader.parts:
        for name, geom in part.geoms.items():
            if geom is None:
                continue
            try:
                _shards.check_present([(geom, 0, _committed_rows(reader, part, name))], part.io)
            except TokalignError as exc:
                problems.append(str(exc))
    return problems


def _scan_chunks(reader) -> List[str]:
    """One line per damaged chunk or shard of every array (every committed row read once)."""
    problems: List[str] = []
    for part in reader.parts:
        for name, geom in part.geoms.items():
            n = _committed_rows(reader, part, name)
            if geom is None or n == 0:
                continue
            direct = part.layouts.get(name)
            check = geom if direct is None else direct  # a ShardLayout also checks that each chunk decodes
            for s in range((n - 1) // geom.shard_rows + 1):
                raw = part.io.get_many([(geom.shard_key(s), None, 0)])[0]
                found = _shards.shard_problems(check, raw, s, n, part.io.where)
                if not found and direct is None:  # decodability through zarr (string arrays, other codecs)
                    lo, hi = s * geom.shard_rows, min(n, (s + 1) * geom.shard_rows)
                    try:
                        np.asarray(part.arrays[name][lo:hi])
                    except Exception as exc:  # noqa: BLE001 - any decode failure is damage
                        found = ["store %s is damaged: %s cannot be decoded (%s)"
                                 % (part.io.where, geom.shard_key(s), type(exc).__name__)]
                problems.extend(found)
    return problems


def _scan_counts(reader) -> List[str]:
    """The committed counts against what the arrays hold."""
    problems: List[str] = []
    for part in reader.parts:
        c = part.committed
        where = "store %s/%s" % (reader.url, part.name)
        if part.valid.size and not np.array_equal(part.valid, part.nonfinite == 0):
            problems.append("%s: valid disagrees with nonfinite for %d samples"
                            % (where, int((part.valid != (part.nonfinite == 0)).sum())))
        if "nonfinite_values" in c and int(part.nonfinite.sum()) != int(c["nonfinite_values"]):
            problems.append("%s: committed nonfinite_values=%d but the samples hold %d"
                            % (where, int(c["nonfinite_values"]), int(part.nonfinite.sum())))
        if "invalid_samples" in c and int((~part.valid).sum()) != int(c["invalid_samples"]):
            problems.append("%s: committed invalid_samples=%d but %d samples are invalid"
                            % (where, int(c["invalid_samples"]), int((~part.valid).sum())))
        if len(set(part.sample_ids.tolist())) != part.num_samples:
            problems.append("%s: sample ids repeat" % where)
    return problems


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
    damage = _presence(reader)
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
        "checksummed": reader.format_version >= CHECKSUMMED_SINCE,
    }
    if scan:
        damage = _scan_chunks(reader) or damage
        if not damage:
            damage = _scan_counts(reader)
        if not damage:
            report["nonfinite_scan"] = _scan_nonfinite(reader)
    report["damage"] = damage
    report["scanned"] = bool(scan)
    return report


def format_text(r: Dict[str, Any]) -> str:
    """The report of :func:`inspect` as the text ``tokalign inspect`` prints (no trailing newline)."""
    lines: List[str] = []
    add = lines.append
    s = r["schema"]
    state = "DAMAGED" if r.get("damage") else ("complete" if r["complete"] else "INCOMPLETE")
    add("%s  [%s]" % (r["url"], state))
    add("  model %s  kind %s  vocab %d  k %d  logits %s  ids %s" % (s["model"], s["kind"], s["vocab_size"], s["k"],
                                                                    s["logits_dtype"], s["ids_dtype"]))
    add("  tokenizer fingerprint %s" % s["tokenizer_fingerprint"])
    add("  tokalign %s, format v%s, template %s" % (s.get("tokalign_version"), s.get("format_version"),
                                                      "yes" if s.get("template") else "none"))
    if r.get("checksummed"):
        add("  integrity: every chunk checksummed (crc32c)%s" % (
            ", every chunk verified (--scan)" if r.get("scanned") and not r.get("damage") else
            "; objects present" if not r.get("damage") else ""))
    else:
        add("  integrity: UNPROTECTED (format v%s: chunks carry no checksum and chunks holding only zeros were "
            "left out, so damage may read back silently); rewrite the store with this tokalign to protect it"
            % s.get("format_version"))
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
    for line in r.get("damage") or ():
        add("  DAMAGED: %s" % line)
    if r.get("damage"):
        add("  %d problem(s): restore the store from a good copy or re-create it" % len(r["damage"]))
    elif not r["complete"]:
        add("  incomplete: run the same `tokalign dump-logits` / `tokalign remap` command again to resume it "
            "(StoreWriter.resume(url, part=N) from Python)")
    return "\n".join(lines)
