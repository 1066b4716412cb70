"""Do two fusion-quality runs order the variants the same way? (``python -m benchmarks.fusion_quality.compare``)

Made for the check the real-model configuration owes (issue 16): training only the top layers on a CPU must not
change which variant wins. Give it the results JSON of the top-layers run and of the full fine-tuning run on the
same data (``--config real-reduced`` and ``--config real-reduced-full``). It reports, per run, every variant's
mean held-out bits/byte and its paired difference to SFT-only (same seed = same data order) with the standard
error; then, between the runs:

- the rank order of the variants' means and Kendall's tau between the two orders;
- for every pair of variants, whether each run *resolves* the difference (beyond ``z`` standard errors of the
  paired per-seed differences) and whether the resolved ones point the same way — the ordering that matters,
  since differences inside the noise have no order to preserve.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

EPILOG = """examples:
  python -m benchmarks.fusion_quality --config real-reduced
  python -m benchmarks.fusion_quality --config real-reduced-full
  python -m benchmarks.fusion_quality.compare benchmarks/results/fusion_quality-real-reduced.json \\
      benchmarks/results/fusion_quality-real-reduced-full.json
  python -m benchmarks.fusion_quality.compare A.json B.json --json
"""


def _per_seed(run: Mapping[str, Any]) -> Dict[str, Dict[int, float]]:
    """``variant -> {seed: bits/byte}`` of a results JSON (``targets[v]["ce"]`` holds the per-seed metric)."""
    out = {}
    for name, t in run["targets"].items():
        out[name] = dict(zip(t["seeds"], t["ce"]))
    return out


def paired(a: Mapping[int, float], b: Mapping[int, float], z: float = 2.0) -> Dict[str, Any]:
    """Mean and standard error of ``b - a`` over the seeds both have; ``resolved`` = beyond ``z`` s.e."""
    seeds = sorted(set(a) & set(b))
    d = np.asarray([b[s] - a[s] for s in seeds], dtype=float)
    n = len(d)
    mean = float(d.mean()) if n else float("nan")
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    sign = 0
    if n > 1 and abs(mean) > z * se:
        sign = 1 if mean > 0 else -1
    return {"mean": mean, "se": se, "n": n, "sign": sign}


def kendall_tau(order_a: Sequence[str], order_b: Sequence[str]) -> float:
    """Kendall's tau between two orders of the same items (1 = same order, -1 = reversed)."""
    items = [x for x in order_a if x in order_b]
    pos_b = {x: i for i, x in enumerate(order_b)}
    pairs = list(itertools.combinations(items, 2))
    if not pairs:
        return float("nan")
    concordant = sum(1 if pos_b[x] < pos_b[y] else -1 for x, y in pairs)  # x before y in order_a
    return concordant / len(pairs)


def compare_runs(a: Mapping[str, Any], b: Mapping[str, Any], z: float = 2.0) -> Dict[str, Any]:
    """The comparison of two results JSONs (see the module docstring)."""
    sa, sb = _per_seed(a), _per_seed(b)
    common = [v for v in sa if v in sb]
    if len(common) < 2:
        raise ValueError("the runs share fewer than two variants (%s)" % ", ".join(common))

    def mean(s: Mapping[int, float]) -> float:
        return float(np.mean(list(s.values())))

    order_a = sorted(common, key=lambda v: mean(sa[v]))
    order_b = sorted(common, key=lambda v: mean(sb[v]))
    pairs: List[Dict[str, Any]] = []
    for x, y in itertools.combinations(common, 2):
        pa, pb = paired(sa[x], sa[y], z), paired(sb[x], sb[y], z)  # > 0: x has fewer bits/byte (better)
        resolved = [s for s in (pa["sign"], pb["sign"]) if s]
        pairs.append({"x": x, "y": y, "a": pa, "b": pb,
                      "agree": None if not resolved else (pa["sign"] == pb["sign"])})
    both = [p for p in pairs if p["a"]["sign"] and p["b"]["sign"]]
    either = [p for p in pairs if p["agree"] is not None]
    return {
        "runs": [a.get("config", {}).get("name", "a"), b.get("config", {}).get("name", "b")],
        "trained": [a.get("trained_parameters"), b.get("trained_parameters")],
        "variants": common,
        "means": [{v: mean(sa[v]) for v in common}, {v: mean(sb[v]) for v in common}],
        "vs_sft": ([{v: paired(sa["sft"], sa[v], z) for v in common if v != "sft"},
                    {v: paired(sb["sft"], sb[v], z) for v in common if v != "sft"}] if "sft" in common else None),
        "order": [order_a, order_b],
        "kendall_tau": kendall_tau(order_a, order_b),
        "pairs": pairs,
        "resolved_in_both": len(both),
        "resolved_in_both_agree": sum(p["a"]["sign"] == p["b"]["sign"] for p in both),
        "resolved_in_one_only": len(either) - len(both),
        "contradictions": [(p["x"], p["y"]) for p in both if p["a"]["sign"] != p["b"]["sign"]],
        "z": z,
    }


def format_markdown(c: Mapping[str, Any]) -> str:
    ra, rb = c["runs"]
    lines = ["| variant | %s bits/byte | Δ vs SFT (s.e.) | %s bits/byte | Δ vs SFT (s.e.) |" % (ra, rb),
             "|---|---|---|---|---|"]
    for v in c["variants"]:
        cells = [v]
        for i in range(2):
            cells.append("%.4f" % c["means"][i][v])
            d = (c["vs_sft"][i].get(v) if c["vs_sft"] else None)
            cells.append("" if d is None else "%+.4f (%.4f)%s" % (d["mean"], d["se"], " *" if d["sign"] else ""))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Order of the means (best first): %s: %s; %s: %s; Kendall's tau %.2f." % (
        ra, " < ".join(c["order"][0]), rb, " < ".join(c["order"][1]), c["kendall_tau"]),
        "Pairs of variants resolved (> %g s.e. of the paired per-seed differences) in both runs: %d, pointing the "
        "same way in %d; resolved in one run only: %d; contradictions: %s. (* = resolved vs SFT-only.)" % (
            c["z"], c["resolved_in_both"], c["resolved_in_both_agree"], c["resolved_in_one_only"],
            ", ".join("%s/%s" % p for p in c["contradictions"]) or "none")]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fusion_quality.compare", description=__doc__.split("\n")[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path, help="results JSON of the first run (e.g. top layers trained)")
    p.add_argument("b", type=Path, help="results JSON of the second run (e.g. full fine-tuning)")
    p.add_argument("--z", type=float, default=2.0, help="standard errors for a difference to count (default 2)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    args = p.parse_args(argv)
    runs = []
    for path in (args.a, args.b):
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            print("compare: error: %s: %s" % (path, exc), file=sys.stderr)
            return 2
        if "targets" not in runs[-1]:
            print("compare: error: %s: not a fusion_quality results JSON (no 'targets')" % path, file=sys.stderr)
            return 2
    try:
        c = compare_runs(runs[0], runs[1], z=args.z)
    except ValueError as exc:
        print("compare: error: %s" % exc, file=sys.stderr)
        return 2
    print(json.dumps(c, indent=2) if args.json else format_markdown(c))
    return 0


if __name__ == "__main__":
    sys.exit(main())
