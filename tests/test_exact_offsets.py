"""C++ exact offsets (``_core.exact_offsets_batch``) against the Python reference ``exact_offsets_reference``.

Property tests on random token tables and texts (non-ASCII, byte-split characters, phantom dummy-prefix
spaces, added tokens, BOS/EOS inserted by a post-processor, texts that do not add up), then every Encoding
of several real tokenizers over corpus texts.
"""
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokalign import _core
from tokalign.tokenize import load_tokenizer
from tokalign.tokenize.canonical import (CanonicalTables, Family, exact_offsets, exact_offsets_batch,
                                         exact_offsets_reference)


def make_tables(texts, added, prepend):
    """CanonicalTables as build_tables() would make them from these canonical texts."""
    size = len(texts)
    return CanonicalTables(
        family=Family("metaspace" if prepend != "never" else "bytelevel", False, prepend),
        raw=[t.decode("utf-8", "replace") for t in texts], texts=list(texts),
        special_mask=np.zeros(size, dtype=bool), added_mask=np.asarray(added, dtype=bool),
        lengths=np.fromiter((len(t) for t in texts), dtype=np.int64, count=size),
        space_first=np.fromiter((t[:1] == b" " for t in texts), dtype=bool, count=size))


def assert_same(got, want):
    if want is None:
        assert got is None
        return
    assert got is not None, "C++ found no offsets, the reference did: %r" % (want.tolist(),)
    assert got.dtype == np.int64 and got.shape == want.shape
    np.testing.assert_array_equal(got, np.asarray(want, dtype=np.int64))


ALPHABET = "ab \n\t.é€😀数ﬁ"


@st.composite
def cases(draw):
    """A text cut into byte chunks (anywhere, so multi-byte characters get split), turned into a vocabulary.

    Some chunks get a phantom leading b" " (dummy prefix), some are added tokens, some BOS/EOS-like tokens are
    inserted, some extra vocabulary entries are unused, and sometimes the text is changed so nothing adds up.
    """
    text = draw(st.text(alphabet=ALPHABET, max_size=24))
    data = text.encode("utf-8")
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=12))) | {0, len(data)})
    chunks = [data[a:b] for a, b in zip(cuts, cuts[1:])]
    if draw(st.booleans()):  # empty-text tokens too
        chunks.insert(draw(st.integers(0, len(chunks))), b"")
    prepend = draw(st.sampled_from(["never", "always", "first", "some-other-scheme"]))
    vocab, added, ids = [], [], []
    index = {}

    def tid(piece, is_added):
        key = (piece, is_added)
        if key not in index:
            index[key] = len(vocab)
            vocab.append(piece)
            added.append(is_added)
        return index[key]

    for c in chunks:
        phantom = draw(st.integers(0, 3)) == 0
        piece = b" " + c if phantom else c
        ids.append(tid(piece, draw(st.integers(0, 4)) == 0))
    for extra in draw(st.lists(st.sampled_from([b"", b" ", b"a", b" a", "é".encode(), b"\xe2", b"<s>"]), max_size=4)):
        tid(extra, draw(st.booleans()))
    space_tok = tid(b" ", False)  # a phantom-only token: "▁" before text
    if draw(st.booleans()):
        ids.insert(0, space_tok)
    bos = tid(b"<s>", True)
    inserted = None
    if draw(st.booleans()):
        marks = [False] * len(ids)
        for pos in draw(st.lists(st.integers(0, len(ids)), max_size=3)):
            ids.insert(pos, bos)
            marks.insert(pos, True)
        inserted = np.asarray(marks, dtype=bool)
    mutate = draw(st.integers(0, 4))
    if mutate == 0 and text:
        k = draw(st.integers(0, len(text) - 1))
        text = text[:k] + draw(st.sampled_from("xé😀 ")) + text[k + 1:]
    elif mutate == 1:
        text = text + draw(st.sampled_from(["", " ", "z", "é"]))
    return text, np.asarray(ids, dtype=np.int32), inserted, make_tables(vocab, added, prepend)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_random_tables_match_reference(case):
    text, ids, inserted, tables = case
    want = exact_offsets_reference(text, ids, inserted, tables)
    assert_same(exact_offsets(text, ids, inserted, tables), want)
    # the same through sequence_ids (None marks inserted tokens) and a list of ints
    seq = None if inserted is None else [[None if m else 0 for m in inserted.tolist()]]
    out_ids, offs = exact_offsets_batch([text], [ids.tolist()], tables, sequence_ids=seq)
    np.testing.assert_array_equal(out_ids[0], ids)
    assert out_ids[0].dtype == np.int32
    assert_same(offs[0], want)


@settings(max_examples=60, deadline=None)
@given(st.lists(cases(), min_size=1, max_size=8))
def test_batch_of_items_sharing_one_table(items):
    """One table, many items (the batch path): each item equals the reference on its own."""
    tables = items[0][3]
    texts, ids, ins = [], [], []
    for text, i, inserted, _ in items:
        i = i[i < len(tables.texts)]
        texts.append(text)
        ids.append(i)
        ins.append(None if inserted is None else inserted[: len(i)])
    _, offs = exact_offsets_batch(texts, ids, tables, inserted=ins)
    for text, i, m, o in zip(texts, ids, ins, offs):
        assert_same(o, exact_offsets_reference(text, i, m, tables))


def test_large_batch_threads_match_reference():
    """Big enough for the OpenMP path: every item still equals the reference."""
    rng = np.random.default_rng(0)
    vocab = [b"", b" ", b"a", b" a", b"b", "é".encode(), b"\xc3", b"\xa9", " 数".encode(), b"<s>"]
    tables = make_tables(vocab, [False] * 9 + [True], "always")
    texts, ids = [], []
    for k in range(3000):
        i = rng.integers(0, len(vocab), size=int(rng.integers(0, 200))).astype(np.int32)
        data = b"".join(vocab[j] for j in i.tolist())
        if k % 3 == 0 and data[:1] == b" ":
            data = data[1:]
        texts.append(data.decode("utf-8", "ignore") if k % 5 == 0 else data.decode("utf-8", "replace"))
        ids.append(i)
    _, offs = exact_offsets_batch(texts, ids, tables)
    n_ok = 0
    for t, i, o in zip(texts, ids, offs):
        want = exact_offsets_reference(t, i, None, tables)
        assert_same(o, want)
        n_ok += want is not None
    assert 0 < n_ok < len(texts)


def test_dummy_prefix_and_inserted_examples():
    vocab = [b" Hello", b" world", b"<s>", b" ", b"\xc3", b"\xa9", b"!"]
    added = [False, False, True, False, False, False, False]
    tables = make_tables(vocab, added, "always")
    # phantom at the text start; BOS inserted before, EOS-like after
    ids = np.array([2, 0, 1, 6, 2], dtype=np.int32)
    ins = np.array([True, False, False, False, True])
    got = exact_offsets("Hello world!", ids, ins, tables)
    assert got.tolist() == [[0, 0], [0, 5], [5, 11], [11, 12], [12, 12]]
    assert_same(got, exact_offsets_reference("Hello world!", ids, ins, tables))
    # an added token matched in the text starts a new segment: a phantom again after it ("always")
    ids = np.array([0, 2, 1], dtype=np.int32)
    assert exact_offsets("Hello<s>world", ids, None, tables).tolist() == [[0, 5], [5, 8], [8, 13]]
    # "first" tries the text start only, then every segment start, then no phantom
    first = make_tables(vocab, added, "first")
    assert exact_offsets("Hello<s> world", ids, None, first).tolist() == [[0, 5], [5, 8], [8, 14]]
    assert exact_offsets("Hello<s>world", ids, None, first).tolist() == [[0, 5], [5, 8], [8, 13]]
    assert exact_offsets(" Hello<s> world", ids, None, first).tolist() == [[0, 6], [6, 9], [9, 15]]
    assert exact_offsets("Hello<s>  world", ids, None, first) is None
    assert exact_offsets_reference("Hello<s>  world", ids, None, first) is None
    # a byte-split character: both halves share its span; a phantom-only token has an empty span
    ids = np.array([3, 4, 5, 6], dtype=np.int32)
    assert exact_offsets("é!", ids, None, tables).tolist() == [[0, 0], [0, 1], [0, 1], [1, 2]]
    # mismatch and the empty encoding
    assert exact_offsets("Hello", np.array([1], dtype=np.int32), None, tables) is None
    assert exact_offsets("anything", np.zeros(0, dtype=np.int32), None, tables).shape == (0, 2)


def test_bad_input_errors():
    tables = make_tables([b"a", b"b"], [False, False], "never")
    with pytest.raises(IndexError):
        exact_offsets_batch(["ab"], [[0, 2]], tables)
    with pytest.raises(IndexError):
        exact_offsets_batch(["ab"], [np.array([-1, 0])], tables)
    with pytest.raises(TypeError):
        exact_offsets_batch([1], [[0]], tables)
    with pytest.raises(ValueError):
        exact_offsets_batch(["ab", "a"], [[0, 1]], tables)
    with pytest.raises(ValueError):
        exact_offsets_batch(["ab"], [[0, 1]], tables, inserted=[np.array([True])])
    with pytest.raises(UnicodeEncodeError):  # as the reference's text.encode("utf-8")
        exact_offsets_batch(["a\ud800"], [[0]], tables)
    with pytest.raises(ValueError):
        _core.CanonicalOffsets([b"a"], np.zeros(2, dtype=np.uint8), "never")
    with pytest.raises(TypeError):
        _core.CanonicalOffsets(["a"], np.zeros(1, dtype=np.uint8), "never")


# ------------------------------------------------------------------------------------- real tokenizers
REAL = ["openchat-3.5", "internlm2", "qwen2", "llama3", "mistral-tekken", "gpt2", "bert-bge", "llama2"]


@pytest.fixture(scope="module")
def corpus_texts(corpora_dir):
    out = []
    for fname, step in (("alpacaeval_parallel.jsonl", 37), ("chat_multiturn_zh.jsonl", 11), ("code_math.jsonl", 13)):
        with open(corpora_dir / fname, encoding="utf-8") as f:
            for k, line in enumerate(f):
                if k % step == 0:
                    out.extend(m["content"] for m in json.loads(line)["messages"])
    out += ["", " ", "  leading spaces", "trailing  ", "\n\nnewlines\n", "tab\there", "é😀x", "ﬁ ligature",
            "数学 3.14159 and x**2", "a\u0301 combining", "<s>hi</s> <|im_end|>x", "<|end_of_turn|>GPT4 Correct"]
    return out


@pytest.mark.parametrize("name", REAL)
def test_real_tokenizers_match_reference(tokenizers_dir, corpus_texts, name):
    tok = load_tokenizer(tokenizers_dir / name)
    tables = tok._tables
    for special in (False, True):
        encs = tok.encode_batch(corpus_texts, add_special_tokens=special)
        raw = tok.engine.encode_batch(corpus_texts, add_special_tokens=special)
        n_exact = 0
        n_fallback = 0
        for text, enc, r in zip(corpus_texts, encs, raw):
            ids = np.asarray(r.ids, dtype=np.int32)
            np.testing.assert_array_equal(enc.ids, ids)
            assert enc.ids.dtype == np.int32
            inserted = None
            if special and None in r.sequence_ids:
                inserted = np.fromiter((s is None for s in r.sequence_ids), dtype=bool, count=len(ids))
            want = exact_offsets_reference(text, ids, inserted, tables)
            if want is None:  # falls back to the library offsets, exactly as before
                assert not enc.offsets_exact
                n_fallback += 1
                np.testing.assert_array_equal(enc.offsets, np.asarray(r.offsets, dtype=np.int64).reshape(-1, 2))
            else:
                assert enc.offsets_exact
                assert_same(enc.offsets, want)
                n_exact += 1
        if name != "bert-bge":
            assert n_exact >= len(corpus_texts) - 3, (name, n_exact)
        if name == "qwen2":  # NFC: "a\u0301" does not add up; encode_batch_fast has no offsets, so re-encoded
            assert n_fallback >= 1
        one = tok.encode(corpus_texts[1], add_special_tokens=special)
        np.testing.assert_array_equal(one.offsets, encs[1].offsets)
