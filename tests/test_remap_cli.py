"""tokalign remap CLI: parser, the sample-id join (tokalign.remap.run) and the per-sample helpers of the tests
(tests/remap_samples.py: byte offsets, sample building). Whole-store runs: tests/test_remap_store.py."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from remap_reference import random_groups, random_map, random_topk, token_bytes  # noqa: E402
from remap_samples import build_samples, remap_samples, remapped_token_ce, token_byte_offsets  # noqa: E402

from tokalign.cli import main  # noqa: E402
from tokalign.remap import remap_batch  # noqa: E402
from tokalign.remap.run import join_sample_ids  # noqa: E402


def test_help_lists_examples(capsys):
    with pytest.raises(SystemExit) as e:
        main(["remap", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--pivot-store" in out and "examples:" in out and "--one-to-many" in out


def test_join_reports_missing_ids():
    common, only_p, only_s = join_sample_ids(["a", "b", "c", "d"], ["d", "x", "b"])
    assert common == ["b", "d"] and only_p == ["a", "c"] and only_s == ["x"]


def test_token_byte_offsets_spell_the_text(tokenizers_dir):
    from tokenizers import Tokenizer

    text = "Hello world! 你好，世界。 def f(x):\n    return x**2"
    for name in ("openchat-3.5", "qwen2"):
        tb = token_bytes(tokenizers_dir / name / "tokenizer.json")
        ids = Tokenizer.from_file(str(tokenizers_dir / name / "tokenizer.json")).encode(text, add_special_tokens=False).ids
        t, off = token_byte_offsets(tb, np.array(ids))
        decoded = t.encode("latin-1").decode("utf-8")
        # SentencePiece adds its dummy-prefix space; align.span diffs the two texts for that
        assert decoded in (text, " " + text), (name, decoded[:20])
        assert off[0, 0] == 0 and off[-1, 1] == len(decoded.encode("utf-8")) and np.all(off[1:, 0] == off[:-1, 1])


def test_remap_samples_and_build_samples_match_array_api():
    rng = np.random.default_rng(4)
    vmap = random_map(rng, 40, 30)
    ps, ss, groups = [], [], []
    for _ in range(3):
        lp, ls = int(rng.integers(2, 20)), int(rng.integers(2, 20))
        groups.append(random_groups(rng, lp, ls))
        ids, lg, lse = random_topk(rng, ls, 5, 40)
        ss.append({"input_ids": rng.integers(0, 40, ls), "topk_ids": ids, "topk_logits": lg, "logsumexp": lse,
                   "token_ce": rng.uniform(0.0, 5.0, ls).astype(np.float32)})
        ps.append({"input_ids": rng.integers(0, 30, lp).astype(np.int32), "loss_mask": np.ones(lp, bool)})
    res = remap_samples(ps, ss, groups, vmap, k_out=4, inside="onehot", one_to_many="last")
    direct = remap_batch(groups, np.concatenate([s["topk_ids"] for s in ss]),
                         np.concatenate([s["topk_logits"] for s in ss]), np.concatenate([s["logsumexp"] for s in ss]),
                         vmap, np.concatenate([p["input_ids"] for p in ps]),
                         source_offsets=np.r_[0, np.cumsum([len(s["input_ids"]) for s in ss])],
                         pivot_offsets=np.r_[0, np.cumsum([len(p["input_ids"]) for p in ps])], k_out=4)
    np.testing.assert_array_equal(res.topk_ids, direct.topk_ids)
    out = build_samples(["s0", "s1", "s2"], ps, res, ss, groups)
    assert [o["sample_id"] for o in out] == ["s0", "s1", "s2"]
    for o, p in zip(out, ps):
        assert o["topk_ids"].shape == (len(p["input_ids"]), 4) and np.all(o["logsumexp"] == 0)
        assert o["group_kind"].dtype == np.uint8 and o["remap_valid"].dtype == bool
        assert np.all(np.isfinite(o["token_ce"])) and np.all(o["token_ce"] >= 0)


def test_remapped_token_ce():
    res = {"topk_ids": np.array([[5, 6], [7, -1], [1, 2]], np.int32),
           "topk_logits": np.array([[np.log(0.5), np.log(0.25)], [np.log(0.5), -np.inf], [np.log(0.9), np.log(0.1)]],
                                   np.float32),
           "retained_mass": np.array([0.75, 0.5, 1.0], np.float32), "valid": np.array([True, True, True])}
    ce = remapped_token_ce(res, np.array([0, 6, 3]))
    # position 0 -> next token 6 kept with 0.25; position 1 -> 3 not kept: -log(tail 0.5); last: 0
    np.testing.assert_allclose(ce, [-np.log(0.25), -np.log(0.5), 0.0], rtol=1e-6)


def test_run_without_stores_fails_with_one_line(capsys, tmp_path):
    rc = main(["remap", "--pivot-store", str(tmp_path / "a"), "--source-store", str(tmp_path / "b"), "--map",
               str(tmp_path / "m"), "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "a") in err and len(err.strip().splitlines()) == 1
