"""The real-model benchmark, stage after stage (:func:`run_real_benchmark`), and its report (markdown, PNG)."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Mapping

import numpy as np

from benchmarks._stages import save_figure, seed_bars, write_reports

from .config import KIND_LABELS, MAP_METHODS
from .data import read_texts
from .evaluate import diagnose_remapped, ordering_verdict, summarize_targets
from .pipeline import build_maps, mapped_fraction, remap_store, source_teacher
from .real import (VARIANT_LABELS, RealBench, RealConfig, dump_real, evaluate_real, fuse_real, load_pivot,
                   prepare_real_data, trainable_names)


def run_real_benchmark(cfg: RealConfig, cache_dir: Path, log: Callable[[str], None] = print) -> Dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t_start = time.perf_counter()
    with _stage_log(log, "models (fetch + convert on first use)"):
        bench = RealBench(cfg, cache_dir, log)
    with bench.stage("data split"):
        data_dir = prepare_real_data(bench)
    with bench.stage("dump-logits pivot + source"):
        pivot_store = dump_real(bench, "pivot", data_dir)
        source_store = dump_real(bench, "source", data_dir)
    with bench.stage("build-stats + vocab-map em/mined/ms"):
        maps = build_maps(bench, data_dir)
    maps_used = [m for m in MAP_METHODS if m in cfg.variants or "best@low" in cfg.variants]
    remapped: Dict[str, Path] = {}
    with bench.stage("remap"):
        for m in maps_used:
            remapped[m] = remap_store(bench, m, maps[m], pivot_store, source_store)
    items = read_texts(data_dir / "eval.jsonl")
    eval_key = {"data": bench.data_key(), "split": "eval", "metric": "response-bpb-v1"}
    bpb: Dict[str, Dict[int, float]] = {}
    ce: Dict[str, Dict[int, float]] = {}
    summaries: Dict[str, Dict[int, Any]] = {}
    with bench.stage("evaluate references"):
        ref = {"pivot untouched": evaluate_real(bench, "pivot", dict(eval_key, model=bench.model_key("pivot")),
                                                lambda: load_pivot(bench), bench.pivot_tok, items),
               "source (teacher), own tokens": evaluate_real(
                   bench, "source", dict(eval_key, model=bench.model_key("source")),
                   lambda: _load(bench.model_dirs["source"], cfg.dtype), bench.source_tok, items)}

    def target(variant: str, map_name: Any, lam: float, seed: int) -> None:
        if map_name is None:
            teacher, tkey = None, None
        else:
            teacher = source_teacher(bench, remapped[map_name], source_store)
            tkey = {"source": bench.store_key("source"), "map": map_name}
        path = fuse_real(bench, variant, lam, seed, pivot_store, teacher, tkey)
        key = dict(eval_key, target=json.loads((path / "key.json").read_text()))
        r = evaluate_real(bench, "%s seed %d" % (variant, seed), key, lambda: _trained(bench, path), bench.pivot_tok,
                          items)
        bpb.setdefault(variant, {})[seed] = r["bpb"]
        ce.setdefault(variant, {})[seed] = r["ce"]
        summaries.setdefault(variant, {})[seed] = json.loads((path / "fuse_summary.json").read_text())

    first = [v for v in ("sft",) + MAP_METHODS + ("self",) if v in cfg.variants]
    with bench.stage("fuse + evaluate (%d variants x %d seeds)" % (len(first), cfg.seeds)):
        for seed in range(cfg.seeds):
            for v in first:
                lam = 1.0 if v == "sft" else cfg.lambda_sft
                target(v, v if v in MAP_METHODS else None, lam, seed)
    best = None
    if "best@low" in cfg.variants:
        scored = [m for m in MAP_METHODS if m in bpb]
        best = min(scored, key=lambda m: np.mean(list(bpb[m].values()))) if scored else "ms"
        name = "%s@%g" % (best, cfg.lambda_low)
        with bench.stage("fuse + evaluate %s (%d seeds)" % (name, cfg.seeds)):
            for seed in range(cfg.seeds):
                target(name, best, cfg.lambda_low, seed)
    diagnostics: Dict[str, Any] = {}
    with bench.stage("diagnostics"):
        for m in maps_used:
            d = diagnose_remapped(remapped[m], source_store)
            d["mapped_source_tokens"] = mapped_fraction(maps[m])
            rates = [float(s["last_log"]["choice_rate/source"]) for s in summaries.get(m, {}).values()
                     if (s.get("last_log") or {}).get("choice_rate/source") is not None]
            d["minCE_source_rate"] = float(np.mean(rates)) if rates else None
            diagnostics[m] = d
    targets = summarize_targets(bpb)
    targets_ce = summarize_targets(ce)
    model = load_pivot(bench)
    trained = trainable_names(model, cfg.train_layers)
    results: Dict[str, Any] = {
        "config": cfg.to_dict(),
        "command": " ".join(["python -m benchmarks.fusion_quality"] + sys.argv[1:]),
        "eval": {"texts": len(items), "pivot_tokens": int(ref["pivot untouched"]["tokens"]),
                 "bytes": int(ref["pivot untouched"]["bytes"])},
        "targets": targets, "targets_ce": targets_ce, "references": ref, "diagnostics": diagnostics,
        "best_map": best, "verdict": ordering_verdict(targets) if all(m in targets for m in MAP_METHODS) else None,
        "trained_parameters": {"count": int(sum(p.numel() for n, p in model.named_parameters() if n in set(trained))),
                               "of": int(sum(p.numel() for p in model.parameters())),
                               "which": ("top %d decoder layers + final norm" % cfg.train_layers
                                         if cfg.train_layers > 0 else "all")},
        "fuse_seconds": {v: [round(s.get("seconds", 0.0), 1) for s in by.values()] for v, by in summaries.items()},
        "timings_s": {k: round(v, 1) for k, v in bench.timings.items()},
    }
    results["reading"] = real_reading(results)
    results["total_s"] = round(time.perf_counter() - t_start, 1)
    return results


class _stage_log:
    def __init__(self, log, label):
        self.log, self.label = log, label

    def __enter__(self):
        self.t0 = time.perf_counter()
        self.log("[fusion-quality] %s ..." % self.label)

    def __exit__(self, *exc):
        self.log("[fusion-quality] %s done in %.1fs" % (self.label, time.perf_counter() - self.t0))


def _load(path: Path, dtype: str):
    from tokalign.models import load_causal_lm

    return load_causal_lm(str(path), dtype=dtype, device="cpu")[0]


def _trained(bench: RealBench, target: Path):
    from safetensors.torch import load_file

    return load_pivot(bench, load_file(str(target / "trainable.safetensors")))


# ---------------------------------------------------------------------------------------------- report
def _label(name: str) -> str:
    if "@" in name:
        m, lam = name.split("@")
        return "fused, %s map (λ=%s)" % ({"mined": "MinED"}.get(m, m.upper()), lam)
    return VARIANT_LABELS.get(name, name)


def _pm(m: float, s: float, d: int = 4) -> str:
    return ("%.*f ± %.*f" % (d, m, d, s)) if np.isfinite(m) else "n/a"


def real_reading(results: Mapping[str, Any]) -> str:
    t = results["targets"]
    parts = []
    ref = results["references"]
    parts.append("The source (Gemma-3-270M) scores %.4f bits/byte on the held-out responses against the untouched "
                 "pivot's %.4f: %s." % (ref["source (teacher), own tokens"]["bpb"], ref["pivot untouched"]["bpb"],
                                        "there is knowledge to transfer" if ref["source (teacher), own tokens"]["bpb"]
                                        < ref["pivot untouched"]["bpb"] else "the source is NOT the better model here"))
    rows = []
    for name, row in t.items():
        if name == "sft" or "delta" not in row:
            continue
        n = len(row["delta"])
        se = row["delta_std"] / math.sqrt(n) if n > 1 else float("nan")
        verdict = ("better than SFT-only by more than 2 s.e." if n > 1 and row["delta_mean"] < -2 * se else
                   "worse than SFT-only by more than 2 s.e." if n > 1 and row["delta_mean"] > 2 * se else
                   "within 2 s.e. of SFT-only")
        rows.append("%s %+.4f ± %.4f (s.e.) bits/byte: %s" % (_label(name), row["delta_mean"], se, verdict))
    if rows:
        parts.append("Against SFT-only, paired by seed: " + "; ".join(rows) + ".")
    v = results.get("verdict")
    if v:
        maps = [m for m in MAP_METHODS if m in t]
        winner = min(maps, key=lambda m: t[m]["ce_mean"])
        parts.append("Best map by mean bits/byte: %s." % {"mined": "MinED"}.get(winner, winner.upper()))
        if v["same_order"] and v["all_resolved"]:
            parts.append("FuseChat's ordering MS > MinED > EM holds here, every step beyond 2 s.e.")
        elif v["same_order"]:
            parts.append("The means follow FuseChat's ordering MS > MinED > EM, but not every step exceeds 2 s.e.: "
                         "suggested, not established.")
        else:
            parts.append("FuseChat's ordering MS > MinED > EM does not hold here (observed, best first: %s)%s." % (
                ", ".join(v["observed"]), "; the differences are within seed noise" if not any(
                    p["resolved"] or p["reversed"] for p in v["pairs"]) else ""))
    return " ".join(parts)


def format_real_markdown(results: Mapping[str, Any]) -> str:
    cfg = results["config"]
    tp = results["trained_parameters"]
    f = cfg["fusion_train"]
    lines = ["## Fusion quality, real models (%s): pivot %s, source %s, %d seeds" % (
        cfg["name"], cfg["pivot"], cfg["source"], cfg["seeds"]), "",
        "Held-out responses: %d texts (prompts unseen), %d bytes, %d pivot tokens. Training: %d steps x %d sequences "
        "(lr %g), %s trained (%.1fM of %.1fM parameters), MinCE with the %s source CE." % (
            results["eval"]["texts"], results["eval"]["bytes"], results["eval"]["pivot_tokens"], f["steps"], f["batch"],
            f["lr"], tp["which"], tp["count"] / 1e6, tp["of"] / 1e6, cfg["minCE_metric"]), "",
        "| target | bits/byte mean ± std | CE / pivot token mean ± std | Δ bits/byte vs SFT (paired) mean ± std | seeds |",
        "|---|---|---|---|---|"]
    ref = results["references"]
    lines.append("| pivot untouched | %.4f | %.4f | — | — |" % (ref["pivot untouched"]["bpb"], ref["pivot untouched"]["ce"]))
    for name, row in results["targets"].items():
        c = results["targets_ce"][name]
        delta = _pm(row["delta_mean"], row["delta_std"]) if "delta_mean" in row else "—"
        lines.append("| %s | %s | %s | %s | %d |" % (_label(name), _pm(row["ce_mean"], row["ce_std"]),
                                                     _pm(c["ce_mean"], c["ce_std"]), delta, len(row["seeds"])))
    s = ref["source (teacher), own tokens"]
    lines += ["| *source Gemma-3-270M (own tokens)* | %.4f | (%.4f / own token) | — | — |" % (s["bpb"], s["ce"]), ""]
    diag = results.get("diagnostics", {})
    if diag:
        kinds = [KIND_LABELS[k] for k in sorted(KIND_LABELS)]
        lines.append("Alignment diagnostics on the fusion split (remapped source store):")
        lines.append("")
        lines.append("| map | mapped source tokens | valid positions | retained mass (source-fed) | remapped top-1 = "
                     "gold | source's own top-1 = gold | MinCE picks source | " + " | ".join(kinds) + " |")
        lines.append("|---" * (7 + len(kinds)) + "|")
        for name, d in diag.items():
            fr = d["kind_fraction"]
            lines.append("| %s | %.1f%% | %.1f%% | %.3f | %.1f%% | %.1f%% | %s | %s |" % (
                name, 100 * d["mapped_source_tokens"], 100 * d["valid_fraction"], d["retained_mass_source_fed"],
                100 * d["top1_agreement_source_fed"], 100 * d["source_own_top1"],
                "%.1f%%" % (100 * d["minCE_source_rate"]) if d.get("minCE_source_rate") is not None else "n/a",
                " | ".join("%.1f%%" % (100 * fr.get(k, 0.0)) for k in kinds)))
        lines.append("")
    if results.get("reading"):
        lines += [results["reading"], ""]
    return "\n".join(lines)


def plot_real(results: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = results["targets"]
    names = list(t)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    ax = axes[0]
    x = seed_bars(ax, [t[n]["ce_mean"] for n in names], [t[n]["ce_std"] for n in names], [t[n]["ce"] for n in names])
    ref = results["references"]
    ax.axhline(ref["pivot untouched"]["bpb"], color="tab:blue", ls="--", lw=0.9, label="pivot untouched")
    ax.axhline(ref["source (teacher), own tokens"]["bpb"], color="tab:orange", ls="--", lw=0.9, label="source (own)")
    vals = [v for n in names for v in t[n]["ce"]] + [ref["pivot untouched"]["bpb"],
                                                     ref["source (teacher), own tokens"]["bpb"]]
    pad = max(1e-3, 0.2 * (max(vals) - min(vals)))
    ax.set_ylim(min(vals) - pad, max(vals) + pad)
    ax.set_xticks(x, [n.replace("mined", "MinED") for n in names], fontsize=8)
    ax.set_ylabel("held-out bits / byte (responses)")
    ax.legend(fontsize=8)
    ax.set_title("targets (mean ± std, dots = seeds)")
    ax = axes[1]
    dn = [n for n in names if "delta_mean" in t[n]]
    xs = seed_bars(ax, [t[n]["delta_mean"] for n in dn], [t[n]["delta_std"] for n in dn],
                   [t[n]["delta"] for n in dn], color="#d9a38f")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(xs, [n.replace("mined", "MinED") for n in dn], fontsize=8)
    ax.set_ylabel("bits/byte − SFT-only, paired by seed")
    ax.set_title("fusion gain over SFT (negative = better)")
    cfg = results["config"]
    fig.suptitle("tokalign fusion quality (%s): %s <- %s, %d seeds" % (cfg["name"], cfg["pivot"], cfg["source"],
                                                                       cfg["seeds"]))
    fig.tight_layout()
    save_figure(fig, path)


def write_real_outputs(results: Mapping[str, Any], results_dir: Path, plot: bool = True) -> Dict[str, str]:
    from .config import json_default

    return write_reports(results, results_dir, "fusion_quality-%s" % results["config"]["name"], format_real_markdown,
                         json_default, plot_real if plot else None)
