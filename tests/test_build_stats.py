"""build-stats / merge-stats end to end on real tokenizers and corpora."""
import json
import shutil
import subprocess
import sys

import pytest

import tokalign
from tokalign.stats.build import BuildOptions, build_stats
from tokalign.cli import main
from tokalign.stats import MappingStats


@pytest.fixture(scope="module")
def pair(tokenizers_dir):
    kw = dict(tokenizer_dir=tokenizers_dir)
    return tokalign.load_tokenizer("openchat", **kw), tokalign.load_tokenizer("internlm2", **kw)


@pytest.fixture()
def small_corpus(corpora_dir, tmp_path):
    lines = (corpora_dir / "code_math.jsonl").read_text(encoding="utf-8").splitlines()[:120]
    path = tmp_path / "small.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _cli(*args):
    return main([str(a) for a in args])


def test_counts_equal_reference_over_alignments(pair, small_corpus):
    """C[p, s] equals the count of (p, s) pairs in the groups of each item's span alignment."""
    from collections import Counter

    from tokalign.align import span
    from tokalign.corpus import Corpus

    pivot, source = pair
    stats = build_stats(pivot, source, str(small_corpus), BuildOptions(batch_size=17), progress=False)
    ref = Counter()
    for item in Corpus(str(small_corpus)):
        pe, se = pivot.encode(item.text), source.encode(item.text)
        for a, b, c, d in span(pe.offsets, se.offsets).groups.tolist():
            for i in range(a, b):
                for j in range(c, d):
                    ref[(int(pe.ids[i]), int(se.ids[j]))] += 1
    coo = stats.matrix.tocoo()
    assert dict(((int(r), int(c)), int(v)) for r, c, v in zip(coo.row, coo.col, coo.data)) == ref
    assert stats.meta["items"] == 120 and sum(stats.meta["group_kinds"].values()) > 0


def test_known_answer_on_handbuilt_corpus(pair, tmp_path):
    """Identical words tokenized alike map 1:1; the counts are exactly the repetitions."""
    pivot, source = pair
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": "hello world"}) for _ in range(7)) + "\n")
    stats = build_stats(pivot, source, str(corpus), BuildOptions(), progress=False)
    p = pivot.encode("hello world").ids  # "▁hell" "o" "▁world"
    s = source.encode("hello world").ids  # "hello" "▁world"
    assert len(p) == 3 and len(s) == 2
    expected = {(p[0], s[0]): 7, (p[1], s[0]): 7, (p[2], s[1]): 7}  # n:1 then 1:1
    coo = stats.matrix.tocoo()
    assert {(int(r), int(c)): int(v) for r, c, v in zip(coo.row, coo.col, coo.data)} == {
        (int(a), int(b)): n for (a, b), n in expected.items()}
    assert stats.meta["group_kinds"] == {"1:1": 7, "1:n": 0, "n:1": 7, "n:m": 0}


def test_reproducible_bytes_and_shards_sum_to_one_pass(small_corpus, tmp_path, tokenizers_dir):
    common = ["--pivot", "openchat", "--source", "internlm2", "--tokenizer-dir", tokenizers_dir,
              "--corpus", small_corpus, "--no-progress"]
    assert _cli("build-stats", *common, "--out", tmp_path / "a") == 0
    assert _cli("build-stats", *common, "--out", tmp_path / "b", "--batch-size", "7") == 0
    assert (tmp_path / "a" / "stats.npz").read_bytes() == (tmp_path / "b" / "stats.npz").read_bytes()
    for i in range(3):
        assert _cli("build-stats", *common, "--shard", f"{i}/3", "--out", tmp_path / f"s{i}") == 0
    assert _cli("merge-stats", *(tmp_path / f"s{i}" for i in range(3)), "--out", tmp_path / "m") == 0
    one, merged = MappingStats.load(tmp_path / "a"), MappingStats.load(tmp_path / "m")
    assert (one.matrix != merged.matrix).nnz == 0
    assert one.meta["group_kinds"] == merged.meta["group_kinds"]
    assert one.meta["pivot_tokens"] == merged.meta["pivot_tokens"]
    assert (one.source_counts == merged.source_counts).all() and one.source_counts.sum() == one.meta["source_tokens"]
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["corpus_files"][0]["sha256"] and meta["pivot_fingerprint"] != meta["source_fingerprint"]


def test_dtw_method_runs_and_differs_little(pair, small_corpus):
    pivot, source = pair
    span_stats = build_stats(pivot, source, str(small_corpus), BuildOptions(), progress=False)
    dtw_stats = build_stats(pivot, source, str(small_corpus), BuildOptions(method="dtw"), progress=False)
    assert dtw_stats.meta["options"]["method"] == "dtw"
    # Both count the same tokens and most of the mass sits on the same pairs (0.78 measured on this slice;
    # DTW merges neighbours more often than the exact span groups).
    shared = span_stats.matrix.minimum(dtw_stats.matrix).sum()
    assert shared > 0.7 * span_stats.matrix.sum()


def test_bad_json_line_is_named_and_skip_bad_counts(tmp_path, tokenizers_dir, capsys):
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"text": "fine"}\n{"text": broken\n{"text": "also fine"}\n')
    common = ["--pivot", "openchat", "--source", "internlm2", "--tokenizer-dir", tokenizers_dir,
              "--corpus", corpus, "--no-progress"]
    assert _cli("build-stats", *common, "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    assert _cli("build-stats", *common, "--out", tmp_path / "o", "--skip-bad", "--json") == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["items"] == 2 and meta["skipped_items"] == 1


def test_merge_refuses_other_tokenizers_and_nonempty_out(tmp_path, tokenizers_dir, small_corpus, capsys):
    base = ["--tokenizer-dir", tokenizers_dir, "--corpus", small_corpus, "--no-progress"]
    assert _cli("build-stats", "--pivot", "openchat", "--source", "internlm2", *base, "--out", tmp_path / "a") == 0
    assert _cli("build-stats", "--pivot", "openchat", "--source", "qwen2", *base, "--out", tmp_path / "b") == 0
    assert _cli("merge-stats", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "m") == 2
    assert "fingerprints differ" in capsys.readouterr().err
    assert _cli("build-stats", "--pivot", "openchat", "--source", "internlm2", *base, "--out", tmp_path / "a") == 2
    assert "not empty" in capsys.readouterr().err
    # the same shard twice (the same folder, or a copy of it) would double every count
    shutil.copytree(tmp_path / "a", tmp_path / "a-copy")
    for second in (tmp_path / "a", tmp_path / "a-copy"):
        assert _cli("merge-stats", tmp_path / "a", second, "--out", tmp_path / "m") == 2
        assert "given twice" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_interrupted_run_leaves_nothing_complete(tmp_path, tokenizers_dir, corpora_dir):
    """SIGKILL mid-run: the output folder never appears (only a hidden temp dir may remain)."""
    out = tmp_path / "killed"
    code = (
        "import sys, tokalign.stats.matrix as s\n"
        "orig = s.save_sparse_npz\n"
        "def boom(path, m):\n"
        "    orig(path, m)\n"
        "    import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n"
        "s.save_sparse_npz = boom\n"
        "from tokalign.cli import main\n"
        f"main(['build-stats', '--pivot', 'openchat', '--source', 'internlm2', '--tokenizer-dir', {str(tokenizers_dir)!r},"
        f" '--corpus', 'builtin:sample', '--no-progress', '--out', {str(out)!r}])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode != 0
    assert not out.exists()
    assert all(p.name.startswith(".killed.tmp-") for p in tmp_path.iterdir())


def test_shard_spec_errors(tmp_path, tokenizers_dir, capsys):
    assert _cli("build-stats", "--pivot", "openchat", "--source", "internlm2", "--tokenizer-dir", tokenizers_dir,
                "--shard", "3/2", "--out", tmp_path / "x") == 2
    assert "0 <= I < N" in capsys.readouterr().err


def test_nothing_aligned_is_an_error(tmp_path, tokenizers_dir, capsys):
    """--assistant-only on user-only data (or an empty corpus) aligns nothing: one line, exit 2, no folder;
    --allow-empty writes the empty statistics on purpose."""
    users = tmp_path / "users.jsonl"
    users.write_text("".join(json.dumps({"id": str(i), "messages": [{"role": "user", "content": "hello %d" % i}]})
                             + "\n" for i in range(3)))
    common = ["--pivot", "openchat", "--source", "internlm2", "--tokenizer-dir", tokenizers_dir, "--no-progress"]
    assert _cli("build-stats", *common, "--corpus", users, "--assistant-only", "--out", tmp_path / "s") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing to count" in err and "--assistant-only" in err, err
    assert not (tmp_path / "s").exists()
    assert _cli("build-stats", *common, "--corpus", users, "--assistant-only", "--allow-empty",
                "--out", tmp_path / "s") == 0
    assert json.loads((tmp_path / "s" / "meta.json").read_text())["items"] == 0


def test_merge_stats_out_is_never_an_input(small_corpus, tmp_path, tokenizers_dir, capsys):
    base = ["--tokenizer-dir", tokenizers_dir, "--corpus", small_corpus, "--no-progress"]
    for i in range(2):
        assert _cli("build-stats", "--pivot", "openchat", "--source", "internlm2", *base, "--shard", f"{i}/2",
                    "--out", tmp_path / f"s{i}") == 0
    before = (tmp_path / "s0" / "stats.npz").read_bytes()
    capsys.readouterr()
    assert _cli("merge-stats", tmp_path / "s0", tmp_path / "s1", "--out", tmp_path / "s0", "--overwrite") == 2
    assert "is the input stats folder" in capsys.readouterr().err
    assert (tmp_path / "s0" / "stats.npz").read_bytes() == before
