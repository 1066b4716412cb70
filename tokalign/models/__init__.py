"""Models (``tokalign.models``): loading them safely for every command that runs one.

:func:`load_causal_lm` reads safetensors only (pickles with ``allow_pickle=True``) and runs a repository's
own code only with ``trust_remote_code=True``; see :mod:`tokalign.models.loading`.
"""
from .loading import (MODEL_DTYPES, learned_position_limit, load_causal_lm, model_output_size, refuse_remote_code,
                      resolve_model_source, torch_device, torch_dtype)

__all__ = ["MODEL_DTYPES", "learned_position_limit", "load_causal_lm", "model_output_size", "refuse_remote_code",
           "resolve_model_source", "torch_device", "torch_dtype"]
