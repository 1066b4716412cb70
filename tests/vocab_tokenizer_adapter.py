"""A minimal stand-in for the ``tokalign.tokenize`` Tokenizer contract (docs/architecture.md),
built straight from ``tokenizer.json`` with the ``tokenizers`` library.

The vocabulary tests and ``benchmarks/vocab_speed.py`` use it so that the vocabulary maps are
exercised on real vocabularies even before (or independently of) the tokenizer layer.
Only the attributes the vocabulary methods read are provided.

Canonical texts: SentencePiece pieces ``▁`` -> space and ``<0xNN>`` -> that byte;
byte-level BPE pieces are decoded through the GPT-2 byte alphabet; added tokens keep their
literal UTF-8 content and special ones are flagged in ``special_mask``.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Dict, List

import numpy as np

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")

# literal content of chat-role tokens -> role name (the subset the shared tokenizers use)
CHAT_ROLES = {
    "<|im_start|>": "im_start",
    "<|im_end|>": "im_end",
    "<|end_of_turn|>": "end_of_turn",
    "<|eot_id|>": "eot_id",
    "<|start_header_id|>": "start_header_id",
    "<|end_header_id|>": "end_header_id",
    "[INST]": "inst",
    "[/INST]": "inst_end",
    "<|endoftext|>": "endoftext",
}


def gpt2_byte_decoder() -> Dict[str, int]:
    """The inverse of GPT-2's ``bytes_to_unicode`` table (printable stand-in char -> byte)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class AdapterTokenizer:
    """Duck-typed Tokenizer: ``name``, ``vocab_size``, ``fingerprint``, ``token_texts()``,
    ``raw_tokens()``, ``special_mask``, ``special_ids``."""

    def __init__(self, directory: Path, name: str | None = None):
        from tokenizers import Tokenizer

        directory = Path(directory)
        self.name = name or directory.name
        tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
        spec = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))
        n = tok.get_vocab_size(with_added_tokens=True)
        raw: List[str] = [""] * n
        for piece, i in tok.get_vocab(with_added_tokens=True).items():
            raw[i] = piece
        decoder = spec.get("decoder") or {}
        byte_level = decoder.get("type") == "ByteLevel"
        table = gpt2_byte_decoder()
        special = np.zeros(n, dtype=bool)
        added = {a["id"]: a for a in spec.get("added_tokens", [])}
        texts: List[bytes] = []
        for i, piece in enumerate(raw):
            if i in added:
                texts.append(added[i]["content"].encode("utf-8"))
                special[i] = bool(added[i]["special"])
            elif byte_level:
                texts.append(bytes(table[c] for c in piece))
            else:
                m = _BYTE_PIECE.match(piece)
                texts.append(bytes([int(m.group(1), 16)]) if m else piece.replace("\u2581", " ").encode("utf-8"))
        self._raw = raw
        self._texts = texts
        self.vocab_size = n
        self.special_mask = special
        self.special_ids = self._roles(directory, tok)
        h = hashlib.sha256()
        for t in texts:
            h.update(len(t).to_bytes(4, "little") + t)
        h.update(json.dumps(sorted(self.special_ids.items())).encode())
        h.update(special.tobytes())
        self.fingerprint = h.hexdigest()

    def _roles(self, directory: Path, tok) -> Dict[str, int]:
        roles: Dict[str, int] = {}
        cfg_path = directory / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.exists() else {}
        for role in ("bos", "eos", "pad", "unk"):
            value = cfg.get(role + "_token")
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str) and tok.token_to_id(value) is not None:
                roles[role] = tok.token_to_id(value)
        for content, role in CHAT_ROLES.items():
            i = tok.token_to_id(content)
            if i is not None and self.special_mask[i]:
                roles.setdefault(role, i)
        return roles

    def token_texts(self) -> List[bytes]:
        return list(self._texts)

    def raw_tokens(self) -> List[str]:
        return list(self._raw)

    def __len__(self) -> int:
        return self.vocab_size


def load_adapter(tokenizers_dir: Path, name: str) -> AdapterTokenizer:
    """Prefer the project's own loader when it exists; fall back to the adapter."""
    return AdapterTokenizer(Path(tokenizers_dir) / name, name=name)
