"""Tokenizers from GGUF files and from the model aliases of :mod:`tokalign.models.cache`.

The tokenizer embedded in a GGUF file (``tokenizer.ggml.*`` metadata) is rebuilt by transformers
(``AutoTokenizer.from_pretrained(folder, gguf_file=name)``) into a fast tokenizer; its ``tokenizers`` engine is
wrapped like every other source, so canonical texts, offsets and the fingerprint follow the same rules (the
fingerprint of SmolLM2's GGUF tokenizer equals that of the same tokenizer saved as an HF folder). The chat
template comes from ``tokenizer.chat_template`` when the file has one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from .tokenizer import Tokenizer


def load_gguf_tokenizer(path: Path, name: str) -> Tokenizer:
    """The tokenizer embedded in the GGUF file ``path`` (one clear line if it has none or cannot be read)."""
    from ..models.gguf import load_gguf_hf_tokenizer
    from .loader import _from_hf_object

    hf = load_gguf_hf_tokenizer(path)
    tok = _from_hf_object(hf, name=name, source="gguf:%s" % path)
    tok.meta = dict(tok.meta or {}, format="gguf")
    return tok


def load_model_alias_tokenizer(spec: str, trust_remote_code: bool = False) -> Optional[Tokenizer]:
    """The tokenizer of a model alias (``smollm2``, ``gemma3``, ``smollm2-135m-instruct``, ``gemma3-270m``), fetched
    into the model cache on first use; None when ``spec`` is no such alias."""
    from ..models.cache import lookup_model_alias, tokenizer_dir

    pkg = lookup_model_alias(spec)
    if pkg is None:
        return None
    from .loader import _load_dir

    d = tokenizer_dir(spec)
    tok = _load_dir(d, name=spec.strip().lower(), trust_remote_code=trust_remote_code)
    tok.source = "model-cache:%s" % d
    return tok
