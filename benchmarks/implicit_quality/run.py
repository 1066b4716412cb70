"""The benchmark, stage after stage (:func:`run_benchmark`): shared data once, then every seed's arms (in this
process, or one subprocess per seed with ``jobs`` > 1), then the summary."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional


from .config import ImplicitConfig, config_hash
from .evaluate import chat_items, evaluate, find_explicit
from .pipeline import (Bench, build_recipe, cut_and_score, make_task, read_jsonl, sample_into, source_accuracy,
                       source_data)
from .train import drop_weights, load_model, model_dir, train_arm

REPO = Path(__file__).resolve().parents[2]


def shared_stages(bench: Bench) -> Dict[str, Any]:
    with bench.stage("task"):
        task = make_task(bench)
    with bench.stage("sample sources + score"):
        src = source_data(bench, task)
    with bench.stage("build fusechat3 + wrpo step 1"):
        fc = build_recipe(bench, src, "fusechat3")
        wr = build_recipe(bench, src, "wrpo")
    with bench.stage("chat split"):
        chat = chat_items(bench)
    return {"task": task, "sources": src, "fusechat3": fc, "wrpo1": wr, "chat": chat}


def crlft_data(bench: Bench, src: Path) -> Dict[str, Any]:
    """C-RLFT records on the same training prompts: each source's best response per prompt (correct or not),
    class = source, weight = the source's measured accuracy over the best source's."""
    acc = source_accuracy(src / "scored.jsonl")
    top = max(a["accuracy"] for a in acc.values()) or 1.0
    weights = {m: round(max(0.01, a["accuracy"] / top), 4) for m, a in acc.items()}
    path = src / "crlft.jsonl"
    if not path.exists():
        from fusion_train.preference.crlft import records_from_scored

        records, _ = records_from_scored(read_jsonl(src / "scored.jsonl"))
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        os.replace(tmp, path)
    return {"path": path, "weights": weights, "class_weights": ",".join("%s=%g" % kv for kv in sorted(weights.items()))}


def wrpo_target(bench: Bench, seed: int, sft: Path, shared: Dict[str, Any]) -> Path:
    """WRPO step 2: sample the SFT'd target on the preference prompts, verify, build the triples."""
    from fusion_train.implicit.engines import ModelSpec

    c = bench.cfg
    key = {"sft": json.loads((sft / "key.json").read_text()), "n": c.n_target_samples, "t": c.target_temperature,
           "max_new_tokens": c.max_new_tokens}

    def build(out: Path) -> None:
        spec = ModelSpec(path=str(model_dir(bench, sft)), name="target", temperature=c.target_temperature)
        sample_into(bench, out / "responses.jsonl", shared["wrpo1"] / "target_prompts.jsonl", [spec],
                    c.n_target_samples, 1000 + seed)
        cut_and_score(out, out / "responses.jsonl", c.tiebreak, c.max_new_tokens)

    samples = bench.resumable("wrpo-target-s%d" % seed, key, build)
    return build_recipe(bench, shared["sources"], "wrpo", samples / "scored.jsonl", tag=" step 2 seed %d" % seed)


def run_seed(bench: Bench, seed: int, shared: Dict[str, Any]) -> Dict[str, Any]:
    """Train and evaluate every arm of one seed; returns ``{arm: eval result + train summary bits}``."""
    c = bench.cfg
    arms = set(c.arms)
    heldout = shared["task"] / "heldout.jsonl"
    out: Dict[str, Any] = {}
    trained: Dict[str, Path] = {}

    def ev(arm: str, folder: Path) -> None:
        key = {"arm": json.loads((folder / "key.json").read_text()), "task": bench.task_key(),
               "n_chat": c.n_chat, "chat_seq_len": c.chat_seq_len, "max_new_tokens": c.max_new_tokens, "v": 1}
        res = evaluate(bench, "%s seed %d" % (arm, seed), key, lambda: model_dir(bench, folder), heldout,
                       shared["chat"], make_model=lambda: load_model(bench, folder))
        summ = json.loads((folder / "summary.json").read_text())
        res["trained_tokens"] = summ.get("trained_tokens")
        res["train_seconds"] = summ.get("seconds")
        res["history"] = [{k: v for k, v in h.items() if k.startswith(("rewards/", "loss", "alpha", "step"))}
                          for h in summ.get("log_history", []) if "loss" in h]
        res["data_stats"] = summ.get("data_stats")
        out[arm] = res

    fc = shared["fusechat3"]
    with bench.stage("seed %d: FuseChat-3.0 (SFT, DPO, LN-DPO)" % seed):
        if arms & {"sft", "dpo", "ln_dpo"}:
            trained["sft"] = train_arm(bench, "sft", seed, fc / "sft.jsonl", None, {"recipe": "fusechat3"})
            ev("sft", trained["sft"])
            for kind in ("dpo", "ln_dpo"):
                if kind in arms:
                    trained[kind] = train_arm(bench, kind, seed, fc / "pairs.jsonl", trained["sft"], {})
                    ev(kind, trained[kind])
    with bench.stage("seed %d: WRPO (SFT third, target samples, two alpha_end)" % seed):
        if arms & {"wrpo_sft", "wrpo@0.1", "wrpo@high"}:
            trained["wrpo_sft"] = train_arm(bench, "sft", seed, shared["wrpo1"] / "sft.jsonl", None,
                                            {"recipe": "wrpo"})
            ev("wrpo_sft", trained["wrpo_sft"])
            triples = wrpo_target(bench, seed, trained["wrpo_sft"], shared)
            for arm, alpha in (("wrpo@0.1", c.alpha_end), ("wrpo@high", c.alpha_high)):
                if arm in arms:
                    trained[arm] = train_arm(bench, "wrpo", seed, triples / "wrpo.jsonl", trained["wrpo_sft"],
                                             {"alpha": alpha})
                    ev(arm, trained[arm])
            out["wrpo_build"] = json.loads((triples / "report.json").read_text())
    with bench.stage("seed %d: C-RLFT" % seed):
        if "crlft" in arms:
            cr = crlft_data(bench, shared["sources"])
            trained["crlft"] = train_arm(bench, "crlft", seed, cr["path"], None,
                                         {"class_weights": cr["class_weights"]})
            ev("crlft", trained["crlft"])
            out["crlft_weights"] = cr["weights"]
    for folder in trained.values():
        drop_weights(folder)
    return out


def run_benchmark(cfg: ImplicitConfig, cache_dir: Path, log: Callable[[str], None] = print, jobs: int = 1,
                  only_seed: Optional[int] = None, argv: Optional[List[str]] = None) -> Dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t_start = time.perf_counter()
    bench = Bench(cfg, cache_dir, log)
    shared = shared_stages(bench)
    if only_seed is not None:
        return {"seed": only_seed, "arms": run_seed(bench, only_seed, shared)}
    per_seed: Dict[int, Dict[str, Any]] = {}
    if jobs > 1 and cfg.seeds > 1:
        with bench.stage("seeds in %d parallel processes" % min(jobs, cfg.seeds)):
            procs: List = []
            pending = list(range(cfg.seeds))
            while pending or procs:
                while pending and len(procs) < jobs:
                    s = pending.pop(0)
                    cmd = [sys.executable, "-m", "benchmarks.implicit_quality"] + list(argv or []) + [
                        "--only-seed", str(s)]
                    procs.append(subprocess.Popen(cmd, cwd=str(REPO)))
                time.sleep(2)
                for p in list(procs):
                    if p.poll() is not None:
                        procs.remove(p)
                        if p.returncode != 0:
                            raise RuntimeError("seed subprocess failed (%s)" % " ".join(p.args))
    with bench.stage("arms (cached where done)"):
        for s in range(cfg.seeds):
            per_seed[s] = run_seed(bench, s, shared)
    with bench.stage("untouched target + explicit-fusion target"):
        base_key = {"arm": "untouched", "model": bench.model_key("target"), "task": bench.task_key(),
                    "n_chat": cfg.n_chat, "chat_seq_len": cfg.chat_seq_len, "max_new_tokens": cfg.max_new_tokens}
        untouched = evaluate(bench, "untouched", base_key, lambda: bench.model_dirs["target"],
                             shared["task"] / "heldout.jsonl", shared["chat"])
        explicit = find_explicit(REPO, cfg.explicit_config) if "explicit" in cfg.arms else {"available": False, "reason": "not asked"}
        if explicit["available"]:
            explicit["results"] = {}
            for s, folder in sorted(explicit["folders"].items()):
                explicit["results"][s] = evaluate_explicit(bench, Path(folder), shared)
    from .report import summarize

    results = summarize(cfg, bench, shared, per_seed, untouched, explicit)
    results["timings_s"] = {k: round(v, 1) for k, v in bench.timings.items()}
    results["total_s"] = round(time.perf_counter() - t_start, 1)
    return results


def evaluate_explicit(bench: Bench, folder: Path, shared: Dict[str, Any]) -> Dict[str, Any]:
    from .train import base_tokenizer

    c = bench.cfg
    target_key = json.loads((folder / "key.json").read_text())
    mdir = bench.cache / ("explicit-model-%s" % config_hash(target_key))

    def folder_of() -> Path:
        if not (mdir / "model.safetensors").exists():
            load_model(bench, folder).save_pretrained(str(mdir))
            base_tokenizer(bench).save_pretrained(str(mdir))
        return mdir
    key = {"arm": "explicit", "target": target_key, "task": bench.task_key(), "n_chat": c.n_chat,
           "chat_seq_len": c.chat_seq_len, "max_new_tokens": c.max_new_tokens}
    return evaluate(bench, "explicit seed %s" % target_key.get("seed"), key, folder_of,
                    shared["task"] / "heldout.jsonl", shared["chat"])
