"""Dumping a causal LM's top-k next-token distributions over a corpus into a store (``tokalign.dump``).

:func:`dump_logits` (``run.py``) is the library entry point of ``tokalign dump-logits`` (docs/dump.md); it takes
a :class:`DumpOptions` (``options.py``, with :class:`DumpSummary`). ``samples.py``: corpus items -> tokenized
samples, length order, :func:`batch_ranges`; ``forward.py``: the forward pass and its on-device statistics;
model loading: :mod:`tokalign.models` (re-exported here: :func:`load_causal_lm`, :func:`torch_device`).
"""
from .forward import ROW_CHUNK_ELEMENTS, forward_batch, topk_statistics
from ..models.loading import load_causal_lm, model_output_size, torch_device
from .options import MODEL_DTYPES, SPECIAL_TOKEN_POLICIES, STORE_DTYPES, TEMPLATES, DumpOptions, DumpSummary
from .run import dump_logits
from .samples import (PreparedSample, assistant_token_mask, batch_ranges, length_order, prepare_samples,
                      resolve_special_tokens)

__all__ = ["DumpOptions", "DumpSummary", "MODEL_DTYPES", "PreparedSample", "ROW_CHUNK_ELEMENTS",
           "SPECIAL_TOKEN_POLICIES", "STORE_DTYPES", "TEMPLATES", "assistant_token_mask", "batch_ranges",
           "dump_logits", "forward_batch", "length_order", "load_causal_lm", "model_output_size", "prepare_samples",
           "resolve_special_tokens", "topk_statistics", "torch_device"]
