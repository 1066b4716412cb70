"""Tokenizer layer: real tokenizers from ../shared, checked against the original implementations."""
import json
import os
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from tokalign.errors import TokalignError
from tokalign.tokenize import ALIASES, Encoding, Tokenizer, load_tokenizer
from tokalign.tokenize.convert import LLAMA3_PATTERN, QWEN_PATTERN

# len(tok) per shared/tokenizers/MANIFEST.md
SHARED_SIZES = {
    "openchat-3.5": 32002, "mistral-v1": 32000, "internlm2": 92544, "qwen2": 151646, "qwen2.5": 151665,
    "llama3.1": 128256, "llama3": 128256, "llama2": 32000, "mistral-v3": 32768, "mistral-v2": 32768,
    "mistral-tekken": 131072, "gpt2": 50257, "bert-bge": 30522,
}
ROUND_TRIP = ["openchat-3.5", "internlm2", "qwen2", "llama3", "mistral-tekken", "gpt2", "llama2", "mistral-v1"]

_cache = {}


def shared(tokenizers_dir, name) -> Tokenizer:
    key = ("shared", name)
    if key not in _cache:
        _cache[key] = load_tokenizer(tokenizers_dir / name)
    return _cache[key]


@pytest.fixture(scope="module")
def texts(corpora_dir):
    """A deterministic sample of real messages: EN chat, ZH chat, code and math, plus edge cases."""
    out = []
    for fname, step in (("alpacaeval_parallel.jsonl", 97), ("chat_multiturn_zh.jsonl", 23), ("code_math.jsonl", 41)):
        with open(corpora_dir / fname, encoding="utf-8") as f:
            for k, line in enumerate(f):
                if k % step == 0:
                    out.extend(m["content"] for m in json.loads(line)["messages"])
    out += ["", " ", "  leading spaces", "trailing  ", "\n\nnewlines\n", "tab\there", "é😀x", "ﬁ ligature",
            "数学 3.14159 and x**2", "a\u0301 combining"]
    return out


@pytest.fixture(scope="module")
def plain_texts(texts):
    """Texts without special-token strings (the original implementations do not match those)."""
    return [t for t in texts if "<" not in t and "[" not in t]


def _check_offsets(tok: Tokenizer, text: str, enc: Encoding):
    """Every token's span holds exactly its canonical bytes (minus a phantom dummy-prefix space); a byte-level
    token that holds part of a character spans that whole character."""
    canon = tok.token_texts()
    assert enc.offsets.dtype == np.int64 and enc.offsets.shape == (len(enc), 2)
    assert enc.ids.dtype == np.int32
    prev_start = 0
    for i, (s, e) in zip(enc.ids.tolist(), enc.offsets.tolist()):
        assert 0 <= s <= e <= len(text) and s >= prev_start
        prev_start = s
        span = text[s:e].encode("utf-8")
        c = canon[i]
        if span == c or (c[:1] == b" " and span == c[1:]):
            continue
        # part of a multi-byte character: c is inside the span, the span is one or two characters
        assert c and c in span and len(text[s:e]) <= 2, (text[s:e], c)


@pytest.mark.parametrize("name", sorted(SHARED_SIZES))
def test_all_shared_tokenizers_load(tokenizers_dir, name):
    tok = shared(tokenizers_dir, name)
    assert tok.vocab_size == len(tok) == SHARED_SIZES[name]
    raw, canon = tok.raw_tokens(), tok.token_texts()
    assert len(raw) == len(canon) == tok.vocab_size
    assert tok.special_mask.shape == (tok.vocab_size,) and tok.special_mask.dtype == bool
    assert len(tok.fingerprint) == 64 and int(tok.fingerprint, 16) >= 0
    for role in ("bos", "eos", "unk", "pad"):
        if role in tok.special_ids:
            assert 0 <= tok.special_ids[role] < tok.vocab_size
    enc = tok.encode("Hello world")
    assert len(enc) >= 2


def test_fingerprints_distinguish_vocabularies(tokenizers_dir):
    fps = {n: shared(tokenizers_dir, n).fingerprint for n in SHARED_SIZES}
    assert len(set(fps.values())) == len(fps)  # all 13 differ (llama3 vs llama3.1: special-token names)
    again = load_tokenizer(tokenizers_dir / "gpt2" / "tokenizer.json")
    assert again.fingerprint == fps["gpt2"]  # directory vs file: same fingerprint


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_canonical_round_trip_and_exact_offsets(tokenizers_dir, texts, name):
    tok = shared(tokenizers_dir, name)
    canon = tok.token_texts()
    encs = tok.encode_batch(texts)
    assert len(encs) == len(texts)
    for text, enc in zip(texts, encs):
        joined = b"".join(canon[i] for i in enc.ids.tolist())
        expected = unicodedata.normalize("NFC", text) if name == "qwen2" else text  # Qwen normalises NFC
        if tok.dummy_prefix and expected:
            # SentencePiece dummy prefix: one phantom space, and one after each special token in the text
            assert joined == b" " + expected.encode() or "<" in text, (name, text[:80])
        else:
            assert joined == expected.encode(), (name, text[:80])
        if expected == text:
            assert enc.offsets_exact, (name, text[:80])
            _check_offsets(tok, text, enc)


def test_encode_batch_equals_encode(tokenizers_dir, texts):
    tok = shared(tokenizers_dir, "llama3")
    batch = tok.encode_batch(texts[:40])
    for t, b in zip(texts[:40], batch):
        one = tok.encode(t)
        assert np.array_equal(one.ids, b.ids) and np.array_equal(one.offsets, b.offsets)


def test_dummy_prefix_offsets(tokenizers_dir):
    tok = shared(tokenizers_dir, "openchat-3.5")
    text = " Hello  world"
    enc = tok.encode(text)
    toks = [tok.raw_tokens()[i] for i in enc.ids]
    assert toks == ["▁", "▁Hello", "▁", "▁world"]
    # the first "▁" is the phantom dummy prefix: empty span; the library reports (0, 1) overlapping (0, 6)
    assert enc.offsets.tolist() == [[0, 0], [0, 6], [6, 7], [7, 13]]
    text = "hi<|end_of_turn|> x"  # dummy prefix is applied again after a special token
    enc = tok.encode(text)
    assert [tok.raw_tokens()[i] for i in enc.ids] == ["▁hi", "<|end_of_turn|>", "▁", "▁x"]
    assert enc.offsets_exact and enc.offsets.tolist() == [[0, 2], [2, 17], [17, 17], [17, 19]]


def test_byte_level_split_character_shares_span(tokenizers_dir):
    tok = shared(tokenizers_dir, "gpt2")
    text = "a你好"
    enc = tok.encode(text)
    canon = tok.token_texts()
    assert b"".join(canon[i] for i in enc.ids) == text.encode()
    spans = [tuple(o) for o in enc.offsets.tolist()]
    assert spans[0] == (0, 1)
    assert set(spans[1:]) <= {(1, 2), (2, 3), (1, 3)} and (1, 2) in spans and (2, 3) in spans


def test_add_special_tokens_bos_has_empty_span(tokenizers_dir):
    tok = shared(tokenizers_dir, "llama3")
    enc = tok.encode("Hi there", add_special_tokens=True)
    assert enc.ids[0] == tok.special_ids["bos"] == 128000
    assert enc.offsets_exact and enc.offsets[0].tolist() == [0, 0] and enc.offsets[1].tolist() == [0, 2]


def test_canonical_texts_by_family(tokenizers_dir):
    oc = shared(tokenizers_dir, "openchat-3.5")
    ct, raw = oc.token_texts(), oc.raw_tokens()
    assert raw[13] == "<0x0A>" and ct[13] == b"\n"
    assert raw[22557] == "▁Hello" and ct[22557] == b" Hello"
    assert ct[32000] == b"<|end_of_turn|>" and oc.special_mask[32000] and oc.special_mask[1]
    assert not oc.special_mask[22557]
    q = shared(tokenizers_dir, "qwen2")
    i = q.token_to_id("Ġworld")
    assert q.token_texts()[i] == b" world"
    assert q.token_texts()[q.token_to_id("ä½łå¥½")] == "你好".encode()
    bert = shared(tokenizers_dir, "bert-bge")
    assert bert.family == "wordpiece"
    assert bert.token_texts()[bert.token_to_id("##ing")] == b"ing"
    assert not bert.encode("Hello World").offsets_exact  # lower-cased: library offsets
    il = shared(tokenizers_dir, "internlm2")
    assert not il.special_mask[il.token_to_id("Ｅ")]  # user-defined piece: ordinary text
    assert il.special_mask[il.special_ids["im_start"]]


def test_special_ids(tokenizers_dir):
    assert shared(tokenizers_dir, "openchat-3.5").special_ids == {"bos": 1, "eos": 32000, "unk": 0, "end_of_turn": 32000}
    q = shared(tokenizers_dir, "qwen2.5").special_ids
    assert q["im_start"] == 151644 and q["im_end"] == q["eos"] == 151645 and "bos" not in q
    ll = shared(tokenizers_dir, "llama3.1").special_ids
    assert ll["start_header_id"] == 128006 and ll["eot_id"] == ll["eos"] == 128009 and ll["bos"] == 128000
    assert shared(tokenizers_dir, "mistral-v2").special_ids["inst"] == 3
    assert shared(tokenizers_dir, "internlm2").special_ids["im_end"] == 92542


# ------------------------------------------------------------------------------ original implementations
@pytest.mark.parametrize("name", ["mistral-v1", "internlm2"])
def test_sentencepiece_model_matches_sentencepiece(tokenizers_dir, plain_texts, name):
    spm = pytest.importorskip("sentencepiece")
    path = tokenizers_dir / name / "tokenizer.model"
    tok = load_tokenizer(path)
    assert tok.meta["format"] == "sentencepiece"
    sp = spm.SentencePieceProcessor(model_file=str(path))
    ref = shared(tokenizers_dir, name)
    encs = tok.encode_batch(plain_texts)
    refs = ref.encode_batch(plain_texts)
    for t, e, r in zip(plain_texts, encs, refs):
        assert e.ids.tolist() == sp.encode(t), t[:80]
        assert np.array_equal(e.ids, r.ids)
    if name == "mistral-v1":
        assert tok.fingerprint == ref.fingerprint
    else:  # the shared tokenizer.json renamed 6 [UNUSED_TOKEN_*] to chat markers; all else identical
        diff = [i for i, (a, b) in enumerate(zip(tok.token_texts(), ref.token_texts())) if a != b]
        assert diff == list(range(92538, 92544))


def _check_ranks_file(path, pattern, texts):
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import load_tiktoken_bpe

    tok = load_tokenizer(path, pattern=pattern)
    assert tok.meta["format"] == "tiktoken" and tok.family == "bytelevel"
    enc = tiktoken.Encoding("ref", pat_str=pattern or LLAMA3_PATTERN,
                            mergeable_ranks=load_tiktoken_bpe(str(path)), special_tokens={})
    for t, e in zip(texts, tok.encode_batch(texts)):
        assert e.ids.tolist() == enc.encode_ordinary(t), (path.name, t[:80])
        assert e.offsets_exact
    assert tok.vocab_size == enc.n_vocab


def test_tiktoken_ranks_match_tiktoken(tokenizers_dir, plain_texts):
    _check_ranks_file(tokenizers_dir / "llama3" / "tokenizer.model", None, plain_texts)


@pytest.mark.slow
def test_qwen_tiktoken_ranks_match_tiktoken(tokenizers_dir, plain_texts):
    _check_ranks_file(tokenizers_dir / "qwen2" / "orig" / "qwen.tiktoken", QWEN_PATTERN, plain_texts)


def test_tekken_matches_mistral_common(tokenizers_dir, plain_texts):
    tekken = pytest.importorskip("mistral_common.tokens.tokenizers.tekken")
    path = tokenizers_dir / "mistral-tekken" / "orig" / "tekken_240718.json"
    tok = load_tokenizer(path)
    ref = tekken.Tekkenizer.from_file(str(path))
    for t, e in zip(plain_texts, tok.encode_batch(plain_texts)):
        assert e.ids.tolist() == ref.encode(t, bos=False, eos=False), t[:80]
    assert tok.fingerprint == shared(tokenizers_dir, "mistral-tekken").fingerprint


# ---------------------------------------------------------------------------------------- embedded / aliases
@pytest.fixture
def isolated_env(monkeypatch, tmp_path):
    """No tokenizer dir, an empty HF cache, offline."""
    monkeypatch.delenv("TOKALIGN_TOKENIZER_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.mark.parametrize("alias,shared_name", [("openchat", "openchat-3.5"), ("mistral", "mistral-v1"),
                                               ("mistral-nemo", "mistral-tekken")])
def test_embedded_equals_shared(isolated_env, tokenizers_dir, texts, alias, shared_name):
    emb = load_tokenizer(alias)
    assert emb.source.startswith("embedded:")
    ref = shared(tokenizers_dir, shared_name)
    assert emb.vocab_size == ref.vocab_size
    assert emb.fingerprint == ref.fingerprint
    assert emb.special_ids == ref.special_ids
    assert np.array_equal(emb.special_mask, ref.special_mask)
    conv = [{"role": "user", "content": "Hi <s> there"}, {"role": "assistant", "content": "Hello!\n  Bye"}]
    rendered = emb.apply_chat_template(conv)
    assert rendered == ref.apply_chat_template(conv)
    sample = texts[::3] + [rendered]
    for e, r in zip(emb.encode_batch(sample, add_special_tokens=True), ref.encode_batch(sample, add_special_tokens=True)):
        assert np.array_equal(e.ids, r.ids) and np.array_equal(e.offsets, r.offsets)


def test_openchat_embedded_details(isolated_env):
    tok = load_tokenizer("starling")
    assert tok.special_ids["eos"] == tok.special_ids["end_of_turn"] == 32000
    assert tok.token_to_id("<|pad_0|>") == 32001
    s = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert s == "<s>GPT4 Correct User: hi<|end_of_turn|>GPT4 Correct Assistant:"


def test_alias_resolution_order(isolated_env, tokenizers_dir, monkeypatch):
    tmp = isolated_env
    # 1. tokenizer_dir, by shared dir name
    tok = load_tokenizer("openchat", tokenizer_dir=tokenizers_dir)
    assert tok.source == "tokenizer_dir:%s" % (tokenizers_dir / "openchat-3.5") and tok.name == "openchat"
    # alias-named dir wins over the shared name (a deliberately different tokenizer to tell them apart)
    d = tmp / "tokdir"
    d.mkdir()
    (d / "openchat").symlink_to(tokenizers_dir / "mistral-v1", target_is_directory=True)
    (d / "openchat-3.5").symlink_to(tokenizers_dir / "openchat-3.5", target_is_directory=True)
    assert load_tokenizer("openchat", tokenizer_dir=d).vocab_size == 32000
    # $TOKALIGN_TOKENIZER_DIR when no argument
    monkeypatch.setenv("TOKALIGN_TOKENIZER_DIR", str(tokenizers_dir))
    assert load_tokenizer("qwen2").source.startswith("tokenizer_dir:")
    monkeypatch.delenv("TOKALIGN_TOKENIZER_DIR")
    # 2. the HF cache: a snapshot layout for the alias' hub id
    cache = tmp / "hf-cache"
    repo = cache / ("models--" + ALIASES["qwen1.5"].hub_id.replace("/", "--"))
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (snap / f).symlink_to(tokenizers_dir / "qwen2" / f)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    tok = load_tokenizer("qwen1.5")
    assert tok.source == "hf-cache:%s" % snap and tok.vocab_size == 151646
    # tokenizer_dir still comes first
    assert load_tokenizer("qwen1.5", tokenizer_dir=tokenizers_dir).source.startswith("tokenizer_dir:")
    # 3. hub skipped offline; 4. embedded default for openchat, clear error for qwen2
    assert load_tokenizer("openchat").source == "embedded:openchat"
    with pytest.raises(TokalignError, match="tokenizer_dir"):
        load_tokenizer("qwen2")
    # hub-id strings use the cache too
    assert load_tokenizer(ALIASES["qwen1.5"].hub_id).vocab_size == 151646


# --------------------------------------------------------------------------------------------- bad input
def test_unknown_alias_lists_known(isolated_env):
    with pytest.raises(TokalignError) as e:
        load_tokenizer("no-such-model")
    msg = str(e.value)
    assert "openchat" in msg and "qwen2.5" in msg and "mistral-nemo" in msg and "\n" not in msg


def test_missing_paths(isolated_env):
    for p in ("./nope", "/nonexistent/tokenizer.json", "missing.model"):
        with pytest.raises(TokalignError, match="no such file"):
            load_tokenizer(p)
    with pytest.raises(TokalignError, match="no such file"):
        load_tokenizer("someorg/somemodel")  # hub id: not cached, offline
    with pytest.raises(TokalignError, match="does not exist"):
        load_tokenizer("openchat", tokenizer_dir=isolated_env / "missing")


def test_remote_code_dir_needs_flag(tmp_path, tokenizers_dir):
    d = tmp_path / "internlm2-remote"
    d.mkdir()
    (d / "tokenizer.model").symlink_to(tokenizers_dir / "internlm2" / "tokenizer.model")
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "InternLM2Tokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]}}))
    with pytest.raises(TokalignError, match="--trust-remote-code") as e:
        load_tokenizer(d)
    assert "\n" not in str(e.value)
    tok = load_tokenizer(d, trust_remote_code=True)  # our converter reads tokenizer.model; no code is run
    assert tok.vocab_size == 92544


def test_bad_files(tmp_path):
    bad = tmp_path / "ranks.tiktoken"
    bad.write_bytes(b"IQ== 0\nIg== 1\nnot a line\n")
    with pytest.raises(TokalignError, match=r"ranks.tiktoken:3"):
        load_tokenizer(bad)
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"\x00\xff garbage" * 10)
    with pytest.raises(TokalignError, match="junk.model"):
        load_tokenizer(junk)
    js = tmp_path / "tokenizer.json"
    js.write_text("{not json")
    with pytest.raises(TokalignError, match="tokenizer.json"):
        load_tokenizer(js)
    empty = tmp_path / "emptydir"
    empty.mkdir()
    with pytest.raises(TokalignError, match="no tokenizer files"):
        load_tokenizer(empty)


def test_chat_template_fallback_and_errors(tokenizers_dir):
    gpt2 = shared(tokenizers_dir, "gpt2")
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert not gpt2.has_chat_template and gpt2.apply_chat_template(msgs) == "a\n\nb"
    mistral = shared(tokenizers_dir, "mistral-v1")
    assert mistral.apply_chat_template(msgs) == "<s>[INST] a [/INST]b</s>"
    # same as the transformers tokenizer's own apply_chat_template
    assert mistral.hf.apply_chat_template(msgs, tokenize=False) == mistral.apply_chat_template(msgs)
    with pytest.raises(TokalignError, match="chat template"):
        mistral.apply_chat_template([{"role": "system", "content": "x"}])
    with pytest.raises(TokalignError):
        gpt2.encode(b"bytes")  # type: ignore[arg-type]


def test_top_level_load_tokenizer(tokenizers_dir):
    import tokalign

    assert tokalign.load_tokenizer(tokenizers_dir / "gpt2").vocab_size == 50257
