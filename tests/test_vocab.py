"""tokalign.vocab: native Levenshtein / MinED against simple references and rapidfuzz, EM specials,
MS on hand-built count matrices (incl. a transcription of FuseChat's released code), VocabMap IO, CLI."""
from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

import tokalign.vocab as V
from tokalign import _core, load_tokenizer
from tokalign.errors import TokalignError
from tokalign.stats import MappingStats
from tokalign.vocab import _common, registry
from tokalign.vocab.mined import search as mined_search


# ---- references ---------------------------------------------------------------------------------


def units(b: bytes) -> str:
    """The documented unit rule: code points, stray bytes as U+DC00+byte."""
    return b.decode("utf-8", "surrogateescape")


def dp_levenshtein(a, b) -> int:
    """Textbook O(mn) dynamic programme."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
        prev = cur
    return prev[-1]


def reference_mined(pivot_texts, pivot_ok, rank, source_texts, top_n):
    """Brute force with rapidfuzz cdist: per source the top_n by (distance, |dlen|, rank, id);
    an exact match short-circuits to one result."""
    cand = [i for i in range(len(pivot_texts)) if pivot_ok[i]]
    pu = [units(pivot_texts[i]) for i in cand]
    su = [units(t) for t in source_texts]
    dm = process.cdist(su, pu, scorer=Levenshtein.distance, dtype=np.int32, workers=1)
    plen = np.array([len(x) for x in pu])
    out = []
    for r, s in enumerate(su):
        key = np.lexsort((np.array(cand), rank[cand], np.abs(plen - len(s)), dm[r]))
        best = [(cand[k], int(dm[r, k])) for k in key[:top_n]]
        if best and best[0][1] == 0:
            best = best[:1]
        out.append(best)
    return out


class FakeTok:
    """A tokenizer per the contract, from explicit lists."""

    def __init__(self, texts: List[bytes], special: Optional[Dict[int, str]] = None, raw: Optional[List[str]] = None, name="fake"):
        self.name = name
        self._texts = list(texts)
        self.vocab_size = len(texts)
        self.special_mask = np.zeros(len(texts), dtype=bool)
        self.special_ids: Dict[str, int] = {}
        for i, role in (special or {}).items():
            self.special_mask[i] = True
            if role:
                self.special_ids[role] = i
        self._raw = raw if raw is not None else [t.decode("utf-8", "surrogateescape") for t in texts]
        self.fingerprint = "fp-%s-%d" % (name, hash(tuple(texts)) & 0xFFFFFFFF)

    def token_texts(self):
        return list(self._texts)

    def raw_tokens(self):
        return list(self._raw)


def save_stats(directory: Path, matrix, pivot_fingerprint: str, source_fingerprint: str, overwrite: bool = False) -> None:
    """A stats folder as build-stats writes it (``MappingStats.save``), from a hand-built matrix."""
    m = sp.csr_matrix(matrix, dtype=np.int64)
    meta = {"pivot_fingerprint": pivot_fingerprint, "source_fingerprint": source_fingerprint,
            "pivot_vocab": int(m.shape[0]), "source_vocab": int(m.shape[1])}
    MappingStats(m, meta).save(directory, overwrite=overwrite)


@pytest.fixture(scope="module")
def openchat(tokenizers_dir):
    return load_tokenizer(tokenizers_dir / "openchat-3.5")


@pytest.fixture(scope="module")
def tekken(tokenizers_dir):
    return load_tokenizer(tokenizers_dir / "mistral-tekken")


# ---- Levenshtein core -----------------------------------------------------------------------------

ALPHABET = "abcAB é你好\U0001F600"
texts_st = st.text(alphabet=ALPHABET, max_size=160)


@settings(max_examples=150, deadline=None)
@given(texts_st, texts_st)
def test_levenshtein_matches_dp(a, b):
    # lengths reach past one (64) and two (128) words
    assert _core.levenshtein(a.encode(), b.encode()) == dp_levenshtein(a, b)


@settings(max_examples=60, deadline=None)
@given(st.integers(65, 200), st.integers(0, 200), st.integers(0, 2**32))
def test_levenshtein_long_patterns(m, n, seed):
    rnd = random.Random(seed)
    a = "".join(rnd.choice("ab") for _ in range(m))
    b = "".join(rnd.choice("abc") for _ in range(n))
    assert _core.levenshtein(a.encode(), b.encode()) == dp_levenshtein(a, b)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_units_are_surrogateescape(b):
    assert _core.decode_units(b) == [ord(c) for c in units(b)]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=90), st.binary(max_size=90))
def test_levenshtein_on_arbitrary_bytes(a, b):
    assert _core.levenshtein(a, b) == dp_levenshtein(units(a), units(b))


def test_levenshtein_pairs_against_rapidfuzz():
    rnd = random.Random(3)
    words = ["".join(rnd.choice("abcé你") for _ in range(rnd.randint(0, 140))) for _ in range(60)]
    enc = [w.encode() for w in words]
    ia = np.array([rnd.randrange(60) for _ in range(500)])
    ib = np.array([rnd.randrange(60) for _ in range(500)])
    d, contains = _core.levenshtein_pairs(enc, enc, ia, ib, threads=2)
    for k in range(500):
        a, b = words[ia[k]], words[ib[k]]
        assert d[k] == Levenshtein.distance(a, b)
        assert contains[k] == (a in b or b in a)


def test_levenshtein_pairs_bad_index():
    with pytest.raises(IndexError):
        _core.levenshtein_pairs([b"a"], [b"b"], np.array([0]), np.array([1]))


# ---- MinED ------------------------------------------------------------------------------------------


def _random_vocab(rnd: random.Random, n: int, alphabet: str, max_len: int) -> List[bytes]:
    out = []
    for _ in range(n):
        L = rnd.choice([rnd.randint(0, 6), rnd.randint(0, max_len)])
        out.append("".join(rnd.choice(alphabet) for _ in range(L)).encode())
    return out


@pytest.mark.parametrize("seed,top_n", [(0, 1), (1, 1), (2, 3), (3, 5)])
def test_mined_exhaustive_small(seed, top_n):
    rnd = random.Random(seed)
    pivot = _random_vocab(rnd, 300, "abcde é你", 90)
    pivot += [pivot[5], pivot[17], b"\xe4\xbd", b"\xff"]  # duplicates and partial UTF-8
    source = _random_vocab(rnd, 400, "abcdef é你好", 150) + [b"\xe4\xbd\xa0", b"\xe4", pivot[3], b""]
    ok = np.ones(len(pivot), dtype=bool)
    ok[[0, 7]] = False  # "special" pivot tokens are never candidates
    rank = np.array([rnd.randint(0, 2) for _ in pivot], dtype=np.int64)
    idx = _core.MinEDIndex(pivot, ok, rank)
    ids, d, _ = idx.query(source, None, top_n, 2)
    ref = reference_mined(pivot, ok, rank, source, top_n)
    for r, best in enumerate(ref):
        got = [(int(i), int(x)) for i, x in zip(ids[r], d[r]) if i >= 0]
        assert got == best, (r, source[r])


def test_mined_query_mask_and_empty_index():
    idx = _core.MinEDIndex([b"ab", b"cd"], np.array([True, True]), np.zeros(2, np.int64))
    ids, d, _ = idx.query([b"ab", b"zz"], np.array([False, True]), 1, 1)
    assert ids[0, 0] == -1 and d[0, 0] == -1
    assert d[1, 0] == 2
    empty = _core.MinEDIndex([b"ab"], np.array([False]), np.zeros(1, np.int64))
    ids, d, _ = empty.query([b"ab"], None, 2, 1)
    assert (ids == -1).all()


def test_mined_real_vocab_against_rapidfuzz(openchat, tekken):
    """Sampled source tokens of Mistral tekken (131k) against all of OpenChat's pivot tokens."""
    rnd = np.random.default_rng(0)
    ordinary = np.flatnonzero(~tekken.special_mask)
    sample = np.sort(rnd.choice(ordinary, 1000, replace=False))
    # plus the longest source tokens (multi-word patterns) and partial-UTF-8 byte tokens
    s_units = [units(t) for t in tekken.token_texts()]
    lengths = np.array([len(u) for u in s_units])
    partial = np.array([i for i in ordinary if any(0xDC80 <= ord(c) <= 0xDCFF for c in s_units[i])])
    assert partial.size > 1000
    sample = np.union1d(sample, np.argsort(lengths)[-10:])
    sample = np.union1d(sample, rnd.choice(partial, 100, replace=False))
    query = np.zeros(tekken.vocab_size, dtype=bool)
    query[sample] = True
    ids, d, stats = mined_search(openchat, tekken, query=query, top_n=2)
    p_texts, s_texts = openchat.token_texts(), tekken.token_texts()
    rank = _common.preference_rank(openchat)
    ref = reference_mined(p_texts, ~openchat.special_mask, rank, [s_texts[i] for i in sample], 2)
    for k, sid in enumerate(sample):
        got = [(int(i), int(x)) for i, x in zip(ids[sid], d[sid]) if i >= 0]
        assert got == ref[k], (sid, s_texts[sid])
    assert (ids[~query] == -1).all()
    assert stats["evaluated"] < stats["filtered"]  # the bounds prune


def test_mined_byte_fallback_preference(tokenizers_dir, openchat):
    """mistral-v1's "▁" (text b" ") has two pivot twins in OpenChat: "▁" and "<0x20>"; the ordinary one wins."""
    llama2 = load_tokenizer(tokenizers_dir / "mistral-v1")
    vm = V.mined(openchat, llama2)
    sid = llama2.raw_tokens().index("\u2581")
    assert openchat.raw_tokens()[vm.top1()[sid]] == "\u2581"
    byte_sid = llama2.raw_tokens().index("<0x41>")  # byte token "A" -> ordinary "A" of OpenChat
    assert openchat.raw_tokens()[vm.top1()[byte_sid]] == "A"
    # identical vocabularies except added tokens: every ordinary token maps to itself or a text twin
    top = vm.top1()
    p_texts, s_texts = openchat.token_texts(), llama2.token_texts()
    ordinary = np.flatnonzero(~llama2.special_mask)
    assert all(p_texts[top[i]] == s_texts[i] for i in ordinary)


def test_mined_top_n_weights():
    pivot = FakeTok([b"<s>", b"abc", b"abd", b"xyz", b"ab"], {0: "bos"})
    source = FakeTok([b"<s>", b"abx", b"abc"], {0: "bos"})
    vm = V.mined(pivot, source, top_n=3)
    row = vm.matrix[1].toarray().ravel()
    # abx: abc (1), abd (1), ab (1, but |dlen| = 1 ranks it after the equal-length ones)
    np.testing.assert_allclose(row, [0, 1 / 3, 1 / 3, 0, 1 / 3], rtol=1e-6)
    assert vm.matrix[2].toarray().ravel().tolist() == [0, 1, 0, 0, 0]  # exact match: one-hot
    assert vm.top1()[0] == 0 and vm.origin[0] == 1  # special by role
    vm2 = V.mined(pivot, source, top_n=2, weighting="inverse")
    assert vm2.matrix[1].nnz == 2
    with pytest.raises(ValueError):
        V.mined(pivot, source, weighting="nope")


# ---- EM -------------------------------------------------------------------------------------------------


def test_em_special_roles(openchat, tekken):
    vm = V.em(openchat, tekken)
    top = vm.top1()
    assert top[tekken.special_ids["bos"]] == openchat.special_ids["bos"]
    assert top[tekken.special_ids["eos"]] == openchat.special_ids["eos"] == 32000  # <|end_of_turn|>
    assert top[tekken.special_ids["unk"]] == openchat.special_ids["unk"]
    assert top[tekken.special_ids["inst"]] == -1  # no [INST] in OpenChat
    p_texts, s_texts = openchat.token_texts(), tekken.token_texts()
    mapped = np.flatnonzero((top >= 0) & ~tekken.special_mask)
    assert len(mapped) > 20000
    assert all(p_texts[top[i]] == s_texts[i] for i in mapped)
    assert not openchat.special_mask[top[mapped]].any()
    world = s_texts.index(b" world")
    assert openchat.raw_tokens()[top[world]] == "\u2581world"
    sums = np.asarray(vm.matrix.sum(axis=1)).ravel()
    assert set(np.round(sums, 6)) <= {0.0, 1.0}


def test_em_specials_by_content_and_role():
    pivot = FakeTok([b"<unk>", b"<|im_start|>", b"<|im_end|>", b"hi", b"<|im_end|>"], {0: "unk", 1: "im_start", 2: "eos"}, name="p")
    source = FakeTok([b"<|im_end|>", b"<|im_start|>", b"hi", b"<|im_end|>"], {0: "eos", 1: None, 3: None}, name="s")
    top = V.em(pivot, source).top1()
    assert top[0] == 2  # role eos
    assert top[1] == 1  # identical literal content of special tokens
    assert top[2] == 3  # ordinary text
    assert top[3] == 2  # special by content; never the ordinary pivot twin (id 4)


# ---- MS -------------------------------------------------------------------------------------------------


def fusechat_token_align_mapping(base_raw, blend_raw, matrix, base_marker, blend_marker, unk, bos_eos):
    """Transcription of FuseChat train/align_token_and_vocab.py::token_align_mapping with
    base = source (blending model of the caller), blending = pivot, matrix = C.T (dense)."""

    def sigmoid(x):
        return 1.0 / (1 + np.exp(-x))

    def dist_fn(a, b):
        aa = a.replace(base_marker, "")
        bb = b.replace(blend_marker, "")
        w = 1
        if aa in bb or bb in aa:
            w = 0.1
        dist = Levenshtein.distance(aa, bb)  # editdistance.eval on str: code points
        return dist * w

    out = [unk for _ in range(len(matrix))]
    for i in range(len(matrix)):
        non_zero_ids = np.nonzero(matrix[i])[0]
        if len(non_zero_ids) != 0:
            dists = [dist_fn(base_raw[i], blend_raw[j]) for j in non_zero_ids]
            dist_weights = [sigmoid(matrix[i][j]) for j in non_zero_ids]
            weighted = [dist * d_w for d_w, dist in zip(dist_weights, dists)]
            out[i] = int(non_zero_ids[np.argmin(weighted)])
    for s, p in bos_eos:
        out[s] = p
    return out


def test_ms_fusechat_reproduces_released_code():
    rnd = random.Random(7)
    alpha = "abcde"
    p_raw = ["<unk>", "<s>", "</s>"] + ["".join(rnd.choice(alpha + "\u2581") for _ in range(rnd.randint(1, 7))) for _ in range(80)]
    s_raw = ["<unk>", "<s>", "</s>"] + ["".join(rnd.choice(alpha + "\u2581") for _ in range(rnd.randint(1, 7))) for _ in range(120)]
    enc = lambda xs: [x.replace("\u2581", " ").encode() for x in xs]  # noqa: E731
    pivot = FakeTok(enc(p_raw), {0: "unk", 1: "bos", 2: "eos"}, raw=p_raw, name="p")
    source = FakeTok(enc(s_raw), {0: "unk", 1: "bos", 2: "eos"}, raw=s_raw, name="s")
    dense = np.zeros((len(p_raw), len(s_raw)), dtype=np.int64)
    for _ in range(1500):
        dense[rnd.randrange(len(p_raw)), rnd.randrange(len(s_raw) - 20)] += rnd.choice([1, 1, 2, 5, 40])
    dense[1, 1] = 9
    vm = V.ms(pivot, source, sp.csr_matrix(dense), variant="fusechat", fallback="unk")
    ref = fusechat_token_align_mapping(s_raw, p_raw, dense.T.astype(np.float64), "\u2581", "\u2581", 0, [(1, 1), (2, 2)])
    top = vm.top1()
    # FuseChat overrides bos/eos only; tokalign maps every role (here also unk -> unk)
    assert top[1:].tolist() == ref[1:]
    assert top[0] == 0 and ref[0] != 0
    assert vm.meta["options"]["markers"] == ["\u2581", "\u2581"]
    assert (vm.origin[len(s_raw) - 20 :] == 7).all()  # never seen: fallback_unk


def test_ms_argmax_and_soft_known_answers():
    pivot = FakeTok([b"<s>", b"a", b"b", b"c", b"d", b"\x41"], {0: "bos"}, raw=["<s>", "a", "b", "c", "d", "<0x41>"], name="p")
    source = FakeTok([b"<s>", b"x", b"y", b"z", b"A", b"c"], {0: "bos"}, name="s")
    c = np.zeros((6, 6), dtype=np.int64)
    c[1, 1], c[2, 1] = 3, 5  # x: b wins
    c[2, 2], c[3, 2] = 4, 4  # y: tie -> lower id (a/b/c are all ordinary) -> b
    c[5, 4], c[4, 4] = 2, 2  # A: tie between byte-fallback <0x41> (id 5) and d (id 4) -> d
    c[3, 0] = 7  # <s> has counts, but roles override
    vm = V.ms(pivot, source, sp.csr_matrix(c), variant="argmax", fallback="em")
    assert vm.top1().tolist() == [0, 2, 2, -1, 4, 3]  # z unseen, no exact twin; c unseen -> em
    assert vm.origin.tolist() == [1, 4, 4, 0, 4, 6]
    soft = V.ms(pivot, source, sp.csr_matrix(c), variant="soft", fallback="none")
    np.testing.assert_allclose(soft.matrix[1].toarray().ravel(), [0, 3 / 8, 5 / 8, 0, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(soft.matrix[2].toarray().ravel(), [0, 0, 0.5, 0.5, 0, 0], rtol=1e-6)
    assert soft.matrix[5].nnz == 0
    top1 = V.ms(pivot, source, sp.csr_matrix(c), variant="soft", top_n=1, fallback="mined")
    assert top1.matrix[2].toarray().ravel().tolist() == [0, 0, 1, 0, 0, 0]
    assert top1.origin[3] == 5 and top1.distances[3] == 1  # z: MinED fallback, distance 1


def test_ms_bad_stats_shape_and_options():
    pivot = FakeTok([b"a", b"b"], name="p")
    source = FakeTok([b"a"], name="s")
    with pytest.raises(TokalignError, match="shape"):
        V.ms(pivot, source, sp.csr_matrix(np.ones((1, 2), dtype=np.int64)))
    with pytest.raises(TokalignError, match="variant"):
        V.ms(pivot, source, sp.csr_matrix(np.ones((2, 1), dtype=np.int64)), variant="x")
    with pytest.raises(TokalignError, match="unk"):
        V.ms(pivot, FakeTok([b"a", b"q"], name="s2"), sp.csr_matrix(np.array([[1, 0], [0, 0]])), fallback="unk")


def test_ms_stats_folder_fingerprints(tmp_path):
    pivot = FakeTok([b"a", b"b"], name="p")
    source = FakeTok([b"a", b"c"], name="s")
    d = tmp_path / "stats"
    counts = np.array([[2, 0], [0, 1]], dtype=np.int64)
    save_stats(d, counts, pivot.fingerprint, "other")
    with pytest.raises(TokalignError) as exc:
        V.ms(pivot, source, d)
    assert "other" in str(exc.value) and source.fingerprint in str(exc.value)
    save_stats(d, counts, pivot.fingerprint, source.fingerprint, overwrite=True)
    assert V.ms(pivot, source, d).top1().tolist() == [0, 1]


# ---- VocabMap IO -------------------------------------------------------------------------------------


def test_vocab_map_roundtrip_and_checks(tmp_path):
    pivot = FakeTok([b"<s>", b"ab", b"cd"], {0: "bos"}, name="p")
    source = FakeTok([b"<s>", b"ab", b"ce", b"zzzz"], {0: "bos"}, name="s")
    vm = V.mined(pivot, source, top_n=2)
    out = vm.save(tmp_path / "m")
    assert sorted(p.name for p in out.iterdir()) == ["arrays.npz", "map.npz", "meta.json"]
    back = V.load(out, expect_pivot=pivot, expect_source=source.fingerprint)
    assert (back.matrix != vm.matrix).nnz == 0 and back.matrix.dtype == np.float32
    assert back.distances.tolist() == vm.distances.tolist() == [0, 0, 1, 4]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["method"] == "mined" and meta["pivot_fingerprint"] == pivot.fingerprint
    assert meta["coverage"]["mapped"] == 4
    with pytest.raises(TokalignError) as exc:
        V.load(out, expect_pivot=source)
    assert pivot.fingerprint in str(exc.value) and source.fingerprint in str(exc.value)
    (out / "meta.json").unlink()  # an interrupted write
    with pytest.raises(TokalignError, match="meta.json"):
        V.load(out)
    bad = V.VocabMap(matrix=sp.csr_matrix(np.array([[0.5, 0.2]], dtype=np.float32)), meta={"method": "x"})
    bad.save(tmp_path / "bad")
    with pytest.raises(TokalignError, match="sums"):
        V.load(tmp_path / "bad")


def test_registry():
    assert set(V.METHODS) == {"em", "mined", "ms"}
    with pytest.raises(TokalignError):
        V.build("nope", None, None)


def test_vocab_map_save_is_reproducible_and_atomic(tmp_path):
    pivot = FakeTok([b"<s>", b"ab", b"cd"], {0: "bos"}, name="p")
    source = FakeTok([b"<s>", b"ab", b"ce", b"zzzz"], {0: "bos"}, name="s")
    vm = V.mined(pivot, source, top_n=2)
    first, second = vm.save(tmp_path / "a"), vm.save(tmp_path / "b")
    for name in ("map.npz", "arrays.npz", "meta.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    vm.save(first)  # an earlier map is replaced
    assert sorted(p.name for p in first.iterdir()) == ["arrays.npz", "map.npz", "meta.json"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(TokalignError, match="not empty"):
        vm.save(other)
    assert (other / "notes.txt").read_text() == "mine"
    # SIGKILL while saving: no folder that looks like a map, only a hidden temporary one
    out = tmp_path / "killed"
    code = (
        "import os, signal, numpy as np, scipy.sparse as sp\n"
        "import tokalign.vocab.vocab_map as M\n"
        "orig = M.save_sparse_npz\n"
        "def boom(path, m):\n"
        "    orig(path, m)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "M.save_sparse_npz = boom\n"
        "M.VocabMap(matrix=sp.csr_matrix(np.eye(3, dtype=np.float32)), meta={'method': 'x'}).save(%r)\n" % str(out)
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode != 0
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".killed.tmp-")]


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made by a test are undone afterwards."""
    monkeypatch.setattr(registry.REGISTRY, "entries", dict(registry.REGISTRY.entries))
    monkeypatch.setattr(V.ORIGINS, "_names", dict(V.ORIGINS._names))
    monkeypatch.setattr(V.ORIGINS, "_owners", dict(V.ORIGINS._owners))


def test_registry_extension_point(scratch_registry, tmp_path, capsys):
    """A method outside tokalign: its module plus register(); the CLI, origins and build() pick it up."""
    from tokalign.cli import build_parser, main

    pivot = FakeTok([b"<s>", b"ab", b"cd"], {0: "bos"}, name="p")
    source = FakeTok([b"<s>", b"ab", b"ce"], {0: "bos"}, name="s")
    em_before = V.em(pivot, source).meta["coverage"]["by_origin"]

    @V.register
    class FirstPivot(V.MapMethod):
        name = "first"
        description = "every ordinary source token -> pivot token 1"
        origins = {20: "first_pivot"}
        cli_options = (V.CliOption("--target", "target", "pivot id", default=1, type=int, metavar="ID"),)

        @staticmethod
        def build(pivot, source, *, target=1):
            b = _common.MapBuilder(pivot, source)
            rows = np.flatnonzero(~_common.special_mask(source))
            b.set_one_hot(rows, np.full(rows.size, target), "first_pivot")
            return b.build("first", {"target": target})

    assert "first" in V.METHODS and V.ORIGINS[20] == "first_pivot" and V.ORIGIN_CODES["first_pivot"] == 20
    vm = V.build("first", pivot, source, target=2)
    assert vm.top1().tolist() == [-1, 2, 2] and vm.meta["coverage"]["by_origin"]["first_pivot"] == 2
    # maps of the built-in methods keep their bytes: the new origin is listed only where present
    assert V.em(pivot, source).meta["coverage"]["by_origin"] == em_before
    sub = build_parser()._subparsers._group_actions[0].choices["vocab-map"]
    method = next(a for a in sub._actions if a.dest == "method")
    assert method.choices == ["em", "mined", "ms", "first"] and "first: every ordinary" in method.help
    assert "--target" in sub.format_help()
    # an option of another method is refused before any work
    assert main(["vocab-map", "--pivot", "p", "--source", "s", "--method", "em", "--target", "3", "--out", str(tmp_path / "x")]) == 2
    assert "--target does not apply to --method em" in capsys.readouterr().err
    with pytest.raises(ValueError, match="clashes"):
        V.register(type("Clash", (V.MapMethod,), {"name": "clash", "origins": {3: "other"}}))


# ---- CLI ------------------------------------------------------------------------------------------------


def test_cli_vocab_map(tmp_path, tokenizers_dir, capsys):
    from tokalign.cli import main

    args = ["vocab-map", "--pivot", str(tokenizers_dir / "openchat-3.5"), "--source", str(tokenizers_dir / "mistral-v1"),
            "--tokenizer-dir", str(tokenizers_dir)]
    assert main(args + ["--method", "em", "--out", str(tmp_path / "em"), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["method"] == "em" and meta["coverage"]["ordinary_fraction"] > 0.99
    assert main(args + ["--method", "ms", "--out", str(tmp_path / "ms")]) == 2  # needs --stats
    assert "--stats" in capsys.readouterr().err
    stats = tmp_path / "stats"
    save_stats(stats, sp.csr_matrix((32002, 32000), dtype=np.int64), "abc", "def")
    assert main(args + ["--method", "ms", "--stats", str(stats), "--out", str(tmp_path / "ms")]) == 2
    err = capsys.readouterr().err
    assert "abc" in err and err.count("\n") == 1
    assert not (tmp_path / "ms").exists()


def test_cli_vocab_map_mined_and_ms(tmp_path, tokenizers_dir, capsys):
    from tokalign.cli import main

    pivot = load_tokenizer(tokenizers_dir / "openchat-3.5")
    source = load_tokenizer(tokenizers_dir / "mistral-v1")
    args = ["vocab-map", "--pivot", str(tokenizers_dir / "openchat-3.5"), "--source", str(tokenizers_dir / "mistral-v1"),
            "--tokenizer-dir", str(tokenizers_dir)]
    assert main(args + ["--method", "mined", "--top-n", "2", "--out", str(tmp_path / "mined")]) == 0
    assert "vocab-map mined" in capsys.readouterr().out
    vm = V.load(tmp_path / "mined", expect_pivot=pivot, expect_source=source)
    assert vm.meta["options"] == {"top_n": 2, "weighting": "inverse"}
    stats = tmp_path / "stats"
    c = sp.csr_matrix(([5, 2], ([10, 11], [10, 12])), shape=(pivot.vocab_size, source.vocab_size), dtype=np.int64)
    save_stats(stats, c, pivot.fingerprint, source.fingerprint)
    out = tmp_path / "ms"
    assert main(args + ["--method", "ms", "--stats", str(stats), "--variant", "fusechat", "--fallback", "em", "--out", str(out), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["options"]["variant"] == "fusechat" and meta["stats"]["source_seen"] == 2
    vm = V.load(out)
    assert vm.top1()[10] == 10 and vm.top1()[12] == 11 and vm.origin[100] == 6


def test_vocab_map_load_refuses_swaps_and_out_of_range_ids(tmp_path):
    """Swapped tokenizers are named as such; a crafted map with pivot ids past its columns, or a shape that
    disagrees with the recorded vocabularies, is refused when loaded, naming the map."""
    pivot = FakeTok([b"<s>", b"ab", b"cd"], {0: "bos"}, name="p")
    source = FakeTok([b"<s>", b"ab", b"ce", b"zzzz"], {0: "bos"}, name="s")
    out = V.mined(pivot, source, top_n=2).save(tmp_path / "m")
    with pytest.raises(TokalignError, match="pivot and source are swapped"):
        V.load(out, expect_pivot=source, expect_source=pivot)
    with np.load(out / "map.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["indices"] = arrays["indices"].copy()
    arrays["indices"][0] = 7  # past the 3 pivot ids
    np.savez(out / "map.npz", **arrays)
    with pytest.raises(TokalignError, match=r"map.npz: not a readable sparse .npz \(indices must be < 3\)"):
        V.load(out)
    meta = json.loads((out / "meta.json").read_text())
    arrays["indices"][0] = 1
    arrays["shape"] = np.array([4, 9])
    np.savez(out / "map.npz", **arrays)
    meta["shape"] = [4, 9]
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(TokalignError, match="9 pivot ids but meta.json says the pivot tokenizer has 3"):
        V.load(out)
