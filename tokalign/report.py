"""Alignment report: how well a vocabulary map (or several, side by side) covers the source vocabulary.

Inputs are folders written by ``build-stats`` (``stats.npz``) and ``vocab-map`` (``map.npz``), told
apart by their ``meta.json``. With a stats folder, coverage is also weighted by how often each
source token occurs in the corpus (the column sums of the co-alignment counts), which is what
matters for distillation: a rare unmapped token costs little, a frequent one a lot.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .artifacts import read_json
from .errors import TokalignError
from .stats import GROUP_KINDS, MappingStats


@dataclass
class Loaded:
    path: Path
    kind: str  # "stats" or "map"
    obj: object


def load_any(path) -> Loaded:
    """A stats or vocab-map folder, recognised by its meta.json."""
    d = Path(path)
    meta = read_json(d / "meta.json")
    if meta.get("kind") == "tokalign.stats" or (d / "stats.npz").is_file():
        return Loaded(d, "stats", MappingStats.load(d))
    if (d / "map.npz").is_file():
        from .vocab import VocabMap

        return Loaded(d, "map", VocabMap.load(d))
    raise TokalignError(f"{d}: neither a stats folder (stats.npz) nor a vocab-map folder (map.npz)")


def _texts(tok) -> Optional[List[str]]:
    if tok is None:
        return None
    return [t.decode("utf-8", "backslashreplace") for t in tok.token_texts()]


def source_frequencies(stats: MappingStats) -> np.ndarray:
    """How often each source token occurs in the corpus.

    Exact counts come from ``token_counts.npz``; for folders without it the column sums of C are used,
    which count an occurrence once per pivot token of its group (exact for 1:1 and 1:n groups).
    """
    if stats.source_counts is not None:
        return stats.source_counts.astype(np.float64)
    return np.asarray(stats.matrix.sum(axis=0)).ravel().astype(np.float64)


def map_summary(vm, freq: Optional[np.ndarray]) -> Dict:
    """Coverage of one vocabulary map, by vocabulary and (with corpus frequencies) by mass."""
    from .vocab.vocab_map import ORIGIN_CODES, ORIGINS

    ORIGIN_EXACT = ORIGIN_CODES["exact"]

    origin = vm.origin if vm.origin is not None else np.where(vm.mapped(), 3, 0).astype(np.int8)
    # exact: the top-1 pivot token has the identical text (or a special token matched by role);
    # approximate: mapped to something else; unmapped: empty row.
    special = np.isin(origin, [c for c, n in ORIGINS.items() if n == "special"])
    identical = vm.distances == 0 if vm.distances is not None else np.isin(origin, [ORIGIN_EXACT])
    classes = np.where(~vm.mapped(), "unmapped", np.where(special | identical, "exact", "approximate"))
    out = {
        "method": vm.method,
        "variant": (vm.meta.get("options") or {}).get("variant"),
        "source_tokens": int(vm.source_vocab),
        "coverage": {c: float(np.mean(classes == c)) for c in ("exact", "approximate", "unmapped")},
        "by_origin": {ORIGINS[c]: int(np.sum(origin == c)) for c in sorted(ORIGINS) if np.any(origin == c)},
    }
    if vm.distances is not None:
        d = vm.distances[vm.distances >= 0]
        out["top1_distance_histogram"] = {str(k): int(v) for k, v in zip(*np.unique(np.minimum(d, 10), return_counts=True))}
    if freq is not None and freq.sum() > 0:
        w = freq[: len(classes)] / freq.sum()
        out["mass_coverage"] = {c: float(w[classes == c].sum()) for c in ("exact", "approximate", "unmapped")}
    return out


def top_mappings(vm, freq: Optional[np.ndarray], pivot_texts, source_texts, n: int = 30) -> List[Dict]:
    """The ``n`` most frequent source tokens whose top-1 pivot token is not the identical text."""
    top = vm.top1()
    order = np.argsort(-freq, kind="stable") if freq is not None else np.arange(len(top))
    rows = []
    for s in order:
        p = int(top[s])
        if p < 0:
            continue
        if pivot_texts is not None and source_texts is not None:
            if pivot_texts[p] == source_texts[s]:
                continue
        elif vm.distances is not None and vm.distances[s] == 0:
            continue
        row = {"source_id": int(s), "pivot_id": p, "weight": float(vm.matrix[s, p])}
        if freq is not None:
            row["count"] = int(freq[s])
        if source_texts is not None:
            row["source"] = source_texts[s]
        if pivot_texts is not None:
            row["pivot"] = pivot_texts[p]
        rows.append(row)
        if len(rows) >= n:
            break
    return rows


def top_pairs(stats: MappingStats, pivot_texts, source_texts, n: int = 30) -> List[Dict]:
    """The ``n`` most frequent co-aligned (pivot, source) pairs with different texts."""
    coo = stats.matrix.tocoo()
    order = np.argsort(-coo.data, kind="stable")
    rows = []
    for k in order:
        p, s = int(coo.row[k]), int(coo.col[k])
        if pivot_texts is not None and source_texts is not None and pivot_texts[p] == source_texts[s]:
            continue
        row = {"pivot_id": p, "source_id": s, "count": int(coo.data[k])}
        if pivot_texts is not None:
            row["pivot"] = pivot_texts[p]
        if source_texts is not None:
            row["source"] = source_texts[s]
        rows.append(row)
        if len(rows) >= n:
            break
    return rows


def build_report(items: Sequence[Loaded], pivot=None, source=None, n_top: int = 30) -> Dict:
    """The whole report as a JSON-able dict (see ``tokalign report --help``)."""
    stats = next((x.obj for x in items if x.kind == "stats"), None)
    maps = [x for x in items if x.kind == "map"]
    fps = set()
    for x in items:
        m = x.obj.meta
        fp = (m.get("pivot_fingerprint"), m.get("source_fingerprint")) if x.kind == "stats" else (
            (m.get("pivot") or {}).get("fingerprint"), (m.get("source") or {}).get("fingerprint"))
        fps.add(fp)
    if len(fps) > 1:
        raise TokalignError("report: the folders were built from different tokenizer pairs; compare one pair at a time")
    pivot_texts, source_texts = _texts(pivot), _texts(source)
    freq = source_frequencies(stats) if stats is not None else None
    report: Dict = {"inputs": [{"path": str(x.path), "kind": x.kind} for x in items]}
    names = [x.path.name for x in maps]
    label = {id(x): (x.path.name if len(set(names)) == len(names) else str(x.path)) for x in maps}
    if stats is not None:
        m = stats.meta
        kinds = m.get("group_kinds", {})
        total = max(sum(kinds.values()), 1)
        report["stats"] = {
            "pivot": m.get("pivot_name"), "source": m.get("source_name"), "items": m.get("items"),
            "pivot_tokens": m.get("pivot_tokens"), "source_tokens": m.get("source_tokens"),
            "distinct_pairs": int(stats.matrix.nnz),
            "group_kinds": {k: int(kinds.get(k, 0)) for k in GROUP_KINDS},
            "group_kind_fraction": {k: kinds.get(k, 0) / total for k in GROUP_KINDS},
            "source_vocab_seen": float(np.mean(freq > 0)),
            "top_pairs": top_pairs(stats, pivot_texts, source_texts, n_top),
        }
    report["maps"] = {}
    for x in maps:
        s = map_summary(x.obj, freq)
        s["top_mappings"] = top_mappings(x.obj, freq, pivot_texts, source_texts, n_top)
        report["maps"][label[id(x)]] = s
    if len(maps) > 1:
        tops = {label[id(x)]: x.obj.top1() for x in maps}
        names = list(tops)
        report["agreement_top1"] = {
            f"{a} | {b}": float(np.mean(tops[a] == tops[b])) for i, a in enumerate(names) for b in names[i + 1:]
        }
    return report


def format_report(r: Dict) -> str:
    """Plain-text rendering of :func:`build_report`."""
    lines = []
    if "stats" in r:
        s = r["stats"]
        lines.append(f"stats: {s['pivot']} x {s['source']}: {s['items']} items, {s['pivot_tokens']} pivot / "
                     f"{s['source_tokens']} source tokens, {s['distinct_pairs']} distinct pairs")
        lines.append("  groups: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in s["group_kind_fraction"].items()))
        lines.append(f"  source vocabulary seen in the corpus: {100 * s['source_vocab_seen']:.1f}%")
        lines.append("  most frequent non-identical pairs (pivot <- source: count):")
        for row in s["top_pairs"][:30]:
            lines.append(f"    {row.get('pivot', row['pivot_id'])!r} <- {row.get('source', row['source_id'])!r}: {row['count']}")
    if r["maps"]:
        header = f"{'map':<32} {'exact':>7} {'approx':>7} {'unmapped':>9}"
        with_mass = any("mass_coverage" in m for m in r["maps"].values())
        if with_mass:
            header += f" {'mass exact':>11} {'mass approx':>12} {'mass unmapped':>14}"
        lines.append("coverage of the source vocabulary:")
        lines.append("  " + header)
        for path, m in r["maps"].items():
            label = (m["method"] + (f"/{m['variant']}" if m.get("variant") else "") + f" ({Path(path).name})")[:32]
            c = m["coverage"]
            row = f"{label:<32} {100 * c['exact']:6.1f}% {100 * c['approximate']:6.1f}% {100 * c['unmapped']:8.1f}%"
            if "mass_coverage" in m:
                mc = m["mass_coverage"]
                row += f" {100 * mc['exact']:10.1f}% {100 * mc['approximate']:11.1f}% {100 * mc['unmapped']:13.1f}%"
            lines.append("  " + row)
        for path, m in r["maps"].items():
            lines.append(f"most frequent non-identical mappings of {Path(path).name} (source -> pivot):")
            for row in m["top_mappings"][:30]:
                cnt = f" x{row['count']}" if "count" in row else ""
                lines.append(f"    {row.get('source', row['source_id'])!r} -> {row.get('pivot', row['pivot_id'])!r}"
                             f" ({row['weight']:.2f}){cnt}")
    for pair, v in r.get("agreement_top1", {}).items():
        lines.append(f"top-1 agreement {pair}: {100 * v:.1f}%")
    return "\n".join(lines)


FIGURE_NEEDS = "matplotlib, which is not installed: pip install 'tokalign[plot]'"


def figures_missing() -> Optional[str]:
    """None when figures can be drawn, else why not (one line naming the extra to install)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "a figure needs " + FIGURE_NEEDS
    return None


def plot_report(r: Dict, out: str) -> None:
    """A figure: coverage per map (by vocabulary and by corpus mass), top-1 distance histograms, group kinds."""
    try:
        import matplotlib
    except ImportError:
        raise TokalignError("a figure needs %s (or drop --plot)" % FIGURE_NEEDS) from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = r["maps"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    colors = {"exact": "#2b8a3e", "approximate": "#f59f00", "unmapped": "#c92a2a"}
    ax = axes[0]
    labels, bars = [], []
    for path, m in maps.items():
        name = m["method"] + (f"/{m['variant']}" if m.get("variant") else "")
        labels.append(name + "\nvocab")
        bars.append(m["coverage"])
        if "mass_coverage" in m:
            labels.append(name + "\nmass")
            bars.append(m["mass_coverage"])
    bottom = np.zeros(len(bars))
    for cls in ("exact", "approximate", "unmapped"):
        vals = np.array([100 * b[cls] for b in bars])
        ax.bar(range(len(bars)), vals, bottom=bottom, color=colors[cls], label=cls)
        bottom += vals
    ax.set_xticks(range(len(bars)), labels, fontsize=8)
    ax.set_ylabel("% of source tokens")
    ax.set_title("Coverage (vocabulary vs corpus mass)")
    ax.legend(fontsize=8)
    ax = axes[1]
    width = 0.8 / max(len(maps), 1)
    for k, (path, m) in enumerate(maps.items()):
        h = m.get("top1_distance_histogram", {})
        xs = np.array([int(x) for x in h]) + k * width
        ax.bar(xs, list(h.values()), width=width, label=m["method"] + (f"/{m['variant']}" if m.get("variant") else ""))
    ax.set_yscale("log")
    ax.set_xlabel("edit distance to top-1 pivot token (10 = 10+)")
    ax.set_ylabel("source tokens")
    ax.set_title("How far mapped tokens are from their target")
    if maps:
        ax.legend(fontsize=8)
    ax = axes[2]
    if "stats" in r:
        kinds = r["stats"]["group_kind_fraction"]
        ax.bar(list(kinds), [100 * v for v in kinds.values()], color="#1971c2")
        ax.set_ylabel("% of alignment groups")
        ax.set_title(f"Alignment groups: {r['stats']['pivot']} x {r['stats']['source']}")
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, "no stats folder given", ha="center", va="center")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
