"""Fusion training data: a dataset joining a pivot store with remapped source stores by sample id,
and a collator that pads to sparse ``[B, L, K]`` targets (never a dense ``[B, L, V]``).

Readers only need the minimal protocol of :class:`StoreReader` (``tokalign.store`` readers satisfy
it; tests pass in-memory fakes). Sample dicts follow docs/architecture.md: ``sample_id``,
``input_ids`` int32 [L], ``loss_mask`` bool [L], ``topk_ids`` int32 [L, K] (-1 invalid),
``topk_logits`` float32 [L, K], ``logsumexp`` float32 [L] (``p = exp(logit - lse)``; remapped
stores hold log-probs with lse = 0), ``token_ce`` float32 [L], ``seq_ce`` float32. Position t's
distribution predicts token t+1, as a causal LM's logits do, so targets line up with the
student's logits without shifting.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence

import numpy as np
import torch

from tokalign.errors import TokalignError

__all__ = ["StoreReader", "FusionDataset", "FusionCollator", "store_fingerprint", "IGNORE_INDEX"]

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
ON_MISSING = ("error", "skip")
FUSION_POSITIONS = ("all", "response")


class StoreReader(Protocol):
    """What the dataset needs from a teacher store reader."""

    attrs: Mapping[str, Any]
    sample_ids: Sequence[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Dict[str, Any]: ...


def store_fingerprint(reader: StoreReader) -> Optional[str]:
    """The tokenizer fingerprint of the vocabulary a store's ``topk_ids`` live in.

    ``tokalign.store`` records it as ``tokenizer_fingerprint`` (a remapped store holds the pivot's,
    with its source model's fingerprint under ``options`` as provenance); ``fingerprint`` is accepted
    for plain in-memory readers. None when absent.
    """
    schema = getattr(reader, "schema", None)
    if getattr(schema, "tokenizer_fingerprint", None):
        return schema.tokenizer_fingerprint
    attrs = getattr(reader, "attrs", None) or {}
    return attrs.get("tokenizer_fingerprint") or attrs.get("fingerprint")


def _short(fp: Optional[str]) -> str:
    return "none" if fp is None else fp[:16]


class FusionDataset(torch.utils.data.Dataset):
    """Samples of the pivot store joined with the same samples of every source store.

    Args:
        pivot: reader of the pivot model's own store (defines the samples, their order, the
            token ids and the loss mask).
        sources: readers of source stores remapped to the pivot vocabulary and tokenization.
        names: display names, ``[pivot, *sources]`` (default ``pivot``, ``source0``, ...).
        on_missing: a pivot sample absent from a source store: ``"error"`` (TokalignError naming
            the sample and store) or ``"skip"`` (dropped, counted in :attr:`skipped`).
        expected_fingerprint: fingerprint of the student model's tokenizer; the pivot store
            must match it, and every source store must match the pivot store (vocabulary check).
        vocab_size: the student's vocabulary size; target ids at or above it are rejected.
        max_length: truncate samples to this many tokens.

    Items: ``sample_id``, ``input_ids`` int64 [L], ``loss_mask`` bool [L], ``teachers``: a list
    (pivot first) of dicts with ``topk_ids``, ``topk_logits``, ``logsumexp``, ``token_ce``, ``seq_ce``.
    """

    def __init__(
        self,
        pivot: StoreReader,
        sources: Sequence[StoreReader] = (),
        *,
        names: Optional[Sequence[str]] = None,
        on_missing: str = "error",
        expected_fingerprint: Optional[str] = None,
        vocab_size: Optional[int] = None,
        max_length: Optional[int] = None,
    ) -> None:
        if on_missing not in ON_MISSING:
            raise TokalignError("on_missing must be one of %s, got %r" % (", ".join(ON_MISSING), on_missing))
        self.readers = [pivot, *sources]
        self.names = list(names) if names is not None else ["pivot"] + ["source%d" % i for i in range(len(sources))]
        if len(self.names) != len(self.readers):
            raise TokalignError(
                "got %d store names for %d stores (pivot + sources)" % (len(self.names), len(self.readers))
            )
        self.vocab_size = vocab_size
        self.max_length = max_length
        self._check_fingerprints(expected_fingerprint)

        pivot_ids = list(pivot.sample_ids)
        if len(pivot_ids) != len(pivot):
            raise TokalignError(
                "pivot store %s lists %d sample ids for %d samples" % (self.names[0], len(pivot_ids), len(pivot))
            )
        source_index = [self._index(r, n) for r, n in zip(sources, self.names[1:])]
        rows: List[List[int]] = []
        self.skipped = 0
        self.missing_by_store = {n: 0 for n in self.names[1:]}
        for i, sid in enumerate(pivot_ids):
            row = [i]
            for index, name in zip(source_index, self.names[1:]):
                j = index.get(sid)
                if j is None:
                    self.missing_by_store[name] += 1
                    if on_missing == "error":
                        raise TokalignError(
                            "sample %r of pivot store %s is missing from source store %s "
                            "(use on_missing='skip' / --on-missing skip to drop such samples)"
                            % (sid, self.names[0], name)
                        )
                    break
                row.append(j)
            if len(row) == len(self.readers):
                rows.append(row)
            else:
                self.skipped += 1
        if self.skipped:
            logger.warning(
                "skipped %d of %d pivot samples missing from a source store (%s)",
                self.skipped,
                len(pivot_ids),
                ", ".join("%s: %d" % kv for kv in self.missing_by_store.items() if kv[1]),
            )
        if not rows:
            raise TokalignError("no sample of pivot store %s is present in every source store" % self.names[0])
        self._rows = np.asarray(rows, dtype=np.int64)

    def _check_fingerprints(self, expected: Optional[str]) -> None:
        pivot_fp = store_fingerprint(self.readers[0])
        if expected is not None and pivot_fp is not None and pivot_fp != expected:
            raise TokalignError(
                "pivot store %s was dumped with tokenizer fingerprint %s but the model's tokenizer has %s: "
                "the store belongs to another vocabulary" % (self.names[0], _short(pivot_fp), _short(expected))
            )
        reference = pivot_fp or expected
        for reader, name in zip(self.readers[1:], self.names[1:]):
            fp = store_fingerprint(reader)
            if reference is not None and fp is not None and fp != reference:
                raise TokalignError(
                    "source store %s has vocabulary fingerprint %s but pivot store %s has %s: "
                    "remap the source store to the pivot vocabulary first (tokalign remap)"
                    % (name, _short(fp), self.names[0], _short(reference))
                )
            if fp is None or reference is None:
                logger.warning("cannot check the vocabulary of store %s: no fingerprint recorded", name)

    @staticmethod
    def _index(reader: StoreReader, name: str) -> Dict[str, int]:
        ids = list(reader.sample_ids)
        index = {sid: j for j, sid in enumerate(ids)}
        if len(index) != len(ids):
            raise TokalignError("store %s has duplicate sample ids" % name)
        return index

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        row = self._rows[index]
        samples = [reader[int(j)] for reader, j in zip(self.readers, row)]
        pivot = samples[0]
        sid = str(pivot["sample_id"])
        input_ids = np.asarray(pivot["input_ids"], dtype=np.int64)
        loss_mask = np.asarray(pivot["loss_mask"], dtype=bool)
        length = len(input_ids)
        if loss_mask.shape != (length,):
            raise TokalignError("pivot store %s sample %r: loss_mask shape %s != (%d,)" % (self.names[0], sid, loss_mask.shape, length))
        teachers = []
        for sample, name in zip(samples, self.names):
            if str(sample["sample_id"]) != sid:
                raise TokalignError("store %s returned sample %r for %r" % (name, sample["sample_id"], sid))
            teachers.append(self._teacher(sample, name, sid, input_ids))
        if self.max_length is not None and length > self.max_length:
            n = self.max_length
            input_ids, loss_mask = input_ids[:n], loss_mask[:n]
            teachers = [{k: (v[:n] if k not in ("seq_ce",) else v) for k, v in t.items()} for t in teachers]
        return {"sample_id": sid, "input_ids": input_ids, "loss_mask": loss_mask, "teachers": teachers}

    def _teacher(self, sample: Mapping[str, Any], name: str, sid: str, input_ids: np.ndarray) -> Dict[str, Any]:
        length = len(input_ids)
        ids = np.asarray(sample["topk_ids"], dtype=np.int32)
        logits = np.asarray(sample["topk_logits"], dtype=np.float32)
        lse = np.asarray(sample["logsumexp"], dtype=np.float32)
        token_ce = np.asarray(sample["token_ce"], dtype=np.float32)
        expected = {
            "topk_ids": (length, ids.shape[-1]) if ids.ndim == 2 else (length, "K"),
            "topk_logits": ids.shape if ids.ndim == 2 else (length, "K"),
            "logsumexp": (length,),
            "token_ce": (length,),
        }
        for field, arr in (("topk_ids", ids), ("topk_logits", logits), ("logsumexp", lse), ("token_ce", token_ce)):
            if tuple(arr.shape) != tuple(expected[field]):
                raise TokalignError(
                    "store %s sample %r: field %s has shape %s, expected %s for %d pivot tokens "
                    "(is the store on the pivot tokenization?)"
                    % (name, sid, field, tuple(arr.shape), tuple(expected[field]), length)
                )
        if "input_ids" in sample and not np.array_equal(np.asarray(sample["input_ids"], dtype=np.int64), input_ids):
            raise TokalignError(
                "store %s sample %r: input_ids differ from the pivot store's: the store is not on the pivot "
                "tokenization (remap it with tokalign remap)" % (name, sid)
            )
        if self.vocab_size is not None and ids.size and int(ids.max()) >= self.vocab_size:
            raise TokalignError(
                "store %s sample %r: top-k id %d is outside the model vocabulary (%d ids)"
                % (name, sid, int(ids.max()), self.vocab_size)
            )
        return {
            "topk_ids": ids,
            "topk_logits": logits,
            "logsumexp": lse,
            "token_ce": token_ce,
            "seq_ce": np.float32(sample["seq_ce"]),
        }


class FusionCollator:
    """Pads a list of :class:`FusionDataset` items into a training batch.

    Output: ``input_ids`` / ``attention_mask`` / ``labels`` ``[B, L]`` (labels ``-100`` on padding
    and where ``loss_mask`` is False, e.g. instructions), ``fusion_mask [B, L]`` bool (positions
    whose teacher target is trained on: all real tokens — FuseChat averages its fusion loss over
    ``attention_mask`` — or, with ``fusion_positions="response"``, positions that predict a
    response token, ``loss_mask[t + 1]``), and ``teachers``: a list (pivot first) of dicts
    ``ids`` int32 ``[B, L, K]`` (-1 invalid/padding), ``probs`` float32 ``[B, L, K]`` exact
    probabilities ``exp(logit - lse)``, ``mass`` ``[B, L]`` their sum (retained top-k mass),
    ``seq_ce [B]``, ``token_ce [B, L]`` (+inf on padding). ``L`` is the longest sample, rounded up
    to ``pad_to_multiple_of``. Work is numpy copies per sample plus whole-batch tensor ops.
    """

    def __init__(
        self,
        pad_token_id: int = 0,
        pad_to_multiple_of: Optional[int] = None,
        fusion_positions: str = "all",
    ) -> None:
        if fusion_positions not in FUSION_POSITIONS:
            raise TokalignError(
                "fusion_positions must be one of %s, got %r" % (", ".join(FUSION_POSITIONS), fusion_positions)
            )
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of
        self.fusion_positions = fusion_positions

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
        batch = len(features)
        lengths = [len(f["input_ids"]) for f in features]
        width = max(lengths)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            width = (width + m - 1) // m * m
        input_ids = np.full((batch, width), self.pad_token_id, dtype=np.int64)
        attention = np.zeros((batch, width), dtype=bool)
        loss_mask = np.zeros((batch, width), dtype=bool)
        for b, (f, n) in enumerate(zip(features, lengths)):
            input_ids[b, :n] = f["input_ids"]
            attention[b, :n] = True
            loss_mask[b, :n] = f["loss_mask"]
        labels = np.where(loss_mask, input_ids, IGNORE_INDEX)
        if self.fusion_positions == "all":
            fusion_mask = attention.copy()
        else:
            fusion_mask = np.zeros_like(loss_mask)
            fusion_mask[:, :-1] = loss_mask[:, 1:]
        n_teachers = len(features[0]["teachers"])
        teachers = [self._teacher([f["teachers"][t] for f in features], lengths, width) for t in range(n_teachers)]
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention.astype(np.int64)),
            "labels": torch.from_numpy(labels),
            "fusion_mask": torch.from_numpy(fusion_mask),
            "teachers": teachers,
        }

    @staticmethod
    def _teacher(items: Sequence[Mapping[str, Any]], lengths: Sequence[int], width: int) -> Dict[str, torch.Tensor]:
        batch, k = len(items), items[0]["topk_ids"].shape[-1]
        ids = np.full((batch, width, k), -1, dtype=np.int32)
        logits = np.zeros((batch, width, k), dtype=np.float32)
        lse = np.zeros((batch, width), dtype=np.float32)
        token_ce = np.full((batch, width), np.inf, dtype=np.float32)
        seq_ce = np.empty(batch, dtype=np.float32)
        for b, (item, n) in enumerate(zip(items, lengths)):
            ids[b, :n] = item["topk_ids"]
            logits[b, :n] = item["topk_logits"]
            lse[b, :n] = item["logsumexp"]
            token_ce[b, :n] = item["token_ce"]
            seq_ce[b] = item["seq_ce"]
        ids_t = torch.from_numpy(ids)
        logit_t = torch.from_numpy(logits)
        valid = ids_t >= 0
        # exact probabilities; the tail (1 - mass) is left to the loss's `tail` option
        probs = torch.where(valid, torch.exp(logit_t - torch.from_numpy(lse).unsqueeze(-1)), torch.zeros(()))
        return {
            "ids": ids_t,
            "probs": probs,
            "mass": probs.sum(-1),
            "seq_ce": torch.from_numpy(seq_ce),
            "token_ce": torch.from_numpy(token_ce),
        }
