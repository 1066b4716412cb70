"""The C++ pair counter and the streaming accumulator against a plain-Python reference."""
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokalign.artifacts import load_sparse_npz, save_sparse_npz
from tokalign.stats import MappingStats, StatsAccumulator, group_kind_counts, merge_stats


def _random_groups(rng, n, m):
    """Random monotone partition of [0,n) x [0,m) into contiguous groups (both sides non-empty)."""
    groups, i, j = [], 0, 0
    while i < n and j < m:
        di = int(rng.integers(1, 4)) if i + 1 < n else 1
        dj = int(rng.integers(1, 4)) if j + 1 < m else 1
        di, dj = min(di, n - i), min(dj, m - j)
        if len(groups) and (i + di == n) != (j + dj == m):
            di, dj = n - i, m - j  # close both sides together
        groups.append((i, i + di, j, j + dj))
        i, j = i + di, j + dj
    return np.array(groups, np.int64).reshape(-1, 4)


def _reference(pivot_ids, source_ids, groups):
    c = Counter()
    for p, s, g in zip(pivot_ids, source_ids, groups):
        for a, b, x, y in g:
            for i in range(a, b):
                for j in range(x, y):
                    c[(int(p[i]), int(s[j]))] += 1
    return c


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_seq=st.integers(0, 12), vp=st.integers(1, 40), vs=st.integers(1, 40))
def test_counts_match_reference(seed, n_seq, vp, vs):
    rng = np.random.default_rng(seed)
    pivots, sources, groups = [], [], []
    for _ in range(n_seq):
        n, m = int(rng.integers(1, 30)), int(rng.integers(1, 30))
        pivots.append(rng.integers(0, vp, n).astype(np.int32))
        sources.append(rng.integers(0, vs, m).astype(np.int32))
        groups.append(_random_groups(rng, n, m))
    acc = StatsAccumulator(vp, vs, compact_every=7)
    half = n_seq // 2
    acc.add(pivots[:half], sources[:half], groups[:half])
    acc.add(pivots[half:], sources[half:], groups[half:])
    got = acc.matrix().tocoo()
    assert dict(((int(r), int(c)), int(v)) for r, c, v in zip(got.row, got.col, got.data)) == _reference(
        pivots, sources, groups
    )
    assert acc.items == n_seq
    assert sum(acc.kinds.values()) == sum(len(g) for g in groups)


def test_kind_histogram():
    g = np.array([[0, 1, 0, 1], [1, 2, 1, 3], [2, 4, 3, 4], [4, 6, 4, 7]])
    assert group_kind_counts(g) == {"1:1": 1, "1:n": 1, "n:1": 1, "n:m": 1}


def test_out_of_range_ids_are_rejected():
    acc = StatsAccumulator(5, 5)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        acc.add([np.array([7], np.int32)], [np.array([1], np.int32)], [np.array([[0, 1, 0, 1]])])
    with pytest.raises(ValueError, match="group out of range"):
        acc.add([np.array([1], np.int32)], [np.array([1], np.int32)], [np.array([[0, 2, 0, 1]])])


def test_npz_is_reproducible_and_scipy_readable(tmp_path):
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    m = sp.random(50, 70, density=0.1, format="csr", random_state=1, dtype=np.float64)
    m.data = rng.integers(1, 100, m.nnz).astype(np.int64)
    save_sparse_npz(tmp_path / "a.npz", m)
    save_sparse_npz(tmp_path / "b.npz", m)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert (sp.load_npz(tmp_path / "a.npz") != m).nnz == 0
    assert (load_sparse_npz(tmp_path / "a.npz") != m).nnz == 0


def test_merge_refuses_mismatched_fingerprints(tmp_path):
    import scipy.sparse as sp

    from tokalign.errors import TokalignError

    meta = {"pivot_fingerprint": "a" * 64, "source_fingerprint": "b" * 64, "pivot_vocab": 3, "source_vocab": 3,
            "options": {"method": "span"}}
    one = MappingStats(sp.csr_matrix(np.eye(3, dtype=np.int64)), dict(meta, items=1))
    two = MappingStats(sp.csr_matrix(np.eye(3, dtype=np.int64) * 2), dict(meta, items=2))
    merged = merge_stats([one, two])
    assert merged.matrix.toarray().tolist() == (np.eye(3) * 3).tolist() and merged.meta["items"] == 3
    other = MappingStats(one.matrix, dict(meta, source_fingerprint="c" * 64))
    with pytest.raises(TokalignError, match="fingerprints differ"):
        merge_stats([one, other])
    merged.save(tmp_path / "s")
    back = MappingStats.load(tmp_path / "s", expect_pivot="a" * 64)
    assert (back.matrix != merged.matrix).nnz == 0
    with pytest.raises(TokalignError, match="different source tokenizer"):
        MappingStats.load(tmp_path / "s", expect_source="d" * 64)
