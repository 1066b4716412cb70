"""tokalign.store: round trips, resume after SIGKILL, parts, by-id access, bad input, tokalign inspect."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from tokalign.errors import TokalignError
from tokalign.store import (
    StoreSchema,
    StoreWriter,
    bf16_bits_to_float32,
    float32_to_bf16_bits,
    open_store,
    store_status,
)

REPO = Path(__file__).resolve().parent.parent

# Deterministic sample generator shared with the writer subprocess of the kill test (exec'd there too).
GEN_SRC = r'''
import numpy as np
V, K = 1000, 4

def make_sample(i):
    rng = np.random.default_rng(1000 + i)
    n = int(rng.integers(1, 60))
    logits = np.sort(rng.normal(size=(n, K)).astype(np.float32) * 3, axis=1)[:, ::-1]
    return {"sample_id": "doc-%04d" % i, "input_ids": rng.integers(0, V, n).astype(np.int32),
            "loss_mask": rng.random(n) < 0.6, "topk_ids": rng.integers(-1, V, (n, K)).astype(np.int32),
            "topk_logits": np.ascontiguousarray(logits),
            "logsumexp": (logits[:, 0] + rng.random(n)).astype(np.float32),
            "token_ce": rng.random(n).astype(np.float32) * 5}

def make_schema(**kw):
    from tokalign.store import StoreSchema
    return StoreSchema(model="tiny", tokenizer_fingerprint="fp-tiny", vocab_size=V, k=K, chunk_tokens=32,
                       shard_tokens=128, chunk_samples=8, shard_samples=32, **kw)
'''
_gen = {}
exec(GEN_SRC, _gen)
make_sample, make_schema, V, K = _gen["make_sample"], _gen["make_schema"], _gen["V"], _gen["K"]

KILL_CHILD = GEN_SRC + r'''
import sys
from tokalign.store import StoreWriter
url, n, per_batch, flush_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
part, num_parts = (int(sys.argv[5]), int(sys.argv[6])) if len(sys.argv) > 6 else (0, 1)
if len(sys.argv) > 7:  # start barrier: all ranks create the store at the same instant
    import time
    while time.time() < float(sys.argv[7]):
        pass
w = StoreWriter.open(url, make_schema(), flush_tokens=flush_tokens, part=part, num_parts=num_parts)
todo = w.remaining("doc-%04d" % i for i in range(part, n, num_parts))
index = {("doc-%04d" % i): i for i in range(n)}
for b in range(0, len(todo), per_batch):
    w.append([make_sample(index[s]) for s in todo[b:b + per_batch]])
    print("batch", b // per_batch, flush=True)
w.close()
print("done", flush=True)
'''


def _mem_url() -> str:
    return "memory://test-store-%s" % uuid.uuid4().hex


def _url(kind: str, tmp_path: Path) -> str:
    return _mem_url() if kind == "memory" else "file://" + str(tmp_path / "s.zarr")


def _bf16(x: np.ndarray) -> np.ndarray:
    return bf16_bits_to_float32(float32_to_bf16_bits(x))


def _write(url, samples, schema=None, batch=5, **kw):
    with StoreWriter.create(url, schema or make_schema(), **kw) as w:
        for b in range(0, len(samples), batch):
            w.append(samples[b:b + batch])
    return w


def _ref_seq_ce(s):
    ce, m = s["token_ce"], s["loss_mask"]
    vals = [ce[t] for t in range(len(m) - 1) if m[t + 1]]
    return np.float32(np.mean(np.asarray(vals, dtype=np.float64))) if vals else np.float32("nan")


def _assert_sample_equal(got, want, logits_dtype="bfloat16"):
    assert got["sample_id"] == want["sample_id"]
    for name in ("input_ids", "topk_ids", "logsumexp", "token_ce"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    np.testing.assert_array_equal(got["loss_mask"], want["loss_mask"])
    conv = {"bfloat16": _bf16, "float16": lambda x: x.astype(np.float16).astype(np.float32),
            "float32": lambda x: x}[logits_dtype]
    np.testing.assert_array_equal(got["topk_logits"], conv(want["topk_logits"]))
    assert got["input_ids"].dtype == np.int32 and got["topk_ids"].dtype == np.int32
    assert got["topk_logits"].dtype == np.float32 and got["loss_mask"].dtype == np.bool_


def _all_arrays(url):
    """Every committed array of every part (for bitwise store comparisons)."""
    r = open_store(url, allow_incomplete=True)
    out = {}
    for p in r.parts:
        for name, arr in p.arrays.items():
            n = p.num_samples + 1 if name == "offsets" else (
                p.num_tokens if name in r.schema.token_array_specs() else p.num_samples)
            out[p.name + "/" + name] = np.asarray(arr[:n])
    return out


# -- bf16 conversion ----------------------------------------------------------------------------------------
def test_bf16_conversion_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=5000).astype(np.float32) * 100,
                        np.array([0.0, -0.0, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-40, np.nan], dtype=np.float32)])
    ours = float32_to_bf16_bits(x)
    ref = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    finite = ~np.isnan(x)
    np.testing.assert_array_equal(ours[finite], ref[finite])
    assert np.isnan(bf16_bits_to_float32(ours[~finite])).all()
    back = bf16_bits_to_float32(ours)
    np.testing.assert_array_equal(back[finite], torch.from_numpy(ref.view(np.int16)).view(torch.bfloat16).float().numpy()[finite])


# -- round trips --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["memory", "file"])
@pytest.mark.parametrize("logits_dtype", ["bfloat16", "float16", "float32"])
def test_round_trip(kind, logits_dtype, tmp_path):
    url = _url(kind, tmp_path)
    samples = [make_sample(i) for i in range(23)]
    w = _write(url, samples, make_schema(logits_dtype=logits_dtype, template="{{ messages }}",
                                         options={"max_len": 2048}))
    assert w.summary()["complete"] and w.committed_samples == 23
    r = open_store(url, expect_fingerprint="fp-tiny")
    assert len(r) == 23 and r.num_tokens == sum(len(s["input_ids"]) for s in samples)
    assert r.schema.template == "{{ messages }}" and r.schema.options == {"max_len": 2048}
    assert r.attrs["tokalign_version"] and r.attrs["k"] == K and r.attrs["vocab_size"] == V
    for i, s in enumerate(samples):
        got = r[i]
        _assert_sample_equal(got, s, logits_dtype)
        np.testing.assert_allclose(got["seq_ce"], _ref_seq_ce(s), rtol=1e-6, equal_nan=True)
        assert got["valid"] is True
    assert r[-1]["sample_id"] == samples[-1]["sample_id"]
    with pytest.raises(IndexError):
        r[23]
    if kind == "file":
        assert (tmp_path / "s.zarr" / "part-00000" / "topk_logits" / "zarr.json").is_file()
        # shards: far fewer objects than chunks (shard_tokens = 4 chunks)
        chunk_files = list((tmp_path / "s.zarr" / "part-00000" / "topk_logits").rglob("c/*"))
        assert 0 < len(chunk_files) <= -(-r.num_tokens // 128)


def test_plain_path_and_torch_input_are_exact(tmp_path):
    torch = pytest.importorskip("torch")
    s = make_sample(0)
    t = dict(s, topk_logits=torch.from_numpy(s["topk_logits"]).to(torch.bfloat16),
             input_ids=torch.from_numpy(s["input_ids"]).long(), topk_ids=torch.from_numpy(s["topk_ids"]),
             token_ce=torch.from_numpy(s["token_ce"]), logsumexp=torch.from_numpy(s["logsumexp"]),
             loss_mask=torch.from_numpy(s["loss_mask"]))
    _write(str(tmp_path / "p.zarr"), [t])
    got = open_store(tmp_path / "p.zarr", output="torch")[0]
    assert got["topk_logits"].dtype == torch.float32 and got["input_ids"].dtype == torch.int32
    assert torch.equal(got["topk_logits"], t["topk_logits"].float())
    np.testing.assert_array_equal(got["topk_ids"].numpy(), s["topk_ids"])


def test_iter_batches_whole_sequences_and_packed(tmp_path):
    url = _mem_url()
    samples = [make_sample(i) for i in range(40)]
    _write(url, samples, batch=7)
    r = open_store(url)
    seen = []
    for batch in r.iter_batches(6, max_tokens=100):
        assert 1 <= len(batch) <= 6
        assert len(batch) == 1 or sum(len(s["input_ids"]) for s in batch) <= 100
        seen.extend(batch)
    assert [s["sample_id"] for s in seen] == [s["sample_id"] for s in samples]
    for got, want in zip(seen, samples):
        _assert_sample_equal(got, want)
    packs = list(r.iter_batches(9, packed=True, start=3, stop=31))
    ids = [sid for p in packs for sid in p["sample_id"]]
    assert ids == [s["sample_id"] for s in samples[3:31]]
    p = packs[0]
    for j, sid in enumerate(p["sample_id"]):
        a, b = p["offsets"][j], p["offsets"][j + 1]
        np.testing.assert_array_equal(p["topk_ids"][a:b], samples[3 + j]["topk_ids"])
    few = next(r.iter_batches(5, fields=["topk_ids", "topk_logits"]))
    assert set(few[0]) == {"sample_id", "topk_ids", "topk_logits", "seq_ce", "valid"}
    np.testing.assert_array_equal(few[4]["topk_ids"], samples[4]["topk_ids"])
    with pytest.raises(TokalignError, match="unknown token field"):
        next(r.iter_batches(5, fields=["logits"]))
    torch = pytest.importorskip("torch")
    tb = next(r.iter_batches(4, packed=True, output="torch"))
    assert isinstance(tb["topk_logits"], torch.Tensor) and tb["offsets"][-1] == tb["input_ids"].shape[0]


def test_by_id_random_access(tmp_path):
    url = _mem_url()
    samples = [make_sample(i) for i in range(30)]
    _write(url, samples)
    r = open_store(url)
    for i in (17, 0, 29, 5):
        _assert_sample_equal(r.by_id("doc-%04d" % i), samples[i])
        assert r.index_of("doc-%04d" % i) == i
    assert "doc-0003" in r and "nope" not in r
    with pytest.raises(KeyError, match="nope"):
        r.by_id("nope")


# -- resume -------------------------------------------------------------------------------------------------
def _start_child(url, n, per_batch, flush_tokens, part=0, num_parts=1, start_at=0.0):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", KILL_CHILD, url, str(n), str(per_batch), str(flush_tokens),
                             str(part), str(num_parts), str(start_at)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _run_child(url, n, per_batch, flush_tokens, kill_after=None):
    proc = _start_child(url, n, per_batch, flush_tokens)
    lines = []
    if kill_after is not None:
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("batch %d" % kill_after):
                os.kill(proc.pid, signal.SIGKILL)  # lands while the next batch is being written/flushed
                break
    out, err = proc.communicate(timeout=120)
    lines += out.split()
    return proc.returncode, lines, err


# 0: commit every batch (rows written as they come, shards re-read by zarr); 128 (= shard_tokens) and 150: the
# whole-shard policy (rows written in whole shards only, commits as each shard fills)
@pytest.mark.parametrize("flush_tokens", [0, 128, 150])
def test_resume_after_sigkill_matches_uninterrupted(tmp_path, flush_tokens):
    n = 60
    ref_url = _mem_url()
    _write(ref_url, [make_sample(i) for i in range(n)], batch=4)
    url = "file://" + str(tmp_path / "k.zarr")
    rc, lines, err = _run_child(url, n, 4, flush_tokens, kill_after=3)
    assert rc == -signal.SIGKILL, err
    status = store_status(url)
    assert status["exists"] and not status["complete"]
    with pytest.raises(TokalignError, match="incomplete.*resume"):
        open_store(url)
    partial = open_store(url, allow_incomplete=True)
    assert len(partial) < n  # killed mid-way
    if flush_tokens == 0:  # every batch is committed before its "batch" line is printed
        assert len(partial) >= 16
    for i in range(len(partial)):  # committed rows are intact
        _assert_sample_equal(partial[i], make_sample(i))
    w = StoreWriter.resume(url, schema=make_schema())
    remaining = w.remaining("doc-%04d" % i for i in range(n))
    assert remaining == ["doc-%04d" % i for i in range(len(partial), n)]
    del w
    rc, lines, err = _run_child(url, n, 4, flush_tokens)
    assert rc == 0 and "done" in lines, err
    r = open_store(url)
    assert [s["sample_id"] for s in r] == ["doc-%04d" % i for i in range(n)]
    got, want = _all_arrays(url), _all_arrays(ref_url)
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_resume_cuts_uncommitted_rows():
    url = _mem_url()
    samples = [make_sample(i) for i in range(12)]
    w = StoreWriter.create(url, make_schema(), flush_tokens=0)
    w.append(samples[:6])
    # simulate a kill after the data write but before the commit: grow arrays and fill garbage
    t = w.committed_tokens
    for name, arr in w._arrays.items():
        if name in w._token_specs:
            arr.resize((t + 50,) + arr.shape[1:])
    w._arrays["seq_ce"].resize((9,))
    w._arrays["sample_id"].resize((9,))
    w._arrays["sample_id"][6:9] = np.array(["ghost-1", "ghost-2", "ghost-3"])
    w2 = StoreWriter.resume(url, schema=make_schema(), flush_tokens=0)
    assert w2.truncated_tokens == 50 and w2.truncated_samples == 3
    assert "cut 50 uncommitted tokens" in w2.resume_report()
    assert w2.remaining(s["sample_id"] for s in samples) == [s["sample_id"] for s in samples[6:]]
    w2.append(samples[6:])
    w2.close()
    r = open_store(url)
    assert len(r) == 12 and "ghost-1" not in r
    for i, s in enumerate(samples):
        _assert_sample_equal(r[i], s)


def test_resume_refusals():
    url = _mem_url()
    _write(url, [make_sample(0)])
    with pytest.raises(TokalignError, match="already complete"):
        StoreWriter.resume(url, schema=make_schema())
    with pytest.raises(TokalignError, match="already has part-00000"):
        StoreWriter.create(url, make_schema())
    url2 = _mem_url()
    w = StoreWriter.create(url2, make_schema())
    w.append([make_sample(0)])
    w.flush()
    with pytest.raises(TokalignError, match="schema differs.*k"):
        StoreWriter.resume(url2, schema=make_schema().replace(k=3))
    with pytest.raises(TokalignError, match="no part-00001"):
        StoreWriter.resume(url2, part=1)
    with pytest.raises(TokalignError, match="no tokalign store"):
        StoreWriter.resume(_mem_url())
    # overwrite recreates the part
    w = StoreWriter.create(url, make_schema(), overwrite=True)
    w.append([make_sample(5)])
    w.close()
    assert open_store(url).sample_ids == ["doc-0005"]


# -- parts --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["memory", "file"])
def test_multi_part_reads_as_one_store(kind, tmp_path):
    url = _url(kind, tmp_path)
    samples = [make_sample(i) for i in range(30)]
    # ranks write disjoint parts, in any order
    for rank, chunk in ((2, samples[20:]), (0, samples[:8]), (1, samples[8:20])):
        _write(url, chunk, part=rank, num_parts=3)
    r = open_store(url)
    assert len(r) == 30 and [p.name for p in r.parts] == ["part-00000", "part-00001", "part-00002"]
    for i in (0, 7, 8, 19, 20, 29):
        _assert_sample_equal(r[i], samples[i])
    _assert_sample_equal(r.by_id("doc-0021"), samples[21])
    assert [s["sample_id"] for b in r.iter_batches(7) for s in b] == [s["sample_id"] for s in samples]
    assert all(len({s["sample_id"][:0] for s in b}) == 1 for b in r.iter_batches(7))


def test_concurrent_rank_processes(tmp_path):
    url = "file://" + str(tmp_path / "ranks.zarr")
    n, ranks = 30, 3
    start_at = time.time() + 3.0  # ranks race to create the root (zarr's exists-check/create window)
    procs = [_start_child(url, n, 4, 0, part=r, num_parts=ranks, start_at=start_at) for r in range(ranks)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "done" in out, err
    r = open_store(url)
    assert len(r) == n and r.complete and r.attrs["num_parts"] == ranks
    assert r.sample_ids == ["doc-%04d" % i for p in range(ranks) for i in range(p, n, ranks)]
    for i in range(n):
        _assert_sample_equal(r.by_id("doc-%04d" % i), make_sample(i))


def test_missing_or_open_part_is_incomplete():
    url = _mem_url()
    samples = [make_sample(i) for i in range(10)]
    _write(url, samples[:5], part=0, num_parts=2)
    with pytest.raises(TokalignError, match="part-00001 missing"):
        open_store(url)
    w = StoreWriter.create(url, make_schema(), part=1, num_parts=2, flush_tokens=0)
    w.append(samples[5:8])
    with pytest.raises(TokalignError, match="part-00001 incomplete \\(3 samples committed\\)"):
        open_store(url)
    r = open_store(url, allow_incomplete=True)
    assert len(r) == 8 and not r.complete
    w.append(samples[8:])
    w.close()
    assert open_store(url).complete
    with pytest.raises(TokalignError, match="different schema"):
        StoreWriter.create(url, make_schema(logits_dtype="float16"), part=1, num_parts=2, overwrite=True)
    with pytest.raises(TokalignError, match="outside"):
        StoreWriter.create(url, make_schema(), part=2, num_parts=2)


def test_duplicate_ids_across_parts_are_reported():
    url = _mem_url()
    _write(url, [make_sample(0), make_sample(1)], part=0, num_parts=2)
    _write(url, [make_sample(1)], part=1, num_parts=2)
    r = open_store(url)
    assert r[0]["sample_id"] == "doc-0000"  # index access still works
    with pytest.raises(TokalignError, match="doc-0001.*twice.*part-00000.*part-00001"):
        r.by_id("doc-0000")


# -- bad input ----------------------------------------------------------------------------------------------
def test_fingerprint_mismatch_names_both():
    url = _mem_url()
    _write(url, [make_sample(0)])
    with pytest.raises(TokalignError, match="fp-tiny.*expected fp-other"):
        open_store(url, expect_fingerprint="fp-other")


def test_schema_errors():
    with pytest.raises(TokalignError, match="k=2000 is larger than the vocabulary"):
        StoreSchema(model="m", tokenizer_fingerprint="f", vocab_size=1000, k=2000)
    with pytest.raises(TokalignError, match="logits_dtype"):
        StoreSchema(model="m", tokenizer_fingerprint="f", vocab_size=1000, k=4, logits_dtype="int8")
    with pytest.raises(TokalignError, match="clashes"):
        StoreSchema(model="m", tokenizer_fingerprint="f", vocab_size=1000, k=4, extras={"token_ce": "float32"})
    assert StoreSchema(model="m", tokenizer_fingerprint="f", vocab_size=32000, k=4).ids_dtype == "int16"
    assert StoreSchema(model="m", tokenizer_fingerprint="f", vocab_size=151646, k=4).ids_dtype == "int32"


def test_bad_batches_are_rejected_without_corrupting():
    url = _mem_url()
    good = [make_sample(i) for i in range(6)]
    w = StoreWriter.create(url, make_schema(), flush_tokens=0)
    w.append(good[:3])
    before = _all_arrays(url)
    bad_k = dict(make_sample(10), topk_ids=np.zeros((3, K + 1), np.int32))
    bad_k["input_ids"] = bad_k["input_ids"][:3]
    cases = [
        (dict(make_sample(11), topk_ids=np.full_like(make_sample(11)["topk_ids"], V)), "outside \\[-1, vocab_size"),
        (dict(make_sample(12), input_ids=make_sample(12)["input_ids"] * 0 - 5), "input_ids holds -5"),
        (dict(make_sample(13), token_ce=np.zeros(1000, np.float32)), "token_ce has shape"),
        (dict(make_sample(14), extra_field=1), "unknown field"),
        ({k: v for k, v in make_sample(15).items() if k != "logsumexp"}, "field logsumexp is missing"),
        (dict(make_sample(16), sample_id=None), "sample_id must be"),
        (dict(make_sample(17), topk_logits=np.zeros((len(make_sample(17)["input_ids"]), K), np.int64)), "floating"),
        (dict(make_sample(18), topk_ids=make_sample(18)["topk_ids"] + 0.5), "topk_ids must be integer"),
    ]
    for bad, msg in cases:
        with pytest.raises(TokalignError, match=msg):
            w.append([good[3], bad])  # a good sample in the same batch is not half-written either
    after = _all_arrays(url)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    w.append(good[3:])
    w.close()
    r = open_store(url)
    assert r.sample_ids == [s["sample_id"] for s in good]


def test_k_mismatch_message():
    w = StoreWriter.create(_mem_url(), make_schema())
    s = make_sample(0)
    n = len(s["input_ids"])
    with pytest.raises(TokalignError, match="K=7 per position, the store has k=4"):
        w.append([dict(s, topk_ids=np.zeros((n, 7), np.int32), topk_logits=np.zeros((n, 7), np.float32))])


def test_empty_and_duplicate_policies():
    url = _mem_url()
    empty = dict(make_sample(50), input_ids=np.zeros(0, np.int32), loss_mask=np.zeros(0, bool),
                 topk_ids=np.zeros((0, K), np.int32), topk_logits=np.zeros((0, K), np.float32),
                 logsumexp=np.zeros(0, np.float32), token_ce=np.zeros(0, np.float32))
    w = StoreWriter.create(url, make_schema(), on_duplicate="skip")
    assert w.append([make_sample(0), empty, make_sample(1), make_sample(0)]) == 2
    w.append([make_sample(1)])
    summary = w.close()
    assert summary["skipped_empty"] == 1 and summary["skipped_duplicate"] == 2 and summary["samples"] == 2
    r = open_store(url)
    assert r.sample_ids == ["doc-0000", "doc-0001"]
    assert r.parts[0].committed["skipped_duplicate"] == 2
    w = StoreWriter.create(_mem_url(), make_schema(), on_empty="error")
    with pytest.raises(TokalignError, match="doc-0050.*empty"):
        w.append([empty])
    w = StoreWriter.create(_mem_url(), make_schema())
    w.append([make_sample(3)])
    with pytest.raises(TokalignError, match="duplicate sample_id 'doc-0003'.*already in part-00000"):
        w.append([make_sample(3)])
    with pytest.raises(TokalignError, match="twice in this batch"):
        w.append([make_sample(4), make_sample(4)])


def test_nonfinite_values_are_flagged_not_silently_valid():
    url = _mem_url()
    samples = [make_sample(i) for i in range(5)]
    s1 = samples[1]
    s1["topk_logits"] = s1["topk_logits"].copy()
    s1["topk_ids"] = s1["topk_ids"].copy()
    s1["topk_ids"][0, :] = 7
    s1["topk_logits"][0, 1] = np.nan
    s1["topk_logits"][0, 2] = np.inf
    s3 = samples[3]
    s3["logsumexp"] = s3["logsumexp"].copy()
    s3["logsumexp"][-1] = -np.inf
    s4 = samples[4]  # -inf at an invalid slot (id -1) is fine: remapped stores write that
    s4["topk_ids"] = s4["topk_ids"].copy()
    s4["topk_logits"] = s4["topk_logits"].copy()
    s4["topk_ids"][0, -1] = -1
    s4["topk_logits"][0, -1] = -np.inf
    _write(url, samples)
    r = open_store(url)
    assert r.valid.tolist() == [True, False, True, False, True]
    assert r.parts[0].nonfinite.tolist() == [0, 2, 0, 1, 0]
    assert r.parts[0].committed["invalid_samples"] == 2 and r.parts[0].committed["nonfinite_values"] == 3
    got = r[1]
    assert got["valid"] is False and np.isnan(got["topk_logits"][0, 1]) and np.isposinf(got["topk_logits"][0, 2])
    assert [s["sample_id"] for b in r.iter_batches(10, only_valid=True) for s in b] == ["doc-0000", "doc-0002", "doc-0004"]
    packed = next(r.iter_batches(10, packed=True, only_valid=True))
    assert packed["offsets"][-1] == len(packed["input_ids"]) == sum(len(samples[i]["input_ids"]) for i in (0, 2, 4))


def test_remapped_store_with_extras():
    url = _mem_url()
    schema = make_schema(kind="remapped", logits_dtype="float16",
                         extras={"group_kind": "uint8", "retained_mass": "float32"})
    samples = []
    for i in range(4):
        s = make_sample(i)
        n = len(s["input_ids"])
        s.pop("logsumexp")  # remapped: log-probs with lse = 0
        s["group_kind"] = (np.arange(n) % 4).astype(np.uint8)
        s["retained_mass"] = np.linspace(0.5, 1.0, n).astype(np.float32)
        samples.append(s)
    _write(url, samples, schema)
    r = open_store(url)
    assert r.extra_names == ["group_kind", "retained_mass"]
    for i, s in enumerate(samples):
        got = r[i]
        np.testing.assert_array_equal(got["logsumexp"], 0)
        np.testing.assert_array_equal(got["group_kind"], s["group_kind"])
        np.testing.assert_array_equal(got["retained_mass"], s["retained_mass"])
        assert got["group_kind"].dtype == np.uint8
    bad = dict(samples[0], sample_id="x", group_kind=np.full(len(samples[0]["input_ids"]), 300))
    with pytest.raises(TokalignError, match="group_kind holds values outside uint8"):
        StoreWriter.create(_mem_url(), schema).append([bad])
    with pytest.raises(TokalignError, match="group_kind is missing"):
        StoreWriter.create(_mem_url(), schema).append([make_sample(0)])


def test_foreign_group_is_not_a_store(tmp_path):
    import zarr

    g = zarr.open_group(str(tmp_path / "x.zarr"), mode="w")
    g.create_array("data", shape=(3,), dtype="int8")
    with pytest.raises(TokalignError, match="not a tokalign logit store"):
        open_store(tmp_path / "x.zarr")
    with pytest.raises(TokalignError, match="not a tokalign store; refusing"):
        StoreWriter.create(tmp_path / "x.zarr", make_schema())
    assert list(zarr.open_group(str(tmp_path / "x.zarr"), mode="r").keys()) == ["data"]
    with pytest.raises(TokalignError, match="no tokalign store"):
        open_store(tmp_path / "missing.zarr")


# -- tokalign inspect ---------------------------------------------------------------------------------------
def test_inspect_cli(tmp_path, capsys):
    from tokalign.cli import main

    url = str(tmp_path / "i.zarr")
    samples = [make_sample(i) for i in range(8)]
    samples[2]["token_ce"] = samples[2]["token_ce"].copy()
    samples[2]["token_ce"][0] = np.nan
    _write(url, samples)
    assert main(["inspect", url, "--json", "--scan"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["complete"] and report["samples"] == 8
    assert report["tokens"] == sum(len(s["input_ids"]) for s in samples)
    assert report["schema"]["tokenizer_fingerprint"] == "fp-tiny" and report["schema"]["logits_dtype"] == "bfloat16"
    assert report["invalid_samples"] == 1 and report["nonfinite_scan"]["token_ce"] == 1
    assert report["stored_bytes"] > 0 and report["bytes_per_token"] == pytest.approx(report["stored_bytes"] / report["tokens"])
    assert report["arrays"]["topk_logits"]["dtype"] == "uint16" and report["arrays"]["topk_logits"]["stored_bytes"] > 0
    assert main(["inspect", url]) == 0
    assert "complete" in capsys.readouterr().out
    w = StoreWriter.create(url, make_schema(), part=0, num_parts=1, overwrite=True)
    w.append(samples[:2])
    w.flush()
    assert main(["inspect", url]) == 1
    assert "INCOMPLETE" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "nothing.zarr")]) == 2
    assert "no tokalign store" in capsys.readouterr().err
