"""tokalign._cuda: build switches, --device handling, the kernels' code against the CPU core.

Three layers:

* always (no GPU, no nvcc needed): device resolution and the one-line errors of ``--device cuda``,
  the TOKALIGN_CUDA switches of setup.py, the shared TA_HD headers compiling as plain C++;
* when ``tokalign._cuda`` is built (nvcc at install time; still no GPU needed): the kernels'
  per-cell / per-candidate code run on the host (``emulate=True``: same layout, same functions
  the kernels call) against ``tokalign._core`` on real vocabularies and real text pairs, and the
  ptxas report of the hot kernels (no spills) when nvcc is on PATH;
* ``@pytest.mark.gpu`` (skipped with the reason when no device is visible): the kernels themselves
  against the CPU core on real vocabularies and pairs, and the CLI end to end.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tokalign
from tokalign import _core
from tokalign.align import cuda as cuda_ops
from tokalign.cli import main
from tokalign.device import cuda_available, resolve_device
from tokalign.errors import TokalignError
from tokalign.vocab import _common as C

ROOT = Path(__file__).resolve().parent.parent
CUDA_OK, CUDA_REASON = cuda_available()

try:
    from tokalign import _cuda  # type: ignore[attr-defined]
except ImportError:  # not built: the emulation tests skip
    _cuda = None

needs_ext = pytest.mark.skipif(_cuda is None, reason="tokalign._cuda not built (no nvcc at install time)")


# ---- fixtures: real vocabularies and text pairs ------------------------------------------------


@pytest.fixture(scope="module")
def vocab_pair(tokenizers_dir):
    """openchat-3.5 (32k, SentencePiece with byte fallback) as pivot, mistral-tekken (131k) as source."""
    return (tokalign.load_tokenizer(str(tokenizers_dir / "openchat-3.5")),
            tokalign.load_tokenizer(str(tokenizers_dir / "mistral-tekken")))


@pytest.fixture(scope="module")
def text_pairs(tokenizers_dir, corpora_dir):
    """Real texts (code, English, Chinese) tokenized by openchat-3.5 and qwen2."""
    texts = []
    for name in ("code_math.jsonl", "alpacaeval_parallel.jsonl", "chat_multiturn_zh.jsonl"):
        with open(corpora_dir / name, encoding="utf-8") as f:
            for k, line in enumerate(f):
                if k == 60:
                    break
                obj = json.loads(line)
                text = obj.get("text") or "\n".join(m["content"] for m in obj.get("messages", []))
                if text:
                    texts.append(text[:2500])
    pivot = tokalign.load_tokenizer(str(tokenizers_dir / "openchat-3.5"))
    source = tokalign.load_tokenizer(str(tokenizers_dir / "qwen2"))
    p_ids = [np.asarray(e.ids, dtype=np.int32) for e in pivot.encode_batch(texts)]
    s_ids = [np.asarray(e.ids, dtype=np.int32) for e in source.encode_batch(texts)]
    return pivot.raw_tokens(), source.raw_tokens(), p_ids, s_ids


def _mined_inputs(pivot, source, n_query=1500, seed=0):
    pt, st = C.texts(pivot), C.texts(source)
    cand, rank = ~C.special_mask(pivot), C.preference_rank(pivot)
    query = np.zeros(len(st), dtype=bool)
    rng = np.random.default_rng(seed)
    query[rng.choice(len(st), n_query, replace=False)] = True
    lengths = np.array([len(t.decode("utf-8", "surrogateescape")) for t in st])
    query[np.argsort(-lengths)[:25]] = True  # the longest tokens: multi-word patterns on both sides
    query &= ~C.special_mask(source)
    return pt, cand, rank, st, query


def _same_alignment(cpu: dict, other: dict) -> bool:
    return (np.array_equal(cpu["path_p"], other["path_p"]) and np.array_equal(cpu["path_s"], other["path_s"])
            and int(cpu["cost"]) == int(other["cost"]) and int(cpu["band"]) == int(other["band"]))


# ---- always: device resolution, CLI errors, build switches, headers ------------------------------


def test_resolve_device_auto_matches_availability():
    assert resolve_device("auto") == ("cuda" if CUDA_OK else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("CPU") == "cpu"


@pytest.mark.skipif(CUDA_OK, reason="a CUDA device is visible")
def test_auto_is_cpu_without_a_device():
    ok, reason = cuda_available()
    assert not ok and reason  # the reason says why (not built / no driver / no device)
    assert resolve_device("auto") == "cpu"


def test_unknown_device_is_rejected():
    with pytest.raises(TokalignError, match="auto|cpu|cuda"):
        resolve_device("tpu")


@pytest.mark.skipif(CUDA_OK, reason="a CUDA device is visible")
def test_cuda_without_device_is_a_clear_one_line_error():
    with pytest.raises(TokalignError) as exc:
        resolve_device("cuda")
    msg = str(exc.value)
    assert msg.startswith("--device cuda: ") and "\n" not in msg
    assert "not built" in msg or "no usable CUDA device" in msg


@pytest.mark.skipif(CUDA_OK, reason="a CUDA device is visible")
@pytest.mark.parametrize("argv", [
    ["vocab-map", "--pivot", "x", "--source", "y", "--method", "mined", "--device", "cuda"],
    ["build-stats", "--pivot", "x", "--source", "y", "--method", "dtw", "--device", "cuda"],
])
def test_cli_device_cuda_without_gpu_fails_before_any_work(argv, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(argv + ["--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("tokalign: error: --device cuda: ")
    assert not (out / "map.npz").exists() and not (out / "stats.npz").exists()


@pytest.mark.skipif(CUDA_OK, reason="a CUDA device is visible")
def test_library_device_cuda_without_gpu_raises(text_pairs):
    p_raw, s_raw, p_ids, s_ids = text_pairs
    from tokalign.align import TokenTable, batch

    with pytest.raises(TokalignError, match="--device cuda"):
        batch(p_ids[:2], s_ids[:2], pivot_table=TokenTable(p_raw), source_table=TokenTable(s_raw), device="cuda")


def test_cli_help_lists_device():
    for cmd in ("vocab-map", "build-stats"):
        proc = subprocess.run([sys.executable, "-m", "tokalign", cmd, "--help"], capture_output=True, text=True,
                              cwd=str(ROOT))
        assert proc.returncode == 0, proc.stderr
        assert "--device {auto,cpu,cuda}" in proc.stdout


def _setup_py(env_extra, *args):
    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, "setup.py", *args], capture_output=True, text=True, cwd=str(ROOT),
                          env=env, timeout=120)


def test_setup_cuda_switches():
    """TOKALIGN_CUDA: bad values and a forced build without nvcc are one-line errors; 0 / auto without
    nvcc configure fine (the extension is simply left out)."""
    bad = _setup_py({"TOKALIGN_CUDA": "maybe"}, "--name")
    assert bad.returncode != 0 and "TOKALIGN_CUDA must be 0, 1 or unset" in bad.stderr
    forced = _setup_py({"TOKALIGN_CUDA": "1", "NVCC": "/nonexistent/nvcc"}, "--name")
    assert forced.returncode != 0 and "nvcc was not found" in forced.stderr
    for env in ({"TOKALIGN_CUDA": "0"}, {"NVCC": "/nonexistent/nvcc"}):
        ok = _setup_py(env, "--name")
        assert ok.returncode == 0 and ok.stdout.strip() == "tokalign", ok.stderr


def test_setup_needs_pybind11_only_to_build(tmp_path):
    """Without pybind11 (a fresh venv: pip installs it only into its isolated build environment)
    setup.py still configures; building stops with the one-line reason."""
    shadow = tmp_path / "shadow" / "pybind11"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('pybind11 hidden by the test')\n")
    env = {"PYTHONPATH": str(tmp_path / "shadow"), "TOKALIGN_CUDA": "0"}
    ok = _setup_py(env, "--name")
    assert ok.returncode == 0 and ok.stdout.strip() == "tokalign", ok.stderr
    build = _setup_py(env, "build_ext", "--build-lib", str(tmp_path / "lib"), "--build-temp", str(tmp_path / "tmp"))
    assert build.returncode != 0 and "building needs pybind11" in build.stderr
    assert not (tmp_path / "lib").exists()


def test_shared_headers_compile_as_plain_cpp(tmp_path):
    """The TA_HD headers the kernels include (dtw.h, levenshtein*.h and the csrc/cuda step headers)
    compile with the ordinary C++ compiler, i.e. without CUDA."""
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    src = tmp_path / "headers.cpp"
    src.write_text("\n".join('#include "%s"' % h for h in (
        "tokalign/dtw.h", "tokalign/levenshtein.h", "tokalign/levenshtein_small.h", "dtw_diagonals.h",
        "dtw_wavefront.h", "mined_scan.h")) + "\nint main() { return 0; }\n")
    proc = subprocess.run([cxx, "-std=c++17", "-fsyntax-only", "-Wall", "-I", str(ROOT / "csrc/include"), "-I",
                           str(ROOT / "csrc/cuda"), str(src)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(shutil.which(os.environ.get("NVCC", "nvcc")) is None, reason="nvcc not on PATH")
def test_hot_kernels_compile_without_spills(tmp_path):
    """nvcc -Xptxas -v on the two kernel files: sm_90, no local-memory spills, no stack frame."""
    nvcc = shutil.which(os.environ.get("NVCC", "nvcc"))
    for name in ("dtw", "mined"):
        proc = subprocess.run([nvcc, "-std=c++17", "-O3", "-Icsrc/include", "-Icsrc/cuda", "-gencode",
                               "arch=compute_90,code=sm_90", "-Xptxas", "-v", "-c", "csrc/cuda/%s.cu" % name, "-o",
                               str(tmp_path / (name + ".o"))], capture_output=True, text=True, cwd=str(ROOT),
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        report = proc.stderr
        assert "%s_kernel" % name in report
        assert "0 bytes spill stores, 0 bytes spill loads" in report
        assert "0 bytes stack frame" in report


@needs_ext
def test_device_info_never_raises():
    info = _cuda.device_info()
    assert set(info) >= {"count", "error", "name", "compute_capability", "runtime_version"}
    assert (info["count"] > 0) == (info["error"] == "")


# ---- the kernels' code on the host vs the CPU core ------------------------------------------------


@needs_ext
@pytest.mark.parametrize("top_n", [1, 3])
def test_mined_scan_emulated_equals_cpu(vocab_pair, top_n):
    """The GPU scan (buckets, key order, bounds, mined_candidate_key) run on the host gives the CPU
    MinEDIndex's ids and distances, ties included, for random and the longest source tokens."""
    pt, cand, rank, st, query = _mined_inputs(*vocab_pair)
    ci, cd, _ = _core.MinEDIndex(pt, cand, rank).query(st, query, top_n, 0)
    gi, gd, cpu_rows, stats = _cuda.mined_search(pt, cand, rank, st, query, top_n, 0, True)
    assert not cpu_rows.any()
    assert stats["gpu_queries"] > 1000 and stats["exact"] > 0
    np.testing.assert_array_equal(gi, ci)
    np.testing.assert_array_equal(gd, cd)


@needs_ext
@pytest.mark.parametrize("band,tie", [(0, 0), (0, 1), (-1, 0), (2, 0), (2, 1)])
def test_dtw_wavefront_emulated_equals_cpu(text_pairs, band, tie):
    """The GPU DTW (band layout by anti-diagonal, wave_cell, wave_traceback, widening rounds) run on
    the host gives exactly the CPU core's path, cost and final band on real pairs. band=2 starts
    narrow so that many pairs touch the band edge and widen."""
    p_raw, s_raw, p_ids, s_ids = text_pairs
    cpu = _core.dtw_batch(_core.TokenTable(p_raw), p_ids, _core.TokenTable(s_raw), s_ids, tie, band, 0)
    emu, stats = _cuda.dtw_batch(_cuda.DtwTable(p_raw), p_ids, _cuda.DtwTable(s_raw), s_ids, tie, band, 0,
                                 1 << 28, True)
    assert stats["cpu_pairs"] == 0
    if band == 2:
        assert stats["widened"] > 0 and stats["rounds"] > 1
    for k, (c, e) in enumerate(zip(cpu, emu)):
        assert _same_alignment(c, e), "pair %d differs" % k


@needs_ext
@pytest.mark.parametrize("tie", [0, 1])
def test_dtw_gpu_path_exact_on_adversarial_pairs(tie):
    """Unrelated and periodic sequences, where a banded path is often not the optimum: the GPU path
    (kernel code emulated on the host: band pass, then the full-matrix check) gives exactly the CPU's
    results, band radius included, and the check really replaced some band-pass candidates."""
    rng = np.random.default_rng(tie)
    alphabet = ["a", "b", "ab", "ba", "abc", "c", "cab", "▁a", "bb", "aaa"]
    tp, ts = tokalign.align.TokenTable(alphabet), tokalign.align.TokenTable(alphabet)
    P, S = [], []
    for k in range(120):
        n, m = int(rng.integers(20, 120)), int(rng.integers(20, 120))
        if k % 3 == 0:  # periodic pivot, shifted periodic source
            P.append(np.resize(np.array([0, 1, 2], np.int32), n))
            S.append(np.resize(np.array([1, 2, 0, 3], np.int32), m))
        else:
            P.append(rng.integers(0, len(alphabet), n).astype(np.int32))
            S.append(rng.integers(0, len(alphabet), m).astype(np.int32))
    cpu = _core.dtw_batch(tp, P, ts, S, tie, 2, 0)
    gpu, stats = cuda_ops.dtw_batch(tp, P, ts, S, tie, 2, 0, emulate=True)
    assert stats["cpu_pairs"] == 0 and stats["verify_replaced"] > 0
    raw, _ = _cuda.dtw_batch(_cuda.DtwTable(alphabet), P, _cuda.DtwTable(alphabet), S, tie, 2, 0, 1 << 28, True)
    assert any(int(r["cost"]) != int(c["cost"]) for r, c in zip(raw, cpu))  # the band pass alone is not exact
    for k, (c, g) in enumerate(zip(cpu, gpu)):
        assert _same_alignment(c, g), "pair %d differs" % k


@needs_ext
def test_dtw_emulated_hand_cases():
    """Ties, empty and long tokens: paths equal the CPU's; pairs the GPU leaves to the CPU are None."""
    long_a, long_b = "x" * 70 + "a", "x" * 70 + "b"
    pivot = ["▁the", "▁cat", "▁sat", "ab", "", None, long_a, "▁"]
    source = ["Ġthe", "Ġca", "t", "Ġsat", "a", "b", long_b, "Ġ"]
    tp, ts = _cuda.DtwTable(pivot), _cuda.DtwTable(source)
    cases = [([0, 1, 2], [0, 1, 2, 3]), ([3, 3, 3], [4, 5]), ([4, 5, 7], [7, 4]), ([0, 0, 0, 0], [0]),
             ([], [1, 2]), ([6, 0], [6, 0]), ([0, 6], [0, 1])]
    P = [np.array(a, dtype=np.int32) for a, _ in cases]
    S = [np.array(b, dtype=np.int32) for _, b in cases]
    for tie in (0, 1):
        cpu = _core.dtw_batch(_core.TokenTable(pivot), P, _core.TokenTable(source), S, tie, -1, 1)
        emu, stats = _cuda.dtw_batch(tp, P, ts, S, tie, -1, 0, 1 << 28, True)
        assert emu[4] is None  # empty pivot: CPU
        assert emu[5] is None  # two tokens over 64 code points meet in one cell: CPU
        assert emu[6] is not None  # one long token against short ones: the GPU handles it
        for k, (c, e) in enumerate(zip(cpu, emu)):
            if e is not None:
                assert _same_alignment(c, e), "case %d tie %d" % (k, tie)


@needs_ext
def test_dtw_table_rejects_bad_input():
    with pytest.raises(TypeError):
        _cuda.DtwTable(["a", 3])
    with pytest.raises(ValueError, match="one weight per token"):
        _cuda.DtwTable(["a", "b"], [1])
    t = _cuda.DtwTable(["a", "b"])
    with pytest.raises(ValueError, match="outside"):
        _cuda.dtw_batch(t, [np.array([0, 5], np.int32)], t, [np.array([0], np.int32)], 0, 0, 0, 1 << 28, True)


# ---- on a GPU: the kernels themselves -------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_OK, reason="no CUDA device: %s" % CUDA_REASON)
@pytest.mark.parametrize("top_n", [1, 3])
def test_gpu_mined_equals_cpu_full_vocab(vocab_pair, top_n):
    from tokalign.vocab.mined import search

    pivot, source = vocab_pair
    ci, cd, _ = search(pivot, source, top_n=top_n, device="cpu")
    gi, gd, stats = search(pivot, source, top_n=top_n, device="cuda")
    assert stats["device"] == "cuda" and stats["kernel_ms"] > 0
    np.testing.assert_array_equal(gi, ci)
    np.testing.assert_array_equal(gd, cd)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_OK, reason="no CUDA device: %s" % CUDA_REASON)
@pytest.mark.parametrize("band", ["auto", None, 4])
@pytest.mark.parametrize("tie", ["fusechat", "source_first"])
def test_gpu_dtw_equals_cpu_real_pairs(text_pairs, band, tie):
    from tokalign.align import TokenTable, batch

    p_raw, s_raw, p_ids, s_ids = text_pairs
    tp, ts = TokenTable(p_raw), TokenTable(s_raw)
    cpu = batch(p_ids, s_ids, pivot_table=tp, source_table=ts, band=band, tie_break=tie, device="cpu")
    gpu_ = batch(p_ids, s_ids, pivot_table=tp, source_table=ts, band=band, tie_break=tie, device="cuda")
    for k, (c, g) in enumerate(zip(cpu, gpu_)):
        assert np.array_equal(c.path, g.path), "pair %d" % k
        assert c.cost == g.cost and c.band == g.band
        assert np.array_equal(c.groups, g.groups)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_OK, reason="no CUDA device: %s" % CUDA_REASON)
def test_gpu_kernels_equal_their_host_emulation(text_pairs, vocab_pair):
    """Kernel vs emulation: catches races / layout bugs that the CPU comparison would only attribute."""
    p_raw, s_raw, p_ids, s_ids = text_pairs
    tp, ts = _cuda.DtwTable(p_raw), _cuda.DtwTable(s_raw)
    dev, st = _cuda.dtw_batch(tp, p_ids, ts, s_ids, 0, 2, 0)
    emu, _ = _cuda.dtw_batch(tp, p_ids, ts, s_ids, 0, 2, 0, 1 << 28, True)
    assert st["kernel_ms"] > 0
    for d, e in zip(dev, emu):
        assert (d is None) == (e is None)
        if d is not None:
            assert _same_alignment(d, e)
    pt, cand, rank, stx, query = _mined_inputs(*vocab_pair)
    a = _cuda.mined_search(pt, cand, rank, stx, query, 2, 0, False)
    b = _cuda.mined_search(pt, cand, rank, stx, query, 2, 0, True)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_OK, reason="no CUDA device: %s" % CUDA_REASON)
def test_gpu_fallbacks_to_cpu():
    """Pairs / rows the GPU does not take come back from the CPU in the same call, identical."""
    from tokalign.align import TokenTable, batch
    from tokalign.vocab.mined_cuda import mined_search

    long_a, long_b = "y" * 80 + "a", "y" * 80 + "b"
    toks = ["▁a", "b", long_a, long_b, "c"]
    P = [np.array([0, 2, 1], np.int32), np.array([], np.int32), np.array([0, 1, 4] * 3, np.int32)]
    S = [np.array([3, 1], np.int32), np.array([1], np.int32), np.array([4, 0], np.int32)]
    t = TokenTable(toks)
    for c, g in zip(batch(P, S, pivot_table=t, source_table=t, band=None, device="cpu"),
                    batch(P, S, pivot_table=t, source_table=t, band=None, device="cuda")):
        assert np.array_equal(c.path, g.path) and c.cost == g.cost
    texts = [t.encode() for t in toks] + [("z" * 1100).encode()]
    cand = np.ones(len(texts), bool)
    rank = np.zeros(len(texts), np.int64)
    queries = texts[::-1] + [("z" * 1100 + "q").encode()]  # the last one is over the GPU's query limit
    cpu = _core.MinEDIndex(texts, cand, rank).query(queries, None, 2, 1)
    ids, dists, stats = mined_search(texts, cand, rank, queries, np.ones(len(queries), bool), 2)
    assert stats["cpu_rows"] == 1  # "z" * 1100 is answered by the exact-match table, the last by the CPU
    np.testing.assert_array_equal(ids, cpu[0])
    np.testing.assert_array_equal(dists, cpu[1])


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_OK, reason="no CUDA device: %s" % CUDA_REASON)
def test_gpu_cli_vocab_map_equals_cpu(tmp_path, tokenizers_dir):
    import scipy.sparse as sp

    outs = {}
    for dev in ("cpu", "cuda"):
        out = tmp_path / dev
        assert main(["vocab-map", "--pivot", "openchat-3.5", "--source", "qwen2", "--method", "mined", "--top-n", "2",
                     "--device", dev, "--tokenizer-dir", str(tokenizers_dir), "--out", str(out),
                     "--no-progress"]) == 0
        outs[dev] = sp.load_npz(out / "map.npz")
    assert (outs["cpu"] != outs["cuda"]).nnz == 0
