"""``fusion-train build-pairs``: SFT sets, preference pairs (FuseChat-3.0) and WRPO triples from scored
responses. Library entry point :func:`build` (options in :class:`BuildOptions`); rules in docs/implicit.md.

**Split** (:func:`split_prompts`): per domain, the prompts sorted by ``sha256(seed, prompt_id)``; the first
``round(n * a / (a + b))`` go to SFT, the rest to preference data (``a:b`` = ``4:6`` for fusechat3, ``1:2``
for wrpo). Deterministic given the seed and the same whatever the input order. Scores never move a prompt
between parts; a prompt a rule cannot use is ``dropped`` (with the reason) from its part.

**Candidates**: for a math/code prompt (``require_correct``) only ``correct`` responses can be "best" /
"chosen" and only incorrect ones "rejected"; a code prompt whose every response fails is dropped. Ties of
score go to the model listed first in the input, then the lower sample index (deterministic).

**fusechat3**: SFT = the best-scored response over all sources. Pairs: per source, chosen = its
highest-scored (correct) response, rejected = its lowest-scored (incorrect) one; a source qualifies when
``window[0] <= chosen - rejected <= window[1]`` (inclusive, 1e-9 slack for float rounding; domains outside
``window_domains`` skip the window); among qualifying sources ``policy`` picks: ``best_chosen`` (the highest
chosen score), ``random`` (seeded per prompt) or ``all`` (one pair per source).

**wrpo**: SFT = y_ws, the best source response. Preference prompts need the target's samples after SFT
(``target_samples``, a scored file): y_wt = the target's best (correct), y_l = its worst (incorrect); prompts
whose target samples are all identical, or fewer than two, are dropped. Without ``target_samples`` the build
writes ``target_prompts.jsonl`` (the preference prompts to sample the SFT'd target on) instead of
``wrpo.jsonl``.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from tokalign.errors import TokalignError

from .formats import DOMAINS, VERIFIED, prompt_fields, read_scored
from .jsonl import write_json_atomic, write_jsonl_atomic

__all__ = ["BuildOptions", "build", "split_prompts", "parse_ratio", "RECIPES", "POLICIES", "summary_line"]

RECIPES = ("fusechat3", "wrpo")
POLICIES = ("best_chosen", "random", "all")
DEFAULT_SPLIT = {"fusechat3": "4:6", "wrpo": "1:2"}
EPS = 1e-9
OUTPUT_FILES = ("sft.jsonl", "pairs.jsonl", "wrpo.jsonl", "split.jsonl", "target_prompts.jsonl", "report.json")


@dataclass
class BuildOptions:
    """Options of :func:`build` (every choice the papers leave open; see the module doc)."""

    recipe: str
    input: Union[str, Path]
    out: Union[str, Path]
    target_samples: Optional[Union[str, Path]] = None
    split: Optional[str] = None  # "a:b" SFT : preference; default 4:6 (fusechat3), 1:2 (wrpo)
    seed: int = 0
    window: Tuple[float, float] = (0.01, 0.1)
    window_domains: Sequence[str] = DOMAINS
    policy: str = "best_chosen"
    require_correct: bool = True
    overwrite: bool = False
    extra: Dict[str, Any] = field(default_factory=dict)


def parse_ratio(text: str) -> Tuple[float, float]:
    try:
        a, b = (float(x) for x in str(text).split(":"))
    except ValueError:
        raise TokalignError("--split must look like 4:6 (SFT : preference), not %r" % text) from None
    if a < 0 or b < 0 or a + b <= 0:
        raise TokalignError("--split %s: both parts must be >= 0 and not both 0" % text)
    return a, b


def _rank_key(seed: int, prompt_id: str) -> Tuple[str, str]:
    return hashlib.sha256(("%d\x1f%s" % (seed, prompt_id)).encode("utf-8")).hexdigest(), prompt_id


def split_prompts(rows: Sequence[Dict[str, Any]], ratio: Tuple[float, float], seed: int) -> Dict[str, str]:
    """``prompt_id -> "sft" | "dpo"`` (see the module doc); the same for any order of ``rows``."""
    a, b = ratio
    parts: Dict[str, str] = {}
    for domain in sorted({r["domain"] for r in rows}):
        ids = sorted((r["prompt_id"] for r in rows if r["domain"] == domain), key=lambda p: _rank_key(seed, p))
        n_sft = int(len(ids) * a / (a + b) + 0.5)
        for i, pid in enumerate(ids):
            parts[pid] = "sft" if i < n_sft else "dpo"
    return parts


class _Ranked:
    """A prompt's responses with their model order (ties) and correctness rules."""

    def __init__(self, row: Dict[str, Any], model_order: Dict[str, int], require_correct: bool) -> None:
        self.row = row
        self.verified = require_correct and row["domain"] in VERIFIED
        self.responses = sorted(row["responses"], key=lambda r: (model_order[r["model"]], r["sample"]))
        self.order = model_order

    def best(self, responses: Optional[List[Dict[str, Any]]] = None) -> Optional[Dict[str, Any]]:
        pool = self.responses if responses is None else responses
        if self.verified:
            pool = [r for r in pool if r["correct"]]
        # max score; ties -> first in (model order, sample): max keeps the first maximum it meets
        return max(pool, key=lambda r: r["score"]) if pool else None

    def worst(self, responses: List[Dict[str, Any]], exclude: Optional[Dict[str, Any]] = None):
        pool = [r for r in responses if r is not exclude]
        if self.verified:
            pool = [r for r in pool if not r["correct"]]
        return min(pool, key=lambda r: r["score"]) if pool else None

    def all_fail(self) -> bool:
        return self.row["domain"] == "code" and self.verified and not any(r["correct"] for r in self.responses)


def _assistant(text: str) -> List[Dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _sft_row(row: Dict[str, Any], best: Dict[str, Any]) -> Dict[str, Any]:
    return {"prompt_id": row["prompt_id"], "messages": list(row["messages"]) + _assistant(best["text"]),
            "model": best["model"], "score": best["score"], "domain": row["domain"]}


def _in_window(delta: float, options: BuildOptions, domain: str) -> bool:
    if domain not in options.window_domains:
        return True
    lo, hi = options.window
    return lo - EPS <= delta <= hi + EPS


def _fusechat3_pairs(ranked: _Ranked, options: BuildOptions) -> Tuple[List[Dict[str, Any]], Optional[str]]:
    """The pairs of one preference prompt, or ``([], reason)``."""
    row = ranked.row
    by_model: Dict[str, List[Dict[str, Any]]] = {}
    for r in ranked.responses:
        by_model.setdefault(r["model"], []).append(r)
    candidates, reasons = [], set()
    for model, responses in by_model.items():
        chosen = ranked.best(responses)
        rejected = ranked.worst(responses, exclude=chosen) if chosen else None
        if chosen is None or rejected is None:
            reasons.add("no source with both a correct and an incorrect response" if ranked.verified
                        else "no source with two responses")
            continue
        delta = chosen["score"] - rejected["score"]
        if not _in_window(delta, options, row["domain"]):
            reasons.add("no source's score gap in the window [%g, %g]" % tuple(options.window))
            continue
        candidates.append((model, chosen, rejected))
    if not candidates:
        # the most specific reason: a gap outside the window beats "no pair at all"
        reason = sorted(reasons, key=lambda s: not s.startswith("no source's score gap"))[0]
        return [], reason
    if options.policy == "best_chosen":
        picked = [max(candidates, key=lambda c: (c[1]["score"], -ranked.order[c[0]]))]
    elif options.policy == "random":
        picked = [random.Random("%d\x1f%s" % (options.seed, row["prompt_id"])).choice(candidates)]
    else:
        picked = candidates
    return [{"prompt_id": row["prompt_id"], "prompt": list(row["messages"]), "chosen": _assistant(c["text"]),
             "rejected": _assistant(r["text"]), "model": m, "chosen_score": c["score"],
             "rejected_score": r["score"], "domain": row["domain"]} for m, c, r in picked], None


def _read_targets(path: Union[str, Path], expected: set, preference: set, sft_ids: set):
    """The target's scored samples by prompt id: only preference prompts, and all that ``expected`` names."""
    rows = read_scored(path)
    ids = {r["prompt_id"] for r in rows}
    foreign = sorted(ids - preference - sft_ids)
    in_sft = sorted(ids & sft_ids)
    if foreign or in_sft:
        bad = foreign or in_sft
        what = "are not prompts of this input" if foreign else "are SFT prompts of this split"
        raise TokalignError("--target-samples %s: %d of its prompts %s (e.g. %s): was it sampled for another "
                            "input, --seed or --split?" % (path, len(bad), what, bad[0]))
    missing = sorted(set(expected) - ids)
    if missing:
        raise TokalignError("--target-samples %s lacks %d of the %d preference prompts (e.g. %s): sample the "
                            "target on %s" % (path, len(missing), len(expected), missing[0], "target_prompts.jsonl"))
    models = sorted({r["model"] for row in rows for r in row["responses"]})
    if len(models) != 1:
        raise TokalignError("--target-samples %s holds responses of %d models (%s); it must be the target's "
                            "alone" % (path, len(models), ", ".join(models)))
    return {r["prompt_id"]: r for r in rows}


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise TokalignError("--out %s is a file, not a folder" % out)
    if out.is_dir() and any(out.iterdir()) and not (out / "report.json").exists() and not overwrite:
        raise TokalignError("--out %s is not empty and holds no earlier build (report.json): choose another "
                            "folder or pass --overwrite" % out)
    out.mkdir(parents=True, exist_ok=True)


def build(options: BuildOptions) -> Dict[str, Any]:
    """Build the recipe's files into ``options.out``; returns the report also written to report.json.
    All input is read and checked before any file is written."""
    if options.recipe not in RECIPES:
        raise TokalignError("--recipe must be one of %s" % ", ".join(RECIPES))
    if options.policy not in POLICIES:
        raise TokalignError("--policy must be one of %s" % ", ".join(POLICIES))
    lo, hi = options.window
    if not 0 <= lo <= hi:
        raise TokalignError("--window %g %g: needs 0 <= low <= high" % (lo, hi))
    if options.target_samples is not None and options.recipe != "wrpo":
        raise TokalignError("--target-samples is for --recipe wrpo")
    split_text = options.split or DEFAULT_SPLIT[options.recipe]
    ratio = parse_ratio(split_text)
    rows = read_scored(options.input)
    model_order: Dict[str, int] = {}
    for row in rows:
        for r in row["responses"]:
            model_order.setdefault(r["model"], len(model_order))
    parts = split_prompts(rows, ratio, options.seed)

    sft, prefs, split_rows, target_prompts = [], [], [], []
    status: Dict[str, Tuple[str, Optional[str]]] = {}
    wrpo_pending: Dict[str, Tuple[Dict[str, Any], Dict[str, Any]]] = {}
    for row in rows:
        pid, ranked = row["prompt_id"], _Ranked(row, model_order, options.require_correct)
        if ranked.all_fail():
            status[pid] = ("dropped", "every response fails its tests")
            continue
        if parts[pid] == "sft":
            best = ranked.best()
            if best is None:
                status[pid] = ("dropped", "no correct response")
            else:
                sft.append(_sft_row(row, best))
                status[pid] = ("sft", None)
        elif options.recipe == "fusechat3":
            pairs, reason = _fusechat3_pairs(ranked, options)
            prefs.extend(pairs)
            status[pid] = ("dpo", None) if pairs else ("dropped", reason)
        else:
            y_ws = ranked.best()
            if y_ws is None:
                status[pid] = ("dropped", "no correct source response")
            else:
                wrpo_pending[pid] = (row, y_ws)
                status[pid] = ("dpo", None)

    if options.recipe == "wrpo":
        if options.target_samples is None:
            target_prompts = [prompt_fields(row) for row, _ in wrpo_pending.values()]
        else:
            sft_ids = {p for p, part in parts.items() if part == "sft"}
            preference = {p for p, part in parts.items() if part == "dpo"}
            targets = _read_targets(options.target_samples, set(wrpo_pending), preference, sft_ids)
            for pid, (row, y_ws) in wrpo_pending.items():
                t = targets[pid]
                t_ranked = _Ranked(t, {r["model"]: 0 for r in t["responses"]}, options.require_correct)
                texts = [r["text"] for r in t_ranked.responses]
                reason = None
                if len(texts) < 2:
                    reason = "fewer than 2 target samples"
                elif len(set(texts)) == 1:
                    reason = "target samples all identical"
                y_wt = t_ranked.best() if reason is None else None
                y_l = t_ranked.worst(t_ranked.responses, exclude=y_wt) if y_wt is not None else None
                if reason is None and y_wt is None:
                    reason = "no correct target sample"
                elif reason is None and y_l is None:
                    reason = "no incorrect target sample"
                if reason:
                    status[pid] = ("dropped", reason)
                    continue
                prefs.append({"prompt_id": pid, "messages": list(row["messages"]),
                              "chosen": [y_ws["text"], y_wt["text"]], "rejected": [y_l["text"]],
                              "chosen_models": [y_ws["model"], y_wt["model"]],
                              "chosen_scores": [y_ws["score"], y_wt["score"]], "rejected_score": y_l["score"],
                              "domain": row["domain"]})

    for row in rows:
        pid = row["prompt_id"]
        state, reason = status[pid]
        entry = {"prompt_id": pid, "domain": row["domain"], "split": state, "part": parts[pid]}
        if reason:
            entry["reason"] = reason
        if options.recipe == "wrpo" and state == "dpo" and options.target_samples is None:
            entry["pending"] = "target samples"
        split_rows.append(entry)

    report = _report(options, split_text, rows, status, sft, prefs, target_prompts)
    out = Path(options.out)
    _prepare_out(out, options.overwrite)
    pref_name = "pairs.jsonl" if options.recipe == "fusechat3" else "wrpo.jsonl"
    written = {"sft.jsonl": sft, "split.jsonl": split_rows}
    if options.recipe == "fusechat3" or options.target_samples is not None:
        written[pref_name] = prefs
    else:
        written["target_prompts.jsonl"] = target_prompts
    for name in OUTPUT_FILES:  # files of an earlier build this one does not write would mislead
        if name not in written and name != "report.json" and (out / name).exists():
            (out / name).unlink()
    for name, data in written.items():
        write_jsonl_atomic(out / name, data)
    report["files"] = {name: len(data) for name, data in written.items()}
    write_json_atomic(out / "report.json", report)
    return report


def _report(options, split_text, rows, status, sft, prefs, target_prompts) -> Dict[str, Any]:
    domains: Dict[str, Dict[str, int]] = {}
    reasons: Dict[str, int] = {}
    for row in rows:
        d = domains.setdefault(row["domain"], {"total": 0, "sft": 0, "dpo": 0, "dpo_prompts": 0, "dropped": 0})
        d["total"] += 1
        state, reason = status[row["prompt_id"]]
        if state == "dropped":
            d["dropped"] += 1
            reasons[reason] = reasons.get(reason, 0) + 1
    for r in sft:
        domains[r["domain"]]["sft"] += 1
    seen = set()
    for r in prefs:
        domains[r["domain"]]["dpo"] += 1
        if r["prompt_id"] not in seen:
            seen.add(r["prompt_id"])
            domains[r["domain"]]["dpo_prompts"] += 1
    total = {k: sum(d[k] for d in domains.values()) for k in ("total", "sft", "dpo", "dpo_prompts", "dropped")}
    opts = asdict(options)
    opts.update(split=split_text, input=str(options.input), out=str(options.out),
                target_samples=str(options.target_samples) if options.target_samples else None,
                window=list(options.window), window_domains=list(options.window_domains))
    opts.pop("extra", None)
    return {"recipe": options.recipe, "domains": dict(sorted(domains.items())), "total": total,
            "dropped_reasons": dict(sorted(reasons.items())), "pending_target_prompts": len(target_prompts),
            "options": opts}


def summary_line(report: Dict[str, Any]) -> str:
    t = report["total"]
    pref = "pairs" if report["recipe"] == "fusechat3" else "WRPO triples"
    line = "%s: %d prompts -> %d SFT, %d %s, %d dropped" % (report["recipe"], t["total"], t["sft"], t["dpo"],
                                                           pref, t["dropped"])
    if report.get("pending_target_prompts"):
        line += "; %d preference prompts wait for target samples (target_prompts.jsonl)" % (
            report["pending_target_prompts"])
    return line + " -> %s" % report["options"]["out"]
