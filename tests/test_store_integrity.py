"""A store never reads back wrong without saying so (issue 13): lost objects, flipped payload bytes, the writer
lock, impossible attributes and a failed remap, each against every read path (direct, zarr, iter_batches,
``tokalign inspect`` and ``tokalign remap``)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from tokalign.cli import main
from tokalign.errors import TokalignError
from tokalign.store import StoreWriter, open_store
from tokalign.store._shards import MAX_UINT64, ByteIO, ShardLayout, parse_index
from tokalign.store.lock import lock_path

from test_store_fastpaths import make_sample, make_schema  # noqa: E402

TOKEN_ARRAYS = ("input_ids", "topk_ids", "logsumexp", "token_ce", "topk_logits")


def _store(tmp_path, name="s.zarr", n=24, **kw):
    path = tmp_path / name
    with StoreWriter.create(str(path), make_schema(), **kw) as w:
        for b in range(0, n, 5):
            w.append([make_sample(i) for i in range(b, min(n, b + 5))])
    return path


def _reads(path):
    """Every way a reader touches token rows (each must raise for a damaged store)."""
    def direct():
        r = open_store(str(path))
        r.read_tokens(0, 0, r.num_tokens)

    def via_zarr():
        r = open_store(str(path), direct=False)
        r.read_tokens(0, 0, r.num_tokens)

    def batches():
        for _ in open_store(str(path)).iter_batches(4):
            pass

    def by_index():
        r = open_store(str(path))
        for i in range(len(r)):
            r[i]

    return {"direct": direct, "zarr": via_zarr, "iter_batches": batches, "by_index": by_index}


def _one_line_error(fn, *needles):
    with pytest.raises(TokalignError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def _inspect(path, *flags, capsys):
    code = main(["inspect", str(path), *flags])
    out = capsys.readouterr()
    return code, out.out + out.err


def _chunk_range(path, array, chunk):
    """(shard file, start, length) of chunk ``chunk`` of part-00000/``array``, from the shard index."""
    r = open_store(str(path))
    lay = r.parts[0].layouts[array]
    s = chunk // lay.chunks_per_shard
    key = lay.shard_key(s)
    raw = ByteIO(r.root.store).get_many([(key, None, 0)])[0]
    idx = parse_index(lay, raw, key)
    off, nb = (int(x) for x in idx[chunk - s * lay.chunks_per_shard])
    return path / key, off, nb, key


# -- format 2: every chunk written and checksummed -------------------------------------------------------------
def test_new_stores_checksum_and_write_every_chunk(tmp_path):
    path = tmp_path / "s.zarr"
    with StoreWriter.create(str(path), make_schema(), direct=False) as w:  # zarr writes: all-False loss_mask chunks
        w.append([make_sample(i, n=40, empty_mask=True) for i in range(8)])
    r = open_store(str(path))
    assert r.format_version == 2 and r.attrs["format_version"] == 2
    for name, arr in r.parts[0].arrays.items():
        inner = arr.metadata.to_dict()["codecs"][0]["configuration"]["codecs"]
        assert inner[-1]["name"] == "crc32c", name
    lay = r.parts[0].layouts["loss_mask"]
    assert lay.checksum
    io = ByteIO(r.root.store)
    for s in range(-(-r.num_tokens // lay.shard_rows)):
        raw = io.get_many([(lay.shard_key(s), 0, -lay.index_bytes)])[0]
        assert raw is not None  # a shard of only fill values is written
        idx = parse_index(lay, raw, lay.shard_key(s))
        used = min(lay.chunks_per_shard, -(-(r.num_tokens - s * lay.shard_rows) // lay.chunk_rows))
        assert (idx[:used, 0] != MAX_UINT64).all()
    # the direct writer writes the same checksummed chunks: both read paths agree
    other = _store(tmp_path, "d.zarr")
    a, b = open_store(str(other)), open_store(str(other), direct=False)
    for name, v in a.read_tokens(0, 0, a.num_tokens).items():
        np.testing.assert_array_equal(v, b.read_tokens(0, 0, b.num_tokens)[name])


# -- missing objects -----------------------------------------------------------------------------------------
def test_missing_shard_object_is_named_by_every_read(tmp_path, capsys):
    path = _store(tmp_path)
    (path / "part-00000" / "topk_logits" / "c" / "0" / "0").unlink()  # a partial copy
    for how, fn in _reads(path).items():
        _one_line_error(fn, "part-00000/topk_logits/c/0/0", str(path), "missing")
    for flags in ((), ("--scan",)):
        code, out = _inspect(path, *flags, capsys=capsys)
        assert code == 2 and "DAMAGED" in out and "part-00000/topk_logits/c/0/0" in out, out


@pytest.mark.parametrize("array", ["offsets", "sample_id", "nonfinite", "valid", "seq_ce"])
def test_missing_sample_array_shard(tmp_path, capsys, array):
    path = _store(tmp_path)
    shutil.rmtree(path / "part-00000" / array / "c")
    fn = (lambda: open_store(str(path)).sample_ids) if array == "sample_id" else (lambda: open_store(str(path)))
    _one_line_error(fn, "part-00000/%s/c/0" % array, "missing")
    code, out = _inspect(path, capsys=capsys)
    assert code == 2, out


def test_missing_chunk_entry_in_an_index(tmp_path):
    """A shard whose index leaves a chunk out (index checksum recomputed: not a torn index) is loss in format 2."""
    import google_crc32c

    path = _store(tmp_path)
    f, _, _, key = _chunk_range(path, "topk_ids", 1)
    data = bytearray(f.read_bytes())
    lay = open_store(str(path)).parts[0].layouts["topk_ids"]
    idx = np.frombuffer(bytes(data[-lay.index_bytes:-4]), "<u8").reshape(-1, 2).copy()
    idx[1] = MAX_UINT64
    ib = idx.tobytes()
    data[-lay.index_bytes:] = ib + np.uint32(google_crc32c.value(ib)).astype("<u4").tobytes()
    f.write_bytes(bytes(data))
    for fn in _reads(path).values():
        _one_line_error(fn, "chunk 1 of %s" % key, "missing")


# -- flipped payload bytes -----------------------------------------------------------------------------------
@pytest.mark.parametrize("array", TOKEN_ARRAYS)
def test_one_flipped_byte_in_a_chunk_payload(tmp_path, capsys, array):
    path = _store(tmp_path)
    f, off, nb, key = _chunk_range(path, array, 2)
    data = bytearray(f.read_bytes())
    data[off + nb // 2] ^= 0x10  # inside the compressed payload, not the index
    f.write_bytes(bytes(data))
    for how, fn in _reads(path).items():
        msg = _one_line_error(fn, str(path))
        assert (key in msg and "chunk 2" in msg) or how == "zarr", msg
        assert "crc32c" in msg or how == "zarr", msg
        assert array in msg, msg
    code, out = _inspect(path, "--scan", capsys=capsys)
    lines = [line for line in out.splitlines() if "DAMAGED:" in line]
    assert code == 2 and len(lines) == 1 and "chunk 2 of %s" % key in lines[0] and "crc32c" in lines[0], out
    assert _inspect(path, capsys=capsys)[0] == 0  # without --scan only the objects' presence is checked


def test_zarr_path_names_the_damaged_chunk(tmp_path):
    path = _store(tmp_path)
    f, off, nb, key = _chunk_range(path, "topk_ids", 0)
    data = bytearray(f.read_bytes())
    data[off + 20] ^= 0x01
    f.write_bytes(bytes(data))
    r = open_store(str(path), direct=False)
    _one_line_error(lambda: r.read_tokens(0, 0, 10, ["topk_ids"]), "chunk 0 of %s" % key, "crc32c", str(path))


# -- format 1 (before checksums) -------------------------------------------------------------------------------
def test_format1_store_reads_and_is_reported_unprotected(tmp_path, capsys):
    path = _store(tmp_path, format_version=1)
    r = open_store(str(path))
    assert r.format_version == 1 and not r.parts[0].layouts["topk_ids"].checksum
    want = [make_sample(i) for i in range(24)]
    for i, s in enumerate(want):
        np.testing.assert_array_equal(r.by_id(s["sample_id"])["topk_ids"], s["topk_ids"])
    code, out = _inspect(path, "--scan", capsys=capsys)
    assert code == 0 and "UNPROTECTED" in out, out
    assert json.loads(_json(path, capsys))["checksummed"] is False
    # a lost shard of a core array is still refused in format 1
    (path / "part-00000" / "topk_ids" / "c" / "1" / "0").unlink()
    _one_line_error(lambda: open_store(str(path)).read_tokens(0, 0, open_store(str(path)).num_tokens),
                    "part-00000/topk_ids/c/1/0", "missing")
    # a resumed format-1 part stays format 1 (readable by older tokalign)
    p2 = tmp_path / "r.zarr"
    w = StoreWriter.create(str(p2), make_schema(), format_version=1, flush_tokens=0)
    w.append([make_sample(0)])
    w.abort()
    w = StoreWriter.resume(str(p2), schema=make_schema())
    w.append([make_sample(1)])
    w.close()
    assert open_store(str(p2)).format_version == 1 and len(open_store(str(p2))) == 2


def _json(path, capsys):
    main(["inspect", str(path), "--json"])
    return capsys.readouterr().out


# -- concurrent writers ---------------------------------------------------------------------------------------
def test_second_writer_is_refused_and_lock_released(tmp_path):
    path = tmp_path / "s.zarr"
    w = StoreWriter.create(str(path), make_schema())
    lock = lock_path(path, "part-00000")
    owner = json.loads(lock.read_text())
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname() and owner["started_at"]
    # another process: two `dump-logits` at once
    code = ("import sys\nfrom tokalign.store import StoreWriter\nfrom tokalign.errors import TokalignError\n"
            "sys.path.insert(0, %r)\nfrom test_store_fastpaths import make_schema\n"
            "try:\n    StoreWriter.resume(%r, schema=make_schema())\nexcept TokalignError as e:\n    print(e)\n"
            "    sys.exit(2)\n" % (str(Path(__file__).parent), str(path)))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "being written by another process (pid %d" % os.getpid() in p.stdout, p
    w.append([make_sample(0)])
    w.flush()
    # the same process: a newer writer of the part takes over, the older one refuses to write from then on
    w_new = StoreWriter.resume(str(path), schema=make_schema())
    assert json.loads(lock.read_text())["token"] != owner["token"]
    _one_line_error(lambda: w.append([make_sample(5)]), "superseded")
    _one_line_error(w.close, "superseded")
    w_new.append([make_sample(1)])
    w_new.close()
    assert not lock.exists() and len(open_store(str(path))) == 2
    # an exception inside `with` releases it too (the part stays resumable)
    p2 = tmp_path / "e.zarr"
    with pytest.raises(RuntimeError):
        with StoreWriter.create(str(p2), make_schema(), flush_tokens=0) as w2:
            w2.append([make_sample(1)])
            raise RuntimeError("boom")
    assert not lock_path(p2, "part-00000").exists()
    w3 = StoreWriter.resume(str(p2), schema=make_schema())
    assert w3.committed_samples == 1
    w3.close()
    # different parts of one store are written concurrently
    p3 = tmp_path / "m.zarr"
    a = StoreWriter.create(str(p3), make_schema(), part=0, num_parts=2)
    b = StoreWriter.create(str(p3), make_schema(), part=1, num_parts=2)
    a.close(), b.close()


def test_stale_lock_is_taken_over_and_foreign_host_refused(tmp_path, capsys):
    path = tmp_path / "s.zarr"
    w = StoreWriter.create(str(path), make_schema(), flush_tokens=0)
    w.append([make_sample(0)])
    lock = lock_path(path, "part-00000")
    w._lock = None  # a writer killed with SIGKILL: its lock file stays behind
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = {"host": socket.gethostname(), "pid": int(dead.stdout), "started_at": "2020-01-01T00:00:00+00:00",
             "token": "x"}
    lock.write_text(json.dumps(stale))
    w2 = StoreWriter.resume(str(path), schema=make_schema())
    assert "taking over the stale lock" in capsys.readouterr().err
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    w2.abort()
    lock.write_text(json.dumps(dict(stale, host="other-host.example", pid=1)))
    msg = _one_line_error(lambda: StoreWriter.resume(str(path), schema=make_schema()), "other-host.example",
                          "delete %s" % lock)
    assert "another host" in msg
    lock.write_text("")  # torn
    _one_line_error(lambda: StoreWriter.resume(str(path), schema=make_schema()), "unreadable", str(lock))
    lock.unlink()
    StoreWriter.resume(str(path), schema=make_schema()).close()


# -- impossible attributes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("change,needle", [
    ({"num_parts": -1}, "num_parts=-1"),
    ({"num_parts": "2"}, "num_parts='2'"),
    ({"num_parts": 10 ** 12}, "num_parts="),
    ({"num_parts": 1.5}, "num_parts=1.5"),
    ({"format_version": "x"}, "format_version"),
    ({"vocab_size": "many"}, "not a valid store schema"),
])
def test_impossible_root_attributes_are_refused(tmp_path, capsys, change, needle):
    path = _store(tmp_path)
    g = zarr.open_group(str(path), mode="r+")
    g.update_attributes(change)
    _one_line_error(lambda: open_store(str(path)), needle)
    code, out = _inspect(path, capsys=capsys)
    assert code == 2 and needle in out


def test_impossible_part_attributes_are_refused(tmp_path):
    path = _store(tmp_path)
    part = zarr.open_group(str(path / "part-00000"), mode="r+")
    committed = dict(part.attrs["committed"])
    for bad, needle in (({"samples": -3}, "committed.samples=-3"), ({"tokens": "9"}, "committed.tokens"),
                        ({"samples": committed["samples"] + 50}, "rows committed but array")):
        part.update_attributes({"committed": dict(committed, **bad)})
        _one_line_error(lambda: open_store(str(path)), needle)
    part.update_attributes({"committed": committed})
    offsets = part["offsets"]
    good = np.asarray(offsets[:])
    bad = good.copy()
    bad[3], bad[4] = bad[4], bad[3]
    offsets[:] = bad
    _one_line_error(lambda: open_store(str(path)), "offsets", "monoton")
    offsets[:] = good
    open_store(str(path))
    # a part folder beyond num_parts: parts of two stores mixed
    shutil.copytree(path / "part-00000", path / "part-00003")
    _one_line_error(lambda: open_store(str(path)), "part-00003", "num_parts=1")


# -- tokalign remap over damaged input, failure then resume -----------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory, tokenizers_dir, corpora_dir):
    from tokalign.testing import real_pair

    return real_pair(tmp_path_factory.mktemp("integrity"), tokenizers_dir, corpora_dir, n_items=12, item_seed=3,
                     change_every=5, change_seed=1, seed=7, chunk_tokens=256)


def _remap_argv(pivot, source, world, out, tokenizers_dir):
    return ["remap", "--pivot-store", str(pivot), "--source-store", str(source), "--map", str(world["dir"] / "map"),
            "--out", str(out), "--tokenizer-dir", str(tokenizers_dir), "--json"]


@pytest.mark.parametrize("damage", ["delete", "flip"])
def test_remap_refuses_damaged_input_then_resumes(world, tmp_path, tokenizers_dir, capsys, damage):
    d = world["dir"]
    source = tmp_path / "source.zarr"
    shutil.copytree(d / "source.zarr", source)
    if damage == "delete":
        (source / "part-00000" / "topk_logits" / "c" / "0" / "0").unlink()
    else:
        f, off, nb, _ = _chunk_range(source, "topk_ids", 1)
        data = bytearray(f.read_bytes())
        data[off + nb // 3] ^= 0x04
        f.write_bytes(bytes(data))
    out = tmp_path / "out.zarr"
    argv = _remap_argv(d / "pivot.zarr", source, world, out, tokenizers_dir)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(source) in err and "damaged" in err, err
    assert "--overwrite" in err and "resumes" in err
    assert not lock_path(out, "part-00000").exists()
    # the input fixed in place: the same command resumes
    shutil.rmtree(source)
    shutil.copytree(d / "source.zarr", source)
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["samples_written"] == len(open_store(str(d / "pivot.zarr")))
    # the input fixed by pointing at another copy: the failed output held nothing, so it starts over
    out2 = tmp_path / "out2.zarr"
    broken = tmp_path / "broken.zarr"
    shutil.copytree(d / "source.zarr", broken)
    (broken / "part-00000" / "topk_logits" / "c" / "0" / "0").unlink()
    assert main(_remap_argv(d / "pivot.zarr", broken, world, out2, tokenizers_dir)) == 2
    capsys.readouterr()
    assert main(_remap_argv(d / "pivot.zarr", d / "source.zarr", world, out2, tokenizers_dir)) == 0
    cap = capsys.readouterr()
    assert "starting it over" in cap.err and "source_store" in cap.err
    # a finished output made with other settings: refused naming the field, not two whole schemas
    assert main(_remap_argv(d / "pivot.zarr", source, world, out2, tokenizers_dir) + ["--top-k", "4"]) == 2
    err = capsys.readouterr().err
    assert "k: 10 != 4" in err and "--overwrite" in err and len(err) < 600, err
    assert main(_remap_argv(d / "pivot.zarr", source, world, out2, tokenizers_dir) + ["--top-k", "4",
                                                                                        "--overwrite"]) == 0
    capsys.readouterr()
    # an input as --out is refused
    assert main(_remap_argv(d / "pivot.zarr", source, world, source, tokenizers_dir)) == 2
    assert "input stores" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["zarr.json", "part-00000/topk_ids/zarr.json"])
def test_unreadable_metadata_is_one_line(tmp_path, capsys, where):
    """A root or array zarr.json that is not JSON: one line naming the store, from readers, writers and
    `tokalign inspect` (exit 2), never a traceback."""
    path = _store(tmp_path)
    (path / where).write_text('{"zarr_format": 3, "node_type": "gro')
    _one_line_error(lambda: open_store(str(path)), str(path), "metadata", "unreadable")
    code, text = _inspect(path, capsys=capsys)
    assert code == 2 and "unreadable" in text and "Traceback" not in text
    if where == "zarr.json":  # (a damaged part is what overwrite=True replaces)
        _one_line_error(lambda: StoreWriter.create(str(path), make_schema(), part=0, overwrite=True), "unreadable")


def test_writer_refuses_a_folder_that_is_not_a_store(tmp_path):
    """An output folder holding other files (a model, a dataset) never gets a store written into it."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    _one_line_error(lambda: StoreWriter.create(str(folder), make_schema()), "not empty and is not a tokalign store")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]
    afile = tmp_path / "file"
    afile.write_text("x")
    _one_line_error(lambda: StoreWriter.create(str(afile), make_schema()), "not a folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    StoreWriter.create(str(empty), make_schema()).close()  # an empty folder is fine
