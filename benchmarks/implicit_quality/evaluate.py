"""Evaluation of an arm: greedy held-out exact-match accuracy (``fusion-train sample`` at temperature 0, one
response, then ``score --verify math``), and held-out bits/byte of chat responses (the explicit benchmark's
held-out split, its ``response_bits``: prompt + blank line + response, bits per UTF-8 byte of the response)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence

from .pipeline import Bench, read_jsonl, sample_into, threads

EVAL_BATCH = 64


def chat_items(bench: Bench) -> List[Dict[str, Any]]:
    """The first ``n_chat`` texts of the explicit real-model benchmark's held-out split (its default split:
    prompts never trained on by either benchmark)."""
    from benchmarks.fusion_quality.real import RealBench, RealConfig, prepare_real_data

    c = bench.cfg
    real = RealBench(RealConfig(seq_len=c.chat_seq_len), bench.cache / "chat-split", log=lambda s: None)
    data = prepare_real_data(real)
    with open(data / "eval.jsonl", encoding="utf-8") as f:
        items = [json.loads(line) for line in f]
    return items[:c.n_chat]


def accuracy(scored: Path, prompts: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    kinds = {p["prompt_id"]: p.get("kind", "?") for p in prompts}
    levels = {p["prompt_id"]: p.get("level", 0) for p in prompts}
    per: Dict[str, bool] = {}
    lengths: List[int] = []
    for row in read_jsonl(scored):
        r = row["responses"][0]
        per[row["prompt_id"]] = bool(r.get("correct"))
        lengths.append(len(r["text"]))
    gen = [p for p in per if kinds.get(p) != "gsm8k (corpus)"]
    out: Dict[str, Any] = {"accuracy": sum(per[p] for p in gen) / max(1, len(gen)), "n": len(gen),
                           "mean_chars": sum(lengths) / max(1, len(lengths)), "per_item": per}
    for k in sorted(set(kinds.values())):
        ids = [p for p in per if kinds.get(p) == k]
        out["acc/" + k] = sum(per[p] for p in ids) / max(1, len(ids))
        out["n/" + k] = len(ids)
    for lv in sorted({levels[p] for p in gen}):
        ids = [p for p in gen if levels[p] == lv]
        out["acc/level%d" % lv] = sum(per[p] for p in ids) / max(1, len(ids))
    return out


def evaluate(bench: Bench, label: str, key: Any, folder_of: Callable[[], Path], heldout: Path,
             chat: Sequence[Mapping[str, Any]], make_model=None) -> Dict[str, Any]:
    """Cached by ``key``. ``folder_of()``: a loadable model folder (model + tokenizer, chat template included),
    asked for only when the evaluation is not cached."""
    c = bench.cfg

    def build(out: Path) -> None:
        threads(c)
        folder = folder_of()
        from fusion_train.implicit import ScoreOptions, score
        from fusion_train.implicit.engines import ModelSpec

        t0 = time.perf_counter()
        spec = ModelSpec(path=str(folder), name="eval", temperature=0.0)
        sample_into(bench, out / "greedy.jsonl", heldout, [spec], 1, 0, batch_size=EVAL_BATCH)
        score(ScoreOptions(inputs=[str(out / "greedy.jsonl")], out=str(out / "scored.jsonl"), verify=["math"],
                           progress=False))
        res = accuracy(out / "scored.jsonl", read_jsonl(heldout))
        res["generate_seconds"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        res.update(chat_bpb(folder, chat, make_model))
        res["bpb_seconds"] = time.perf_counter() - t1
        (out / "eval.json").write_text(json.dumps(res) + "\n")
        bench.log("  eval %s: accuracy %.3f (%d items), %.4f bits/byte (%.0fs)" % (
            label, res["accuracy"], res["n"], res["bpb"], time.perf_counter() - t0))

    return json.loads((bench.cached("eval", key, build) / "eval.json").read_text())


def chat_bpb(folder: Path, chat: Sequence[Mapping[str, Any]], make_model=None) -> Dict[str, float]:
    if not chat:
        return {"bpb": float("nan"), "ce": float("nan")}
    from transformers import AutoTokenizer

    from benchmarks.fusion_quality.real import response_bits
    from tokalign.models import load_causal_lm

    model = make_model() if make_model else load_causal_lm(str(folder), dtype="fp32", device="cpu")[0]
    tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    r = response_bits(model, tok, chat, batch_tokens=1024)
    return {"bpb": r["bpb"], "ce": r["ce"], "chat_bytes": r["bytes"]}


def find_explicit(repo: Path, config: str = "real") -> Dict[str, Any]:
    """The best-map targets of the explicit real-model benchmark's configuration ``config`` (``real``,
    ``real-reduced``, ``real-gpu``, ...), if it has produced them: ``{"available": bool, "reason" | "map",
    "config", "folders": {seed: path}, "trained_tokens"}``. Named, not the newest results file: which explicit run
    an implicit report compares with must not depend on what ran last."""
    results = [repo / "benchmarks" / "results" / ("fusion_quality-%s.json" % config)]
    if not results[0].is_file():
        return {"available": False, "reason": "the explicit real-model benchmark (python -m "
                "benchmarks.fusion_quality --config %s) has written no %s on this machine"
                % (config, results[0].relative_to(repo))}
    res = json.loads(results[0].read_text())
    targets = res.get("targets", {})
    maps = [m for m in ("em", "mined", "ms") if m in targets]
    if not maps:
        return {"available": False, "reason": "%s holds no fused map target" % results[0].name}
    best = min(maps, key=lambda m: targets[m]["ce_mean"])
    cache = repo / "benchmarks" / ".cache" / "fusion_quality"
    cfg = res["config"]
    folders: Dict[int, str] = {}
    for d in sorted(cache.glob("real-target-%s-s*" % best)):
        if not (d / ".done").exists() or not (d / "trainable.safetensors").exists():
            continue
        key = json.loads((d / "key.json").read_text())
        if key.get("train") != cfg.get("fusion_train") or key.get("train_layers") != cfg.get("train_layers"):
            continue
        folders[int(key["seed"])] = str(d)
    if not folders:
        return {"available": False, "reason": "%s names %s as the best map, but no trained target of it is in %s"
                % (results[0].name, best, cache)}
    f = cfg["fusion_train"]
    return {"available": True, "map": best, "config": cfg.get("name"), "results_file": results[0].name,
            "folders": folders, "trained_tokens": int(f["steps"] * f["batch"] * cfg["seq_len"]),
            "trained_tokens_note": "upper bound: steps x batch x seq_len (texts are at most seq_len tokens)"}
