"""tokalign.remap: C++ kernel and torch path against a slow reference (tests/remap_reference.py),
on hand-built cases, random inputs (hypothesis) and real tokenizer pairs from ../shared."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from remap_reference import (  # noqa: E402
    INSIDE,
    ONE_TO_MANY,
    assert_rows_match,
    exact_match_map,
    load_texts,
    random_groups,
    random_map,
    random_topk,
    realistic_source,
    reference_remap_sequence,
    span_groups,
    token_bytes,
)

from tokalign.errors import TokalignError  # noqa: E402
from tokalign.remap import (  # noqa: E402
    KIND_1_1,
    KIND_1_N,
    KIND_N_1_END,
    KIND_N_1_INSIDE,
    concat_groups,
    prepare_map,
    remap_batch,
    remap_sequence,
)

POLICIES = [(i, o) for i in INSIDE for o in ONE_TO_MANY]


def _random_batch(rng, n_seq, vs=60, vp=45, k=6, kp=5, max_len=40):
    """A random ragged batch: per-sequence groups, concatenated source / pivot arrays, offsets."""
    lens = []
    for _ in range(n_seq):
        lp, ls = int(rng.integers(0, max_len)), int(rng.integers(0, max_len))
        if (lp == 0) != (ls == 0):
            lp = ls = 0
        lens.append((lp, ls))
    groups = [random_groups(rng, lp, ls) for lp, ls in lens]
    ns, np_ = sum(ls for _, ls in lens), sum(lp for lp, _ in lens)
    ids, lg, lse = random_topk(rng, ns, k, vs)
    pivot_topk = random_topk(rng, np_, kp, vp)
    pivot_ids = rng.integers(0, vp, np_).astype(np.int32)
    s_off = np.r_[0, np.cumsum([ls for _, ls in lens])].astype(np.int64)
    p_off = np.r_[0, np.cumsum([lp for lp, _ in lens])].astype(np.int64)
    return dict(groups=groups, ids=ids, lg=lg, lse=lse, map=random_map(rng, vs, vp), pivot_ids=pivot_ids,
                pivot_topk=pivot_topk, s_off=s_off, p_off=p_off)


def _run_numpy(b, **kw):
    return remap_batch(b["groups"], b["ids"], b["lg"], b["lse"], b["map"], b["pivot_ids"], source_offsets=b["s_off"],
                       pivot_offsets=b["p_off"], pivot_topk=b["pivot_topk"], **kw)


def _reference_batch(b, **kw):
    out = []
    for i, g in enumerate(b["groups"]):
        s0, s1, p0, p1 = b["s_off"][i], b["s_off"][i + 1], b["p_off"][i], b["p_off"][i + 1]
        pt = tuple(x[p0:p1] for x in b["pivot_topk"])
        out.append(reference_remap_sequence(g, b["ids"][s0:s1], b["lg"][s0:s1], b["lse"][s0:s1], b["map"],
                                            b["pivot_ids"][p0:p1], pt, **kw))
    return out


# ---- hand-built case with known numbers ----------------------------------------------------------

def _hand_case():
    # pivot positions 0..3, source positions 0..3; groups: 1:1, n:1 (pivot 1-2 / source 1), 1:n (pivot 3 / source 2-3)
    groups = np.array([[0, 1, 0, 1], [1, 3, 1, 2], [3, 4, 2, 4]])
    vmap = sp.csr_matrix(
        (np.array([1.0, 0.5, 0.5, 1.0], np.float32), (np.array([0, 1, 1, 5]), np.array([2, 2, 3, 4]))), shape=(6, 5))
    ln = np.log
    src_ids = np.array([[0, 1], [4, -1], [0, -1], [5, 0]], np.int32)
    src_lg = np.array([[ln(0.5), ln(0.3)], [ln(0.9), -np.inf], [ln(0.5), -np.inf], [ln(0.6), ln(0.2)]], np.float32)
    src_lse = np.zeros(4, np.float32)
    pivot_ids = np.array([1, 2, 0, 3], np.int32)
    return groups, src_ids, src_lg, src_lse, vmap, pivot_ids


def test_hand_built_case_last():
    r = remap_sequence(*_hand_case(), k_out=3, inside="onehot", one_to_many="last").sequence(0)
    np.testing.assert_array_equal(r["group_kind"], [KIND_1_1, KIND_N_1_INSIDE, KIND_N_1_END, KIND_1_N])
    np.testing.assert_array_equal(r["source_position"], [0, -1, 1, 3])
    # position 0 <- source 0: {2: .5 + .3 * .5, 3: .3 * .5}; duplicate pivot id 2 merged, tail .2 carried
    np.testing.assert_array_equal(r["topk_ids"][0], [2, 3, -1])
    np.testing.assert_allclose(np.exp(r["topk_logits"][0]), [0.65, 0.15, 0.0], atol=1e-6)
    assert r["topk_logits"][0, 2] == -np.inf
    # position 1 is inside the n:1 group: the gold next pivot token (pivot_ids[2] = 0) with probability 1
    np.testing.assert_array_equal(r["topk_ids"][1], [0, -1, -1])
    assert r["topk_logits"][1, 0] == 0.0
    # position 2 <- source 1, whose only token is unmapped: nothing retained, invalid
    np.testing.assert_array_equal(r["topk_ids"][2], [-1, -1, -1])
    assert not r["valid"][2] and r["retained_mass"][2] == 0.0
    # position 3 <- source 3 (last of the 1:n group): {4: .6, 2: .2}
    np.testing.assert_array_equal(r["topk_ids"][3], [4, 2, -1])
    np.testing.assert_allclose(r["retained_mass"], [0.8, 1.0, 0.0, 0.8], atol=1e-6)
    np.testing.assert_array_equal(r["valid"], [True, True, False, True])
    np.testing.assert_array_equal(r["logsumexp"], 0.0)


def test_hand_built_case_weighted_and_policies():
    case = _hand_case()
    r = remap_sequence(*case, k_out=3, one_to_many="weighted").sequence(0)
    # source 2 maps mass .5 ({2: .5}), source 3 maps mass .8 ({4: .6, 2: .2}); weights .5/1.3, .8/1.3
    q2 = (0.5 * 0.5 + 0.8 * 0.2) / 1.3
    q4 = 0.8 * 0.6 / 1.3
    np.testing.assert_array_equal(r["topk_ids"][3], [4, 2, -1])
    np.testing.assert_allclose(np.exp(r["topk_logits"][3, :2]), [q4, q2], rtol=1e-6)
    assert r["source_position"][3] == 3
    m = remap_sequence(*case, k_out=3, inside="mask").sequence(0)
    assert not m["valid"][1] and m["topk_ids"][1, 0] == -1
    pt = (np.array([[3, 1]] * 4, np.int32), np.log(np.array([[0.7, 0.1]] * 4, np.float32)), np.zeros(4, np.float32))
    p = remap_sequence(*case, k_out=3, inside="pivot", pivot_topk=pt).sequence(0)
    np.testing.assert_array_equal(p["topk_ids"][1], [3, 1, -1])
    np.testing.assert_allclose(p["retained_mass"][1], 0.8, rtol=1e-6)
    # k_out = 1 keeps only the most probable id; the rest becomes tail
    one = remap_sequence(*case, k_out=1).sequence(0)
    np.testing.assert_array_equal(one["topk_ids"][:, 0], [2, 0, -1, 4])
    np.testing.assert_allclose(one["retained_mass"], [0.65, 1.0, 0.0, 0.6], atol=1e-6)


# ---- random inputs vs the reference --------------------------------------------------------------

@pytest.mark.parametrize("inside,one_to_many", POLICIES)
def test_random_batches_match_reference(inside, one_to_many):
    rng = np.random.default_rng(hash((inside, one_to_many)) % 2**32)
    for _ in range(4):
        b = _random_batch(rng, n_seq=int(rng.integers(1, 8)))
        got = _run_numpy(b, k_out=5, inside=inside, one_to_many=one_to_many, num_threads=2)
        ref = _reference_batch(b, k_out=5, inside=inside, one_to_many=one_to_many)
        assert len(got) == len(ref)
        for i, r in enumerate(ref):
            assert_rows_match(r, got.sequence(i), where=f"seq {i}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), k_out=st.integers(1, 12), k=st.integers(1, 8),
       policy=st.sampled_from(POLICIES), unmapped=st.floats(0.0, 1.0))
def test_property_kernel_matches_reference_and_invariants(seed, k_out, k, policy, unmapped):
    rng = np.random.default_rng(seed)
    lp, ls = int(rng.integers(1, 25)), int(rng.integers(1, 25))
    g = random_groups(rng, lp, ls)
    vs, vp = 30, 20
    vmap = random_map(rng, vs, vp, unmapped=unmapped)
    ids, lg, lse = random_topk(rng, ls, k, vs)
    pt = random_topk(rng, lp, 3, vp)
    pivot_ids = rng.integers(0, vp, lp).astype(np.int32)
    inside, otm = policy
    r = remap_sequence(g, ids, lg, lse, vmap, pivot_ids, pivot_topk=pt, k_out=k_out, inside=inside,
                       one_to_many=otm).sequence(0)
    ref = reference_remap_sequence(g, ids, lg, lse, vmap, pivot_ids, pt, k_out=k_out, inside=inside, one_to_many=otm)
    assert_rows_match(ref, r)
    # invariants: probabilities sorted desc, unique ids, empty slots only at the end, mass consistent
    p = np.exp(r["topk_logits"].astype(np.float64))
    assert np.all(np.diff(p, axis=1) <= 1e-7)
    for row_ids, row_p in zip(r["topk_ids"], p):
        kept = row_ids[row_ids >= 0]
        assert len(set(kept.tolist())) == len(kept)
        assert np.all(row_ids[len(kept):] == -1) and np.all(row_p[len(kept):] == 0)
    np.testing.assert_allclose(p.sum(axis=1), r["retained_mass"], rtol=1e-5, atol=1e-6)
    assert np.all(r["retained_mass"] <= 1.0 + 1e-5)
    assert np.array_equal(r["valid"], r["retained_mass"] > 0)


def test_threads_do_not_change_results():
    rng = np.random.default_rng(7)
    b = _random_batch(rng, n_seq=300, max_len=60)
    one = _run_numpy(b, k_out=8, one_to_many="weighted", num_threads=1)
    two = _run_numpy(b, k_out=8, one_to_many="weighted", num_threads=2)
    for f in ("topk_ids", "topk_logits", "group_kind", "retained_mass", "valid", "source_position"):
        np.testing.assert_array_equal(getattr(one, f), getattr(two, f), err_msg=f)
    assert one.counts == two.counts


def test_concatenated_groups_with_offsets_equal_list_form():
    rng = np.random.default_rng(3)
    b = _random_batch(rng, n_seq=5)
    g, go = concat_groups(b["groups"])
    a = _run_numpy(b, k_out=4)
    c = remap_batch(g, b["ids"], b["lg"], b["lse"], prepare_map(b["map"]), b["pivot_ids"], group_offsets=go,
                    source_offsets=b["s_off"], pivot_offsets=b["p_off"], k_out=4)
    np.testing.assert_array_equal(a.topk_ids, c.topk_ids)
    np.testing.assert_array_equal(a.topk_logits, c.topk_logits)


# ---- numpy and torch paths agree ---------------------------------------------------------------

def _devices():
    torch = pytest.importorskip("torch")
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("inside,one_to_many", POLICIES)
def test_torch_path_matches_numpy_path(inside, one_to_many):
    torch = pytest.importorskip("torch")
    from tokalign.remap.torch_path import prepare_map_torch, remap_batch_torch

    rng = np.random.default_rng(11)
    b = _random_batch(rng, n_seq=20)
    ref = _run_numpy(b, k_out=7, inside=inside, one_to_many=one_to_many)
    g, go = concat_groups(b["groups"])
    for dev in _devices():
        tm = prepare_map_torch(b["map"], dev)
        got = remap_batch_torch(
            torch.as_tensor(g, device=dev), torch.as_tensor(b["ids"], device=dev), torch.as_tensor(b["lg"], device=dev),
            torch.as_tensor(b["lse"], device=dev), tm, torch.as_tensor(b["pivot_ids"], device=dev),
            group_offsets=torch.as_tensor(go, device=dev), source_offsets=torch.as_tensor(b["s_off"], device=dev),
            pivot_offsets=torch.as_tensor(b["p_off"], device=dev),
            pivot_topk=tuple(torch.as_tensor(x, device=dev) for x in b["pivot_topk"]), k_out=7, inside=inside,
            one_to_many=one_to_many)
        assert got.topk_ids.device.type == dev and got.topk_ids.dtype == torch.int32
        assert got.topk_logits.shape == (len(b["pivot_ids"]), 7)
        for i in range(len(ref)):
            assert_rows_match(ref.sequence(i), got.sequence(i), where=f"{dev} seq {i}")
        assert got.counts == ref.counts


# ---- real tokenizer pairs --------------------------------------------------------------------------

_PAIRS = [("openchat-3.5", "internlm2"), ("openchat-3.5", "qwen2")]


@pytest.fixture(scope="module")
def _real_cache():
    return {}


def _real_batch(tokenizers_dir, corpora_dir, pivot, source, cache):
    from tokenizers import Tokenizer

    key = (pivot, source)
    if key in cache:
        return cache[key]
    tp = Tokenizer.from_file(str(tokenizers_dir / pivot / "tokenizer.json"))
    ts = Tokenizer.from_file(str(tokenizers_dir / source / "tokenizer.json"))
    pb = token_bytes(tokenizers_dir / pivot / "tokenizer.json")
    sb = token_bytes(tokenizers_dir / source / "tokenizer.json")
    vmap = exact_match_map(sb, pb)
    texts = load_texts(corpora_dir, 9, max_chars=600)
    rng = np.random.default_rng(5)
    popular = rng.integers(0, len(sb), 2000)
    groups, pids, sids, src = [], [], [], []
    for text in texts:
        ep, es = tp.encode(text, add_special_tokens=False), ts.encode(text, add_special_tokens=False)
        groups.append(span_groups([e for _, e in ep.offsets], [e for _, e in es.offsets]))
        pids.append(np.asarray(ep.ids, np.int32))
        sids.append(np.asarray(es.ids, np.int32))
        src.append(realistic_source(rng, sids[-1], 10, len(sb), popular))
    b = dict(groups=groups, ids=np.concatenate([s[0] for s in src]), lg=np.concatenate([s[1] for s in src]),
             lse=np.concatenate([s[2] for s in src]), map=vmap, pivot_ids=np.concatenate(pids),
             s_off=np.r_[0, np.cumsum([len(x) for x in sids])].astype(np.int64),
             p_off=np.r_[0, np.cumsum([len(x) for x in pids])].astype(np.int64), sids=sids, pb=pb, sb=sb)
    b["pivot_topk"] = realistic_source(rng, b["pivot_ids"], 5, len(pb), rng.integers(0, len(pb), 500))
    cache[key] = b
    return b


@pytest.mark.parametrize("pivot,source", _PAIRS)
@pytest.mark.parametrize("inside,one_to_many", [("onehot", "last"), ("pivot", "weighted"), ("mask", "last")])
def test_real_tokenizer_pairs_match_reference(tokenizers_dir, corpora_dir, _real_cache, pivot, source, inside,
                                              one_to_many):
    b = _real_batch(tokenizers_dir, corpora_dir, pivot, source, _real_cache)
    got = _run_numpy(b, k_out=10, inside=inside, one_to_many=one_to_many)
    ref = _reference_batch(b, k_out=10, inside=inside, one_to_many=one_to_many)
    for i, r in enumerate(ref):
        assert_rows_match(r, got.sequence(i), where=f"{pivot}x{source} seq {i}")
    s = got.summary()
    assert s["kinds"]["1:1"] > s["positions"] // 3  # most of a real pair aligns 1:1
    assert s["kinds"]["1:n"] + s["kinds"]["n:1 end"] > 0


@pytest.mark.parametrize("pivot,source", _PAIRS)
def test_real_pairs_next_token_semantics(tokenizers_dir, corpora_dir, _real_cache, pivot, source):
    """A pivot position that ends a group must predict the first pivot token of the NEXT group: wherever
    the source's top-1 at the group's last source position is the gold next source token and the map sends
    that token to the next pivot token, the remapped top-1 is the next pivot token."""
    b = _real_batch(tokenizers_dir, corpora_dir, pivot, source, _real_cache)
    got = _run_numpy(b, k_out=10)
    checked = 0
    for i, g in enumerate(b["groups"]):
        seq = got.sequence(i)
        sids = b["sids"][i]
        src_top1 = b["ids"][b["s_off"][i]:b["s_off"][i + 1], 0]
        piv = b["pivot_ids"][b["p_off"][i]:b["p_off"][i + 1]]
        for p0, p1, s0, s1 in g.tolist():
            if p1 >= len(piv) or s1 >= len(sids) or s1 == s0 or p1 == p0:
                continue
            row = b["map"].indices[b["map"].indptr[sids[s1]]:b["map"].indptr[sids[s1] + 1]]
            if src_top1[s1 - 1] == sids[s1] and row.tolist() == [piv[p1]]:
                assert seq["topk_ids"][p1 - 1, 0] == piv[p1], (i, p0, p1, s0, s1)
                checked += 1
    assert checked > 50


@pytest.mark.parametrize("pivot,source", _PAIRS[:1])
def test_real_pair_torch_agrees(tokenizers_dir, corpora_dir, _real_cache, pivot, source):
    pytest.importorskip("torch")
    from tokalign.remap.torch_path import remap_batch_torch

    b = _real_batch(tokenizers_dir, corpora_dir, pivot, source, _real_cache)
    ref = _run_numpy(b, k_out=10, one_to_many="weighted")
    for dev in _devices():
        got = remap_batch_torch(b["groups"], b["ids"], b["lg"], b["lse"], b["map"], b["pivot_ids"],
                                source_offsets=b["s_off"], pivot_offsets=b["p_off"], k_out=10,
                                one_to_many="weighted", device=dev)
        for i in range(len(ref)):
            assert_rows_match(ref.sequence(i), got.sequence(i), where=f"{dev} seq {i}")


# ---- edge cases ----------------------------------------------------------------------------------

def _tiny_map():
    return sp.csr_matrix((np.ones(3, np.float32), ([0, 1, 2], [0, 1, 2])), shape=(4, 3))


def test_empty_sequences_and_empty_batch():
    vmap = _tiny_map()
    z2 = np.zeros((0, 3), np.int32)
    r = remap_sequence(np.zeros((0, 4)), z2, z2.astype(np.float32), np.zeros(0, np.float32), vmap,
                       np.zeros(0, np.int32), k_out=4)
    assert r.topk_ids.shape == (0, 4) and len(r) == 1 and r.summary()["positions"] == 0
    r = remap_batch([], z2, z2.astype(np.float32), np.zeros(0, np.float32), vmap, np.zeros(0, np.int32),
                    source_offsets=[0], pivot_offsets=[0])
    assert len(r) == 0 and r.topk_ids.shape == (0, 10)
    # an empty sequence between two non-empty ones
    groups = [np.array([[0, 1, 0, 1]]), np.zeros((0, 4)), np.array([[0, 1, 0, 1]])]
    ids = np.array([[0, 1, 2], [2, 1, 0]], np.int32)
    lg = np.log(np.array([[0.5, 0.3, 0.1], [0.6, 0.2, 0.1]], np.float32))
    r = remap_batch(groups, ids, lg, np.zeros(2, np.float32), vmap, np.array([1, 2], np.int32),
                    source_offsets=[0, 1, 1, 2], pivot_offsets=[0, 1, 1, 2], k_out=2)
    np.testing.assert_array_equal(r.topk_ids, [[0, 1], [2, 1]])
    assert r.sequence(1)["topk_ids"].shape == (0, 2)


def test_all_unmapped_rows_are_counted_empty():
    vmap = sp.csr_matrix((4, 3), dtype=np.float32)  # nothing mapped
    g = np.array([[0, 1, 0, 1], [1, 2, 1, 2]])
    ids = np.array([[0, 1], [2, 3]], np.int32)
    lg = np.zeros((2, 2), np.float32)
    r = remap_sequence(g, ids, lg, np.full(2, np.log(2), np.float32), vmap, np.array([0, 1], np.int32))
    assert not r.valid.any() and np.all(r.retained_mass == 0) and np.all(r.topk_ids == -1)
    assert np.all(np.isneginf(r.topk_logits))
    assert r.counts == {"masked": 0, "nonfinite": 0, "empty": 2}


def test_k_out_larger_than_available_entries():
    vmap = _tiny_map()
    r = remap_sequence(np.array([[0, 1, 0, 1]]), np.array([[0, 1, -1]], np.int32),
                       np.log(np.array([[0.5, 0.25, 0.25]], np.float32)), np.zeros(1, np.float32), vmap,
                       np.array([2], np.int32), k_out=50)
    assert r.topk_ids.shape == (1, 50)
    np.testing.assert_array_equal(r.topk_ids[0, :3], [0, 1, -1])
    assert np.all(r.topk_ids[0, 2:] == -1) and np.all(np.isneginf(r.topk_logits[0, 2:]))
    np.testing.assert_allclose(r.retained_mass, [0.75], rtol=1e-6)


@pytest.mark.parametrize("bad", ["nan_logit", "inf_logit", "nan_lse", "inf_lse"])
def test_nonfinite_inputs_are_counted_invalid(bad):
    vmap = _tiny_map()
    g = np.array([[0, 1, 0, 1], [1, 2, 1, 2], [2, 3, 2, 3]])
    ids = np.array([[0, 1], [1, 2], [2, 0]], np.int32)
    lg = np.log(np.array([[0.5, 0.3], [0.5, 0.3], [0.5, 0.3]], np.float32))
    lse = np.zeros(3, np.float32)
    if bad == "nan_logit":
        lg[1, 1] = np.nan
    elif bad == "inf_logit":
        lg[1, 0] = np.inf
    elif bad == "nan_lse":
        lse[1] = np.nan
    else:
        lse[1] = -np.inf
    r = remap_sequence(g, ids, lg, lse, vmap, np.array([0, 1, 2], np.int32))
    np.testing.assert_array_equal(r.valid, [True, False, True])
    assert r.counts["nonfinite"] == 1 and np.all(r.topk_ids[1] == -1) and r.retained_mass[1] == 0
    ref = reference_remap_sequence(g, ids, lg, lse, vmap, np.array([0, 1, 2], np.int32))
    assert_rows_match(ref, r.sequence(0))


def test_neg_inf_logits_are_zero_probability_not_invalid():
    vmap = _tiny_map()
    r = remap_sequence(np.array([[0, 1, 0, 1]]), np.array([[0, 1]], np.int32),
                       np.array([[0.0, -np.inf]], np.float32), np.zeros(1, np.float32), vmap, np.array([0], np.int32))
    assert r.valid[0] and r.topk_ids[0, 0] == 0 and r.topk_ids[0, 1] == -1


def test_onehot_without_next_token_is_masked():
    # a pivot-only group at the very end: no source distribution and no next pivot token
    vmap = _tiny_map()
    g = np.array([[0, 1, 0, 1], [1, 2, 1, 1]])
    r = remap_sequence(g, np.array([[0]], np.int32), np.zeros((1, 1), np.float32), np.zeros(1, np.float32), vmap,
                       np.array([0, 1], np.int32))
    np.testing.assert_array_equal(r.group_kind, [KIND_1_1, 7])
    np.testing.assert_array_equal(r.valid, [True, False])
    assert r.counts["masked"] == 1


@pytest.mark.parametrize("case,match", [
    ("gap", "not contiguous"),
    ("short", "groups cover"),
    ("src_id", "source vocabulary"),
    ("pivot_id", "pivot vocabulary"),
    ("policy", "unknown policy"),
    ("no_pivot_topk", "pivot_topk"),
    ("bad_map", "sums to"),
    ("k_out", "k_out"),
])
def test_bad_input_raises_clear_error(case, match):
    vmap = _tiny_map()
    g = np.array([[0, 1, 0, 1], [1, 2, 1, 2]])
    ids = np.array([[0, 1], [1, 2]], np.int32)
    lg = np.zeros((2, 2), np.float32)
    lse = np.ones(2, np.float32)
    pids = np.array([0, 1], np.int32)
    kw = {}
    if case == "gap":
        g = np.array([[0, 1, 0, 1], [1, 2, 0, 2]])
    elif case == "short":
        g = np.array([[0, 1, 0, 1]])
    elif case == "src_id":
        ids[1, 1] = 4
    elif case == "pivot_id":
        pids[0] = 3
    elif case == "policy":
        kw["inside"] = "nearest"
    elif case == "no_pivot_topk":
        kw["inside"] = "pivot"
        g = np.array([[0, 2, 0, 2]])
    elif case == "bad_map":
        vmap = sp.csr_matrix(np.array([[1.0, 1.0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], np.float32))
    elif case == "k_out":
        kw["k_out"] = 0
    with pytest.raises(TokalignError, match=match):
        remap_sequence(g, ids, lg, lse, vmap, pids, **kw)


def test_torch_bad_input_and_nonfinite_match_numpy():
    pytest.importorskip("torch")
    from tokalign.remap.torch_path import remap_batch_torch

    vmap = _tiny_map()
    g = np.array([[0, 1, 0, 1], [1, 2, 1, 2]])
    ids = np.array([[0, 1], [1, 5]], np.int32)
    with pytest.raises(TokalignError, match="source vocabulary"):
        remap_batch_torch([g], ids, np.zeros((2, 2), np.float32), np.ones(2, np.float32), vmap,
                          np.array([0, 1], np.int32), source_offsets=[0, 2], pivot_offsets=[0, 2])
    with pytest.raises(TokalignError, match="not contiguous"):
        remap_batch_torch([np.array([[0, 1, 0, 1], [1, 2, 0, 2]])], ids, np.zeros((2, 2), np.float32),
                          np.ones(2, np.float32), vmap, np.array([0, 1], np.int32), source_offsets=[0, 2],
                          pivot_offsets=[0, 2])
    ids[1, 1] = 2
    lg = np.zeros((2, 2), np.float32)
    lg[0, 1] = np.nan
    a = remap_sequence(g, ids, lg, np.ones(2, np.float32), vmap, np.array([0, 1], np.int32))
    b = remap_batch_torch([g], ids, lg, np.ones(2, np.float32), vmap, np.array([0, 1], np.int32),
                          source_offsets=[0, 2], pivot_offsets=[0, 2])
    assert_rows_match(a.sequence(0), b.sequence(0))
    assert a.counts == b.counts == {"masked": 0, "nonfinite": 1, "empty": 0}


def test_weighted_differs_from_last_only_on_multi_source_groups():
    rng = np.random.default_rng(2)
    b = _random_batch(rng, n_seq=10)
    last = _run_numpy(b, k_out=6)
    w = _run_numpy(b, k_out=6, one_to_many="weighted")
    multi = np.isin(last.group_kind, [KIND_1_N, 6])
    same = ~multi
    np.testing.assert_array_equal(last.topk_ids[same], w.topk_ids[same])
    assert multi.any() and not np.array_equal(last.topk_logits[multi], w.topk_logits[multi])
    assert math.isclose(float(w.logsumexp.sum()), 0.0)
