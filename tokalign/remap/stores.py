"""Store-to-store remap: the engine behind ``tokalign remap`` (docs/remap.md, "Store to store").

The output follows the pivot store: samples in the order given (the CLI passes the pivot store's order),
each with the pivot's ``input_ids`` / ``loss_mask`` and the source distributions remapped onto them.
Per batch of about ``batch_tokens`` pivot positions:

1. **read** the pivot rows (``input_ids``, ``loss_mask``; the pivot top-k too for ``inside="pivot"``) and
   the joined source rows (``input_ids``, top-k ids / logits, ``logsumexp``). Stores are read chunk by
   chunk through a cache (``StoreReader.gather``) that knows, from the whole plan, which later batches need
   each chunk: a chunk is decoded once as long as the source order is close to the pivot order (two dumps
   sorted by their own token counts are), and any order still works (chunks are then re-read when the
   cache is full);
2. **align** every pair in C++ (``_core.remap_align_batch``, OpenMP over samples): exactly
   :func:`tokalign.align.span` on the texts the two id sequences spell (token bytes, one character per
   byte), including the text diff + DTW for texts that differ (SentencePiece's dummy-prefix space,
   different templates, truncation);
3. **remap** with the C++ kernel (:func:`tokalign.remap.remap_batch`);
4. **ce**: ``token_ce`` is the source's own NLL carried through the groups (:mod:`tokalign.remap.ce`), the CE
   under the remapped distribution goes to ``remap_ce`` (when the output declares it);
5. **write** one packed append (``StoreWriter.append_packed``).

Three threads overlap the stages: a reader thread reads batch i + 1 and a writer thread appends batch
i - 1 (in order, through a bounded queue; its errors are raised in the caller) while the calling thread
aligns, remaps and computes the CE fields of batch i (the C++ stages release the GIL, and so does the
store's compression). The writer commits as it does when called directly, so an interrupted run resumes
the same way. The results are identical to aligning and remapping each sample on its own
(tests/test_remap_store.py).
"""
from __future__ import annotations

import queue
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import TokalignError
from .kernel import KIND_NAMES, PreparedMap, remap_batch
from .ce import REMAP_CE_FIELD, source_nll_by_group, wants_remap_ce
from ..store.schema import ExtraArray

#: pivot positions per batch (align, remap and write work on whole batches)
BATCH_TOKENS = 1 << 17
#: decoded chunks kept for later batches (bytes; the pivot reader gets a quarter of it)
CACHE_BYTES = 512 << 20
SOURCE_FIELDS = ("input_ids", "topk_ids", "topk_logits", "logsumexp", "token_ce")
#: per-position extras the output of :func:`remap_stores` must declare (its provenance); the diagnostic
#: :data:`REMAP_CE_EXTRA` is optional (``tokalign remap`` declares it)
REMAP_EXTRAS = (ExtraArray("group_kind", "uint8"), ExtraArray("retained_mass", "float32"),
                ExtraArray("source_position", "int32"), ExtraArray("remap_valid", "bool"))
REMAP_CE_EXTRA = ExtraArray(REMAP_CE_FIELD, "float32")
PIVOT_TOPK_FIELDS = ("topk_ids", "topk_logits", "logsumexp")
ALIGN_PATHS = ("same_text", "text_diff", "text_diff_dtw", "empty")
_TIE = {"fusechat": 0, "pivot_first": 0, "source_first": 1}


# ---- token bytes ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TokenBytes:
    """Canonical bytes of every token id of a vocabulary, packed: token t is ``data[offsets[t]:offsets[t+1]]``."""

    data: np.ndarray  # uint8 [B]
    offsets: np.ndarray  # int64 [V + 1]

    @classmethod
    def from_texts(cls, texts: Sequence[bytes]) -> "TokenBytes":
        offsets = np.zeros(len(texts) + 1, np.int64)
        np.cumsum(np.fromiter((len(t) for t in texts), np.int64, count=len(texts)), out=offsets[1:])
        return cls(np.frombuffer(b"".join(texts), np.uint8), offsets)

    @classmethod
    def of(cls, tokenizer: Any) -> "TokenBytes":
        """From a :class:`tokalign.tokenize.Tokenizer` (``token_texts()``)."""
        return cls.from_texts(tokenizer.token_texts())

    def __len__(self) -> int:
        return int(self.offsets.shape[0]) - 1


def align_packed(pivot_bytes: TokenBytes, pivot_ids: np.ndarray, pivot_offsets: np.ndarray, source_bytes: TokenBytes,
                 source_ids: np.ndarray, source_offsets: np.ndarray, *, max_diff: int = 2048,
                 tie_break: str = "fusechat", threads: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Groups of many pairs of id sequences (ragged: ``ids[offsets[k]:offsets[k+1]]``), each exactly
    ``align.span(..., pivot_text=, source_text=).groups`` on the texts the ids spell.

    Returns (groups int64 [G, 4], group_offsets int64 [S + 1], path uint8 [S]: index into :data:`ALIGN_PATHS`).
    Raises TokalignError naming the sequence ("sequence k: ...") for ids outside a tokenizer.
    """
    from .._native import _core, call

    if tie_break not in _TIE:
        raise TokalignError("tie_break must be one of %s, got %r" % (", ".join(sorted(_TIE)), tie_break))
    return call(_core.remap_align_batch, pivot_bytes.data, pivot_bytes.offsets,
                np.ascontiguousarray(pivot_ids, np.int32), np.ascontiguousarray(pivot_offsets, np.int64),
                source_bytes.data, source_bytes.offsets, np.ascontiguousarray(source_ids, np.int32),
                np.ascontiguousarray(source_offsets, np.int64), int(max_diff), _TIE[tie_break], int(threads))


def remapped_token_ce_packed(topk_ids: np.ndarray, topk_logits: np.ndarray, retained_mass: np.ndarray,
                             valid: np.ndarray, input_ids: np.ndarray, offsets: np.ndarray,
                             threads: int = 0) -> np.ndarray:
    """The ``remap_ce`` diagnostic of concatenated sequences (``offsets`` [S + 1]): -log q(next pivot token) when
    kept, else -log(max(1 - retained mass, 1e-6)); 0 at each sequence's last position and where invalid. C++
    (``_core.remapped_token_ce``, OpenMP over sequences)."""
    from .._native import _core, call

    return call(_core.remapped_token_ce, np.ascontiguousarray(topk_ids, np.int32),
                np.ascontiguousarray(topk_logits, np.float32), np.ascontiguousarray(retained_mass, np.float32),
                np.ascontiguousarray(valid, np.uint8), np.ascontiguousarray(input_ids, np.int32),
                np.ascontiguousarray(offsets, np.int64), int(threads))


# ---- the store-to-store remap ------------------------------------------------------------------------------

@dataclass
class RemapTotals:
    """Counts and timings of a store-to-store remap."""

    samples: int = 0
    positions: int = 0
    valid: int = 0
    masked: int = 0
    nonfinite: int = 0
    empty: int = 0
    retained: float = 0.0
    kinds: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(KIND_NAMES.values(), 0))
    align_paths: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(ALIGN_PATHS, 0))
    #: wall seconds per stage ("ce": ``token_ce`` and ``remap_ce``). With ``prefetch`` "read" runs in the reader
    #: thread and "write" (``append_packed`` + the final flush) in the writer thread, overlapping "align",
    #: "kernel" and "ce"; "wait_read" / "wait_write" are the calling thread waiting for them
    seconds: Dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("read", "wait_read", "align", "kernel", "ce", "write", "wait_write", "total"), 0.0))
    #: process CPU seconds (all threads) during each stage and in all ("total"). Without ``prefetch`` every
    #: stage runs alone, so the figures are exact per stage; with it the background stages overlap the
    #: others: "read" and "write" stay 0 (the store's codecs run in threads of their own, so no single
    #: thread's clock measures them) and "align" / "kernel" / "ce" include what the background threads did
    #: meanwhile.
    cpu_seconds: Dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("read", "align", "kernel", "ce", "write", "total"), 0.0))
    chunks_read: Dict[str, int] = field(default_factory=dict)

    @property
    def mean_retained_mass(self) -> float:
        return self.retained / self.valid if self.valid else 0.0

    @property
    def positions_per_s(self) -> float:
        return self.positions / self.seconds["total"] if self.seconds["total"] > 0 else 0.0


def token_budget_batches(lengths: np.ndarray, batch_tokens: int) -> List[np.ndarray]:
    """Index arrays of consecutive samples holding at most ``batch_tokens`` tokens each (a longer sample forms
    its own batch)."""
    out: List[np.ndarray] = []
    start, acc = 0, 0
    for i, n in enumerate(np.asarray(lengths, np.int64).tolist()):
        if i > start and acc + n > batch_tokens:
            out.append(np.arange(start, i))
            start, acc = i, 0
        acc += n
    if start < len(lengths):
        out.append(np.arange(start, len(lengths)))
    return out


def _sample_error(exc: TokalignError, ids: Sequence[str]) -> TokalignError:
    """Replaces "sequence k" of a batch-level message by the sample id."""
    msg = str(exc)
    m = re.search(r"sequence (\d+)", msg)
    if m and int(m.group(1)) < len(ids):
        msg = msg[:m.start()] + "sample %r" % ids[int(m.group(1))] + msg[m.end():]
    return TokalignError(msg)


class _WriteBehind:
    """Runs ``write(item)`` for queued items in order in one background thread.

    ``put`` blocks while ``depth`` items wait (bounded memory). The first exception of ``write`` stops the
    writing (later items are dropped) and is raised by the next ``put`` or by ``close``.
    """

    _DONE = object()

    def __init__(self, write: Callable[[Any], None], depth: int = 2):
        self._write = write
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=max(1, int(depth)))
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="remap-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if self._error is None:
                try:
                    self._write(item)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item: Any) -> None:
        self._raise()
        self._queue.put(item)  # never blocks for ever: the thread keeps draining after an error

    def close(self) -> None:
        """Waits for the queued items; raises the writing error if there was one."""
        self._queue.put(self._DONE)
        self._thread.join()
        self._raise()


def remap_stores(pivot: Any, source: Any, vocab_map: PreparedMap, writer: Any, sample_ids: Sequence[str],
                 pivot_bytes: TokenBytes, source_bytes: TokenBytes, *, k_out: int = 10, inside: str = "onehot",
                 one_to_many: str = "last", threads: int = 0, batch_tokens: int = BATCH_TOKENS,
                 cache_bytes: int = CACHE_BYTES, prefetch: bool = True, max_diff: int = 2048,
                 progress: Optional[Callable[[int], None]] = None) -> RemapTotals:
    """Remap ``sample_ids`` (present in both stores) from ``source`` onto ``pivot`` and append them to ``writer``.

    ``pivot`` / ``source``: :class:`tokalign.store.StoreReader`; ``vocab_map``: a prepared (source x pivot)
    map; ``writer``: a :class:`tokalign.store.StoreWriter` of kind "remapped" with the extras
    :data:`REMAP_EXTRAS` and optionally :data:`REMAP_CE_EXTRA` (the caller closes it);
    ``token_ce`` is :func:`tokalign.remap.ce.source_nll_by_group`; ``pivot_bytes`` /
    ``source_bytes``: the two tokenizers' token bytes. ``prefetch``: read ahead and write behind in two
    background threads (False: every stage in the calling thread, one after the other). ``progress(n)`` is
    called with the samples done per batch (when the batch is remapped; the writer may still be behind).
    """
    t_start, c_start = time.perf_counter(), time.process_time()
    totals = RemapTotals()
    ids = [str(s) for s in sample_ids]
    if not ids:
        return totals
    p_idx = np.fromiter((pivot.index_of(s) for s in ids), np.int64, count=len(ids))
    s_idx = np.fromiter((source.index_of(s) for s in ids), np.int64, count=len(ids))
    batches = token_budget_batches(pivot.lengths[p_idx], int(batch_tokens))
    p_fields = ["input_ids", "loss_mask"] + (list(PIVOT_TOPK_FIELDS) if inside == "pivot" else [])
    p_gather = pivot.gather(p_fields, [p_idx[b] for b in batches], cache_bytes=cache_bytes // 4)
    s_gather = source.gather(SOURCE_FIELDS, [s_idx[b] for b in batches], cache_bytes=cache_bytes)
    sec, cpu = totals.seconds, totals.cpu_seconds
    remap_ce = wants_remap_ce(writer)

    def clock() -> float:  # process CPU, only meaningful per stage when the stages do not overlap
        return 0.0 if prefetch else time.process_time()

    def read(b: int):
        t0, c0 = time.perf_counter(), clock()
        out = p_gather.gather(b), s_gather.gather(b)
        sec["read"] += time.perf_counter() - t0
        cpu["read"] += clock() - c0
        return out

    def write(item) -> None:
        t0, c0 = time.perf_counter(), clock()
        if item is None:
            writer.flush()
        else:
            batch_ids, pv, p_off, res, ce, extra = item
            writer.append_packed(batch_ids, np.diff(p_off), {
                "input_ids": pv["input_ids"], "loss_mask": pv["loss_mask"], "topk_ids": res.topk_ids,
                "topk_logits": res.topk_logits, "logsumexp": res.logsumexp, "token_ce": ce,
                "group_kind": res.group_kind, "retained_mass": res.retained_mass,
                "source_position": res.source_position, "remap_valid": res.valid, **extra})
        sec["write"] += time.perf_counter() - t0
        cpu["write"] += clock() - c0

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="remap-read") if prefetch else None
    behind = _WriteBehind(write) if prefetch else None
    try:
        pending = pool.submit(read, 0) if pool else None
        for b, rows in enumerate(batches):
            t0 = time.perf_counter()
            (pv, p_off), (sv, s_off) = pending.result() if pool else read(b)
            t1, c1 = time.perf_counter(), time.process_time()
            sec["wait_read"] += t1 - t0
            if pool and b + 1 < len(batches):
                pending = pool.submit(read, b + 1)
            batch_ids = [ids[i] for i in rows.tolist()]

            try:
                groups, g_off, path = align_packed(pivot_bytes, pv["input_ids"], p_off, source_bytes, sv["input_ids"],
                                                   s_off, max_diff=max_diff, threads=threads)
            except TokalignError as exc:
                raise _sample_error(exc, batch_ids) from None
            t2, c2 = time.perf_counter(), time.process_time()
            sec["align"] += t2 - t1
            cpu["align"] += c2 - c1
            pivot_topk = (pv["topk_ids"], pv["topk_logits"], pv["logsumexp"]) if inside == "pivot" else None
            try:
                res = remap_batch(groups, sv["topk_ids"], sv["topk_logits"], sv["logsumexp"], vocab_map,
                                  pv["input_ids"], group_offsets=g_off, source_offsets=s_off, pivot_offsets=p_off,
                                  pivot_topk=pivot_topk, k_out=k_out, inside=inside, one_to_many=one_to_many,
                                  num_threads=threads)
            except TokalignError as exc:
                raise _sample_error(exc, batch_ids) from None
            t3, c3 = time.perf_counter(), time.process_time()
            sec["kernel"] += t3 - t2
            cpu["kernel"] += c3 - c2

            # the CE fields here, not in the writer thread: writing is the slowest stage, this one waits for it
            ce = source_nll_by_group(sv["token_ce"], s_off, groups, g_off, p_off, source_lse=sv["logsumexp"],
                                     threads=threads)
            extra = {REMAP_CE_FIELD: remapped_token_ce_packed(res.topk_ids, res.topk_logits, res.retained_mass,
                                                              res.valid, pv["input_ids"], p_off, threads=threads)
                     } if remap_ce else {}
            t4, c4 = time.perf_counter(), time.process_time()
            sec["ce"] += t4 - t3
            cpu["ce"] += c4 - c3

            item = (batch_ids, pv, p_off, res, ce, extra)
            if behind:
                behind.put(item)
                sec["wait_write"] += time.perf_counter() - t4
            else:
                write(item)
            _count(totals, res, path, len(batch_ids), int(p_off[-1]))
            if progress is not None:
                progress(len(batch_ids))
        if behind:
            t0 = time.perf_counter()
            behind.put(None)  # the flush, after every append
            behind, closing = None, behind
            closing.close()
            sec["wait_write"] += time.perf_counter() - t0
        else:
            write(None)
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)
        if behind:  # an error in the calling thread: let the writer finish what it has (it commits as usual)
            try:
                behind.close()
            except BaseException:  # noqa: BLE001 - the calling thread's error is the one to report
                pass
    totals.chunks_read = {"pivot": p_gather.chunks_read, "source": s_gather.chunks_read,
                          "pivot_reread": p_gather.chunks_reread, "source_reread": s_gather.chunks_reread}
    sec["total"] = time.perf_counter() - t_start
    cpu["total"] = time.process_time() - c_start
    return totals


def _count(totals: RemapTotals, res: Any, path: np.ndarray, n_samples: int, n_positions: int) -> None:
    """Adds one batch's counts (vectorised: a few passes over the batch's arrays)."""
    kind_counts = np.bincount(res.group_kind, minlength=8).tolist()
    for code, name in KIND_NAMES.items():
        totals.kinds[name] += kind_counts[code]
    for code, n in enumerate(np.bincount(path, minlength=len(ALIGN_PATHS)).tolist()):
        totals.align_paths[ALIGN_PATHS[code]] += n
    totals.samples += n_samples
    totals.positions += n_positions
    totals.valid += int(np.count_nonzero(res.valid))
    totals.retained += float(np.asarray(res.retained_mass, np.float64)[res.valid].sum())
    for key in ("masked", "nonfinite", "empty"):
        setattr(totals, key, getattr(totals, key) + int(res.counts[key]))
