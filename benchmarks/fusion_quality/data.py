"""1. data: the pretrain / fusion / eval splits of the shared corpora, by prompt group."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, List, Mapping, Sequence

import numpy as np

from .config import CORPORA, config_hash
from .context import Bench


def split_of(group: str, salt: str, n_buckets: int = 1000) -> int:
    """A stable bucket in [0, n_buckets) for a prompt group (split membership without randomness state)."""
    h = hashlib.sha256((salt + "\x00" + group).encode()).digest()
    return int.from_bytes(h[:8], "big") % n_buckets


def _render(msgs: Sequence[Mapping[str, str]]) -> str:
    return "\n\n".join(m["content"] for m in msgs if m.get("content"))


def prepare_data(bench: Bench) -> Path:
    """pretrain.jsonl / fusion.jsonl / eval.jsonl of ``{"id", "text"}``, split by prompt group (an eval
    prompt is never seen in training, not even with another model's response), texts cut at a pivot
    token boundary to at most ``seq_len`` pivot tokens."""
    cfg = bench.cfg

    def build(out: Path) -> None:
        groups: Dict[str, List[Dict[str, str]]] = {}
        for name in CORPORA:
            with open(bench.corpora / name, encoding="utf-8") as f:
                for line in f:
                    obj = json.loads(line)
                    text = _render(obj["messages"])
                    if text.strip():
                        groups.setdefault(obj.get("group") or obj["id"], []).append({"id": obj["id"], "text": text})
        # eval and fusion take whole groups from two disjoint hash ranges; pretraining takes the rest
        order = sorted(groups, key=lambda g: (split_of(g, cfg.split_salt), g))
        splits: Dict[str, List[Dict[str, str]]] = {"eval": [], "fusion": [], "pretrain": []}
        want = {"eval": cfg.n_eval, "fusion": cfg.n_fusion, "pretrain": cfg.n_pretrain}
        rng = np.random.default_rng(int(config_hash(cfg.split_salt, 8), 16))
        for g in order:
            items = groups[g]
            target = next((s for s in ("eval", "fusion", "pretrain") if len(splits[s]) < want[s]), None)
            if target is None:
                break
            if target != "pretrain":  # one response per held-out / fusion prompt: more distinct prompts
                items = [items[int(rng.integers(len(items)))]]
            splits[target].extend(items[: want[target] - len(splits[target])])
        for split, items in splits.items():
            texts = [it["text"] for it in items]
            encs = bench.pivot_tok.encode_batch(texts, add_special_tokens=False)
            with open(out / ("%s.jsonl" % split), "w", encoding="utf-8") as f:
                for it, enc in zip(items, encs):
                    text = it["text"]
                    if len(enc.ids) > cfg.seq_len:
                        text = text[: int(enc.offsets[cfg.seq_len - 1][1])]
                    f.write(json.dumps({"id": it["id"], "text": text}, ensure_ascii=False) + "\n")
        (out / "counts.json").write_text(json.dumps({k: len(v) for k, v in splits.items()}) + "\n")

    return bench.cached("data", bench.data_key(), build)


def read_texts(path: Path) -> List[Dict[str, str]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
