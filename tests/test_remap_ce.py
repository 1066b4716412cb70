"""token_ce / seq_ce of remapped stores (tokalign.remap.ce): the source model's own NLL of the text carried onto
pivot positions through the alignment groups, against a slow loop over groups, on real tokenizer stores; the sum
property; a source identical to the pivot giving exactly the pivot's CE; fusion_train's MinCE on the values."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from remap_ce_reference import remapped_token_ce_packed_reference, source_nll_by_group_reference  # noqa: E402
from remap_reference import random_groups  # noqa: E402
from remap_samples import remapped_token_ce, token_byte_offsets  # noqa: E402
from remap_store_reference import remap_per_sample  # noqa: E402
from tokalign.testing import real_pair  # noqa: E402

from fusion_train.fuse.losses import TeacherTargets, min_ce_choice  # noqa: E402
from tokalign import vocab  # noqa: E402
from tokalign.align import span  # noqa: E402
from tokalign.cli import main  # noqa: E402
from tokalign.errors import TokalignError  # noqa: E402
from tokalign.remap import prepare_map  # noqa: E402
from tokalign.remap.ce import CE_DEFINITION, source_nll_by_group  # noqa: E402
from tokalign.remap.stores import (REMAP_CE_EXTRA, REMAP_EXTRAS, TokenBytes, remap_stores,  # noqa: E402
                                  remapped_token_ce_packed)
from tokalign.store import StoreSchema, StoreWriter, open_store  # noqa: E402

EXTRAS = REMAP_EXTRAS + (REMAP_CE_EXTRA,)


# ---- the slow, obviously correct reference ---------------------------------------------------------------

def reference_token_ce(source_ce, source_lse, groups, n_pivot):
    """(token_ce float64 [n_pivot], NLL of groups without a predicting pivot position) by looping over groups."""
    out = [0.0] * n_pivot
    dropped = 0.0
    for p0, p1, s0, s1 in np.asarray(groups, np.int64).reshape(-1, 4).tolist():
        nll, unknown = 0.0, False
        for j in range(s0, s1):
            if j == 0:
                continue  # a sequence's first token has no predicting position
            if not (math.isfinite(float(source_ce[j - 1])) and math.isfinite(float(source_lse[j - 1]))):
                unknown = True
            nll += float(source_ce[j - 1])
        targets = [i - 1 for i in range(p0, p1) if i >= 1]
        if not targets:
            dropped += nll
        for t in targets:
            out[t] = math.nan if unknown else nll / len(targets)
    return np.array(out, np.float64), dropped


def reference_seq_ce(token_ce, loss_mask):
    """Mean token_ce over the positions predicting a loss token (the store writer's / FuseChat's metric_ce)."""
    target = np.zeros(len(loss_mask), bool)
    target[:-1] = np.asarray(loss_mask)[1:]
    return float(np.mean(np.asarray(token_ce, np.float64)[target])) if target.any() else math.nan


def _groups(tp, ts, pivot_ids, source_ids):
    t1, o1 = token_byte_offsets(tp.token_texts(), pivot_ids)
    t2, o2 = token_byte_offsets(ts.token_texts(), source_ids)
    return np.asarray(span(o1, o2, pivot_text=t1, source_text=t2).groups, np.int64).reshape(-1, 4)


# ---- stores -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory, tokenizers_dir, corpora_dir):
    """openchat pivot / internlm2 source stores over 30 real texts (some truncated, some texts changed)."""
    w0 = real_pair(tmp_path_factory.mktemp("remap_ce"), tokenizers_dir, corpora_dir, n_items=30, item_seed=5,
                   change_every=4, change_seed=2, seed=11, chunk_tokens=512)
    d, tp, ts, pm = w0["dir"], w0["tp"], w0["ts"], w0["pm"]
    a, b = open_store(str(d / "pivot.zarr")), open_store(str(d / "source.zarr"))
    schema = StoreSchema(model="t", tokenizer_fingerprint=a.schema.tokenizer_fingerprint, vocab_size=pm.pivot_vocab,
                         k=6, logits_dtype="float32", kind="remapped", extras=EXTRAS)
    w = StoreWriter.create(str(d / "out.zarr"), schema)
    remap_stores(a, b, pm, w, a.sample_ids, TokenBytes.of(tp), TokenBytes.of(ts), k_out=6, batch_tokens=2000)
    w.close()
    return {"dir": d, "tp": tp, "ts": ts, "pm": pm, "pivot": a, "source": b, "out": open_store(str(d / "out.zarr"))}


def test_engine_matches_the_loop_over_groups(world):
    a, b, out = world["pivot"], world["source"], world["out"]
    assert out.sample_ids == a.sample_ids
    n_changed = 0
    for i, sid in enumerate(out.sample_ids):
        x, y, o = a.by_id(sid), b.by_id(sid), out[i]
        g = _groups(world["tp"], world["ts"], x["input_ids"], y["input_ids"])
        want, dropped = reference_token_ce(y["token_ce"], y["logsumexp"], g, len(x["input_ids"]))
        assert dropped == 0.0
        np.testing.assert_allclose(o["token_ce"], want, rtol=2e-7, atol=1e-7, err_msg=sid)
        np.testing.assert_allclose(o["seq_ce"], reference_seq_ce(want, x["loss_mask"]), rtol=1e-6, err_msg=sid)
        # the old definition, the CE under the stored remapped distribution, is kept as remap_ce
        np.testing.assert_array_equal(o["remap_ce"], remapped_token_ce(
            {"topk_ids": o["topk_ids"], "topk_logits": o["topk_logits"], "retained_mass": o["retained_mass"],
             "valid": o["remap_valid"]}, x["input_ids"]))
        n_changed += int(len(g) < len(x["input_ids"]) or len(g) < len(y["input_ids"]))
    assert n_changed > len(out) // 2  # most samples have n:1 / 1:n / n:m groups: the spreading is exercised
    assert out.valid.all()
    # seq_ce is NaN exactly where the pivot's is (samples without a loss position: the store convention)
    pivot_nan = np.isnan([a.by_id(s)["seq_ce"] for s in out.sample_ids])
    np.testing.assert_array_equal(np.isnan(out.seq_ce), pivot_nan)
    assert pivot_nan.sum() < len(out) // 2


def test_token_ce_sums_to_the_source_nll(world):
    """Over a whole sequence (all groups) the pivot positions carry exactly the source model's NLL of the text."""
    a, b, out = world["pivot"], world["source"], world["out"]
    for i, sid in enumerate(out.sample_ids):
        y = b.by_id(sid)
        source_nll = float(np.sum(y["token_ce"][:-1], dtype=np.float64))  # tokens 1 .. L-1 given their prefixes
        got = float(np.sum(out[i]["token_ce"], dtype=np.float64))
        assert got == pytest.approx(source_nll, rel=1e-6), sid
    # the old definition was biased low: far below the source's NLL on these stores
    old = sum(float(np.sum(out[i]["remap_ce"], dtype=np.float64)) for i in range(len(out)))
    new = sum(float(np.sum(out[i]["token_ce"], dtype=np.float64)) for i in range(len(out)))
    assert old < 0.9 * new


def test_per_sample_path_gives_the_same_store(world, tmp_path):
    """The per-sample path (tests/remap_store_reference.py, 64 samples per call) and the engine agree bit for bit on
    token_ce and seq_ce."""
    a, b, pm = world["pivot"], world["source"], world["pm"]
    w = StoreWriter.create(str(tmp_path / "ref.zarr"), world["out"].schema)
    remap_per_sample(a, b, pm, w, a.sample_ids, world["tp"].token_texts(), world["ts"].token_texts(), k_out=6)
    w.close()
    ref, out = open_store(str(tmp_path / "ref.zarr")), world["out"]
    for name in ("token_ce", "remap_ce"):
        np.testing.assert_array_equal(ref.read_tokens(0, 0, ref.num_tokens, [name])[name],
                                      out.read_tokens(0, 0, out.num_tokens, [name])[name])
    np.testing.assert_array_equal(ref.seq_ce, out.seq_ce)


def test_cli_records_the_definition(world, tmp_path, tokenizers_dir, capsys):
    d = world["dir"]
    argv = ["remap", "--pivot-store", str(d / "pivot.zarr"), "--source-store", str(d / "source.zarr"), "--map",
            str(d / "map"), "--out", str(tmp_path / "cli.zarr"), "--tokenizer-dir", str(tokenizers_dir), "--json",
            "--top-k", "6"]
    assert main(argv) == 0
    capsys.readouterr()
    cli = open_store(str(tmp_path / "cli.zarr"))
    assert cli.schema.options["ce_definition"] == CE_DEFINITION == "source_nll_by_group"
    assert "remap_ce" in {e.name for e in cli.schema.extras}
    np.testing.assert_array_equal(cli.seq_ce, world["out"].seq_ce)


def test_source_identical_to_pivot_gives_the_pivot_ce(world, tmp_path):
    """Remapping the pivot store onto itself (same tokenizer, same distributions): token_ce and seq_ce are the
    pivot's exactly, so MinCE sees a tie and keeps the pivot; the old definition made the copy look better."""
    a, tp = world["pivot"], world["tp"]
    pm = prepare_map(vocab.em(tp, tp).matrix)
    w = StoreWriter.create(str(tmp_path / "self.zarr"), StoreSchema(
        model="self", tokenizer_fingerprint=a.schema.tokenizer_fingerprint, vocab_size=pm.pivot_vocab, k=10,
        logits_dtype="float32", kind="remapped", extras=EXTRAS))
    remap_stores(a, a, pm, w, a.sample_ids, TokenBytes.of(tp), TokenBytes.of(tp), k_out=10, batch_tokens=3000)
    w.close()
    out = open_store(str(tmp_path / "self.zarr"))
    np.testing.assert_array_equal(out.read_tokens(0, 0, out.num_tokens, ["token_ce"])["token_ce"],
                                  a.read_tokens(0, 0, a.num_tokens, ["token_ce"])["token_ce"])
    np.testing.assert_array_equal(out.seq_ce, a.seq_ce)

    old_seq_ce = np.array([reference_seq_ce(out[i]["remap_ce"], out[i]["loss_mask"]) for i in range(len(out))])
    scored = np.isfinite(a.seq_ce)  # samples with a loss position
    assert scored.sum() > len(out) // 2 and np.array_equal(np.isfinite(old_seq_ce), scored)
    # the stored top-k is truncated: -log(tail) under-counts (not everywhere: the synthetic top-k ids are
    # sometimes inconsistent with the stored token_ce, e.g. a random id overwrote the gold one)
    lower = old_seq_ce[scored] < a.seq_ce[scored]
    assert lower.mean() > 0.8, lower.mean()
    shape = (len(out), 1, 1)
    dummy = torch.zeros(shape, dtype=torch.int32)

    def teacher(seq_ce):
        return TeacherTargets(dummy, torch.ones(shape), torch.ones(shape[:2]), torch.as_tensor(seq_ce, dtype=torch.float32),
                              torch.zeros(shape[:2]))

    new_choice = min_ce_choice([teacher(a.seq_ce), teacher(out.seq_ce)])
    old_choice = min_ce_choice([teacher(a.seq_ce), teacher(old_seq_ce)])
    assert new_choice.eq(0).all()  # a tie: the pivot
    np.testing.assert_array_equal(old_choice[scored, 0].numpy(), lower)  # the copy of the same model won there


def test_min_ce_on_the_remapped_store(world):
    """fusion_train's FusionDataset + FusionCollator + min_ce_choice on the pivot and the remapped store: per
    sequence the teacher with the lower stored seq_ce; per token the lower token_ce (with a valid slot)."""
    from fusion_train.fuse.data import FusionCollator, FusionDataset

    a, out = world["pivot"], world["out"]
    ds = FusionDataset(a, [out])
    batch = FusionCollator()([ds[i] for i in range(len(ds))])
    teachers = [TeacherTargets.from_dict(t) for t in batch["teachers"]]
    choice = min_ce_choice(teachers, granularity="sequence")[:, 0]
    pivot_ce = np.array([a.by_id(s)["seq_ce"] for s in out.sample_ids])
    np.testing.assert_array_equal(choice.numpy(), (out.seq_ce < pivot_ce).astype(np.int64))
    assert 0 < int(choice.sum()) < len(out)  # both teachers win somewhere on these stores
    tok = min_ce_choice(teachers, granularity="token")
    ce = torch.stack([t.token_ce for t in teachers])
    has = torch.stack([(t.ids >= 0).any(-1) for t in teachers])
    better = (ce[1] < ce[0]) & has[1] & torch.isfinite(ce[1])
    np.testing.assert_array_equal(tok.numpy(), better.long().numpy())


# ---- array level --------------------------------------------------------------------------------------

def test_hand_example():
    """Pivot "<s>|Hel|lo|_wor|ld" vs source "<s>|Hello|_world" (groups 1:1, 2:1, 2:1) and a 1:n group."""
    ce = np.array([1.0, 2.0, 4.0], np.float32)  # -log p(Hello|<s>), -log p(_world|...); the last predicts nothing
    groups = np.array([[0, 1, 0, 1], [1, 3, 1, 2], [3, 5, 2, 3]])
    got = source_nll_by_group(ce, [0, 3], groups, [0, 3], [0, 5])
    # group "Hello" (NLL 1) over positions 0, 1; group "_world" (NLL 2) over positions 2, 3; last position 0
    np.testing.assert_array_equal(got, np.array([0.5, 0.5, 1.0, 1.0, 0.0], np.float32))
    # 1:n: pivot "<s>|Helloworld" vs source "<s>|Hello|world": NLL 1 + 2 on the one predicting position
    got = source_nll_by_group(ce, [0, 3], np.array([[0, 1, 0, 1], [1, 2, 1, 3]]), [0, 2], [0, 2])
    np.testing.assert_array_equal(got, np.array([3.0, 0.0], np.float32))


def test_unknown_source_nll_is_nan_and_flags_the_sample(tmp_path):
    ce = np.array([1.0, np.nan, 4.0, 0.5, 0.0], np.float32)  # NaN: -log p(source token 2)
    lse = np.zeros(5, np.float32)
    groups = np.array([[0, 1, 0, 1], [1, 2, 1, 2], [2, 4, 2, 3], [4, 5, 3, 5]])
    got = source_nll_by_group(ce, [0, 5], groups, [0, 4], [0, 5], source_lse=lse)
    np.testing.assert_array_equal(got, np.array([1.0, np.nan, np.nan, 4.5, 0.0], np.float32))
    lse[3] = np.inf  # a broken source distribution: its NLL is unknown too
    got = source_nll_by_group(ce, [0, 5], groups, [0, 4], [0, 5], source_lse=lse)
    assert np.isnan(got[3]) and got[0] == 1.0
    schema = StoreSchema(model="t", tokenizer_fingerprint="fp", vocab_size=50, k=2, logits_dtype="float32",
                         kind="remapped")
    w = StoreWriter.create(str(tmp_path / "s.zarr"), schema)
    w.append_packed(["a"], [5], {"input_ids": np.arange(5), "loss_mask": np.ones(5, bool),
                                 "topk_ids": np.zeros((5, 2), np.int32), "topk_logits": np.zeros((5, 2), np.float32),
                                 "token_ce": got})
    w.close()
    s = open_store(str(tmp_path / "s.zarr"))
    assert not s.valid[0] and np.isnan(s.seq_ce[0])
    shape = (1, 1, 1)
    t = [TeacherTargets(torch.zeros(shape, dtype=torch.int32), torch.ones(shape), torch.ones(1, 1),
                        torch.tensor([v], dtype=torch.float32), torch.zeros(1, 1)) for v in (9.0, float(s.seq_ce[0]))]
    assert int(min_ce_choice(t)[0, 0]) == 0  # never chosen


def test_bad_groups_are_refused():
    ce = np.zeros(3, np.float32)
    with pytest.raises(TokalignError, match="sequence 0: the groups cover 2 pivot / 3 source tokens"):
        source_nll_by_group(ce, [0, 3], np.array([[0, 2, 0, 3]]), [0, 1], [0, 3])
    with pytest.raises(TokalignError, match="source token_ce has shape"):
        source_nll_by_group(ce[:2], [0, 3], np.array([[0, 3, 0, 3]]), [0, 1], [0, 3])
    with pytest.raises(TokalignError, match="a group ends before it starts"):
        source_nll_by_group(ce, [0, 3], np.array([[0, 2, 0, 2], [2, 1, 2, 3]]), [0, 2], [0, 1])
    # the right counts, but a group past the end of the sequences (the C++ never reads outside them)
    with pytest.raises(TokalignError, match="sequence 1: a group lies outside the sequences"):
        source_nll_by_group(ce, [0, 1, 3], np.array([[0, 1, 0, 1], [1, 3, 1, 3]]), [0, 1, 2], [0, 1, 3])
    with pytest.raises(TokalignError, match="offsets"):
        source_nll_by_group(ce, [0, 3], np.array([[0, 3, 0, 3]]), [0, 1, 1], [0, 3])


@st.composite
def _batches(draw):
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(1, 5))
    seqs = []
    for _ in range(n):
        lp, ls = int(rng.integers(0, 14)), int(rng.integers(0, 14))
        g = random_groups(rng, lp, ls) if lp or ls else np.zeros((0, 4), np.int64)
        ce = rng.exponential(2.0, ls).astype(np.float32)
        lse = rng.normal(0, 1, ls).astype(np.float32)
        bad = rng.random(ls) < draw(st.sampled_from([0.0, 0.05]))
        ce[bad] = rng.choice([np.nan, np.inf, -np.inf], int(bad.sum()))
        if ls and rng.random() < 0.05:
            lse[int(rng.integers(0, ls))] = np.nan
        seqs.append((np.asarray(g, np.int64).reshape(-1, 4), ce, lse, lp))
    return seqs


@settings(max_examples=150, deadline=None)
@given(_batches())
def test_vectorised_equals_loop_and_does_not_depend_on_the_batch(seqs):
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0)  # noqa: E731
    p_off = np.r_[0, np.cumsum([lp for *_, lp in seqs])]
    s_off = np.r_[0, np.cumsum([len(ce) for _, ce, _, _ in seqs])]
    g_off = np.r_[0, np.cumsum([len(g) for g, *_ in seqs])]
    got = source_nll_by_group(cat([ce for _, ce, _, _ in seqs]).astype(np.float32), s_off,
                              cat([g for g, *_ in seqs]).reshape(-1, 4), g_off, p_off,
                              source_lse=cat([lse for _, _, lse, _ in seqs]))
    assert got.dtype == np.float32 and got.shape == (int(p_off[-1]),)
    for k, (g, ce, lse, lp) in enumerate(seqs):
        mine = got[p_off[k]:p_off[k + 1]]
        want, _ = reference_token_ce(ce, lse, g, lp)
        np.testing.assert_allclose(mine, want, rtol=2e-7, atol=1e-7)
        alone = source_nll_by_group(ce, [0, len(ce)], g, [0, len(g)], [0, lp], source_lse=lse)
        np.testing.assert_array_equal(alone, mine)  # bit for bit: no dependence on the other sequences
    # the numpy version the C++ replaced (sums in another order: equal to rounding); thread counts agree exactly
    ref = source_nll_by_group_reference(cat([ce for _, ce, _, _ in seqs]).astype(np.float32), s_off,
                                        cat([g for g, *_ in seqs]).reshape(-1, 4), g_off, p_off,
                                        source_lse=cat([lse for _, _, lse, _ in seqs]))
    np.testing.assert_allclose(got, ref, rtol=2e-7, atol=1e-7)
    one = source_nll_by_group(cat([ce for _, ce, _, _ in seqs]).astype(np.float32), s_off,
                              cat([g for g, *_ in seqs]).reshape(-1, 4), g_off, p_off,
                              source_lse=cat([lse for _, _, lse, _ in seqs]), threads=1)
    np.testing.assert_array_equal(one, got)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 6), st.integers(1, 5))
def test_remapped_token_ce_equals_the_numpy_version(seed, n_seq, k):
    """The remap_ce diagnostic (C++) against the numpy version it replaced: hits, misses (-log tail, floored at
    1e-6), invalid positions, -1 slots, empty and one-token sequences."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 9, n_seq)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    n = int(offsets[-1])
    vocab = 12
    input_ids = rng.integers(0, vocab, n).astype(np.int32)
    ids = np.argsort(rng.random((n, vocab)), axis=1)[:, :k].astype(np.int32)  # k distinct ids per row
    ids[rng.random((n, k)) < 0.2] = -1
    logits = np.log(rng.dirichlet(np.ones(k), n).astype(np.float32)).reshape(n, k)
    logits[ids < 0] = -np.inf
    retained = rng.uniform(0, 1, n).astype(np.float32)
    retained[rng.random(n) < 0.1] = 1.0  # tail 0: floored at 1e-6
    valid = rng.random(n) < 0.9
    got = remapped_token_ce_packed(ids, logits, retained, valid, input_ids, offsets)
    want = remapped_token_ce_packed_reference(ids, logits, retained, valid, input_ids, offsets)
    assert got.dtype == np.float32 and got.shape == (n,)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(remapped_token_ce_packed(ids, logits, retained, valid, input_ids, offsets,
                                                           threads=1), got)


def test_remapped_token_ce_refuses_bad_shapes():
    with pytest.raises(TokalignError, match="remapped_token_ce: offsets must run from 0 to N"):
        remapped_token_ce_packed(np.zeros((3, 2), np.int32), np.zeros((3, 2), np.float32), np.ones(3, np.float32),
                                 np.ones(3, bool), np.zeros(3, np.int32), np.array([0, 2]))
