"""Canonical token texts add up to the text, for every tokenizer we can load, on real corpus messages.

* A Gemma-2-style SentencePiece-BPE ``tokenizer.json`` built here: its whitespace runs (``▁▁``, ``▁▁▁``,
  ``▁▁▁▁``) are *non-special added tokens* that the model also emits from normalized text, so their canonical
  text must be spaces, as the decoder says, not the literal ``▁`` of their ``added_tokens`` entry.
* Every directory of ``../shared/tokenizers`` (tokenizer.json), that Gemma-style tokenizer, and (``slow``) the
  engines tokalign converts itself from SentencePiece ``.model``, tiktoken ranks and tekken json files.
  GGUF tokenizers are not covered: tokalign has no GGUF loader.

The property: ``b"".join(tok.token_texts()[i] for i in tok.encode(text).ids) == text.encode()`` up to the
phantom dummy-prefix space, and the offsets slice each token's text out of ``text``.
"""
import json
import re
import string
import unicodedata

import numpy as np
import pytest

import tokalign
from tokalign.tokenize import Tokenizer
from tokalign.tokenize.canonical import _state
from tokalign.tokenize.convert import QWEN_PATTERN

U = "\u2581"
WHITESPACE_RUNS = (U * 2, U * 3, U * 4)


# ----------------------------------------------------------------------------------- Gemma-style tokenizer
def build_gemma_style(path) -> None:
    """A small tokenizer.json laid out like Gemma-2's published one (transformers' GemmaConverter).

    Normalizer ``Replace(" ", "▁")`` (no dummy prefix), ``Split(" ", merged_with_previous)`` pre-tokenizer,
    BPE with byte fallback, decoder ``Replace("▁", " ") + ByteFallback + Fuse``; ``<pad> <eos> <bos> <unk>``
    and the turn markers are special added tokens, the whitespace runs are non-special added tokens with
    ``"normalized": false`` that are also model pieces reached by merges (as Gemma's user-defined pieces).
    """
    from tokenizers import AddedToken, Tokenizer as Engine, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    specials = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")
    vocab = {}
    for piece in specials + WHITESPACE_RUNS:
        vocab.setdefault(piece, len(vocab))
    for b in range(256):
        vocab.setdefault("<0x%02X>" % b, len(vocab))
    for c in U + "\t\n" + string.ascii_letters + string.digits + string.punctuation:
        vocab.setdefault(c, len(vocab))
    merges = []
    for word in ("the", "is", "of", "and", "to", "a", "in"):  # word merges rank before the space merges, so
        cur = U                                                # "  the" gives "▁", "▁the" and "   x" "▁▁▁", "x"
        for c in word:
            merges.append((cur, c))
            cur += c
            vocab.setdefault(cur, len(vocab))
    merges += [(U, U), (U * 2, U), (U * 2, U * 2)]
    engine = Engine(BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    engine.normalizer = normalizers.Replace(" ", U)
    engine.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    engine.decoder = decoders.Sequence([decoders.Replace(U, " "), decoders.ByteFallback(), decoders.Fuse()])
    engine.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    engine.add_tokens([AddedToken(t, normalized=False, special=False) for t in WHITESPACE_RUNS])
    engine.save(str(path))


@pytest.fixture(scope="module")
def gemma_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("gemma_style") / "tokenizer.json"
    build_gemma_style(path)
    return path


def test_gemma_style_file_is_laid_out_like_gemma2(gemma_path):
    js = json.loads(gemma_path.read_text(encoding="utf-8"))
    assert js["normalizer"] == {"type": "Replace", "pattern": {"String": " "}, "content": U}
    assert js["model"]["type"] == "BPE" and js["model"]["byte_fallback"] is True
    runs = {t["content"]: t for t in js["added_tokens"] if t["content"] in WHITESPACE_RUNS}
    assert set(runs) == set(WHITESPACE_RUNS)
    for content, t in runs.items():  # as Gemma-2's {"id": 139, "content": "▁▁", "special": false, ...}
        assert t["special"] is False and t["normalized"] is False
        assert js["model"]["vocab"][content] == t["id"]  # a model piece too


def test_gemma_style_whitespace_runs_are_spaces(gemma_path):
    tok = tokalign.load_tokenizer(gemma_path)
    assert tok.family == "metaspace" and not tok.dummy_prefix
    canon = tok.token_texts()
    for n, piece in enumerate(WHITESPACE_RUNS, 2):
        i = tok.token_to_id(piece)
        assert canon[i] == b" " * n and not tok.special_mask[i]
        assert tok.decode([i]) == " " * n  # the tokenizer's own decoder says so too
    assert canon[tok.token_to_id("<start_of_turn>")] == b"<start_of_turn>" and tok.special_mask[tok.token_to_id("<bos>")]
    assert canon[tok.token_to_id("<0x0A>")] == b"\n"

    text = "It is  done.   The end,    (4)  more.\n\tTo  the  point  你好 😀  x"
    enc = tok.encode(text)
    used = {tok.raw_tokens()[i] for i in enc.ids.tolist()}
    assert set(WHITESPACE_RUNS) <= used  # the text does exercise the added tokens
    assert b"".join(canon[i] for i in enc.ids.tolist()) == text.encode()
    assert enc.offsets_exact
    check_offsets(tok, text, enc)
    starts = {text[s:e]: s for (s, e) in enc.offsets.tolist()}
    assert starts["    "] == text.index("    ")  # the 4-space run sits where the text has it
    # the same through encode_batch (the C++ offsets path over many texts)
    for t, e in zip([text, "a  b", "   "], tok.encode_batch([text, "a  b", "   "])):
        assert e.offsets_exact and b"".join(canon[i] for i in e.ids.tolist()) == t.encode()


# ------------------------------------------------------------------------------------------ corpus texts
FEATURES = {
    "prose double space": re.compile(r"\S  \S"),
    "triple space": re.compile(r"\S   \S"),
    "newlines": re.compile(r"\n\n"),
    "CJK": re.compile(r"[\u4e00-\u9fff]"),
    "emoji": re.compile(r"[\U0001F300-\U0001FAFF]"),
    "code indent": re.compile(r"\n {4}\S"),
    "tab": re.compile(r"\t"),
}
EDGE_TEXTS = ["", " ", "  leading spaces", "trailing  ", "a  b   c    d", "\n\nnewlines\n", "tab\there",
              "é😀x", "ﬁ ligature", "数学 3.14159 and x**2", "a\u0301 combining", "x\r\ny",
              "<s>hi</s> <|im_end|>x", "<|end_of_turn|>GPT4 Correct", "[INST] a  b [/INST]"]


@pytest.fixture(scope="module")
def corpus_texts(corpora_dir):
    """The first 30 messages of every corpus file, plus the first 2 messages of each file that show each
    feature (double spaces in prose, CJK, emoji, code ...), plus edge cases."""
    out = []
    for path in sorted(corpora_dir.glob("*.jsonl")):
        want = {name: 2 for name in FEATURES}
        first = 30
        with open(path, encoding="utf-8") as f:
            for line in f:
                for m in json.loads(line)["messages"]:
                    text = m["content"]
                    hits = [n for n, rx in FEATURES.items() if want[n] and rx.search(text)]
                    if first or hits:
                        out.append(text)
                        first = max(0, first - 1)
                        for n in hits:
                            want[n] -= 1
                if not first and not any(want.values()):
                    break
    for name, rx in FEATURES.items():
        assert any(rx.search(t) for t in out), name
    return out + EDGE_TEXTS


# ------------------------------------------------------------------------------------------- the property
def phantom_free_join(tok: Tokenizer, ids) -> bytes:
    """Canonical texts joined, minus the phantom space of a dummy-prefix tokenizer.

    The dummy prefix (``Prepend("▁")`` in the normalizer, canonical.py's prepend="always") is added to every
    stretch of text between added tokens matched in the raw text (``normalized: false``), as HF's "legacy"
    SentencePiece conversion does; prepend="first" adds it once, at the start of the text. The first token of
    such a stretch must start with that space; it is the only thing taken away.
    """
    tables = tok._tables
    splits = {i for i, t in tok.engine.get_added_tokens_decoder().items() if not t.normalized}
    out = []
    stretch_start = True
    for k, i in enumerate(ids):
        t = tables.texts[i]
        if i in splits:
            out.append(t)
            stretch_start = True
            continue
        prepend = tables.family.prepend == "always" or (tables.family.prepend == "first" and k == 0)
        if stretch_start and prepend:
            assert t[:1] == b" ", ("no phantom space", tok.name, tok.raw_tokens()[i])
            t = t[1:]
        stretch_start = False
        out.append(t)
    return b"".join(out)


def check_offsets(tok: Tokenizer, text: str, enc) -> None:
    """Exact offsets: every span holds that token's canonical bytes (minus its phantom space); a byte-level or
    byte-fallback token holding part of a character spans that character (shared with its neighbours);
    spans leave no gap and end at the end of the text."""
    canon = tok.token_texts()
    reach = 0
    prev_start = 0
    for i, (s, e) in zip(enc.ids.tolist(), enc.offsets.tolist()):
        assert prev_start <= s <= e <= len(text) and s <= reach, (tok.name, s, e, reach)
        prev_start, reach = s, max(reach, e)
        span, c = text[s:e].encode("utf-8"), canon[i]
        if span == c or (c[:1] == b" " and span == c[1:]):
            continue
        assert c and c in span and len(text[s:e]) <= 2, (tok.name, text[s:e], c)
    assert reach == len(text), (tok.name, reach, len(text))


def _nfc(tok: Tokenizer) -> bool:
    return '"NFC"' in _state(tok.engine.normalizer)


def assert_texts_add_up(tok: Tokenizer, texts) -> None:
    canon = tok.token_texts()
    for text, enc in zip(texts, tok.encode_batch(texts)):
        assert np.array_equal(enc.ids, tok.encode(text).ids)
        if tok.family == "wordpiece":
            # MANIFEST bert-bge: "Lower-cases and strips accents, so decode(encode(x)) != x", and no WordPiece
            # token holds the space between words: only the spans can be checked, against the normalized span
            unk = tok.special_ids.get("unk")
            for i, (s, e) in zip(enc.ids.tolist(), enc.offsets.tolist()):
                if i != unk:
                    assert canon[i].decode() == tok.engine.normalizer.normalize_str(text[s:e]).strip(), text[s:e]
            continue
        # Qwen's tokenizer.json normalises NFC (MANIFEST qwen2: "Qwen compared on NFC-normalised text"), so
        # its tokens spell the NFC form; a text NFC leaves alone must come back byte for byte
        expected = unicodedata.normalize("NFC", text) if _nfc(tok) else text
        assert phantom_free_join(tok, enc.ids.tolist()) == expected.encode(), (tok.name, text[:80])
        if expected == text:
            assert enc.offsets_exact, (tok.name, text[:80])
            check_offsets(tok, text, enc)


SHARED = ["bert-bge", "gpt2", "internlm2", "llama2", "llama3", "llama3.1", "mistral-tekken", "mistral-v1",
          "mistral-v2", "mistral-v3", "openchat-3.5", "qwen2", "qwen2.5"]
# engines tokalign converts itself (seconds each): file -> load_tokenizer keyword arguments
CONVERTED = {
    "llama2/tokenizer.model": {}, "mistral-v3/tokenizer.model": {}, "internlm2/tokenizer.model": {},
    "llama3.1/tokenizer.model": {}, "qwen2/orig/qwen.tiktoken": {"pattern": QWEN_PATTERN},
    "mistral-tekken/orig/tekken_240718.json": {},
}


def test_shared_list_is_complete(tokenizers_dir):
    assert sorted(p.name for p in tokenizers_dir.iterdir() if (p / "tokenizer.json").is_file()) == SHARED


@pytest.mark.parametrize("name", SHARED)
def test_shared_tokenizers_add_up(tokenizers_dir, corpus_texts, name):
    assert_texts_add_up(tokalign.load_tokenizer(tokenizers_dir / name), corpus_texts)


def test_gemma_style_adds_up(gemma_path, corpus_texts):
    tok = tokalign.load_tokenizer(gemma_path)
    assert_texts_add_up(tok, corpus_texts)
    runs = {tok.token_to_id(p) for p in WHITESPACE_RUNS}
    assert any(runs & set(e.ids.tolist()) for e in tok.encode_batch(corpus_texts))  # corpus hits them


@pytest.mark.slow
@pytest.mark.parametrize("rel", sorted(CONVERTED))
def test_converted_tokenizers_add_up(tokenizers_dir, corpus_texts, rel):
    assert_texts_add_up(tokalign.load_tokenizer(tokenizers_dir / rel, **CONVERTED[rel]), corpus_texts)


# ----------------------------------------------------------------------------- added tokens vs decoder
@pytest.mark.parametrize("name", SHARED + ["gemma-style"])
def test_added_tokens_follow_the_decoder(tokenizers_dir, gemma_path, name):
    """Non-special added tokens: the decoder's text for that one token; special ones: their literal content."""
    tok = tokalign.load_tokenizer(gemma_path if name == "gemma-style" else tokenizers_dir / name)
    canon = tok.token_texts()
    strip = '"Strip"' in _state(tok.engine.decoder)  # drops the dummy prefix's space at the start of a decode
    for i, t in tok.engine.get_added_tokens_decoder().items():
        if t.special:
            assert tok.special_mask[i]
            if not t.normalized or tok.family != "metaspace":
                assert canon[i] == t.content.encode()
            continue
        assert not tok.special_mask[i]
        decoded = tok.engine.decoder.decode([t.content]) if tok.engine.decoder else t.content
        if "\ufffd" in decoded:  # a lone byte-fallback piece: the decoder cannot show it as text
            continue
        assert canon[i] == decoded.encode() or (strip and canon[i] == b" " + decoded.encode()), (name, t.content)
