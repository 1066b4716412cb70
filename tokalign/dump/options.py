"""What a dump is asked to do (:class:`DumpOptions`) and what it did (:class:`DumpSummary`), plus the
names the options accept."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from ..errors import TokalignError
from ..models.loading import MODEL_DTYPES

TEMPLATES = ("plain", "chat")
SPECIAL_TOKEN_POLICIES = ("auto", "add", "none")
STORE_DTYPES = ("bfloat16", "float16", "float32")


@dataclass
class DumpOptions:
    """Options of :func:`tokalign.dump.dump_logits` (the ``tokalign dump-logits`` flags).

    Attributes:
        top_k: K, slots per position.
        template: ``plain`` or ``chat`` (a :class:`tokalign.corpus.Corpus` given to the dump keeps its own).
        mask_instruction: loss mask on assistant tokens (+ their end-of-turn token) only; else every token.
        max_length, skip_long: truncate longer sequences (counted) or skip them (counted).
        batch_tokens: padded tokens per forward batch (length-bucketed).
        dtype: model compute dtype (:data:`MODEL_DTYPES`; a loaded model keeps its own).
        store_dtype: stored ``topk_logits`` dtype (:data:`STORE_DTYPES`).
        special_tokens: ``auto`` (see :func:`tokalign.dump.resolve_special_tokens`), ``add`` or ``none``.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:N`` or a torch device.
        rank, world_size: default ``$RANK`` / ``$WORLD_SIZE`` (torchrun); rank r writes ``part-0000r`` with the
            corpus items ``r, r + world_size, ...``.
        overwrite: rewrite this rank's part even when complete (an incomplete one is resumed otherwise).
        flush_tokens: commit (durably) after at least this many tokens (always at a batch boundary).
        trust_remote_code: allow model / tokenizer code from the model repository.
        allow_pickle: load a model folder that has only pickled weights (``pytorch_model.bin``).
        skip_bad: skip and count malformed corpus lines.
        allow_empty: write an empty store when there is nothing to dump, instead of failing.
        tokenizer_dir: folder of alias-named tokenizer directories.
        progress: tqdm bar (and transformers' loading bars).
        storage_options: fsspec options of the store URL.
        schema_overrides: :class:`tokalign.store.StoreSchema` fields to set instead of the dump's own.
    """

    top_k: int = 10
    template: str = "plain"
    mask_instruction: bool = False
    max_length: int = 2048
    skip_long: bool = False
    batch_tokens: int = 16384
    dtype: str = "bf16"
    store_dtype: str = "bfloat16"
    special_tokens: str = "auto"
    device: Any = "auto"
    rank: Optional[int] = None
    world_size: Optional[int] = None
    overwrite: bool = False
    flush_tokens: int = 65536
    trust_remote_code: bool = False
    allow_pickle: bool = False
    skip_bad: bool = False
    allow_empty: bool = False
    tokenizer_dir: Optional[str] = None
    progress: bool = True
    storage_options: Optional[Dict[str, Any]] = None
    schema_overrides: Optional[Mapping[str, Any]] = None

    def check(self) -> None:
        """TokalignError naming the first bad value (before anything is loaded)."""
        if self.top_k < 1:
            raise TokalignError("top_k must be >= 1, got %r" % (self.top_k,))
        if self.store_dtype not in STORE_DTYPES:
            raise TokalignError("store dtype must be one of %s, not %r" % (", ".join(STORE_DTYPES), self.store_dtype))
        if self.template not in TEMPLATES:
            raise TokalignError("template must be one of %s, not %r" % (", ".join(TEMPLATES), self.template))
        if self.dtype not in MODEL_DTYPES:
            raise TokalignError("dtype must be one of %s, not %r" % (", ".join(sorted(MODEL_DTYPES)), self.dtype))
        if self.batch_tokens < 1:
            raise TokalignError("batch_tokens must be >= 1, got %r" % (self.batch_tokens,))


@dataclass
class DumpSummary:
    """What one rank did (``to_dict()`` is the CLI's ``--json`` report)."""

    out: str
    part: str
    rank: int
    world_size: int
    model: str
    tokenizer: str
    device: str
    dtype: str
    k: int
    model_vocab_size: int
    tokenizer_vocab_size: int
    corpus_items: int = 0          # items of the whole corpus (all ranks)
    rank_items: int = 0            # items in this rank's slice
    samples: int = 0               # samples this rank's part holds when done (all runs)
    samples_written: int = 0       # written by this run
    samples_already_done: int = 0  # committed by an earlier, interrupted run
    tokens_written: int = 0
    truncated: int = 0
    skipped_long: int = 0
    skipped_empty: int = 0
    skipped_bad: int = 0           # malformed corpus lines (only with skip_bad)
    invalid_samples: int = 0       # samples with NaN/Inf written by this run (stored with valid = False)
    nonfinite_values: int = 0
    batches: int = 0
    seconds: float = 0.0
    tokens_per_s: float = 0.0
    resumed: bool = False
    complete: bool = False
    invalid_ids: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """The one-line summary printed at the end of a dump."""
        done = " (%d already done)" % self.samples_already_done if self.samples_already_done else ""
        return ("dump-logits %s/%s: %d samples, %d tokens written%s in %.1fs (%.0f tok/s); truncated %d, skipped "
                "%d long, %d empty, %d bad; %d invalid (NaN/Inf) samples%s"
                % (self.out, self.part, self.samples_written, self.tokens_written, done, self.seconds,
                   self.tokens_per_s, self.truncated, self.skipped_long, self.skipped_empty, self.skipped_bad,
                   self.invalid_samples, (": " + ", ".join(self.invalid_ids[:5])) if self.invalid_ids else ""))
