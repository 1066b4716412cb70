"""tokalign.store fast paths: direct shard reads/writes (tokalign.store._shards) against zarr's own, the
whole-shard flush policy, the lz4 codec, file:// and memory:// URLs."""
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokalign.errors import TokalignError
from tokalign.store import StoreWriter, _zarrio, open_store
from tokalign.store._shards import MAX_UINT64, ByteIO, RowPieces, ShardLayout, parse_index

# every committed array of a store as zarr itself reads it (the parts' arrays are zarr arrays)
from test_store import _all_arrays as _zarr_arrays  # noqa: E402

V, K = 1000, 4


def make_sample(i, n=None, empty_mask=False):
    rng = np.random.default_rng(7000 + i)
    n = int(rng.integers(1, 60)) if n is None else n
    logits = np.sort(rng.normal(size=(n, K)).astype(np.float32) * 3, axis=1)[:, ::-1]
    return {"sample_id": "doc-%04d" % i, "input_ids": rng.integers(0, V, n).astype(np.int32),
            "loss_mask": np.zeros(n, bool) if empty_mask else rng.random(n) < 0.6,
            "topk_ids": rng.integers(-1, V, (n, K)).astype(np.int32), "topk_logits": np.ascontiguousarray(logits),
            "logsumexp": (logits[:, 0] + rng.random(n)).astype(np.float32),
            "token_ce": np.zeros(n, np.float32) if empty_mask else rng.random(n).astype(np.float32) * 5}


def make_schema(**kw):
    from tokalign.store import StoreSchema

    return StoreSchema(model="tiny", tokenizer_fingerprint="fp-tiny", vocab_size=V, k=K, chunk_tokens=32,
                       shard_tokens=128, chunk_samples=8, shard_samples=32, **kw)


def _url(kind, tmp_path):
    return "memory://fast-%s" % uuid.uuid4().hex if kind == "memory" else "file://" + str(tmp_path / "s.zarr")


def _write(url, samples, batch=5, schema=None, **kw):
    with StoreWriter.create(url, schema or make_schema(), **kw) as w:
        for b in range(0, len(samples), batch):
            w.append(samples[b:b + batch])
    return w


def _assert_dicts_equal(a, b):
    assert set(a) == set(b)
    for key in a:
        if isinstance(a[key], np.ndarray):
            assert a[key].dtype == b[key].dtype, key
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("kind", ["file", "memory"])
@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_direct_reads_equal_zarr_reads(tmp_path, kind, codec):
    url = _url(kind, tmp_path)
    samples = [make_sample(i) for i in range(70)]
    _write(url, samples, schema=make_schema(codec=codec))
    fast, slow = open_store(url, threads=2), open_store(url, direct=False)
    assert fast.direct and not slow.direct
    assert all(lay is not None for lay in fast.parts[0].layouts.values())
    t = fast.num_tokens
    assert t > 4 * 128  # several shards
    rng = np.random.default_rng(0)
    ranges = [(0, t), (0, 0), (5, 6), (31, 33), (127, 129), (128, 256), (t - 1, t), (0, 128)]
    ranges += [tuple(sorted(int(x) for x in rng.integers(0, t + 1, 2))) for _ in range(25)]
    for lo, hi in ranges:
        _assert_dicts_equal(fast.read_tokens(0, lo, hi), slow.read_tokens(0, lo, hi))
    for kw in ({"batch_size": 3}, {"batch_size": 7, "packed": True}, {"batch_size": 64, "max_tokens": 100},
               {"batch_size": 5, "packed": True, "fields": ["topk_ids", "topk_logits"]},
               {"batch_size": 4, "packed": True, "only_valid": True, "start": 3, "stop": 50},
               {"batch_size": 6, "packed": True, "prefetch": 0}, {"batch_size": 2, "prefetch": 3}):
        got = list(fast.iter_batches(**kw))
        want = list(slow.iter_batches(**kw))
        assert len(got) == len(want)
        for g, w in zip(got, want):
            for gg, ww in ([(g, w)] if isinstance(g, dict) else zip(g, w)):
                _assert_dicts_equal(gg, ww)
    it = fast.iter_batches(2, packed=True, prefetch=2)  # abandoned mid-way: the read-ahead thread stops
    first = next(it)
    it.close()
    np.testing.assert_array_equal(first["topk_ids"], slow.read_tokens(0, 0, len(first["topk_ids"]))["topk_ids"])
    for i in rng.permutation(len(samples))[:20]:  # random access (chunk-aligned block cache)
        _assert_dicts_equal(fast[int(i)], slow[int(i)])
    packed = next(fast.iter_batches(10_000, packed=True))
    want = np.concatenate([s["input_ids"] for s in samples])
    np.testing.assert_array_equal(packed["input_ids"], want)


def test_missing_chunks_read_as_fill_value(tmp_path):
    """In format-1 stores zarr left chunks that hold only the fill value out of a shard (index entry 2**64-1);
    format 2 writes them (tests/test_store_integrity.py), but format-1 stores still read as before."""
    url = "file://" + str(tmp_path / "s.zarr")
    samples = [make_sample(i, n=40, empty_mask=(i < 6)) for i in range(12)]
    _write(url, samples, direct=False, format_version=1)
    fast, slow = open_store(url), open_store(url, direct=False)
    lay = fast.parts[0].layouts["loss_mask"]
    io = ByteIO(fast.root.store)
    assert io.get_many([(lay.shard_key(0), 0, -lay.index_bytes)]) == [None]  # rows 0-127 all False: no shard
    raw = io.get_many([(lay.shard_key(1), 0, -lay.index_bytes)])[0]
    index = parse_index(lay, raw, lay.shard_key(1))
    assert (index[:3, 0] == MAX_UINT64).all() and index[3, 0] != MAX_UINT64  # rows 128-223 all False
    for lo, hi in ((0, fast.num_tokens), (10, 100), (200, 300)):
        _assert_dicts_equal(fast.read_tokens(0, lo, hi), slow.read_tokens(0, lo, hi))


@pytest.mark.parametrize("flush_tokens,level", [(0, 5), (50, 5), (128, 5), (1 << 20, 5), (50, 1), (1 << 20, 1)])
def test_direct_writes_equal_zarr_writes(flush_tokens, level):
    """Shards encoded by tokalign read back bit for bit through zarr, also after zarr rewrote them in part
    (level 1: zstd with an explicit 256 KiB blosc block size)."""
    samples = [make_sample(i) for i in range(70)]
    a, b = "memory://fast-%s" % uuid.uuid4().hex, "memory://fast-%s" % uuid.uuid4().hex
    wa = _write(a, samples, flush_tokens=flush_tokens, schema=make_schema(compression_level=level))
    _write(b, samples, flush_tokens=flush_tokens, direct=False, schema=make_schema(compression_level=level))
    assert wa._layouts["topk_logits"].blocksize == (_zarrio.ZSTD1_BLOCKSIZE if level == 1 else 0)
    assert wa.whole_shards == (flush_tokens >= 128)
    _assert_dicts_equal(_zarr_arrays(a), _zarr_arrays(b))
    r = open_store(a)
    for i, s in enumerate(samples):
        np.testing.assert_array_equal(r[i]["topk_ids"], s["topk_ids"])


def test_whole_shard_policy_commits_only_whole_shards():
    url = "memory://fast-%s" % uuid.uuid4().hex
    w = StoreWriter.create(url, make_schema(), flush_tokens=128)
    assert w.whole_shards
    shapes = []
    written = 0
    for i in range(40):
        s = make_sample(i)
        w.append([s])
        written += len(s["input_ids"])
        arr = w._arrays["input_ids"]
        shapes.append(int(arr.shape[0]))
        assert arr.shape[0] % 128 == 0 and arr.shape[0] <= written  # only whole shards are written
        assert w.committed_tokens <= arr.shape[0]
        assert w.committed_tokens + w.stats["buffered_tokens"] == written
        assert written - w.committed_tokens < 128 + 60  # at most a shard (+ one sample) is held back
    assert shapes[-1] >= 3 * 128 and w.committed_samples > 0
    w.close()
    r = open_store(url)
    assert r.num_tokens == written and len(r) == 40
    for i in range(40):
        np.testing.assert_array_equal(r[i]["input_ids"], make_sample(i)["input_ids"])


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_lz4_codec_round_trip_and_identity(tmp_path, kind):
    url = _url(kind, tmp_path)
    samples = [make_sample(i) for i in range(20)]
    schema = make_schema(codec="lz4", compression_level=1)
    w = StoreWriter.create(url, schema, flush_tokens=128)
    w.append(samples[:10])
    del w  # interrupted: resume must keep the codec
    with pytest.raises(TokalignError, match="schema differs.*'cname': 'lz4'"):
        StoreWriter.resume(url, schema=make_schema())
    w = StoreWriter.resume(url, schema=schema)
    w.append([s for s in samples if s["sample_id"] in set(w.remaining(x["sample_id"] for x in samples))])
    w.close()
    r = open_store(url)
    assert r.schema.codec == "lz4" and r.attrs["chunks"]["compressor"]["cname"] == "lz4"
    meta = r.parts[0].arrays["topk_ids"].metadata.to_dict()
    assert meta["codecs"][0]["configuration"]["codecs"][1]["configuration"]["cname"] == "lz4"
    assert ShardLayout.from_array(r.parts[0].arrays["topk_ids"]).cname == "lz4"
    for i, s in enumerate(samples):
        np.testing.assert_array_equal(r[i]["topk_ids"], s["topk_ids"])
        np.testing.assert_array_equal(open_store(url, direct=False)[i]["token_ce"], s["token_ce"])
    with pytest.raises(TokalignError, match="codec"):
        make_schema(codec="gzip")


def test_old_stores_without_codec_read_as_zstd():
    from tokalign.store import StoreSchema

    attrs = make_schema().to_attrs()
    del attrs["chunks"]["compressor"]["cname"]
    assert StoreSchema.from_attrs(attrs).codec == "zstd"
    assert make_schema().identity() == StoreSchema.from_attrs(make_schema().to_attrs()).identity()


def test_corrupt_shard_index_is_a_clear_error(tmp_path):
    url = "file://" + str(tmp_path / "s.zarr")
    _write(url, [make_sample(i) for i in range(10)])
    shard = Path(str(tmp_path / "s.zarr")) / "part-00000" / "topk_ids" / "c" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(TokalignError, match="corrupt shard .*topk_ids.*checksum"):
        open_store(url).read_tokens(0, 0, 10)


def test_unsupported_layout_falls_back_to_zarr(tmp_path):
    """An array whose codecs the direct path does not know (here: plain zstd, no blosc) is read by zarr."""
    import zarr

    url = "file://" + str(tmp_path / "s.zarr")
    samples = [make_sample(i) for i in range(10)]
    _write(url, samples)
    g = zarr.open_group(str(tmp_path / "s.zarr" / "part-00000"), mode="r+")
    old = np.asarray(g["token_ce"][:])
    del g["token_ce"]
    arr = g.create_array("token_ce", shape=old.shape, dtype="float32", chunks=(32,), shards=(128,),
                         compressors=zarr.codecs.ZstdCodec(level=3), fill_value=0)
    arr[:] = old
    r = open_store(url)
    assert r.parts[0].layouts["token_ce"] is None and r.parts[0].layouts["topk_ids"] is not None
    for i, s in enumerate(samples):
        np.testing.assert_array_equal(r[i]["token_ce"], s["token_ce"])
        np.testing.assert_array_equal(r[i]["topk_ids"], s["topk_ids"])
    assert json.loads((tmp_path / "s.zarr" / "zarr.json").read_text())["attributes"]["format"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=5), st.data())
def test_row_pieces_equal_the_concatenation(lengths, data):
    """The writer encodes shards from its buffered batches without concatenating them (RowPieces)."""
    full = np.arange(3 * sum(lengths)).reshape(-1, 3)
    pieces = RowPieces(np.split(full, np.cumsum(lengths)[:-1]))
    assert pieces.shape == full.shape
    np.testing.assert_array_equal(pieces.array(), full)
    a = data.draw(st.integers(0, len(full)))
    b = data.draw(st.integers(a, len(full)))
    np.testing.assert_array_equal(pieces.rows(a, b), full[a:b])
    np.testing.assert_array_equal(pieces.sub(a, b).array(), full[a:b])
