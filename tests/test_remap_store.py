"""Store-to-store remap (tokalign.remap.stores, the engine of `tokalign remap`) against the per-sample path it
replaced (tests/remap_store_reference.py), on stores built with real tokenizers from real texts: the two stores
are ordered differently (each by its own token counts), some samples are truncated, and some source texts
genuinely differ from the pivot texts (inserted / dropped words, a template around the text)."""
from __future__ import annotations

import dataclasses

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from remap_store_reference import remap_per_sample  # noqa: E402
from tokalign.testing import real_pair  # noqa: E402

from tokalign.cli import main  # noqa: E402
from tokalign.errors import TokalignError  # noqa: E402
from tokalign.remap.stores import (REMAP_CE_EXTRA, REMAP_EXTRAS, TokenBytes, align_packed,  # noqa: E402
                                  remap_stores, token_budget_batches)
from tokalign.store import StoreSchema, StoreWriter, open_store, open_writer  # noqa: E402

EXTRAS = REMAP_EXTRAS + (REMAP_CE_EXTRA,)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tokenizers_dir, corpora_dir):
    """openchat pivot / internlm2 source stores over ~40 real texts (tiny chunks: many chunk boundaries)."""
    return real_pair(tmp_path_factory.mktemp("remap_store"), tokenizers_dir, corpora_dir, n_items=40, item_seed=3,
                     change_every=5, change_seed=1, seed=7, chunk_tokens=256)


def _schema(pivot, pm, k):
    return StoreSchema(model="t", tokenizer_fingerprint=pivot.schema.tokenizer_fingerprint, vocab_size=pm.pivot_vocab,
                       k=k, logits_dtype="float32", kind="remapped", extras=EXTRAS)


def _assert_same_store(a_url, b_url):
    a, b = open_store(str(a_url)), open_store(str(b_url))
    assert a.sample_ids == b.sample_ids
    np.testing.assert_array_equal(a.lengths, b.lengths)
    ta = a.read_tokens(0, 0, a.num_tokens)
    tb = b.read_tokens(0, 0, b.num_tokens)
    assert set(ta) == set(tb)
    for name in ta:
        np.testing.assert_array_equal(ta[name], tb[name], err_msg=name)
    np.testing.assert_array_equal(a.seq_ce, b.seq_ce)
    np.testing.assert_array_equal(a.valid, b.valid)


def _run_both(world, tmp_path, *, k=6, inside="onehot", one_to_many="last", **fast_options):
    a = open_store(str(world["dir"] / "pivot.zarr"))
    b = open_store(str(world["dir"] / "source.zarr"))
    ids = a.sample_ids
    pm = world["pm"]
    ref = StoreWriter.create(str(tmp_path / "ref.zarr"), _schema(a, pm, k))
    remap_per_sample(a, b, pm, ref, ids, world["tp"].token_texts(), world["ts"].token_texts(), k_out=k, inside=inside,
                     one_to_many=one_to_many)
    ref.close()
    fast = StoreWriter.create(str(tmp_path / "fast.zarr"), _schema(a, pm, k))
    totals = remap_stores(a, b, pm, fast, ids, TokenBytes.of(world["tp"]), TokenBytes.of(world["ts"]), k_out=k,
                          inside=inside, one_to_many=one_to_many, **fast_options)
    fast.close()
    _assert_same_store(tmp_path / "ref.zarr", tmp_path / "fast.zarr")
    return totals


def test_stores_are_realistic(world):
    a = open_store(str(world["dir"] / "pivot.zarr"))
    b = open_store(str(world["dir"] / "source.zarr"))
    assert sorted(a.sample_ids) == sorted(b.sample_ids)
    assert a.sample_ids != b.sample_ids  # each store in its own length order
    assert (a.lengths == 300).any() and (b.lengths == 300).any()  # truncated samples


@pytest.mark.parametrize("inside,one_to_many", [("onehot", "last"), ("mask", "weighted"), ("pivot", "last")])
def test_fast_path_reproduces_per_sample_path(world, tmp_path, inside, one_to_many):
    totals = _run_both(world, tmp_path, inside=inside, one_to_many=one_to_many, batch_tokens=1500)
    paths = totals.align_paths
    # every alignment path was exercised: phantom space only, and texts that truly differ (DTW stretches)
    assert paths["text_diff_dtw"] > 0 and paths["empty"] == 0
    assert totals.chunks_read["source"] > 10


def test_tiny_cache_and_one_batch_give_the_same_store(world, tmp_path):
    totals = _run_both(world, tmp_path, batch_tokens=10 ** 9, cache_bytes=1, prefetch=False, threads=1)
    assert totals.seconds["total"] > 0
    t2 = _run_both(world, tmp_path / "b", batch_tokens=200, cache_bytes=1)
    assert t2.chunks_read["source_reread"] > 0  # the cache was too small: chunks were decoded again


def test_source_store_in_two_parts(world, tmp_path):
    """A source store written by two ranks (two parts, samples interleaved) gives the same output."""
    b = open_store(str(world["dir"] / "source.zarr"))
    url = str(tmp_path / "source2.zarr")
    for r in range(2):
        w = StoreWriter.create(url, b.schema, part=r, num_parts=2)
        w.append([{k: v for k, v in b[i].items() if k not in ("seq_ce",)} for i in range(r, len(b), 2)])
        w.close()
    a = open_store(str(world["dir"] / "pivot.zarr"))
    b2 = open_store(url)
    assert len(b2.parts) == 2 and sorted(b2.sample_ids) == sorted(b.sample_ids)
    pm, k = world["pm"], 4
    outs = []
    for name, src in (("one", b), ("two", b2)):
        w = StoreWriter.create(str(tmp_path / f"{name}.zarr"), _schema(a, pm, k))
        remap_stores(a, src, pm, w, a.sample_ids, TokenBytes.of(world["tp"]), TokenBytes.of(world["ts"]), k_out=k,
                     batch_tokens=700, cache_bytes=50_000)
        w.close()
        outs.append(tmp_path / f"{name}.zarr")
    _assert_same_store(*outs)


def test_same_texts_take_the_span_path(world, tmp_path):
    """A source store over the same texts as the pivot (no changed items): no text holds a real difference
    beyond SentencePiece's dummy-prefix space, yet the groups still equal align.span's."""
    tp, ts = world["tp"], world["ts"]
    texts = ["Hello world", "def f(x):\n    return x", "你好，世界"]
    pb, sb = TokenBytes.of(tp), TokenBytes.of(ts)
    from tokalign.align import span
    from remap_samples import token_byte_offsets

    for text in texts:
        pi = tp.encode(text, add_special_tokens=True).ids
        si = ts.encode(text, add_special_tokens=True).ids
        g, go, path = align_packed(pb, pi, np.array([0, len(pi)]), sb, si, np.array([0, len(si)]))
        t1, o1 = token_byte_offsets(tp.token_texts(), pi)
        t2, o2 = token_byte_offsets(ts.token_texts(), si)
        np.testing.assert_array_equal(g, span(o1, o2, pivot_text=t1, source_text=t2).groups)
        # the same tokenizer on both sides spells the same text: plain span
        g2, _, path2 = align_packed(pb, pi, np.array([0, len(pi)]), pb, pi, np.array([0, len(pi)]))
        assert path2.tolist() == [0] and np.array_equal(g2[:, 0], g2[:, 2])


def test_align_packed_names_bad_ids(world):
    pb = TokenBytes.of(world["tp"])
    with pytest.raises(TokalignError, match="sequence 1: pivot token id 99999 at position 1"):
        align_packed(pb, np.array([1, 5, 1, 99999]), np.array([0, 2, 4]), pb, np.array([1, 5, 1, 5]),
                     np.array([0, 2, 4]))


@pytest.mark.parametrize("min_run_rows", [0, 1 << 40])  # every batch copied run by run / row by row
@pytest.mark.parametrize("order_kind", ["random", "store", "store_blocks_shuffled"])
def test_chunk_gather_matches_by_id(world, min_run_rows, order_kind):
    b = open_store(str(world["dir"] / "source.zarr"))
    rng = np.random.default_rng(0)
    order = {"random": rng.permutation(len(b)), "store": np.arange(len(b)),
             # runs of store-consecutive samples in shuffled order (runs that cross chunks)
             "store_blocks_shuffled": np.concatenate(rng.permutation(np.array_split(np.arange(len(b)), 5)))}[order_kind]
    plan = np.array_split(order, 7)
    g = b.gather(["input_ids", "topk_ids", "topk_logits"], plan, cache_bytes=20_000, min_run_rows=min_run_rows)
    for k, idx in enumerate(plan):
        out, offs = g.gather(k)
        for j, i in enumerate(idx.tolist()):
            s = b[i]
            for f in ("input_ids", "topk_ids", "topk_logits"):
                np.testing.assert_array_equal(out[f][offs[j]:offs[j + 1]], s[f])
    assert g._cached_bytes == 0  # nothing is kept once no later batch needs it


def test_token_budget_batches():
    assert [b.tolist() for b in token_budget_batches(np.array([5, 5, 20, 1, 1]), 10)] == [[0, 1], [2], [3, 4]]


def test_append_packed_equals_append(tmp_path, world):
    a = open_store(str(world["dir"] / "pivot.zarr"))
    samples = [a[i] for i in range(5)]
    schema = a.schema
    w1 = StoreWriter.create(str(tmp_path / "one.zarr"), schema)
    w1.append([{k: s[k] for k in ("sample_id", "input_ids", "loss_mask", "topk_ids", "topk_logits", "logsumexp",
                                  "token_ce")} for s in samples])
    w1.close()
    w2 = StoreWriter.create(str(tmp_path / "two.zarr"), schema)
    cat = {k: np.concatenate([s[k] for s in samples]) for k in ("input_ids", "loss_mask", "topk_ids", "topk_logits",
                                                                 "logsumexp", "token_ce")}
    with pytest.raises(TokalignError, match="token_ce has shape"):
        w2.append_packed([s["sample_id"] for s in samples], [len(s["input_ids"]) for s in samples],
                         dict(cat, token_ce=cat["token_ce"][:-1]))
    w2.append_packed([s["sample_id"] for s in samples], [len(s["input_ids"]) for s in samples], cat)
    w2.close()
    _assert_same_store(tmp_path / "one.zarr", tmp_path / "two.zarr")


def test_cli_resumes_and_matches_reference(world, tmp_path, tokenizers_dir, capsys):
    d = world["dir"]
    a = open_store(str(d / "pivot.zarr"))
    b = open_store(str(d / "source.zarr"))
    ref = StoreWriter.create(str(tmp_path / "ref.zarr"), _schema(a, world["pm"], 10))
    remap_per_sample(a, b, world["pm"], ref, a.sample_ids, world["tp"].token_texts(), world["ts"].token_texts())
    ref.close()
    out = tmp_path / "out.zarr"
    argv = ["remap", "--pivot-store", str(d / "pivot.zarr"), "--source-store", str(d / "source.zarr"), "--map",
            str(d / "map"), "--out", str(out), "--tokenizer-dir", str(tokenizers_dir), "--json"]
    # an interrupted run: the first 15 samples committed, the part left open
    w = open_writer(str(out), _cli_schema(d, world))
    remap_stores(a, b, world["pm"], w, a.sample_ids[:15], TokenBytes.of(world["tp"]), TokenBytes.of(world["ts"]))
    w.flush()
    assert main(argv) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    assert report["samples_already_done"] == 15 and report["samples_written"] == len(a) - 15
    assert set(report["seconds"]) >= {"read", "align", "kernel", "write"} and report["positions_per_s"] > 0
    _assert_same_store(tmp_path / "ref.zarr", out)
    shutil.rmtree(out)


def test_run_stores_takes_opened_objects(world, tmp_path, tokenizers_dir, capsys):
    """tokalign.remap.run_stores (what the CLI calls) on opened readers, a loaded map and loaded tokenizers writes
    the store the CLI writes from paths; overwrite=True rewrites a finished store instead of resuming it."""
    from tokalign.remap import RemapOptions, run_stores

    d = world["dir"]
    assert main(["remap", "--pivot-store", str(d / "pivot.zarr"), "--source-store", str(d / "source.zarr"), "--map",
                 str(d / "map"), "--out", str(tmp_path / "cli.zarr"), "--tokenizer-dir", str(tokenizers_dir),
                 "--json"]) == 0
    capsys.readouterr()
    a, b = open_store(str(d / "pivot.zarr")), open_store(str(d / "source.zarr"))
    options = RemapOptions(pivot_tokenizer=world["tp"], source_tokenizer=world["ts"], progress=False)
    report = run_stores(a, b, world["map"], tmp_path / "lib.zarr", options)
    assert report["samples_written"] == len(a) and report["samples_already_done"] == 0
    _assert_same_store(tmp_path / "cli.zarr", tmp_path / "lib.zarr")
    again = run_stores(a, b, world["map"], tmp_path / "lib.zarr", dataclasses.replace(options, overwrite=True))
    assert again["samples_written"] == len(a)
    _assert_same_store(tmp_path / "cli.zarr", tmp_path / "lib.zarr")
    with pytest.raises(TokalignError, match="--top-k must be >= 1"):
        run_stores(a, b, world["map"], tmp_path / "bad.zarr", dataclasses.replace(options, top_k=0))


def test_cli_codec_and_float16_logits(world, tmp_path, tokenizers_dir, capsys):
    """--codec lz4 --logits-dtype float16: the same store as the default one up to float16 rounding of the
    log-probabilities (-inf kept), both settings recorded, and a resume without the flags keeps them."""
    d = world["dir"]
    base = ["remap", "--pivot-store", str(d / "pivot.zarr"), "--source-store", str(d / "source.zarr"), "--map",
            str(d / "map"), "--tokenizer-dir", str(tokenizers_dir), "--json"]
    assert main(base + ["--out", str(tmp_path / "f32.zarr")]) == 0
    a = open_store(str(d / "pivot.zarr"))
    out = tmp_path / "f16.zarr"
    w = open_writer(str(out), dataclasses.replace(_cli_schema(d, world), codec="lz4", logits_dtype="float16"))
    remap_stores(a, open_store(str(d / "source.zarr")), world["pm"], w, a.sample_ids[:10], TokenBytes.of(world["tp"]),
                 TokenBytes.of(world["ts"]))
    w.flush()  # interrupted after 10 samples; the CLI resumes with the store's own codec and dtype
    assert main(base + ["--out", str(out)]) == 0
    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "f16b.zarr"), "--codec", "lz4", "--logits-dtype", "float16"]) == 0
    capsys.readouterr()
    _assert_same_store(out, tmp_path / "f16b.zarr")
    ref, got = open_store(str(tmp_path / "f32.zarr")), open_store(str(out))
    assert (got.schema.codec, got.schema.logits_dtype) == ("lz4", "float16")
    assert ref.schema.codec == "zstd" and ref.schema.logits_dtype == "float32"
    tr, tg = ref.read_tokens(0, 0, ref.num_tokens), got.read_tokens(0, 0, got.num_tokens)
    for name in tr:
        if name != "topk_logits":
            np.testing.assert_array_equal(tr[name], tg[name], err_msg=name)
    lr, lg = tr["topk_logits"], tg["topk_logits"]
    np.testing.assert_array_equal(np.isneginf(lr), np.isneginf(lg))
    fin = np.isfinite(lr)
    assert fin.sum() > 1000
    np.testing.assert_array_equal(lg[fin], lr[fin].astype(np.float16).astype(np.float32))


def _cli_schema(d, world):
    """The schema `tokalign remap` writes for these stores (so that the CLI resumes the part)."""
    a = open_store(str(d / "pivot.zarr"))
    b = open_store(str(d / "source.zarr"))
    return StoreSchema(
        model=f"{b.schema.model} -> {world['tp'].name}", tokenizer_fingerprint=a.schema.tokenizer_fingerprint,
        vocab_size=world["pm"].pivot_vocab, k=10, logits_dtype="float32", kind="remapped",
        template=getattr(a.schema, "template", None),
        options={"pivot_store": str(d / "pivot.zarr"), "source_store": str(d / "source.zarr"), "map": str(d / "map"),
                 "inside": "onehot", "one_to_many": "last", "source_model": b.schema.model,
                 "source_fingerprint": b.schema.tokenizer_fingerprint, "tokenizer": world["tp"].name,
                 "ce_definition": "source_nll_by_group"},
        extras=EXTRAS)


# ---- property: align_packed == align.span on the spelled texts, for arbitrary vocabularies and sequences ----

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def _pairs(draw):
    # few distinct pieces: the two texts share long stretches; empty pieces are zero-width tokens
    alphabet = st.sampled_from([b"a", b"b", b" ", b"ab", b"\xe4\xbd", b"<s>", b""])
    vocab_p = draw(st.lists(alphabet | st.binary(min_size=0, max_size=3), min_size=1, max_size=12))
    vocab_s = draw(st.lists(alphabet | st.binary(min_size=1, max_size=2), min_size=1, max_size=12))
    if draw(st.booleans()):
        seqs = draw(st.lists(st.tuples(st.lists(st.integers(0, len(vocab_p) - 1), max_size=25),
                                       st.lists(st.integers(0, len(vocab_s) - 1), max_size=25)), min_size=1,
                             max_size=4))
        return vocab_p, vocab_s, seqs
    # the source spells the same text with other tokens: pivot pieces and pairs of them (merged tokens)
    n = len(vocab_p)
    vocab_s = vocab_p + [vocab_p[i] + vocab_p[j] for i in range(n) for j in range(n)]
    seqs = []
    for p in draw(st.lists(st.lists(st.integers(0, n - 1), max_size=25), min_size=1, max_size=4)):
        merge = draw(st.lists(st.booleans(), min_size=len(p), max_size=len(p)))
        s, t = [], 0
        while t < len(p):
            if merge[t] and t + 1 < len(p):
                s.append(n + p[t] * n + p[t + 1])
                t += 2
            else:
                s.append(p[t])
                t += 1
        seqs.append((p, s))
    return vocab_p, vocab_s, seqs


@settings(max_examples=80, deadline=None)
@given(_pairs())
def test_align_packed_equals_span(case):
    from tokalign.align import span
    from remap_samples import token_byte_offsets

    vocab_p, vocab_s, seqs = case
    pb, sb = TokenBytes.from_texts(vocab_p), TokenBytes.from_texts(vocab_s)
    pi = np.array([i for p, _ in seqs for i in p], np.int32)
    si = np.array([i for _, s in seqs for i in s], np.int32)
    po = np.r_[0, np.cumsum([len(p) for p, _ in seqs])]
    so = np.r_[0, np.cumsum([len(s) for _, s in seqs])]
    groups, g_off, path = align_packed(pb, pi, po, sb, si, so, max_diff=6)
    assert path.shape == (len(seqs),)
    for k, (p, s) in enumerate(seqs):
        tp, op = token_byte_offsets(vocab_p, np.array(p, np.int64))
        ts, os_ = token_byte_offsets(vocab_s, np.array(s, np.int64))
        want = span(op, os_, pivot_text=tp, source_text=ts, max_diff=6).groups
        np.testing.assert_array_equal(groups[g_off[k]:g_off[k + 1]], np.asarray(want).reshape(-1, 4))


class _FailingWriter:
    """A StoreWriter proxy whose ``fail_at``-th append raises (a full disk, say)."""

    def __init__(self, inner, fail_at):
        self.inner, self.fail_at, self.appended = inner, fail_at, 0
        self.schema = inner.schema

    def append_packed(self, ids, lengths, arrays):
        if self.appended == self.fail_at:
            raise TokalignError("disk full (test)")
        self.appended += 1
        return self.inner.append_packed(ids, lengths, arrays)

    def flush(self):
        self.inner.flush()


@pytest.mark.parametrize("prefetch", [True, False])
def test_writer_errors_reach_the_caller(world, tmp_path, prefetch):
    """An error of the write-behind thread is raised by remap_stores; the batches before it were written in
    order, none after it."""
    a = open_store(str(world["dir"] / "pivot.zarr"))
    b = open_store(str(world["dir"] / "source.zarr"))
    inner = StoreWriter.create(str(tmp_path / "w.zarr"), _schema(a, world["pm"], 4))
    w = _FailingWriter(inner, fail_at=2)
    with pytest.raises(TokalignError, match="disk full"):
        remap_stores(a, b, world["pm"], w, a.sample_ids, TokenBytes.of(world["tp"]), TokenBytes.of(world["ts"]),
                     k_out=4, batch_tokens=300, prefetch=prefetch)
    assert w.appended == 2
    inner.close()
    done = open_store(str(tmp_path / "w.zarr"))
    batches = token_budget_batches(a.lengths, 300)
    assert done.sample_ids == [a.sample_ids[i] for i in np.concatenate(batches[:2]).tolist()]


def test_swapped_stores_are_named_as_a_swap(world, tmp_path, tokenizers_dir, capsys):
    """--pivot-store / --source-store given the other way round: one line saying they look swapped."""
    from tokalign.cli import main

    d = world["dir"]
    common = ["--map", str(d / "map"), "--tokenizer-dir", str(tokenizers_dir)]
    capsys.readouterr()
    assert main(["remap", "--pivot-store", str(d / "source.zarr"), "--source-store", str(d / "pivot.zarr"),
                 "--pivot", "openchat", "--source", "internlm2", "--out", str(tmp_path / "o"),
                 *common]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "swapped" in err, err
    assert main(["remap", "--pivot-store", str(d / "source.zarr"), "--source-store", str(d / "pivot.zarr"),
                 "--out", str(tmp_path / "o2"), *common]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "swapped" in err, err


def test_full_disk_mid_store_loses_nothing_and_resumes(world, tmp_path, tokenizers_dir, capsys, monkeypatch):
    """ENOSPC on the third write of a remap (library entry point, small flushes): the error says what to do, the
    samples committed before it stay, and the same call again resumes to the store an uninterrupted run writes."""
    import errno

    from tokalign.cli.common import os_error_line
    from tokalign.remap import RemapOptions, run_stores
    from tokalign.store.writer import StoreWriter as Writer

    d = world["dir"]
    a, b = open_store(str(d / "pivot.zarr")), open_store(str(d / "source.zarr"))
    options = RemapOptions(pivot_tokenizer=world["tp"], source_tokenizer=world["ts"], progress=False,
                           batch_tokens=256, flush_tokens=512)
    run_stores(a, b, world["map"], tmp_path / "whole.zarr", options)
    orig, calls = Writer._write_rows, {"n": 0}

    def full(self, rows):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.url))
        return orig(self, rows)

    monkeypatch.setattr(Writer, "_write_rows", full)
    with pytest.raises(OSError) as info:
        run_stores(a, b, world["map"], tmp_path / "out.zarr", options)
    line = os_error_line(info.value)
    assert "No space left on device" in line and "run the same command again" in line and "\n" not in line
    monkeypatch.undo()
    report = run_stores(a, b, world["map"], tmp_path / "out.zarr", options)
    assert 0 < report["samples_already_done"] < len(a)
    _assert_same_store(tmp_path / "whole.zarr", tmp_path / "out.zarr")
