"""Shared builders of the preference-trainer tests: a tiny random Llama on a real tokenizer (../shared) and
small data files in the implicit-fusion formats (docs/implicit.md)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
TOKENIZERS = SHARED / "tokenizers"


def tiny_model_dir(out: Path, tokenizer: str = "mistral-v1", seed: int = 0, logit_scale: float = 1.0) -> Path:
    from tokalign.testing import save_tiny_causal_lm

    return save_tiny_causal_lm(Path(out), TOKENIZERS / tokenizer, seed=seed, logit_scale=logit_scale)


def load_tiny(model_dir: Path):
    from tokalign.dump import load_causal_lm
    from transformers import AutoTokenizer

    model, _ = load_causal_lm(str(model_dir), dtype="float32", device="cpu")
    tok = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    return model, tok


def write_jsonl(path: Path, rows: Sequence[Dict[str, Any]]) -> Path:
    path = Path(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def pair_rows(n: int, seed: int = 0) -> List[Dict[str, Any]]:
    import random

    rng = random.Random(seed)
    words = ["apple", "river", "stone", "cloud", "green", "music", "light", "paper"]
    out = []
    for i in range(n):
        w = [rng.choice(words) for _ in range(rng.randint(1, 4))]
        out.append({"prompt_id": "p%d" % i, "prompt": [{"role": "user", "content": "Tell me about %s." % " ".join(w)}],
                    "chosen": [{"role": "assistant", "content": "A fine %s indeed." % w[0]}],
                    "rejected": [{"role": "assistant", "content": "No" + "." * (1 + i % 3)}],
                    "model": "src", "chosen_score": 0.9, "rejected_score": 0.85})
    return out


def wrpo_rows(n: int, seed: int = 0) -> List[Dict[str, Any]]:
    return [{"prompt_id": r["prompt_id"], "messages": r["prompt"],
             "chosen": [r["chosen"][0], {"role": "assistant", "content": "Well, %s." % r["prompt_id"]}],
             "rejected": r["rejected"]} for r in pair_rows(n, seed)]


def sft_rows(n: int, seed: int = 0) -> List[Dict[str, Any]]:
    return [{"prompt_id": r["prompt_id"], "messages": r["prompt"] + r["chosen"], "model": "src%d" % (i % 2),
             "score": 1.0} for i, r in enumerate(pair_rows(n, seed))]


def trainer_kwargs(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, learning_rate=1e-3, logging_steps=1,
                report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0)
    base.update(kw)
    return base
