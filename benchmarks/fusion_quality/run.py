"""The whole benchmark, stage after stage (:func:`run_benchmark`): data, models, pipeline, evaluation."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np

from .config import MAP_METHODS, VARIANTS, BenchConfig
from .context import Bench
from .data import prepare_data, read_texts
from .evaluate import diagnose_remapped, evaluate, ordering_verdict, summarize_targets
from .models import pretrain
from .pipeline import build_maps, dump_store, fuse, mapped_fraction, remap_store
from .report import reading_of


def run_benchmark(cfg: BenchConfig, cache_dir: Path, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """The whole benchmark; returns the results dict (also what is written as JSON)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t_start = time.perf_counter()
    bench = Bench(cfg, cache_dir, log)
    unknown = [v for v in cfg.variants if v not in VARIANTS]
    if unknown:
        from tokalign.errors import TokalignError

        raise TokalignError("unknown variant(s) %s (choose from %s)" % (", ".join(unknown), ", ".join(VARIANTS)))
    with bench.stage("data split"):
        data_dir = prepare_data(bench)
    with bench.stage("pretrain source (%s vocab)" % cfg.source):
        source_model = pretrain(bench, "source", data_dir)
    with bench.stage("pretrain pivot (%s vocab)" % cfg.pivot):
        pivot_model = pretrain(bench, "pivot", data_dir)
    with bench.stage("dump-logits pivot + source"):
        pivot_store = dump_store(bench, "pivot", pivot_model, data_dir)
        source_store = dump_store(bench, "source", source_model, data_dir)
    with bench.stage("build-stats + vocab-map em/mined/ms"):
        maps = build_maps(bench, data_dir)
    needed = [m for m in MAP_METHODS if m in cfg.variants]
    remapped: Dict[str, Path] = {}
    with bench.stage("remap"):
        for m in needed:
            remapped[m] = remap_store(bench, m, maps[m], pivot_store, source_store)
    targets: Dict[str, Dict[int, Path]] = {}
    with bench.stage("fuse (%d variants x %d seeds)" % (len(cfg.variants), cfg.seeds)):
        for seed in range(cfg.seeds):
            for v in cfg.variants:
                targets.setdefault(v, {})[seed] = fuse(bench, v, seed, pivot_model, pivot_store, remapped,
                                                       source_store)
    eval_items = read_texts(data_dir / "eval.jsonl")
    texts = [t["text"] for t in eval_items]
    per_seed: Dict[str, Dict[int, float]] = {}
    with bench.stage("evaluate"):
        ref = {
            "pivot (before fusion)": evaluate(bench, pivot_model, bench.pivot_tok, texts,
                                              {"model": bench.model_key("pivot"), "eval": bench.data_key()}),
            "source (teacher)": evaluate(bench, source_model, bench.source_tok, texts,
                                         {"model": bench.model_key("source"), "eval": bench.data_key()}),
        }
        for v, by_seed in targets.items():
            for seed, path in by_seed.items():
                r = evaluate(bench, path / "model", bench.pivot_tok, texts,
                             {"target": json.loads((path / "key.json").read_text()), "eval": bench.data_key()})
                per_seed.setdefault(v, {})[seed] = r["ce"]
    summary = summarize_targets(per_seed)
    diagnostics: Dict[str, Any] = {}
    with bench.stage("diagnostics"):
        for m in needed:
            d = diagnose_remapped(remapped[m], source_store)
            d["mapped_source_tokens"] = mapped_fraction(maps[m])
            rates = []
            for seed, path in targets[m].items():
                s = json.loads((path / "fuse_summary.json").read_text())
                rate = (s or {}).get("last_log", {}).get("choice_rate/source")
                if rate is not None:
                    rates.append(float(rate))
            d["minCE_source_rate"] = float(np.mean(rates)) if rates else None
            diagnostics[m] = d
    results: Dict[str, Any] = {
        "config": cfg.to_dict(),
        "command": " ".join(["python -m benchmarks.fusion_quality" if Path(sys.argv[0]).name == "__main__.py"
                             else Path(sys.argv[0]).name] + sys.argv[1:]) if sys.argv else "",
        "eval": {"texts": len(texts), "pivot_tokens": int(ref["pivot (before fusion)"]["tokens"])},
        "targets": summary,
        "references": ref,
        "diagnostics": diagnostics,
        "verdict": ordering_verdict(summary) if all(m in summary for m in MAP_METHODS) else None,
        "timings_s": {k: round(v, 1) for k, v in bench.timings.items()},
        "params": {role: json.loads(((pivot_model if role == "pivot" else source_model) / "train_log.json")
                                    .read_text())["params"] for role in ("pivot", "source")},
        "pretrain_final_loss": {role: float(np.mean(json.loads(
            ((pivot_model if role == "pivot" else source_model) / "train_log.json").read_text())["losses"][-10:]))
            for role in ("pivot", "source")},
    }
    results["reading"] = reading_of(results)
    results["total_s"] = round(time.perf_counter() - t_start, 1)
    return results
