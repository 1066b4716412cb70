"""Tiny random Llama-style causal LMs whose vocabularies are real tokenizers from ``../shared/tokenizers``.

``save_tiny_causal_lm(out_dir, tokenizer_dir)`` writes a directory that loads both as a model
(``AutoModelForCausalLM.from_pretrained``, safetensors) and as a tokenizer (``tokalign.load_tokenizer``): the
model from :func:`fusion_train.testing.tiny_llama` plus the tokenizer files copied in.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

from fusion_train.testing import tiny_llama

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "tokenizer.model")


def tokenizer_size(tokenizer_dir: Path) -> int:
    """len(tokenizer): number of ids including added tokens."""
    from tokalign import load_tokenizer

    return int(load_tokenizer(str(tokenizer_dir)).vocab_size)


def save_tiny_causal_lm(out_dir: Path, tokenizer_dir: Path, *, seed: int = 0, vocab_size: Optional[int] = None,
                        logit_scale: float = 40.0, padded_scale: float = 1.0) -> Path:
    """Save a seeded tiny ``LlamaForCausalLM`` (hidden 32, 2 layers, 4 heads / 2 KV heads, 512 positions).

    ``vocab_size`` defaults to the tokenizer's size (pass more for padded embeddings, fewer for a broken
    model). ``logit_scale`` multiplies the output head (init std 0.02) so logits spread over several nats and
    the top-K is not a near-tie. ``padded_scale`` multiplies the padded rows (ids >= len(tokenizer)) so their
    logits spread wider and would often enter the top-K if the dump did not mask them.
    """
    import torch

    from tokalign import load_tokenizer

    tok = load_tokenizer(str(tokenizer_dir))
    n_tok = int(tok.vocab_size)
    vocab = n_tok if vocab_size is None else int(vocab_size)
    sp = tok.special_ids
    model = tiny_llama(vocab, hidden=32, layers=2, seed=seed, max_positions=512, intermediate_size=64,
                       pad_token_id=sp.get("pad"), bos_token_id=sp.get("bos"), eos_token_id=sp.get("eos"))
    with torch.no_grad():
        model.lm_head.weight.mul_(logit_scale)
        if vocab > n_tok:
            model.lm_head.weight[n_tok:] *= padded_scale
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    for name in TOKENIZER_FILES:
        src = Path(tokenizer_dir) / name
        if src.is_file():
            shutil.copyfile(src, out_dir / name)
    (out_dir / "tiny_model.json").write_text(json.dumps({"tokenizer": str(tokenizer_dir), "seed": seed,
                                                         "vocab_size": vocab, "logit_scale": logit_scale}))
    return out_dir
