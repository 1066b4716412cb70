"""Tiny models on real tokenizers (../shared) for the implicit-fusion tests: two source LMs with different chat
templates (Qwen2.5's ChatML, Llama 3's header tokens) and a one-output reward model."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import List

from tokalign.paths import shared_tokenizers
from tokalign.testing import TOKENIZER_FILES, save_tiny_causal_lm

TOKENIZERS = {"qwen": "qwen2.5", "llama": "llama3"}


def tokenizer_dir(alias: str) -> Path:
    return shared_tokenizers() / alias


def source_models(root: Path) -> List[Path]:
    out = []
    for i, (name, alias) in enumerate(TOKENIZERS.items()):
        out.append(save_tiny_causal_lm(root / name, tokenizer_dir(alias), seed=i + 1))
    return out


def reward_model(out: Path, *, num_labels: int = 1, alias: str = "qwen2.5", seed: int = 0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from tokalign import load_tokenizer

    tok_dir = tokenizer_dir(alias)
    n = int(load_tokenizer(str(tok_dir)).vocab_size)
    config = LlamaConfig(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=num_labels, pad_token_id=None,
                         architectures=["LlamaForSequenceClassification"])
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.mul_(50.0)  # rewards spread over ~0.1 rather than ~0.002
    model.save_pretrained(out)
    for name in TOKENIZER_FILES + ("vocab.json", "merges.txt"):
        if (tok_dir / name).is_file():
            shutil.copyfile(tok_dir / name, out / name)
    return out


def write_prompts(path: Path, n: int = 3, domain: str = "chat") -> Path:
    rows = []
    for i in range(n):
        row = {"prompt_id": "p%d" % i, "messages": [{"role": "user", "content": "What is %d plus %d?" % (i, i)}],
               "domain": domain}
        if domain == "math":
            row["gold"] = str(2 * i)
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
