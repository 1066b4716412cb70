"""Tests of tokalign.align: C++ DTW / banded DTW / span against a slow pure-Python oracle."""
from __future__ import annotations

import functools
import json
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rapidfuzz.distance import Levenshtein as RFLevenshtein

from tokalign import align
from tokalign.errors import TokalignError

INF = float("inf")


# ---------------------------------------------------------------------------------------------
# Oracle: written from the spec / FuseChat's published dtw() (numpy matrix, argmin traceback).
# ---------------------------------------------------------------------------------------------
def py_levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


@functools.lru_cache(maxsize=1 << 16)
def py_cost(a: str, b: str) -> int:
    sa = a.replace("\u2581", "").replace("\u0120", "")
    sb = b.replace("\u2581", "").replace("\u0120", "")
    if sa and sb:
        return py_levenshtein(sa, sb)
    return py_levenshtein(a, b)


def py_dtw(pivot, source, tie_break="fusechat"):
    """Returns (path, cost, pivot_to_source, source_to_pivot) exactly as FuseChat's dtw()."""
    n, m = len(pivot), len(source)
    matrix = np.zeros((n + 1, m + 1))
    matrix[0, :] = np.inf
    matrix[:, 0] = np.inf
    matrix[0, 0] = 0
    for i, a in enumerate(pivot):
        for j, b in enumerate(source):
            matrix[i + 1, j + 1] = py_cost(a, b) + min(matrix[i, j + 1], matrix[i + 1, j], matrix[i, j])
    matrix = matrix[1:, 1:]
    i, j = n - 1, m - 1
    path = []
    while i > 0 or j > 0:
        path.append((i, j))
        diag = matrix[i - 1, j - 1] if i > 0 and j > 0 else np.inf
        up = matrix[i - 1, j] if i > 0 else np.inf
        left = matrix[i, j - 1] if j > 0 else np.inf
        if tie_break == "fusechat":
            move = int(np.argmin([diag, up, left]))
        else:
            move = {0: 0, 1: 2, 2: 1}[int(np.argmin([diag, left, up]))]
        if move == 0:
            i, j = i - 1, j - 1
        elif move == 1:
            i -= 1
        else:
            j -= 1
    path.append((0, 0))
    path.reverse()
    p2s = [[] for _ in range(n)]
    s2p = [[] for _ in range(m)]
    for a, b in path:
        p2s[a].append(b)
        s2p[b].append(a)
    return path, int(matrix[-1, -1]), p2s, s2p


def groups_from_path(path):
    groups = []
    start = 0
    for k in range(1, len(path) + 1):
        if k == len(path) or (path[k][0] != path[k - 1][0] and path[k][1] != path[k - 1][1]):
            groups.append([path[start][0], path[k - 1][0] + 1, path[start][1], path[k - 1][1] + 1])
            start = k
    return groups


def check_against_oracle(pivot, source, tie_break="fusechat", band=None):
    got = align.dtw(pivot, source, tie_break=tie_break, band=band)
    path, cost, p2s, s2p = py_dtw(pivot, source, tie_break)
    assert [tuple(x) for x in got.path.tolist()] == path
    assert got.cost == cost
    assert got.pivot_to_source == p2s
    assert got.source_to_pivot == s2p
    assert got.groups.tolist() == groups_from_path(path)
    assert sum(got.kind_counts.values()) == len(got.groups)
    return got


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------
ALPHABET = st.sampled_from(list("ab ▁Ġ\u00e9\u4f60\u597d") + ["\U0001f600", "\ud800", "x", "<", ">"])
TOKEN = st.text(alphabet=ALPHABET, min_size=0, max_size=6)
SEQ = st.lists(TOKEN, min_size=1, max_size=14)
LONG_TOKEN = st.text(alphabet=st.sampled_from(list("abc\u4f60")), min_size=60, max_size=90)


def split_text(draw, text: str, marker: str):
    """Random tokenization of `text` (space -> marker, like SentencePiece / byte-level BPE)."""
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(text) - 1)), max_size=len(text)))))
    bounds = [0] + [c for c in cuts if 0 < c < len(text)] + [len(text)]
    toks, offs = [], []
    for s, e in zip(bounds, bounds[1:]):
        toks.append(text[s:e].replace(" ", marker))
        offs.append((s, e))
    return toks, np.array(offs, dtype=np.int64)


@st.composite
def same_text_pair(draw, min_len=1, max_len=40):
    text = draw(st.text(alphabet=st.sampled_from(list("the cat sat on mat\u4f60")), min_size=min_len, max_size=max_len))
    if not text:
        text = "a"
    pt, po = split_text(draw, text, "\u2581")
    stoks, so = split_text(draw, text, "\u0120")
    return text, pt, po, stoks, so


# ---------------------------------------------------------------------------------------------
# DTW vs oracle
# ---------------------------------------------------------------------------------------------
def test_dtw_hand_case():
    a = check_against_oracle(["\u2581Hello", "\u2581world", "!"], ["Hello", "\u0120wor", "ld", "!"])
    assert a.n == 3 and a.m == 4
    assert a.groups.dtype == np.int64 and a.groups.shape[1] == 4


def test_dtw_marker_fallback_to_raw():
    # "▁" alone strips to empty: raw strings are compared ("▁" vs "a" = 1, "▁" vs "▁" = 0).
    assert align.dtw(["\u2581"], ["a"]).cost == 1
    assert align.dtw(["\u2581"], ["\u2581"]).cost == 0
    assert align.dtw(["\u2581ab"], ["\u0120ab"]).cost == 0
    assert align.dtw(["\u2581"], ["\u0120"]).cost == 1


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SEQ, SEQ, st.sampled_from(["fusechat", "source_first"]))
def test_dtw_equals_oracle(pivot, source, tie):
    check_against_oracle(pivot, source, tie_break=tie)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "ab", "\u2581a", ""]), min_size=1, max_size=30),
       st.lists(st.sampled_from(["a", "b", "ab", "\u0120b", ""]), min_size=1, max_size=30))
def test_dtw_many_ties_equals_oracle(pivot, source):
    # Few distinct tokens -> many equal D values: exercises the tie-break order.
    check_against_oracle(pivot, source, "fusechat")
    check_against_oracle(pivot, source, "source_first")


@settings(max_examples=60, deadline=None)
@given(LONG_TOKEN, LONG_TOKEN, st.text(max_size=70))
def test_levenshtein_long_tokens_match_rapidfuzz(a, b, c):
    # Single-token DTW cost is the cell cost: covers the bit-parallel (<= 64) and DP (> 64) paths.
    assert align.dtw([a], [b]).cost == RFLevenshtein.distance(a, b)
    assert align.dtw([a], [c]).cost == py_cost(a, c)
    assert align.dtw([c], [a]).cost == py_cost(c, a)


def test_single_and_empty_sequences():
    one = align.dtw(["x"], ["y", "z"])
    assert one.pivot_to_source == [[0, 1]] and one.kind_counts == {"1:1": 0, "1:n": 1, "n:1": 0, "n:m": 0}
    empty = align.dtw([], ["a"])
    assert empty.path.shape == (0, 2) and empty.groups.shape == (0, 4) and empty.source_to_pivot == [[]]
    assert align.span(np.zeros((0, 2), np.int64), [[0, 1]]).groups.shape == (0, 4)


def test_bad_arguments_raise_tokalign_error():
    with pytest.raises(TokalignError):
        align.dtw(["a"], ["b"], tie_break="nope")
    with pytest.raises(TokalignError):
        align.dtw(["a"], ["b"], band=-3)
    with pytest.raises(TokalignError):
        align.dtw("abc", ["b"])
    with pytest.raises(TokalignError, match="item 1"):
        align.dtw(["a", 3], ["b"])
    with pytest.raises(TokalignError, match="starts before"):
        align.span([[0, 2], [1, 3], [0, 1]], [[0, 3]])
    with pytest.raises(TokalignError, match="valid"):
        align.span([[2, 1]], [[0, 3]])
    with pytest.raises(TokalignError, match="beyond"):
        align.span([[0, 9]], [[0, 3]], pivot_text="abc", source_text="abc")
    t = align.TokenTable(["a", "b"])
    with pytest.raises(TokalignError, match="outside the table"):
        align.batch([np.array([0, 2])], [np.array([1])], pivot_table=t, source_table=t)


# ---------------------------------------------------------------------------------------------
# Banded == full (exact: same path, cost, groups and tie-breaks for every input)
# ---------------------------------------------------------------------------------------------
def assert_banded_equals_full(pivot, source, band, tie="fusechat"):
    full = align.dtw(pivot, source, tie_break=tie)
    b = align.dtw(pivot, source, tie_break=tie, band=band)
    assert b.path.tolist() == full.path.tolist()
    assert b.cost == full.cost
    assert b.groups.tolist() == full.groups.tolist()
    assert b.kind_counts == full.kind_counts
    return full, b


@settings(max_examples=200, deadline=None)
@given(SEQ, SEQ, st.sampled_from(["fusechat", "source_first"]))
def test_banded_random_sequences(pivot, source, tie):
    # Unrelated sequences with tiny bands: the band's candidate is often wrong, the exact pass fixes it.
    for band in ("auto", 1, 3):
        assert_banded_equals_full(pivot, source, band, tie)


def test_banded_known_counterexamples():
    # Found by hypothesis against the old heuristic (a cheaper path leaves and re-enters the band).
    cases = [
        (["", "", "<<", "<", "", ""], ["", "<", "", "", "", "<", ""]),
        (["a", "", "b", "", "", "ab"], ["", "ab", "b", "", "a", "", "", "b"]),
    ]
    for pivot, source in cases:
        for tie in ("fusechat", "source_first"):
            full, b = assert_banded_equals_full(pivot, source, 1, tie)
            check_against_oracle(pivot, source, tie, band=1)


@settings(max_examples=60, deadline=None)
@given(same_text_pair(min_len=200, max_len=600), st.sampled_from(["fusechat", "source_first"]),
       st.sampled_from([1, 8, "auto"]))
def test_banded_equals_full_same_text(pair, tie, band):
    _, pt, _, stoks, _ = pair
    assert_banded_equals_full(pt, stoks, band, tie)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["a", "ab", "the cat ", "aab"]), st.integers(40, 120), st.randoms(use_true_random=False))
def test_banded_equals_full_repetitive_text(unit, reps, rnd):
    # Periodic text: many equal-cost paths far from the diagonal (the hardest case for a band).
    text = unit * reps
    cuts_a = sorted(rnd.sample(range(1, len(text)), len(text) // 3))
    cuts_b = sorted(rnd.sample(range(1, len(text)), len(text) // 2))
    tok = lambda cuts, mk: [text[s:e].replace(" ", mk) for s, e in zip([0] + cuts, cuts + [len(text)])]  # noqa: E731
    pivot, source = tok(cuts_a, "\u2581"), tok(cuts_b, "\u0120")
    for band in (1, "auto"):
        assert_banded_equals_full(pivot, source, band, "fusechat")
    assert_banded_equals_full(pivot, source, 2, "source_first")


POOL_TOKEN = st.text(alphabet=st.sampled_from(list("abcxy ▁Ġ\u00e9\u4f60") + ["\U0001f600"]), min_size=0, max_size=20)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(POOL_TOKEN, LONG_TOKEN), min_size=1, max_size=12, unique=True),
       st.lists(st.one_of(POOL_TOKEN, LONG_TOKEN), min_size=1, max_size=12, unique=True),
       st.randoms(use_true_random=False), st.sampled_from(["fusechat", "source_first"]))
def test_cost_table_paths_equal_oracle(pool_p, pool_s, rnd, tie):
    # Few distinct tokens in long sequences: the cost table is filled up front (SIMD over eight
    # pivot tokens, patterns up to 16 code points, others one by one); tokens > 16 and > 64 code
    # points, non-ASCII, empty and marker-only strings all go through it.
    pivot = [rnd.choice(pool_p) for _ in range(70)]
    source = [rnd.choice(pool_s) for _ in range(60)]
    check_against_oracle(pivot, source, tie)
    assert_banded_equals_full(pivot, source, 1, tie)


def test_banded_really_bands_and_widens():
    words = ("the quick brown fox jumps over the lazy dog " * 60).split(" ")
    pivot = ["\u2581" + w for w in words if w]
    source = []
    for w in words:
        if w:
            source += ["\u0120" + w[:2], w[2:]] if len(w) > 2 else ["\u0120" + w]
    full = align.dtw(pivot, source)
    narrow = align.dtw(pivot, source, band=4)
    auto = align.dtw(pivot, source, band="auto")
    assert narrow.band >= 4 and auto.band > 0  # the band's candidate was exact: no fallback
    assert narrow.path.tolist() == full.path.tolist() == auto.path.tolist()
    # A pivot side with one huge token forces the band to widen until it equals the full result.
    skew = ["\u2581" + "x" * 400] + pivot
    assert align.dtw(skew, source, band=2).path.tolist() == align.dtw(skew, source).path.tolist()


def test_banded_refuses_above_cell_budget():
    # Random tokens over a tiny vocabulary do not follow any band (zero-cost cells everywhere):
    # the exact pass would approach the full matrix, so a budget makes it stop with a clear error.
    rng = np.random.default_rng(0)
    vocab = ["\u2581the", "\u2581cat", "s", "\u2581on", "\u2581a", "\u2581mat", ".", "ly", "\u2581quick"]
    pivot = [vocab[k] for k in rng.integers(0, len(vocab), 3000)]
    source = [vocab[k] for k in rng.integers(0, len(vocab), 3000)]
    with pytest.raises(TokalignError, match="needs more than 2000000 cells"):
        align.dtw(pivot, source, band="auto", max_cells=2_000_000)
    with pytest.raises(TokalignError, match="too large"):
        align.dtw(pivot, source, max_cells=1_000_000)  # full matrix above the budget
    with pytest.raises(TokalignError, match="max_cells"):
        align.dtw(pivot, source, max_cells=0)
    with pytest.raises(TokalignError, match="too large"):
        align.dtw(pivot * 40, source * 40)  # 1.4e10 cells: refused instead of exhausting memory


def _long_real_pair(tokenizers_dir, corpora_dir, n_tokens, name_b="qwen2"):
    tokenizers = pytest.importorskip("tokenizers")
    ta = tokenizers.Tokenizer.from_file(str(tokenizers_dir / "openchat-3.5" / "tokenizer.json"))
    tb = tokenizers.Tokenizer.from_file(str(tokenizers_dir / name_b / "tokenizer.json"))
    parts, chars = [], 0
    with open(corpora_dir / "alpacaeval_parallel.jsonl", encoding="utf-8") as f:
        for line in f:
            parts.append(json.loads(line)["messages"][1]["content"])
            chars += len(parts[-1])
            if chars > n_tokens * 5:
                break
    text = "\n\n".join(parts)
    ia, ib = ta.encode(text, add_special_tokens=False).ids, tb.encode(text, add_special_tokens=False).ids
    ib = ib[: round(len(ib) * n_tokens / len(ia))]  # about the same stretch of text
    return [ta.id_to_token(i) for i in ia[:n_tokens]], [tb.id_to_token(i) for i in ib]


def test_banded_real_text_8k_equals_full(tokenizers_dir, corpora_dir):
    pa, pb = _long_real_pair(tokenizers_dir, corpora_dir, 8000)
    full, b = assert_banded_equals_full(pa, pb, "auto")
    assert b.band > 0


@pytest.mark.slow
def test_banded_100k_real_tokens_time_and_memory(tokenizers_dir, corpora_dir):
    import resource

    pa, pb = _long_real_pair(tokenizers_dir, corpora_dir, 100_000)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    a = align.dtw(pa, pb, band="auto")
    assert time.perf_counter() - t0 < 120
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    assert grown_mib < 1024  # cost table (~110 MiB) + band; the full matrix would need 2.2 GiB of moves
    assert a.band > 0 and a.n == 100_000 and a.groups[-1, 1] == a.n and a.groups[-1, 3] == a.m


# ---------------------------------------------------------------------------------------------
# Span
# ---------------------------------------------------------------------------------------------
def test_span_hand_cases():
    text = "Hello world"
    #        pivot: "Hello" " world"; source: "Hel" "lo" " wor" "ld"
    a = align.span([[0, 5], [5, 11]], [[0, 3], [3, 5], [5, 9], [9, 11]], pivot_text=text, source_text=text)
    assert a.groups.tolist() == [[0, 1, 0, 2], [1, 2, 2, 4]]
    assert a.pivot_to_source == [[0, 1], [2, 3]]
    assert a.kind_counts == {"1:1": 0, "1:n": 2, "n:1": 0, "n:m": 0}
    # n:m: "ab|cd" vs "a|bc|d"
    b = align.span([[0, 2], [2, 4]], [[0, 1], [1, 3], [3, 4]])
    assert b.groups.tolist() == [[0, 2, 0, 3]] and b.kind_counts["n:m"] == 1
    assert b.pivot_to_source == [[0, 1], [1, 2]]


def test_span_shared_char_bytes_and_zero_width():
    # Three byte-level tokens share one character's span [1, 2); a zero-width token at 0 and at the end.
    p = [[0, 0], [0, 1], [1, 2], [2, 3]]
    s = [[0, 1], [1, 2], [1, 2], [1, 2], [2, 3], [3, 3]]
    a = align.span(p, s)
    assert a.groups.tolist() == [[0, 2, 0, 1], [2, 3, 1, 4], [3, 4, 4, 6]]
    assert a.source_to_pivot == [[0, 1], [2], [2], [2], [3], [3]]
    # Both sides zero-width at the same spot (BOS): a 1:1 group of its own.
    z = align.span([[0, 0], [0, 2]], [[0, 0], [0, 1], [1, 2]])
    assert z.groups.tolist() == [[0, 1, 0, 1], [1, 2, 1, 3]]


def test_span_gap_on_one_side():
    # Pivot drops the space (like WordPiece): the space token joins the following group.
    a = align.span([[0, 2], [3, 5]], [[0, 2], [2, 3], [3, 5]])
    assert a.groups.tolist() == [[0, 1, 0, 1], [1, 2, 1, 3]]


@settings(max_examples=200, deadline=None)
@given(same_text_pair())
def test_span_properties(pair):
    text, pt, po, stoks, so = pair
    a = align.span(po, so, pivot_text=text, source_text=text)
    g = a.groups
    # contiguous cover, in order; boundaries coincide in both tokenizations
    assert g[0, 0] == 0 and g[0, 2] == 0 and g[-1, 1] == len(pt) and g[-1, 3] == len(stoks)
    assert (g[1:, 0] == g[:-1, 1]).all() and (g[1:, 2] == g[:-1, 3]).all()
    for p0, p1, s0, s1 in g.tolist():
        assert po[p0, 0] == so[s0, 0] and po[p1 - 1, 1] == so[s1 - 1, 1]
        # minimal: no common boundary strictly inside the group
        inner_p = set(po[p0:p1 - 1, 1].tolist())
        inner_s = set(so[s0:s1 - 1, 1].tolist())
        assert not (inner_p & inner_s)
    # every pivot token maps to the source tokens overlapping it
    for i, js in enumerate(a.pivot_to_source):
        want = [j for j in range(len(so)) if so[j, 0] < po[i, 1] and po[i, 0] < so[j, 1]]
        assert js == want
    # DTW consistency: where both sides are one identical (stripped) token, DTW of the group agrees
    for p0, p1, s0, s1 in g.tolist():
        sub = align.dtw(pt[p0:p1], stoks[s0:s1])
        assert sub.path[0].tolist() == [0, 0] and sub.path[-1].tolist() == [p1 - p0 - 1, s1 - s0 - 1]


def test_span_different_texts_falls_back_to_dtw():
    pt = "<|user|>Hi there<|end|>"
    st_ = "[INST] Hi there [/INST]"
    pivot_off = [[0, 8], [8, 10], [10, 16], [16, 23]]
    source_off = [[0, 6], [6, 9], [9, 15], [15, 23]]
    a = align.span(pivot_off, source_off, pivot_text=pt, source_text=st_)
    assert a.method == "span+dtw"
    # "Hi" / " there" are shared text: pivot 1 <-> source 1, pivot 2 <-> source 2
    assert a.pivot_to_source[1] == [1] and a.pivot_to_source[2] == [2]
    assert a.groups[0].tolist()[:3] == [0, 1, 0] and a.groups[-1].tolist()[1::2] == [4, 4]
    # totally different texts: whole DTW
    b = align.span([[0, 3], [3, 6]], [[0, 2], [2, 6]], pivot_text="abcdef", source_text="uvwxyz")
    assert b.path.tolist() == align.dtw(["abc", "def"], ["uv", "wxyz"]).path.tolist()


def test_span_100k_tokens_fast():
    rng = np.random.default_rng(1)
    lens_p = rng.integers(1, 6, 100_000)
    ends_p = np.cumsum(lens_p)
    cuts_s = np.unique(np.concatenate([ends_p[rng.random(ends_p.size) < 0.7], rng.integers(1, ends_p[-1], 50_000)]))
    cuts_s = np.union1d(cuts_s, [ends_p[-1]])
    po = np.stack([ends_p - lens_p, ends_p], 1)
    so = np.stack([np.concatenate([[0], cuts_s[:-1]]), cuts_s], 1)
    t0 = time.perf_counter()
    a = align.span(po, so)
    assert time.perf_counter() - t0 < 5
    assert a.groups[-1, 1] == 100_000 and a.groups[-1, 3] == len(so)
    assert sum(a.kind_counts.values()) == len(a.groups)


# ---------------------------------------------------------------------------------------------
# Batch
# ---------------------------------------------------------------------------------------------
def test_batch_dtw_and_span_match_single_calls():
    vocab_p = ["\u2581the", "\u2581cat", "s", "\u2581sat", "\u2581on", "\u2581mat", "."]
    vocab_s = ["\u0120the", "\u0120ca", "t", "s", "\u0120sat", "\u0120on", "\u0120m", "at", ".", "the"]
    tp, ts = align.TokenTable(vocab_p), align.TokenTable(vocab_s)
    rng = np.random.default_rng(3)
    pids = [rng.integers(0, len(vocab_p), rng.integers(1, 60)) for _ in range(24)]
    sids = [rng.integers(0, len(vocab_s), rng.integers(1, 60)) for _ in range(24)]
    sids[5] = np.array([], dtype=np.int64)
    out = align.batch(pids, sids, pivot_table=tp, source_table=ts, band=None, num_threads=2)
    for a, p, s in zip(out, pids, sids):
        ref = align.dtw([vocab_p[k] for k in p], [vocab_s[k] for k in s])
        assert a.path.tolist() == ref.path.tolist() and a.cost == ref.cost
    strs = align.batch([[vocab_p[k] for k in p] for p in pids], [[vocab_s[k] for k in s] for s in sids])
    assert [x.path.tolist() for x in strs] == [x.path.tolist() for x in out]
    offs = [np.stack([np.arange(k), np.arange(k) + 1], 1) for k in (3, 5, 8)]
    spans = align.batch(method="span", pivot_offsets=offs, source_offsets=offs[::-1])
    assert [s.groups.tolist() for s in spans] == [align.span(a, b).groups.tolist() for a, b in zip(offs, offs[::-1])]


FIELDS = ("n", "m", "cost", "band", "kind_counts")
ARRAYS = ("path", "p2s_indptr", "p2s_indices", "s2p_indptr", "s2p_indices", "groups")


@settings(max_examples=30, deadline=None)
@given(st.lists(same_text_pair(max_len=60), min_size=1, max_size=12), st.sampled_from([1, 2]))
def test_batch_span_equals_single_calls(pairs, threads):
    po = [p[2] for p in pairs] + [np.zeros((0, 2), np.int64)]
    so = [p[4].astype(np.int32) for p in pairs] + [[[0, 1]]]  # other dtypes and lists are accepted
    out = align.batch(method="span", pivot_offsets=po, source_offsets=so, num_threads=threads)
    assert len(out) == len(po)
    for a, p, s in zip(out, po, so):
        ref = align.span(p, s)
        assert a.method == "span" and len(a) == len(ref)
        for f in FIELDS:
            assert getattr(a, f) == getattr(ref, f), f
        for f in ARRAYS:
            x, y = getattr(a, f), getattr(ref, f)
            assert x.dtype == y.dtype and x.shape == y.shape and (x == y).all(), f
        assert a.pivot_to_source == ref.pivot_to_source and a.source_to_pivot == ref.source_to_pivot


def test_batch_span_bad_items():
    good = np.array([[0, 1], [1, 2]])
    with pytest.raises(TokalignError, match=r"source_offsets\[1\] must be an integer array"):
        align.batch(method="span", pivot_offsets=[good, good], source_offsets=[good, good.astype(float)])
    with pytest.raises(TokalignError, match=r"pivot_offsets\[0\] must be an integer array of shape"):
        align.batch(method="span", pivot_offsets=[np.arange(4)], source_offsets=[good])
    with pytest.raises(TokalignError, match="pair 1: span: pivot offsets"):
        align.batch(method="span", pivot_offsets=[good, good[::-1]], source_offsets=[good, good])


# ---------------------------------------------------------------------------------------------
# Real tokenizers and text
# ---------------------------------------------------------------------------------------------
def _real_pair(tokenizers_dir, corpora_dir, name_a, name_b, n_chars=3000):
    tokenizers = pytest.importorskip("tokenizers")
    ta = tokenizers.Tokenizer.from_file(str(tokenizers_dir / name_a / "tokenizer.json"))
    tb = tokenizers.Tokenizer.from_file(str(tokenizers_dir / name_b / "tokenizer.json"))
    text = ""
    with open(corpora_dir / "alpacaeval_parallel.jsonl", encoding="utf-8") as f:
        for line in f:
            text += json.loads(line)["messages"][1]["content"] + "\n\n"
            if len(text) > n_chars:
                break
    ea, eb = ta.encode(text, add_special_tokens=False), tb.encode(text, add_special_tokens=False)
    return text, ta, tb, ea, eb


@pytest.mark.parametrize("name_b", ["qwen2", "internlm2"])
def test_real_text_dtw_banded_span(tokenizers_dir, corpora_dir, name_b):
    text, ta, tb, ea, eb = _real_pair(tokenizers_dir, corpora_dir, "openchat-3.5", name_b)
    pa = [ta.id_to_token(i) for i in ea.ids]
    pb = [tb.id_to_token(i) for i in eb.ids]
    full = align.dtw(pa, pb)
    banded = align.dtw(pa, pb, band="auto")
    assert banded.band > 0 and banded.path.tolist() == full.path.tolist()
    # oracle on a prefix (the pure-Python DTW is slow)
    check_against_oracle(pa[:60], pb[:60])
    # batch with vocabulary tables == string DTW
    vocab_a = [ta.id_to_token(i) for i in range(ta.get_vocab_size())]
    vocab_b = [tb.id_to_token(i) for i in range(tb.get_vocab_size())]
    (viaids,) = align.batch([np.array(ea.ids)], [np.array(eb.ids)], pivot_table=align.TokenTable(vocab_a),
                            source_table=align.TokenTable(vocab_b), band=None)
    assert viaids.path.tolist() == full.path.tolist()
    sp = align.span(np.array(ea.offsets), np.array(eb.offsets), pivot_text=text, source_text=text)
    assert sp.groups[-1, 1] == len(pa) and sp.groups[-1, 3] == len(pb)
    # DTW-consistency: most span group starts are DTW group starts, and span 1:1 groups of equal
    # stripped strings are 1:1 in DTW as well.
    ss = set(map(tuple, sp.groups[:, [0, 2]].tolist()))
    ds = set(map(tuple, full.groups[:, [0, 2]].tolist()))
    assert len(ss & ds) / len(ss) > 0.8
    strip = lambda t: t.replace("\u2581", "").replace("\u0120", "")  # noqa: E731
    p2s = full.pivot_to_source
    agree = total = 0
    for p0, p1, s0, s1 in sp.groups.tolist():
        if p1 - p0 == 1 and s1 - s0 == 1 and strip(pa[p0]) == strip(pb[s0]) and strip(pa[p0]):
            total += 1
            agree += p2s[p0] == [s0]
    assert total > 100 and agree / total > 0.95
