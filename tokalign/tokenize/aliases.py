"""Known tokenizer aliases: the model families FuseLLM / FuseChat / FuseChat-3.0 fuse.

Each alias names a Hugging Face hub id (used for the local HF cache and the hub) and the name of the
directory that holds the same tokenizer in a local tokenizer folder (``tokenizer_dir=`` /
``$TOKALIGN_TOKENIZER_DIR``; the project's ``../shared/tokenizers`` uses these names). ``embedded``
names a tokenizer that can be rebuilt from files shipped inside a PyPI package (mistral-common), so a
few aliases work with no download at all (see :mod:`tokalign.tokenize.embedded`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional


@dataclass(frozen=True)
class Alias:
    """One alias: where its tokenizer can be found."""

    name: str
    hub_id: str
    dir_name: str
    embedded: Optional[str] = None
    note: str = ""


_ALIAS_LIST = [
    Alias("openchat", "openchat/openchat_3.5", "openchat-3.5", "openchat",
          "OpenChat-3.5-7B (FuseChat pivot): Mistral v1 SentencePiece + <|end_of_turn|>, <|pad_0|>"),
    Alias("starling", "berkeley-nest/Starling-LM-7B-alpha", "openchat-3.5", "openchat",
          "Starling-LM-7B-alpha: same tokenizer as OpenChat-3.5"),
    Alias("mistral", "mistralai/Mistral-7B-Instruct-v0.1", "mistral-v1", "mistral-v1",
          "Mistral-7B v0.1/v0.2 SentencePiece 32000"),
    Alias("mixtral", "mistralai/Mixtral-8x7B-Instruct-v0.1", "mistral-v1", "mistral-v1",
          "Mixtral-8x7B: Mistral v1 SentencePiece 32000"),
    Alias("solar", "upstage/SOLAR-10.7B-Instruct-v1.0", "mistral-v1", None,
          "SOLAR-10.7B: believed to share the Mistral v1 vocabulary (not verified, so no embedded default)"),
    Alias("internlm2", "internlm/internlm2-chat-20b", "internlm2", None,
          "InternLM2-Chat: the hub repo needs trust_remote_code; the local dir does not"),
    Alias("qwen1.5", "Qwen/Qwen1.5-72B-Chat", "qwen2", None, "Qwen1.5-Chat: same BPE as Qwen2"),
    Alias("qwen2", "Qwen/Qwen2-7B-Instruct", "qwen2", None, "Qwen2-Instruct byte-level BPE"),
    Alias("qwen2.5", "Qwen/Qwen2.5-7B-Instruct", "qwen2.5", None, "Qwen2.5-Instruct: Qwen2 BPE + 22 added tokens"),
    Alias("llama2", "meta-llama/Llama-2-7b-chat-hf", "llama2", None, "Llama-2 SentencePiece 32000"),
    Alias("llama3", "meta-llama/Meta-Llama-3-8B-Instruct", "llama3", None, "Llama-3 tiktoken BPE 128256"),
    Alias("llama3.1", "meta-llama/Llama-3.1-8B-Instruct", "llama3.1", None,
          "Llama-3.1 tiktoken BPE 128256 (3.1 special-token names)"),
    Alias("gemma2", "google/gemma-2-9b-it", "gemma2", None, "Gemma-2 SentencePiece 256000"),
    Alias("mistral-nemo", "mistralai/Mistral-Nemo-Instruct-2407", "mistral-tekken", "mistral-tekken",
          "Mistral-NeMo tekken byte-level BPE 131072 (ids = rank + 1000 special ids)"),
    Alias("gpt2", "openai-community/gpt2", "gpt2", None, "GPT-2 byte-level BPE 50257"),
    Alias("bge", "BAAI/bge-small-en-v1.5", "bert-bge", None, "BERT uncased WordPiece 30522"),
]

ALIASES: Dict[str, Alias] = {a.name: a for a in _ALIAS_LIST}


def lookup_alias(name: str) -> Optional[Alias]:
    """The alias called ``name`` (case-insensitive), or None."""
    return ALIASES.get(name.strip().lower())


def known_aliases() -> str:
    """Comma-separated alias names, for error messages."""
    return ", ".join(ALIASES)
