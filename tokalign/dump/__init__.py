"""Dumping a causal LM's top-k next-token distributions over a corpus into a store (``tokalign.dump``).

:func:`dump_logits` is the library entry point of ``tokalign dump-logits`` (docs/dump.md).
"""
from .run import (MODEL_DTYPES, SPECIAL_TOKEN_POLICIES, STORE_DTYPES, TEMPLATES, DumpSummary, PreparedSample,
                  assistant_token_mask, dump_logits, forward_batch, length_order, load_causal_lm, model_output_size,
                  plan_batches, prepare_samples, resolve_special_tokens, topk_statistics)

__all__ = ["DumpSummary", "MODEL_DTYPES", "PreparedSample", "SPECIAL_TOKEN_POLICIES", "STORE_DTYPES", "TEMPLATES",
           "assistant_token_mask", "dump_logits", "forward_batch", "length_order", "load_causal_lm",
           "model_output_size", "plan_batches", "prepare_samples", "resolve_special_tokens", "topk_statistics"]
