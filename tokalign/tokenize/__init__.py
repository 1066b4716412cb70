"""Tokenizer layer: load any tokenizer the fusion pipeline meets and expose what alignment needs.

* :func:`load_tokenizer` -- by alias (``openchat``, ``qwen2`` ...), HF directory, ``tokenizer.json``,
  SentencePiece ``.model``, tiktoken ranks file or Mistral tekken json.
* :class:`Tokenizer` -- ``encode`` / ``encode_batch`` (Rust ``tokenizers``, parallel, exact char offsets),
  ``token_texts()`` (canonical bytes per id), ``raw_tokens()``, ``special_mask``, ``special_ids``,
  ``fingerprint``, ``apply_chat_template``.
* :class:`Encoding` -- ``ids`` int32 (n,), ``offsets`` int64 (n, 2).
"""
from .aliases import ALIASES, Alias, known_aliases, lookup_alias
from .canonical import bytes_to_unicode
from .loader import find_in_hf_cache, load_tokenizer
from .tokenizer import Encoding, Tokenizer

__all__ = ["ALIASES", "Alias", "Encoding", "Tokenizer", "bytes_to_unicode", "find_in_hf_cache", "known_aliases",
           "load_tokenizer", "lookup_alias"]
