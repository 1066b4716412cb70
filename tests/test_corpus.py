"""Corpus reader: formats, rendering, provenance and bad input."""
import hashlib
import json
from itertools import islice

import pytest

from tokalign.corpus import BUILTIN, Corpus, file_sha256, iter_corpus, resolve_paths
from tokalign.errors import TokalignError


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _conv(user, assistant, **extra):
    return dict(extra, messages=[{"role": "user", "content": user}, {"role": "assistant", "content": assistant}])


def test_builtin_sample():
    c = Corpus("builtin:sample")
    items = list(c)
    assert len(items) == c.stats.items >= 50
    assert len({i.sample_id for i in items}) == len(items)
    assert all(i.sample_id.startswith("sample/") for i in items)
    text = "".join(i.text for i in items)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in text)  # some Chinese
    assert "```python" in text and "def " in text  # some code
    for it in items:  # plain rendering: contents joined by blank lines, spans point at the responses
        assert it.text == "\n\n".join(m["content"] for m in it.messages)
        answers = [m["content"] for m in it.messages if m["role"] == "assistant"]
        assert [it.text[s:e] for s, e in it.assistant_spans] == answers
    assert c.provenance()[0]["sha256"] == hashlib.sha256(BUILTIN["sample"].read_bytes()).hexdigest()


def test_assistant_only_and_multiturn():
    items = {i.sample_id: i for i in Corpus("builtin:sample", assistant_only=True)}
    it = items["sample/en-011"]  # two assistant turns
    answers = [m["content"] for m in it.messages if m["role"] == "assistant"]
    assert it.text == "\n\n".join(answers) and len(answers) == 2
    assert [it.text[s:e] for s, e in it.assistant_spans] == answers


def test_chat_template(tokenizers_dir):
    from tokalign.tokenize import load_tokenizer

    tok = load_tokenizer(tokenizers_dir / "openchat-3.5")
    items = list(islice(Corpus("builtin:sample", template="chat", tokenizer=tok), 3))
    it = items[0]
    assert it.text.startswith("<s>GPT4 Correct User: ") and it.text.endswith("<|end_of_turn|>")
    assert [it.text[s:e] for s, e in it.assistant_spans] == [it.messages[1]["content"]]
    with pytest.raises(TokalignError, match="needs a tokenizer"):
        Corpus("builtin:sample", template="chat")
    with pytest.raises(TokalignError, match="assistant_only"):
        Corpus("builtin:sample", template="chat", tokenizer=tok, assistant_only=True)
    with pytest.raises(TokalignError, match="template"):
        Corpus("builtin:sample", template="fancy")


def test_text_jsonl_plain_text_globs_and_ids(tmp_path):
    _write_jsonl(tmp_path / "a.jsonl", [{"id": "x1", "text": "first"}, {"text": "second"}])
    (tmp_path / "b.txt").write_text("line one\n\nline three\n", encoding="utf-8")
    _write_jsonl(tmp_path / "c.jsonl", [_conv("q", "a", id=7)])
    items = list(iter_corpus(str(tmp_path / "*")))
    assert [i.text for i in items] == ["first", "second", "line one", "line three", "q\n\na"]
    a = str(tmp_path / "a.jsonl")
    b = str(tmp_path / "b.txt")
    assert [i.sample_id for i in items] == ["x1", a + ":2", b + ":1", b + ":3", "7"]
    # several paths and a directory give the same files
    assert resolve_paths([tmp_path / "a.jsonl", tmp_path / "b.txt", tmp_path / "c.jsonl"]) == resolve_paths(tmp_path)
    # text items have no turns: yielded unchanged under assistant_only
    assert [i.text for i in Corpus(a, assistant_only=True)] == ["first", "second"]


def test_max_chars(tmp_path):
    p = _write_jsonl(tmp_path / "m.jsonl", [_conv("u" * 10, "a" * 10), {"text": "short"}])
    c = Corpus(p, max_chars=15)
    items = list(c)
    assert [len(i.text) for i in items] == [15, 5] and c.stats.truncated == 1
    assert items[0].assistant_spans == [(12, 15)]
    with pytest.raises(TokalignError):
        Corpus(p, max_chars=0)


def test_malformed_json_names_file_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"text": "ok"}) + "\n{broken\n" + json.dumps({"text": "ok2"}) + "\n", encoding="utf-8")
    with pytest.raises(TokalignError, match=r"bad.jsonl:2: invalid JSON") as e:
        list(Corpus(p))
    assert "\n" not in str(e.value)
    c = Corpus(p, skip_bad=True)
    assert [i.text for i in c] == ["ok", "ok2"] and c.stats.skipped_bad_json == 1


def test_non_utf8_names_file_line(tmp_path):
    p = tmp_path / "latin.jsonl"
    p.write_bytes(json.dumps({"text": "fine"}).encode() + b"\n" + b'{"text": "caf\xe9"}\n')
    with pytest.raises(TokalignError, match=r"latin.jsonl:2: not valid UTF-8 \(byte 0xe9"):
        list(Corpus(p))
    c = Corpus(p, skip_bad=True)
    assert [i.text for i in c] == ["fine"] and c.stats.skipped_bad_utf8 == 1
    t = tmp_path / "latin.txt"
    t.write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(TokalignError, match=r"latin.txt:2"):
        list(Corpus(t))


@pytest.mark.parametrize("row,msg", [
    ({"messages": []}, "'messages' is empty"),
    ({"messages": "hi"}, "'messages' must be a list"),
    ({"messages": [{"role": "user"}]}, r"messages\[0\].content"),
    ({"messages": [{"content": "x"}]}, r"messages\[0\].role"),
    ({"text": 3}, "'text' must be a string"),
    ({"prompt": "x"}, "object has neither 'messages' nor 'text'"),
    ([1, 2], "expected a JSON object"),
])
def test_schema_errors(tmp_path, row, msg):
    p = _write_jsonl(tmp_path / "s.jsonl", [{"text": "ok"}, row])
    with pytest.raises(TokalignError, match=r"s.jsonl:2: " + msg):
        list(Corpus(p))
    c = Corpus(p, skip_bad=True)
    assert len(list(c)) == 1 and c.stats.skipped_bad_schema == 1


def test_empty_contents_and_blank_lines(tmp_path):
    p = tmp_path / "e.jsonl"
    p.write_text("\n" + json.dumps(_conv("", "")) + "\n\n" + json.dumps({"text": ""}) + "\n", encoding="utf-8")
    for opts in ({}, {"assistant_only": True}):  # empty turns add nothing; empty items are skipped, counted
        c = Corpus(p, **opts)
        assert list(c) == [] and c.stats.skipped_empty == 2 and c.stats.items == 0
    p2 = _write_jsonl(tmp_path / "e2.jsonl", [{"messages": [{"role": "user", "content": "q"},
                                                            {"role": "assistant", "content": ""},
                                                            {"role": "user", "content": "r"}]}])
    assert [i.text for i in Corpus(p2)] == ["q\n\nr"]


def test_missing_inputs(tmp_path):
    with pytest.raises(TokalignError, match="no such corpus file"):
        Corpus(tmp_path / "nope.jsonl")
    with pytest.raises(TokalignError, match="no files match"):
        Corpus(str(tmp_path / "*.jsonl"))
    with pytest.raises(TokalignError, match="unknown built-in corpus"):
        Corpus("builtin:nothing")
    with pytest.raises(TokalignError, match="no corpus files"):
        Corpus([])


def test_file_sha256(tmp_path):
    p = tmp_path / "x.txt"
    p.write_bytes(b"abc" * 1000)
    assert file_sha256(p) == hashlib.sha256(b"abc" * 1000).hexdigest()


def test_shared_corpus(corpora_dir):
    c = Corpus(corpora_dir / "alpacaeval_parallel.jsonl", assistant_only=True)
    items = list(islice(c, 20))
    with open(corpora_dir / "alpacaeval_parallel.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in islice(f, 20)]
    assert [i.sample_id for i in items] == [r["id"] for r in rows]
    assert [i.text for i in items] == [r["messages"][1]["content"] for r in rows]
