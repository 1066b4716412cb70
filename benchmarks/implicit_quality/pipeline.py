"""Stages of the implicit-fusion benchmark, each through the library entry points and cached by a hash of what
it depends on (a killed run resumes: sampling resumes inside its file, every other stage is built into a
temporary folder and renamed when complete).

task -> fusion_train.implicit.sample (sources) -> score --verify math (+ the tie-break score) -> build
fusechat3 / wrpo step 1 -> per seed: run_sft -> run_preference (dpo, ln_dpo); run_sft (wrpo third) -> sample
the SFT'd target -> score -> build wrpo step 2 -> run_preference (wrpo, two alpha_end); run_crlft.
"""
from __future__ import annotations

import json
import os
import re
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from benchmarks._stages import StageCache

from .config import ImplicitConfig, config_hash, json_default
from . import task as T


class Bench(StageCache):
    """One run: configuration, cache folder (:class:`~benchmarks._stages.StageCache`: ``stage``, ``cached``,
    ``resumable``), model folders, timing log."""

    log_prefix = "implicit-quality"
    key_hash = staticmethod(config_hash)
    json_default = staticmethod(json_default)

    def __init__(self, cfg: ImplicitConfig, cache_dir: Path, log: Callable[[str], None] = print) -> None:
        from tokalign.models.cache import converted_dir, lookup_model_alias
        from tokalign.paths import shared_corpora

        self.cfg = cfg
        self._init_cache(cache_dir, log)
        self.corpora = shared_corpora()
        self.model_dirs = {"target": converted_dir(cfg.target), "source": converted_dir(cfg.source)}
        self.sha = {"target": lookup_model_alias(cfg.target).sha256, "source": lookup_model_alias(cfg.source).sha256}

    def task_key(self) -> Dict[str, Any]:
        c = self.cfg
        return {"salt": c.salt, "seed": c.task_seed, "levels": list(c.levels), "n": [c.n_train, c.n_heldout],
                "gsm8k": [c.n_gsm8k_train, c.n_gsm8k_heldout], "task": "v1"}

    def model_key(self, role: str) -> Dict[str, Any]:
        return {"gguf_sha256": self.sha[role], "dtype": self.cfg.dtype}


def threads(cfg: ImplicitConfig) -> None:
    import torch

    torch.set_num_threads(max(1, cfg.threads))


def write_jsonl(path: Path, rows: Sequence[Dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ------------------------------------------------------------------------------------------------ task
def make_task(bench: Bench) -> Path:
    """train.jsonl / heldout.jsonl in fusion-train's prompt format (+ template, level, kind)."""
    c = bench.cfg

    def build(out: Path) -> None:
        train = T.generate("train", c.n_train, c.levels, c.task_seed, c.salt)
        held = T.generate("heldout", c.n_heldout, c.levels, c.task_seed, c.salt)
        g_train, g_held = T.gsm8k_items(bench.corpora, c.n_gsm8k_train, c.n_gsm8k_heldout, c.salt)
        write_jsonl(out / "train.jsonl", train + g_train)
        write_jsonl(out / "heldout.jsonl", held + g_held)
        overlap = {p["prompt_id"].split("-", 1)[1] for p in train + g_train} & \
                  {p["prompt_id"].split("-", 1)[1] for p in held + g_held}
        if overlap:
            raise RuntimeError("a held-out problem is also a training problem: %s" % sorted(overlap)[:3])
        (out / "counts.json").write_text(json.dumps({"train": len(train), "train_gsm8k": len(g_train),
                                                     "heldout": len(held), "heldout_gsm8k": len(g_held)}) + "\n")

    return bench.cached("task", bench.task_key(), build)


# --------------------------------------------------------------------------------------------- sampling
def source_specs(bench: Bench, temperature_override: Optional[float] = None):
    from fusion_train.implicit.engines import ModelSpec

    c = bench.cfg
    return [ModelSpec(path=str(bench.model_dirs["source"]), name="gemma3", temperature=c.source_temperature,
                      chat_template=T.few_shot_template()),
            ModelSpec(path=str(bench.model_dirs["target"]), name="smollm2", temperature=c.target_temperature)]


def sample_into(bench: Bench, out: Path, prompts: Path, specs, n: int, seed: int,
                batch_size: int = 64) -> Dict[str, Any]:
    from fusion_train.implicit import SampleOptions, sample

    c = bench.cfg
    with redirect_stdout(sys.stderr):
        rep = sample(SampleOptions(prompts=str(prompts), out=str(out), models=specs, n=n, seed=seed,
                                   max_new_tokens=c.max_new_tokens, batch_size=batch_size, dtype=c.dtype,
                                   device="cpu" if c.device == "cpu" else c.device, top_p=0.95, progress=False))
    return rep


def cut_and_score(out_dir: Path, responses: Path, tiebreak: float, max_new_tokens: int) -> Dict[str, Any]:
    """Cut base-model continuations at the next few-shot question, verify against the gold answers
    (``fusion-train score --verify math``), then add the tie-break score: ``score = correct + tiebreak * s2``."""
    from fusion_train.implicit import ScoreOptions, score

    rows = read_jsonl(responses)
    for r in rows:
        r["text"] = T.cut_at_stop(r["text"]).strip() or r["text"]
    cut = out_dir / "responses.cut.jsonl"
    write_jsonl(cut, rows)
    verified = out_dir / "verified.jsonl"
    with redirect_stdout(sys.stderr):
        rep = score(ScoreOptions(inputs=[str(cut)], out=str(verified), verify=["math"], progress=False))
    scored = read_jsonl(verified)
    for row in scored:
        for r in row["responses"]:
            r["verifier_score"] = r["score"]
            r["tiebreak"] = second_score(r["text"], max_new_tokens)
            r["score"] = float(r["score"]) + tiebreak * r["tiebreak"]
    write_jsonl(out_dir / "scored.jsonl", scored)
    return rep


_FINAL = re.compile(r"(the answer is|final answer)\s*:?\s*\$?-?\d", re.IGNORECASE)


def second_score(text: str, max_new_tokens: int) -> float:
    """The tie-break among equally verified responses, in [0, 1]: half for stating the final answer explicitly
    ("The answer is N"), half for brevity (1 - characters / (6 x max_new_tokens), floored at 0). No reward model
    can be had offline here; these two properties are the ones greedy exact-match rewards (an explicit final
    answer is what the extractor reads first; a short answer finishes inside the token budget)."""
    explicit = 1.0 if _FINAL.search(text) else 0.0
    brevity = max(0.0, 1.0 - len(text) / (6.0 * max_new_tokens))
    return 0.5 * explicit + 0.5 * brevity


def source_data(bench: Bench, task_dir: Path) -> Path:
    c = bench.cfg
    key = {"task": bench.task_key(), "source": bench.model_key("source"), "target": bench.model_key("target"),
           "n": c.n_samples, "max_new_tokens": c.max_new_tokens, "t": [c.source_temperature, c.target_temperature],
           "few_shot": T.few_shot_template()}

    def build(out: Path) -> None:
        threads(c)
        rep = sample_into(bench, out / "responses.jsonl", task_dir / "train.jsonl", source_specs(bench), c.n_samples,
                          c.task_seed)
        bench.log("  sampled %d responses (%d there), %s" % (
            rep["written"], rep["skipped"], {m: "%.1f tok/s" % (s.get("tokens_per_second") or 0)
                                             for m, s in rep["models"].items()}))
        cut_and_score(out, out / "responses.jsonl", c.tiebreak, c.max_new_tokens)
        (out / "sample_report.json").write_text(json.dumps(rep, indent=1, default=json_default) + "\n")

    path = bench.resumable("sources", key, build)
    return path


def source_accuracy(scored: Path) -> Dict[str, Dict[str, float]]:
    """Per source: responses, correct, accuracy, mean tie-break score; and per prompt kind."""
    acc: Dict[str, Dict[str, float]] = {}
    for row in read_jsonl(scored):
        for r in row["responses"]:
            a = acc.setdefault(r["model"], {"responses": 0, "correct": 0, "tiebreak": 0.0})
            a["responses"] += 1
            a["correct"] += int(bool(r.get("correct")))
            a["tiebreak"] += r.get("tiebreak", 0.0)
    for a in acc.values():
        a["accuracy"] = a["correct"] / max(1, a["responses"])
        a["tiebreak"] = a["tiebreak"] / max(1, a["responses"])
    return acc


def build_recipe(bench: Bench, scored_dir: Path, recipe: str, target_samples: Optional[Path] = None,
                 tag: str = "") -> Path:
    from fusion_train.implicit import BuildOptions, build

    key = {"scored": json.loads((scored_dir / "key.json").read_text()), "recipe": recipe,
           "target": str(target_samples and json.loads((target_samples.parent / "key.json").read_text())), "v": 1}

    def run(out: Path) -> None:
        rep = build(BuildOptions(recipe=recipe, input=str(scored_dir / "scored.jsonl"), out=str(out / "data"),
                                 target_samples=str(target_samples) if target_samples else None, seed=0,
                                 window_domains=("chat",)))  # verifier 0/1 gaps: the window is for RM scores
        d = rep["domains"].get("math", {})
        bench.log("  build %s%s: %s SFT, %s preference rows, %s dropped %s" % (
            recipe, tag, d.get("sft"), d.get("dpo"), d.get("dropped"), rep.get("dropped_reasons")))

    return bench.cached("build-%s" % recipe, key, run) / "data"
