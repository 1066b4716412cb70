"""Canonical token texts and exact character offsets.

The *canonical text* of a token is the exact byte string it contributes to the running text, so that
for a lossless tokenizer ``b"".join(texts[i] for i in ids) == text.encode()``:

* SentencePiece / Metaspace vocabularies: ``▁`` -> ``b" "``; with byte fallback ``<0xNN>`` -> ``bytes([NN])``.
  With a dummy prefix (``add_dummy_prefix`` / ``Prepend("▁")``) the join is ``b" " + text``: the first
  token of every stretch of ordinary text (start of the text, and after each added token that the
  tokenizer matched in the text) carries a *phantom* space that is not in the text.
* Byte-level BPE (GPT-2 byte alphabet: ``Ġ`` = space, ``Ċ`` = newline ...): the real bytes. A token may
  hold part of a multi-byte UTF-8 character.
* WordPiece: ``##x`` -> ``x`` and a word-initial piece -> its text. This is an approximation: the space
  that separates words is not part of any WordPiece token, and BERT normalisers lower-case / strip
  accents, so the join does not reproduce the text.
* Non-special added tokens (``added_tokens`` with ``"special": false``): the same per-token conversion as
  the model vocabulary, i.e. the text the tokenizer's decoder produces for them. Gemma's whitespace runs
  (``▁▁``, ``▁▁▁`` ...) are such tokens, listed with ``"normalized": false`` but emitted by the model from
  the normalized text, so their literal ``▁`` would never match the text's spaces. (An added token that
  the model cannot emit and whose content the decoder changes, such as a byte-level vocabulary's ``õ``
  meaning byte 0xF5, is then matched in text it does not spell: those texts fall back to library offsets.)
* Special tokens: their literal content (with ``▁`` -> space for normalized ones of a Metaspace
  vocabulary), flagged in ``special_mask``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

SPIECE_UNDERLINE = "\u2581"
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character table (byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_ENCODER: Dict[int, str] = bytes_to_unicode()
BYTE_DECODER: Dict[str, int] = {c: b for b, c in BYTE_ENCODER.items()}
# str.translate table: byte-alphabet character -> the latin-1 character of its byte (then .encode("latin-1"))
_BYTE_TRANSLATE = {ord(c): b for b, c in BYTE_ENCODER.items()}


def _state(component) -> str:
    """JSON text of a tokenizers component (normalizer, pre-tokenizer, decoder), '' if absent."""
    if component is None:
        return ""
    try:
        s = component.__getstate__()
    except Exception:  # pragma: no cover - very old tokenizers
        return ""
    return s.decode("utf-8") if isinstance(s, (bytes, bytearray)) else str(s)


@dataclass(frozen=True)
class Family:
    """How a tokenizers.Tokenizer spells text in its vocabulary."""

    kind: str            # "bytelevel" | "metaspace" | "wordpiece" | "plain"
    byte_fallback: bool  # <0xNN> pieces stand for raw bytes
    prepend: str         # dummy prefix: "never" | "always" (every text segment) | "first" (text start only)


def detect_family(engine) -> Family:
    """Inspect the normalizer / pre-tokenizer / decoder / model of a ``tokenizers.Tokenizer``."""
    norm = _state(engine.normalizer)
    pre = _state(engine.pre_tokenizer)
    dec = _state(engine.decoder)
    model_type = type(engine.model).__name__
    byte_fallback = bool(getattr(engine.model, "byte_fallback", False))
    if model_type == "WordPiece":
        return Family("wordpiece", False, "never")
    if '"ByteLevel"' in pre or '"ByteLevel"' in dec:
        return Family("bytelevel", False, "never")
    metaspace = SPIECE_UNDERLINE in norm or '"Metaspace"' in pre or '"Metaspace"' in dec or SPIECE_UNDERLINE in dec
    if not metaspace:
        return Family("plain", byte_fallback, "never")
    prepend = "never"
    if '"Prepend"' in norm:
        prepend = "always"
    elif '"Metaspace"' in pre:
        try:
            js = json.loads(pre)
        except ValueError:
            js = {}
        parts = js.get("pretokenizers", [js]) if isinstance(js, dict) else []
        for p in parts:
            if isinstance(p, dict) and p.get("type") == "Metaspace":
                scheme = p.get("prepend_scheme")
                if scheme is None:  # tokenizers < 0.14 spelling
                    scheme = "always" if p.get("add_prefix_space", True) else "never"
                prepend = scheme
    return Family("metaspace", byte_fallback, prepend)


def vocab_strings(engine) -> List[str]:
    """Vocabulary strings indexed by id (added tokens included); '' for ids with no token."""
    vocab = engine.get_vocab(with_added_tokens=True)
    size = max(vocab.values()) + 1 if vocab else 0
    out = [""] * size
    for s, i in vocab.items():
        out[i] = s
    return out


def _canonical_piece(piece: str, family: Family) -> bytes:
    if family.kind == "bytelevel":
        try:
            return piece.translate(_BYTE_TRANSLATE).encode("latin-1")
        except UnicodeEncodeError:  # not in the byte alphabet: literal text
            return piece.encode("utf-8")
    if family.kind == "metaspace":
        if family.byte_fallback:
            m = _BYTE_PIECE.match(piece)
            if m:
                return bytes([int(m.group(1), 16)])
        return piece.replace(SPIECE_UNDERLINE, " ").encode("utf-8")
    if family.kind == "wordpiece":
        return (piece[2:] if piece.startswith("##") and len(piece) > 2 else piece).encode("utf-8")
    return piece.encode("utf-8")


@dataclass
class CanonicalTables:
    """Per-id tables used to encode offsets and to fingerprint the vocabulary."""

    family: Family
    raw: List[str]
    texts: List[bytes]
    special_mask: np.ndarray  # bool (V,)
    added_mask: np.ndarray    # bool (V,): tokens matched before the model (split text segments)
    lengths: np.ndarray       # int64 (V,)
    space_first: np.ndarray   # bool (V,): canonical text starts with b" "
    _native: Optional[object] = field(default=None, repr=False, compare=False)

    @property
    def native(self):
        """The C++ copy of the tables (``_core.CanonicalOffsets``) used by :func:`exact_offsets_batch`.

        Built on first use; ``space_first`` and the lengths are derived from ``texts`` there, exactly as
        :func:`build_tables` derives them here.
        """
        if self._native is None:
            from .._native import _core

            self._native = _core.CanonicalOffsets(self.texts, np.asarray(self.added_mask, dtype=np.uint8),
                                                  self.family.prepend)
        return self._native


def build_tables(engine) -> CanonicalTables:
    """Canonical texts, raw strings and masks for every id of ``engine``."""
    family = detect_family(engine)
    raw = vocab_strings(engine)
    size = len(raw)
    texts = [_canonical_piece(p, family) for p in raw]
    special = np.zeros(size, dtype=bool)
    added = np.zeros(size, dtype=bool)
    for i, tok in engine.get_added_tokens_decoder().items():
        if i >= size:
            continue
        added[i] = True
        special[i] = bool(tok.special)
        content = tok.content
        if not tok.special:
            # what the decoder makes of it (the decoder runs on non-special added tokens too); converted
            # piece by piece so that a decoder's Strip of the dummy-prefix space cannot touch it
            texts[i] = _canonical_piece(content, family)
            continue
        if family.kind == "metaspace" and tok.normalized:
            content = content.replace(SPIECE_UNDERLINE, " ")
        texts[i] = content.encode("utf-8")
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=size)
    space_first = np.fromiter((t[:1] == b" " for t in texts), dtype=bool, count=size)
    return CanonicalTables(family, raw, texts, special, added, lengths, space_first)


def _verify_with_phantoms(text_bytes: bytes, joined: bytes, start: np.ndarray, phantom: np.ndarray) -> bool:
    """True when ``joined`` == ``text_bytes`` with b" " inserted before each phantom token's start."""
    if not phantom.any():
        return joined == text_bytes
    parts = []
    prev = 0
    for p in start[phantom].tolist():
        parts.append(text_bytes[prev:p])
        parts.append(b" ")
        prev = p
    parts.append(text_bytes[prev:])
    return b"".join(parts) == joined


def exact_offsets_reference(text: str, ids: np.ndarray, inserted: Optional[np.ndarray],
                            tables: CanonicalTables) -> Optional[np.ndarray]:
    """Reference (pure Python) for :func:`exact_offsets` / :func:`exact_offsets_batch`, kept for the tests.

    Character offsets ``[start, end)`` computed from canonical texts, or None when they do not add up.

    Tokens whose canonical bytes concatenate to the text (modulo phantom dummy-prefix spaces) get the exact
    span of their bytes: ``start`` = the character holding the token's first byte, ``end`` = one past the
    character holding its last byte. Several byte-level tokens that split one character therefore share that
    character's span. A phantom-only token (``▁`` from the dummy prefix) gets an empty span at its position.
    ``inserted`` marks tokens added by the post-processor (BOS/EOS): empty span where they sit.
    """
    n = int(ids.shape[0])
    offsets = np.zeros((n, 2), dtype=np.int64)
    if n == 0:
        return offsets
    keep = np.ones(n, dtype=bool) if inserted is None else ~inserted
    kid = ids[keep]
    text_bytes = text.encode("utf-8")
    texts = tables.texts
    joined = b"".join(map(texts.__getitem__, kid.tolist()))
    lens = tables.lengths[kid]
    candidates = [np.zeros(kid.shape[0], dtype=bool)]
    if tables.family.prepend != "never" and kid.shape[0]:
        add = tables.added_mask[kid]
        seg_start = ~add & np.concatenate(([True], add[:-1]))
        first_space = tables.space_first[kid]
        every = seg_start & first_space
        first_only = np.zeros_like(every)
        first_only[0] = every[0]
        candidates = [every, first_only] if tables.family.prepend == "always" else [first_only, every]
        candidates.append(np.zeros(kid.shape[0], dtype=bool))
    found = None
    for phantom in candidates:
        if len(joined) - int(phantom.sum()) != len(text_bytes):
            continue
        real = lens - phantom
        end = np.cumsum(real)
        start = end - real
        if _verify_with_phantoms(text_bytes, joined, start, phantom):
            found = (start, end)
            break
    if found is None:
        return None
    start, end = found
    if len(text_bytes) != len(text):  # non-ASCII: map byte positions to character positions
        b = np.frombuffer(text_bytes, dtype=np.uint8)
        cum = np.zeros(len(text_bytes) + 1, dtype=np.int64)
        np.cumsum((b & 0xC0) != 0x80, out=cum[1:])
        nonempty = end > start
        s_char = np.where(nonempty, cum[np.minimum(start + 1, len(text_bytes))] - 1, cum[start])
        e_char = cum[end]
        start, end = s_char, e_char
    kept = np.stack([start, end], axis=1)
    if inserted is None or not inserted.any():
        return kept
    offsets[keep] = kept
    # inserted tokens: empty span at the end of the previous kept token (0 before the first)
    last_end = 0
    kept_iter = iter(kept[:, 1].tolist())
    for i in range(n):
        if keep[i]:
            last_end = next(kept_iter)
        else:
            offsets[i] = (last_end, last_end)
    return offsets


def exact_offsets_batch(texts: Sequence[str], ids: Sequence, tables: CanonicalTables, *,
                        inserted: Optional[Sequence[Optional[np.ndarray]]] = None,
                        sequence_ids: Optional[Sequence[Optional[Sequence[Optional[int]]]]] = None,
                        ) -> Tuple[List[np.ndarray], List[Optional[np.ndarray]]]:
    """Exact offsets of many encodings at once (C++, GIL released, threads over items for large batches).

    ``ids[k]``: the token ids of ``texts[k]`` (a list, e.g. ``tokenizers.Encoding.ids``, or an int array).
    Tokens added by the post-processor are marked either by ``inserted`` (per item None or a bool mask) or by
    ``sequence_ids`` (per item None or ``Encoding.sequence_ids``: None marks them). Returns ``(ids, offsets)``:
    int32 id arrays and, per item, the ``[n, 2]`` int64 offsets of :func:`exact_offsets_reference` or None
    where the canonical texts do not add up to the text.
    """
    from .._native import _core

    return _core.exact_offsets_batch(tables.native, texts, ids, inserted=inserted, sequence_ids=sequence_ids)


def exact_offsets(text: str, ids: np.ndarray, inserted: Optional[np.ndarray], tables: CanonicalTables) -> Optional[np.ndarray]:
    """Offsets of one encoding (see :func:`exact_offsets_reference` for the rules); None when they do not add up."""
    return exact_offsets_batch([text], [ids], tables, inserted=[inserted])[1][0]


def fingerprint(texts: Sequence[bytes], special_mask: np.ndarray) -> str:
    """sha256 hex over the canonical vocabulary: for each id, a special flag, the length and the bytes.

    Independent of the load path (tokenizer.json, SentencePiece .model, tiktoken ranks, embedded): two
    tokenizers with the same ids, canonical texts and special flags have the same fingerprint. Role
    assignments (which token is pad ...) are deliberately left out: configs of one vocabulary disagree on them.
    """
    import hashlib

    h = hashlib.sha256()
    h.update(b"tokalign-vocab-v1\0%d\0" % len(texts))
    h.update(b"".join([(b"S" if s else b"T") + len(t).to_bytes(4, "little") + t
                       for t, s in zip(texts, special_mask.tolist())]))
    return h.hexdigest()
