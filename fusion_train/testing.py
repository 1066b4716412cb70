"""In-memory stores and a tiny model for tests, examples and benchmarks.

:class:`InMemoryReader` satisfies :class:`fusion_train.fuse.data.StoreReader` (``len``, ``[i]``,
``sample_ids``, ``by_id``, ``attrs``) over a list of sample dicts; :func:`random_samples` builds sample
dicts with the docs/architecture.md contract from random teacher logits.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

# the tiny model lives with the other shared test builders; re-exported for the fusion tests
from tokalign.testing import tiny_llama

__all__ = ["InMemoryReader", "random_samples", "remapped_like", "tiny_llama"]


class InMemoryReader:
    """A store reader over a list of sample dicts."""

    def __init__(self, samples: Sequence[Mapping[str, Any]], attrs: Optional[Mapping[str, Any]] = None) -> None:
        self.samples = list(samples)
        self.attrs = dict(attrs or {})
        self._index = {s["sample_id"]: i for i, s in enumerate(self.samples)}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        return self.samples[index]

    @property
    def sample_ids(self) -> List[str]:
        return [s["sample_id"] for s in self.samples]

    def by_id(self, sample_id: str) -> Dict[str, Any]:
        return self.samples[self._index[sample_id]]


def _teacher_fields(full: np.ndarray, input_ids: np.ndarray, loss_mask: np.ndarray, k: int, log_probs: bool):
    """Top-k fields of one sample from full teacher logits ``[L, V]`` (float64 math)."""
    lse = np.log(np.exp(full - full.max(-1, keepdims=True)).sum(-1)) + full.max(-1)
    order = np.argsort(-full, axis=-1, kind="stable")[:, :k]
    top = np.take_along_axis(full, order, -1)
    token_ce = np.zeros(len(input_ids), dtype=np.float64)
    token_ce[:-1] = lse[:-1] - full[np.arange(len(input_ids) - 1), input_ids[1:]]
    # seq_ce: mean CE over positions that predict a response token
    predicts = np.zeros_like(loss_mask)
    predicts[:-1] = loss_mask[1:]
    seq_ce = float(token_ce[predicts].mean()) if predicts.any() else float(token_ce[:-1].mean())
    if log_probs:
        top, lse = top - lse[:, None], np.zeros_like(lse)
    return {
        "topk_ids": order.astype(np.int32),
        "topk_logits": top.astype(np.float32),
        "logsumexp": lse.astype(np.float32),
        "token_ce": token_ce.astype(np.float32),
        "seq_ce": np.float32(seq_ce),
    }


def random_samples(
    n: int,
    vocab: int,
    k: int,
    *,
    seed: int = 0,
    min_len: int = 12,
    max_len: int = 24,
    scale: float = 3.0,
    prefix: str = "s",
) -> List[Dict[str, Any]]:
    """``n`` pivot-store samples with random token ids, an instruction prefix (loss_mask False) and
    top-k targets from random teacher logits ``scale * N(0, 1)``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(min_len, max_len + 1))
        input_ids = rng.integers(0, vocab, size=length).astype(np.int32)
        loss_mask = np.zeros(length, dtype=bool)
        loss_mask[length // 3 :] = True
        full = rng.standard_normal((length, vocab)) * scale
        sample = {"sample_id": "%s%d" % (prefix, i), "input_ids": input_ids, "loss_mask": loss_mask}
        sample.update(_teacher_fields(full, input_ids.astype(np.int64), loss_mask, k, log_probs=False))
        out.append(sample)
    return out


def remapped_like(
    pivot_samples: Sequence[Mapping[str, Any]],
    vocab: int,
    k: int,
    *,
    seed: int = 1,
    scale: float = 3.0,
    unmapped_rate: float = 0.1,
) -> List[Dict[str, Any]]:
    """A remapped source store for the same samples: pivot token ids, log-probs with lse = 0,
    a fraction ``unmapped_rate`` of positions without any valid slot and some invalid slots."""
    rng = np.random.default_rng(seed)
    out = []
    for s in pivot_samples:
        input_ids = np.asarray(s["input_ids"])
        length = len(input_ids)
        full = rng.standard_normal((length, vocab)) * scale
        fields = _teacher_fields(full, input_ids.astype(np.int64), np.asarray(s["loss_mask"]), k, log_probs=True)
        unmapped = rng.random(length) < unmapped_rate
        fields["topk_ids"][unmapped] = -1
        fields["topk_logits"][unmapped] = 0.0
        ragged = rng.random(length) < 0.2  # last slot invalid: fewer than k mapped candidates
        fields["topk_ids"][ragged, -1] = -1
        fields["topk_logits"][ragged, -1] = 0.0
        out.append({"sample_id": s["sample_id"], "input_ids": input_ids, "loss_mask": s["loss_mask"], **fields})
    return out
