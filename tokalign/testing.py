"""Builders shared by the tests and the benchmarks: realistic store pairs and tiny causal LMs over real
tokenizers. Nothing here runs a real model; torch and transformers are imported only by the model builders.

Stores (:func:`real_pair`, :func:`build_pair`, :func:`write_store`): real texts are tokenized with real
tokenizers exactly as ``tokalign dump-logits --template plain`` would (``tokalign.dump.prepare_samples``: BOS
added, assistant loss mask) and each store is written in the dump's order (longest first by its *own* token
count, so the two stores are ordered differently). The top-k distributions are random but shaped like a
model's: the gold next token on top most of the time, the other ids from a pool of frequent tokens, logits
sorted descending, ``logsumexp`` above the top-k (a tail).

Models (:func:`tiny_llama`, :func:`save_tiny_causal_lm`): seeded random Llama-style causal LMs small enough
for CPU tests, optionally saved with a real tokenizer's files so that a model directory is also a tokenizer.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

from tokalign.corpus import Corpus, CorpusItem

__all__ = ["POOL", "TOKENIZER_FILES", "build_pair", "random_topk", "read_items", "real_pair", "save_tiny_causal_lm",
           "tiny_llama", "tokenizer_size", "with_changed_texts", "write_store"]

POOL = 4096  # frequent-token pool (a power of two: odd strides visit distinct pool slots)


def read_items(paths: Sequence[Path], *, limit_chars: Optional[int] = None, seed: int = 0) -> List[CorpusItem]:
    """Corpus items of ``paths`` (plain template), shuffled with ``seed``, cut once ``limit_chars`` is reached."""
    items = list(Corpus([str(p) for p in paths], template="plain"))
    order = np.random.default_rng(seed).permutation(len(items))
    out, chars = [], 0
    for i in order:
        out.append(items[int(i)])
        chars += len(items[int(i)].text)
        if limit_chars is not None and chars >= limit_chars:
            break
    return out


def with_changed_texts(items: Sequence[CorpusItem], every: int, seed: int = 0) -> List[CorpusItem]:
    """Copies of ``items`` where every ``every``-th text is genuinely different (a word inserted, a phrase
    dropped, a line appended), as when the two stores were rendered with different templates."""
    rng = np.random.default_rng(seed)
    out = []
    for k, it in enumerate(items):
        if every and k % every == 0 and it.text:
            t = it.text
            cut = int(rng.integers(0, len(t)))
            kind = k // every % 3
            if kind == 0:
                t = t[:cut] + " extra words" + t[cut:]
            elif kind == 1:
                t = t[:cut] + t[cut + 15:]
            else:
                t = "<|im_start|>user\n" + t + "\n<|im_end|>"
            it = dataclasses.replace(it, text=t, assistant_spans=[])
        out.append(it)
    return out


def random_topk(rng: np.random.Generator, input_ids: np.ndarray, vocab: int, k: int, pool: np.ndarray):
    """(topk_ids int32 [L, K], topk_logits float32 [L, K] descending, logsumexp [L], token_ce [L])."""
    n = int(input_ids.shape[0])
    start = rng.integers(0, POOL, n)[:, None]
    stride = (2 * rng.integers(0, POOL // 2, n) + 1)[:, None]
    ids = pool[(start + stride * np.arange(k)[None, :]) % POOL].astype(np.int32)
    gold = np.empty(n, np.int64)
    gold[:-1] = input_ids[1:]
    gold[-1] = -1
    hit = (rng.random(n) < 0.6) & (gold >= 0)
    ids[hit, 0] = gold[hit]
    rare = rng.random((n, k)) < 0.05
    ids[rare] = rng.integers(0, vocab, int(rare.sum()))
    logits = -np.sort(-rng.normal(0.0, 2.5, (n, k)).astype(np.float32), axis=1)
    lse = (np.logaddexp.reduce(logits.astype(np.float64), axis=1) + rng.uniform(0.05, 1.0, n)).astype(np.float32)
    ce = (lse - np.where(hit, logits[:, 0], logits[:, -1] - 1.0)).astype(np.float32)
    ce[-1] = 0.0
    return ids, logits, lse, ce


def write_store(path: Path, tok, items: Sequence[CorpusItem], *, seed: int, k: int = 10,
                logits_dtype: str = "bfloat16", max_length: int = 2048, batch: int = 256,
                chunk_tokens: Optional[int] = None) -> Dict[str, int]:
    """Tokenize ``items`` like the dump, write a top-k store at ``path`` in the dump's order; returns counts."""
    from tokalign.dump import length_order, prepare_samples
    from tokalign.store import StoreSchema, StoreWriter

    samples, _ = prepare_samples(tok, list(items), mask_instruction=True, max_length=max_length, skip_long=False,
                                 add_special_tokens=True)
    samples = length_order(samples)
    rng = np.random.default_rng(seed)
    vocab = int(tok.vocab_size)
    every = np.concatenate([s.input_ids for s in samples])
    ids, counts = np.unique(every, return_counts=True)
    pool = ids[np.argsort(-counts, kind="stable")][:POOL]
    if pool.size < POOL:
        pool = np.concatenate([pool, rng.integers(0, vocab, POOL - pool.size)])
    extra = {} if chunk_tokens is None else {"chunk_tokens": chunk_tokens, "shard_tokens": chunk_tokens * 4}
    schema = StoreSchema(model=f"synthetic-{tok.name}", tokenizer_fingerprint=tok.fingerprint, vocab_size=vocab,
                         k=k, logits_dtype=logits_dtype, options={"tokenizer": tok.name, "template": "plain"},
                         **extra)
    w = StoreWriter.create(str(path), schema, overwrite=True)
    tokens = 0
    for lo in range(0, len(samples), batch):
        out = []
        for s in samples[lo:lo + batch]:
            tid, lg, lse, ce = random_topk(rng, s.input_ids, vocab, k, pool)
            out.append({"sample_id": s.sample_id, "input_ids": s.input_ids, "loss_mask": s.loss_mask,
                        "topk_ids": tid, "topk_logits": lg, "logsumexp": lse, "token_ce": ce})
            tokens += len(s.input_ids)
        w.append(out)
    w.close()
    return {"samples": len(samples), "tokens": tokens}


def build_pair(out_dir: Path, pivot_tok, source_tok, items: Sequence[CorpusItem], *, seed: int = 0,
               source_items: Optional[Iterable[CorpusItem]] = None, **options) -> Dict[str, Dict[str, int]]:
    """``out_dir/pivot.zarr`` and ``out_dir/source.zarr`` over the same items (``source_items``: other texts
    for the source side, same ids)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    p = write_store(out_dir / "pivot.zarr", pivot_tok, items, seed=seed, **options)
    s = write_store(out_dir / "source.zarr", source_tok, list(source_items) if source_items is not None else items,
                    seed=seed + 1, **options)
    return {"pivot": p, "source": s}


def real_pair(out_dir: Path, tokenizers_dir: Path, corpora_dir: Path, *, n_items: int, item_seed: int,
              change_every: int, change_seed: int, seed: int, chunk_tokens: int) -> Dict[str, object]:
    """The remap tests' world: openchat-3.5 pivot / internlm2 source stores (:func:`build_pair`, 300 tokens at
    most) over ``n_items`` real code/math and Chinese chat texts, every ``change_every``-th source text changed
    (:func:`with_changed_texts`), and their exact-match vocabulary map, saved in ``out_dir / "map"``.

    Returns dir, tp, ts (the tokenizers), map (the VocabMap) and pm (its prepared form)."""
    from tokalign import load_tokenizer, vocab
    from tokalign.remap import prepare_map

    tp = load_tokenizer("openchat", tokenizer_dir=tokenizers_dir)
    ts = load_tokenizer("internlm2", tokenizer_dir=tokenizers_dir)
    items = read_items([corpora_dir / "code_math.jsonl", corpora_dir / "chat_multiturn_zh.jsonl"],
                       seed=item_seed)[:n_items]
    build_pair(out_dir, tp, ts, items, source_items=with_changed_texts(items, every=change_every, seed=change_seed),
               seed=seed, max_length=300, chunk_tokens=chunk_tokens)
    m = vocab.em(tp, ts)
    m.save(out_dir / "map")
    return {"dir": out_dir, "tp": tp, "ts": ts, "map": m, "pm": prepare_map(m.matrix)}


# ---- tiny causal LMs ------------------------------------------------------------------------------
def tiny_llama(vocab: int = 320, hidden: int = 32, layers: int = 2, seed: int = 0, *,
               max_positions: int = 256, pad_token_id: Optional[int] = 0, bos_token_id: Optional[int] = 1,
               eos_token_id: Optional[int] = 2, **config_overrides: Any):
    """A randomly initialised ``LlamaForCausalLM`` small enough for CPU unit tests.

    ``config_overrides`` go to ``LlamaConfig`` (e.g. ``intermediate_size``); :func:`save_tiny_causal_lm` uses
    them to save tiny models whose vocabulary is a real tokenizer.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    kwargs: Dict[str, Any] = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        tie_word_embeddings=False,
    )
    kwargs.update(config_overrides)
    config = LlamaConfig(**kwargs)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "tokenizer.model")


def tokenizer_size(tokenizer_dir: Path) -> int:
    """len(tokenizer): number of ids including added tokens."""
    from tokalign import load_tokenizer

    return int(load_tokenizer(str(tokenizer_dir)).vocab_size)


def save_tiny_causal_lm(out_dir: Path, tokenizer_dir: Path, *, seed: int = 0, vocab_size: Optional[int] = None,
                        logit_scale: float = 40.0, padded_scale: float = 1.0) -> Path:
    """Save a seeded tiny ``LlamaForCausalLM`` (hidden 32, 2 layers, 4 heads / 2 KV heads, 512 positions).

    The model is :func:`tiny_llama` (plus the tokenizer files copied in), so it loads both as a model
    (``AutoModelForCausalLM.from_pretrained``, safetensors) and as a tokenizer (``tokalign.load_tokenizer``).
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
