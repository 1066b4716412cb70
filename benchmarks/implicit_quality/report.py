"""Summary (mean ± std over seeds, paired differences to SFT-only), markdown table, plot and the reading."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping

import numpy as np

from benchmarks._stages import save_figure, seed_bars, write_reports

from .config import ARM_LABELS, json_default
from .pipeline import source_accuracy

TRAINED = ("sft", "dpo", "ln_dpo", "wrpo_sft", "wrpo@0.1", "wrpo@high", "crlft")


def _ms(v: List[float]) -> Dict[str, float]:
    a = np.asarray(v, dtype=float)
    return {"mean": float(a.mean()) if a.size else float("nan"),
            "std": float(a.std(ddof=1)) if a.size > 1 else float("nan")}


def summarize(cfg, bench, shared, per_seed: Mapping[int, Mapping[str, Any]], untouched: Mapping[str, Any],
              explicit: Mapping[str, Any]) -> Dict[str, Any]:
    seeds = sorted(per_seed)
    arms: Dict[str, Any] = {"untouched": {"accuracy": [untouched["accuracy"]], "bpb": [untouched["bpb"]],
                                          "acc_gsm8k": [untouched.get("acc/gsm8k (corpus)", float("nan"))],
                                          "trained_tokens": 0, "detail": _detail(untouched)}}
    base = [per_seed[s]["sft"]["accuracy"] for s in seeds if "sft" in per_seed[s]]
    base_bpb = [per_seed[s]["sft"]["bpb"] for s in seeds if "sft" in per_seed[s]]
    for arm in TRAINED:
        rs = [per_seed[s][arm] for s in seeds if arm in per_seed[s]]
        if not rs:
            continue
        row = {"accuracy": [r["accuracy"] for r in rs], "bpb": [r["bpb"] for r in rs],
               "acc_gsm8k": [r.get("acc/gsm8k (corpus)", float("nan")) for r in rs],
               "trained_tokens": _tokens(arm, per_seed, seeds), "train_seconds": [r.get("train_seconds") for r in rs],
               "detail": _detail(rs[0]), "margins": [_margins(r) for r in rs],
               "data_stats": rs[0].get("data_stats")}
        if len(rs) == len(base) and arm != "sft":
            row["delta_acc"] = [a - b for a, b in zip(row["accuracy"], base)]
            row["delta_bpb"] = [a - b for a, b in zip(row["bpb"], base_bpb)]
        arms[arm] = row
    if explicit.get("available"):
        rs = [explicit["results"][s] for s in sorted(explicit["results"])]
        arms["explicit"] = {"accuracy": [r["accuracy"] for r in rs], "bpb": [r["bpb"] for r in rs],
                            "acc_gsm8k": [r.get("acc/gsm8k (corpus)", float("nan")) for r in rs],
                            "trained_tokens": explicit["trained_tokens"], "detail": _detail(rs[0]),
                            "note": "map %s, %s configuration; seeds are its own (not paired)" % (
                                explicit["map"], explicit["config"])}
    for row in arms.values():
        for k in ("accuracy", "bpb", "acc_gsm8k", "delta_acc", "delta_bpb"):
            if k in row:
                row[k + "_ms"] = _ms(row[k])
    counts = json.loads((shared["task"] / "counts.json").read_text())
    build = {name: json.loads((shared[name] / "report.json").read_text()) for name in ("fusechat3", "wrpo1")}
    results = {"config": cfg.to_dict(), "seeds": seeds, "arms": arms, "task_counts": counts,
               "sources": source_accuracy(shared["sources"] / "scored.jsonl"), "builds": build,
               "wrpo_step2": {s: per_seed[s].get("wrpo_build") for s in seeds},
               "crlft_weights": next((per_seed[s].get("crlft_weights") for s in seeds), None),
               "explicit": {k: v for k, v in explicit.items() if k not in ("results",)},
               "chat_texts": len(shared["chat"])}
    results["reading"] = reading(results)
    return results


def _detail(r: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in r.items() if k.startswith(("acc/", "n/")) or k in ("mean_chars",)}


def _tokens(arm: str, per_seed, seeds) -> int:
    first = per_seed[seeds[0]]
    own = first.get(arm, {}).get("trained_tokens") or 0
    stage1 = {"dpo": "sft", "ln_dpo": "sft", "wrpo@0.1": "wrpo_sft", "wrpo@high": "wrpo_sft"}.get(arm)
    return int(own + ((first.get(stage1, {}).get("trained_tokens") or 0) if stage1 else 0))


def _margins(r: Mapping[str, Any]) -> Dict[str, Any]:
    h = [x for x in r.get("history") or [] if "rewards/margins" in x]
    if not h:
        return {}
    return {"first": h[0]["rewards/margins"], "last": h[-1]["rewards/margins"],
            "acc_last": h[-1].get("rewards/accuracies"), "steps": len(h)}


def _pm(ms: Mapping[str, float], pct: bool = False, d: int = 3) -> str:
    m, s = ms["mean"], ms["std"]
    if not np.isfinite(m):
        return "n/a"
    f = 100.0 if pct else 1.0
    return ("%.1f ± %.1f" % (m * f, s * f) if pct else "%.*f ± %.*f" % (d, m, d, s)) if np.isfinite(s) else (
        "%.1f" % (m * f) if pct else "%.*f" % (d, m))


def _se_verdict(deltas: List[float]) -> str:
    n = len(deltas)
    if n < 2:
        return "one seed"
    m, sd = float(np.mean(deltas)), float(np.std(deltas, ddof=1))
    se = sd / math.sqrt(n)
    if se == 0:
        if m == 0:
            return "identical on every seed"
        return ("better" if m > 0 else "worse") + " on every seed by the same amount"
    return "better than SFT-only by > 2 s.e." if m > 2 * se else "worse than SFT-only by > 2 s.e." if m < -2 * se \
        else "within 2 s.e. of SFT-only"


def reading(r: Mapping[str, Any]) -> str:
    a = r["arms"]
    parts = []
    u = a["untouched"]["accuracy"][0]
    parts.append("The untouched target solves %.1f%% of the %d held-out generated problems (greedy)%s." % (
        100 * u, r["task_counts"]["heldout"], " — inside the 10–60 % band the difficulty was chosen for" if
        0.1 <= u <= 0.6 else " — OUTSIDE the 10–60 % band the issue asks for"))
    parts.append("One held-out item is %.1f accuracy points: differences of one or two items are within what a "
                 "different draw of problems would change." % (100.0 / max(1, r["task_counts"]["heldout"])))
    src = r["sources"]
    parts.append("Source accuracy on the training prompts: %s." % ", ".join(
        "%s %.1f%% of %d" % (m, 100 * s["accuracy"], s["responses"]) for m, s in src.items()))
    for arm in ("sft", "dpo", "ln_dpo", "wrpo_sft", "wrpo@0.1", "wrpo@high", "crlft", "explicit"):
        if arm not in a:
            continue
        row = a[arm]
        txt = "%s: %s %% (untouched %.1f)" % (ARM_LABELS[arm], _pm(row["accuracy_ms"], True), 100 * u)
        if "delta_acc" in row:
            txt += ", Δ vs SFT-only %s pts (%s)" % (_pm(row["delta_acc_ms"], True), _se_verdict(row["delta_acc"]))
        parts.append(txt + ".")
    fc = r["builds"]["fusechat3"]["domains"].get("math", {})
    parts.append("Preference data: FuseChat-3.0 built %s SFT rows and %s same-source pairs (%s prompts dropped over "
                 "both parts: %s); WRPO step 1 %s SFT rows; WRPO triples per seed after target sampling: %s." % (
                     fc.get("sft"), fc.get("dpo"), fc.get("dropped"), r["builds"]["fusechat3"].get("dropped_reasons"),
                     r["builds"]["wrpo1"]["domains"].get("math", {}).get("sft"),
                     ", ".join(str((w or {}).get("domains", {}).get("math", {}).get("dpo")) for w in
                               r["wrpo_step2"].values())))
    parts += questions(r)
    if not r["explicit"].get("available"):
        parts.append("Arm 6 (explicit fusion) is not available: %s." % r["explicit"].get("reason"))
    return " ".join(parts)


def _paired(a: Mapping[str, Any], x: str, y: str) -> List[float]:
    if x not in a or y not in a or len(a[x]["accuracy"]) != len(a[y]["accuracy"]):
        return []
    return [p - q for p, q in zip(a[x]["accuracy"], a[y]["accuracy"])]


def _say(d: List[float]) -> str:
    if not d:
        return "not measured"
    ms = _ms(d)
    return "%+.1f ± %.1f pts over %d seeds (%s)" % (100 * ms["mean"], 100 * np.nan_to_num(ms["std"]), len(d),
                                                   _se_verdict(d).replace(" than SFT-only", "").replace(
                                                       " of SFT-only", ""))


def questions(r: Mapping[str, Any]) -> List[str]:
    """The issue's four questions, each answered from paired differences (the same seed = the same data order)."""
    a = r["arms"]
    out = []
    for kind in ("dpo", "ln_dpo"):
        if kind in a:
            out.append("Does preference optimisation add to SFT? %s − SFT-only: %s." % (kind.upper().replace("_", "-"),
                                                                                       _say(_paired(a, kind, "sft"))))
    if "wrpo@0.1" in a and "dpo" in a:
        out.append("WRPO's ramp vs plain DPO (each against its own SFT stage): WRPO α→%g − its SFT %s; WRPO α→%g − "
                   "its SFT %s; DPO − its SFT %s." % (
                       r["config"]["alpha_end"], _say(_paired(a, "wrpo@0.1", "wrpo_sft")), r["config"]["alpha_high"],
                       _say(_paired(a, "wrpo@high", "wrpo_sft")), _say(_paired(a, "dpo", "sft"))))
    if "crlft" in a:
        out.append("C-RLFT (class-conditioned, weighted by measured source accuracy %s) − SFT-only: %s." % (
            r.get("crlft_weights"), _say(_paired(a, "crlft", "sft"))))
    below = [arm for arm, row in a.items() if arm != "untouched"
             and row["accuracy_ms"]["mean"] <= a["untouched"]["accuracy"][0]]
    if below:
        out.append("Arms that do not beat the untouched target on mean accuracy: %s (see the data counts, pair counts "
                   "and reward margins in this report)." % ", ".join(below))
    ub = a["untouched"]["bpb"][0]
    if np.isfinite(ub):
        out.append("General ability (held-out chat bits/byte, untouched %.4f): %s." % (ub, ", ".join(
            "%s %+.4f" % (arm, row["bpb_ms"]["mean"] - ub) for arm, row in a.items() if arm != "untouched")))
    tok = {arm: row.get("trained_tokens") for arm, row in a.items() if row.get("trained_tokens")}
    if tok:
        out.append("Training tokens (policy forward, stages included): %s." % ", ".join(
            "%s {:,}".format(v) % k for k, v in tok.items()))
    return out


def format_markdown(r: Mapping[str, Any]) -> str:
    c = r["config"]
    lines = ["## Implicit fusion quality (%s): target %s, sources %s (few-shot) + %s, %d seeds" % (
        c["name"], c["target"], c["source"], c["target"], len(r["seeds"])), "",
        "Held-out: %d generated problems (unseen templates + unseen numbers) + %d GSM8K items; %d chat texts for "
        "bits/byte. Training: top %s decoder layers + final norm; SFT %d steps × %d (lr %g), preference %d steps × "
        "%d (lr %g), DPO/WRPO β %g, LN-DPO β %g, WRPO α_end %g / %g (ramped from 0). Samples: N=%d per prompt per "
        "source, %d new tokens at most; WRPO target samples N=%d." % (
            r["task_counts"]["heldout"], r["task_counts"]["heldout_gsm8k"], r["chat_texts"], c["train_layers"] or "all",
            c["sft"]["steps"], c["sft"]["batch"], c["sft"]["lr"], c["pref"]["steps"], c["pref"]["batch"],
            c["pref"]["lr"], c["beta_dpo"], c["beta_ln_dpo"], c["alpha_end"], c["alpha_high"], c["n_samples"],
            c["max_new_tokens"], c["n_target_samples"]), "",
        "| arm | held-out accuracy % (mean ± std) | Δ acc vs SFT-only (paired, pts) | GSM8K acc % | chat bits/byte | "
        "Δ bits/byte vs SFT | training tokens | seeds |", "|---|---|---|---|---|---|---|---|"]
    for arm, row in r["arms"].items():
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %d |" % (
            ARM_LABELS.get(arm, arm), _pm(row["accuracy_ms"], True),
            _pm(row["delta_acc_ms"], True) if "delta_acc_ms" in row else "—", _pm(row["acc_gsm8k_ms"], True),
            _pm(row["bpb_ms"], d=4), _pm(row["delta_bpb_ms"], d=4) if "delta_bpb_ms" in row else "—",
            "{:,}".format(row["trained_tokens"]) if row.get("trained_tokens") else "0", len(row["accuracy"])))
    if not r["explicit"].get("available"):
        lines.append("| %s | not available | — | — | — | — | — | 0 |" % ARM_LABELS["explicit"])
    lines.append("")
    lines.append("Preference training, reward margins (first → last logged step, seed 0): " + "; ".join(
        "%s %.3f → %.3f (accuracy %.2f)" % (arm, row["margins"][0]["first"], row["margins"][0]["last"],
                                            row["margins"][0].get("acc_last") or float("nan"))
        for arm, row in r["arms"].items() if row.get("margins") and row["margins"][0]))
    lines += ["", r["reading"], ""]
    return "\n".join(lines)


def plot(r: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(r["arms"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    for ax, key, label in ((axes[0], "accuracy", "held-out exact match (greedy)"),
                           (axes[1], "bpb", "held-out chat bits / byte")):
        x = seed_bars(ax, [r["arms"][a][key + "_ms"]["mean"] for a in arms],
                      [np.nan_to_num(r["arms"][a][key + "_ms"]["std"]) for a in arms],
                      [r["arms"][a][key] for a in arms])
        ax.set_xticks(x, arms, fontsize=8, rotation=20)
        ax.set_ylabel(label)
        if key == "bpb":
            vals = [v for a in arms for v in r["arms"][a][key] if np.isfinite(v)]
            if vals:
                pad = max(1e-3, 0.2 * (max(vals) - min(vals)))
                ax.set_ylim(min(vals) - pad, max(vals) + pad)
    c = r["config"]
    fig.suptitle("tokalign implicit fusion (%s): %s, %d seeds (mean ± std, dots = seeds)" % (
        c["name"], c["target"], len(r["seeds"])))
    fig.tight_layout()
    save_figure(fig, path)


def write_outputs(r: Mapping[str, Any], results_dir: Path, do_plot: bool = True) -> Dict[str, str]:
    stem = "implicit_quality" + ("" if r["config"]["name"] == "default" else "-" + r["config"]["name"])
    return write_reports(r, results_dir, stem, format_markdown, json_default, plot if do_plot else None)
