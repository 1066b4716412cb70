"""2. models: the pivot and source causal LMs, small Llamas trained from scratch on the pretraining split."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .config import BenchConfig, ModelSpec, TrainSpec
from .context import Bench
from .data import read_texts


def lr_at(step: int, spec: TrainSpec) -> float:
    """Linear warm-up then cosine decay to 10% of the peak (step counted from 0)."""
    warm = max(1, int(round(spec.warmup * spec.steps)))
    if step < warm:
        return spec.lr * (step + 1) / warm
    progress = (step - warm) / max(1, spec.steps - warm)
    return spec.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def torch_setup(cfg: BenchConfig):
    import torch

    torch.set_num_threads(max(1, cfg.threads))
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        from tokalign.errors import TokalignError

        raise TokalignError("--device %s requested but CUDA is not available" % cfg.device)
    return torch.device("cpu" if cfg.device == "cpu" else cfg.device)


def new_llama(spec: ModelSpec, tok, max_positions: int, seed: int):
    """A freshly initialised tied-embedding Llama over ``tok``'s vocabulary."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sp = tok.special_ids
    config = LlamaConfig(vocab_size=int(tok.vocab_size), hidden_size=spec.hidden, intermediate_size=spec.intermediate,
                         num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                         num_key_value_heads=spec.heads, max_position_embeddings=max_positions,
                         tie_word_embeddings=True, pad_token_id=sp.get("pad", sp.get("eos")),
                         bos_token_id=sp.get("bos"), eos_token_id=sp.get("eos"))
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def pack_blocks(token_lists: Sequence[np.ndarray], block: int, sep: Optional[int]) -> np.ndarray:
    """Concatenate documents (``sep`` between them) and cut into ``[N, block]`` rows (the tail is dropped)."""
    parts = []
    for ids in token_lists:
        parts.append(np.asarray(ids, dtype=np.int64))
        if sep is not None:
            parts.append(np.asarray([sep], dtype=np.int64))
    flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    n = len(flat) // block
    return flat[: n * block].reshape(n, block)


def pretrain(bench: Bench, role: str, data_dir: Path) -> Path:
    """Train a causal LM from scratch on the pretraining split (packed blocks of ``seq_len`` tokens of its
    own tokenizer; AdamW, warm-up + cosine); saved with safetensors."""
    cfg = bench.cfg
    tok = bench.pivot_tok if role == "pivot" else bench.source_tok
    spec = cfg.pivot_model if role == "pivot" else cfg.source_model
    tspec = cfg.pivot_train if role == "pivot" else cfg.source_train

    def build(out: Path) -> None:
        import torch

        device = torch_setup(cfg)
        texts = [t["text"] for t in read_texts(data_dir / "pretrain.jsonl")]
        ids = [np.asarray(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]
        blocks = pack_blocks(ids, cfg.seq_len, tok.special_ids.get("eos"))
        model = new_llama(spec, tok, max_positions=max(512, 4 * cfg.seq_len), seed=cfg.pretrain_seed).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=tspec.lr, betas=(0.9, 0.95), weight_decay=0.01)
        rng = np.random.default_rng(cfg.pretrain_seed)
        order = rng.permutation(len(blocks))
        pos, losses = 0, []
        t0 = time.perf_counter()
        model.train()
        for step in range(tspec.steps):
            if pos + tspec.batch > len(order):
                order, pos = rng.permutation(len(blocks)), 0
            x = torch.from_numpy(blocks[order[pos:pos + tspec.batch]]).to(device)
            pos += tspec.batch
            for g in opt.param_groups:
                g["lr"] = lr_at(step, tspec)
            loss = model(input_ids=x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if (step + 1) % max(1, tspec.steps // 5) == 0 or step + 1 == tspec.steps:
                bench.log("  pretrain %s step %d/%d loss %.3f (%.0f tok/s)" % (
                    role, step + 1, tspec.steps, float(np.mean(losses[-10:])),
                    (step + 1) * tspec.batch * cfg.seq_len / (time.perf_counter() - t0)))
        model.save_pretrained(out, safe_serialization=True)
        (out / "train_log.json").write_text(json.dumps({
            "blocks": int(len(blocks)), "epochs": tspec.steps * tspec.batch / max(1, len(blocks)), "losses": losses,
            "params": int(sum(p.numel() for p in model.parameters())), "seconds": time.perf_counter() - t0}) + "\n")

    return bench.cached("model-%s" % role, bench.model_key(role), build)
