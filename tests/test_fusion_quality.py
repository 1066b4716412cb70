"""benchmarks/fusion_quality (a package): pure helpers (fast) and the --quick pipeline end to end (slow)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

import benchmarks.fusion_quality as fq
from tokalign.errors import TokalignError
from tokalign.paths import shared_corpora, shared_tokenizers

REPO = Path(__file__).resolve().parent.parent


# ---- configuration hashing ------------------------------------------------------------------------

def test_config_hash_ignores_key_order_and_int_float_spelling():
    a = {"x": 1, "y": [1.0, 2], "z": {"b": 2, "a": 1}}
    b = {"z": {"a": 1, "b": 2.0}, "y": [1, 2.0], "x": 1.0}
    assert fq.config_hash(a) == fq.config_hash(b)
    assert len(fq.config_hash(a)) == 16


def test_config_hash_changes_with_any_value_and_matches_dataclass_dict():
    cfg = fq.config_presets()["default"]
    h = fq.config_hash(cfg)
    assert h == fq.config_hash(asdict(cfg))
    for change in (dict(seq_len=cfg.seq_len + 1), dict(source="qwen2"), dict(lambda_sft=0.8)):
        other = fq.config_presets()["default"]
        for k, v in change.items():
            setattr(other, k, v)
        assert fq.config_hash(other) != h, change
    nested = fq.config_presets()["default"]
    nested.fusion_train.lr = nested.fusion_train.lr * 2
    assert fq.config_hash(nested) != h
    hashes = {fq.config_hash(c) for c in fq.config_presets().values()}
    assert len(hashes) == len(fq.config_presets())


def test_split_of_is_deterministic_salted_and_spread():
    groups = ["g%d" % i for i in range(2000)]
    a = [fq.split_of(g, "s1") for g in groups]
    assert a == [fq.split_of(g, "s1") for g in groups]
    assert a != [fq.split_of(g, "s2") for g in groups]
    assert all(0 <= x < 1000 for x in a)
    counts = np.bincount(np.asarray(a) // 100, minlength=10)
    assert counts.min() > 120 and counts.max() < 280  # ~200 per tenth


# ---- statistics and schedule ------------------------------------------------------------------------

def test_mean_std_known_values():
    m, s = fq.mean_std([1.0, 2.0, 3.0])
    assert m == pytest.approx(2.0) and s == pytest.approx(1.0)
    assert fq.mean_std([5.0]) == (5.0, 0.0)
    m, s = fq.mean_std([])
    assert math.isnan(m) and math.isnan(s)


def test_lr_schedule_warms_up_then_decays_to_a_tenth():
    spec = fq.TrainSpec(steps=100, batch=1, lr=1.0, warmup=0.1)
    assert fq.lr_at(0, spec) == pytest.approx(0.1)
    assert fq.lr_at(9, spec) == pytest.approx(1.0)
    assert fq.lr_at(10, spec) == pytest.approx(1.0)
    lrs = [fq.lr_at(i, spec) for i in range(10, 100)]
    assert all(x >= y for x, y in zip(lrs, lrs[1:]))
    assert fq.lr_at(100, spec) == pytest.approx(0.1)


def test_summarize_targets_pairs_by_seed():
    per_seed = {"sft": {0: 3.0, 1: 3.2, 2: 3.1}, "ms": {0: 2.9, 1: 3.0, 2: 3.0}}
    s = fq.summarize_targets(per_seed)
    assert s["sft"]["ce_mean"] == pytest.approx(3.1)
    assert "delta_mean" not in s["sft"]
    assert s["ms"]["delta"] == pytest.approx([-0.1, -0.2, -0.1])
    assert s["ms"]["delta_mean"] == pytest.approx(-0.4 / 3)
    assert s["ms"]["ppl_mean"] == pytest.approx(np.mean(np.exp([2.9, 3.0, 3.0])))


def _summary(values):
    return fq.summarize_targets({k: dict(enumerate(v)) for k, v in values.items()})


def test_ordering_verdict_resolved_reversed_and_negligible():
    good = _summary({"ms": [2.00, 2.01, 2.02], "mined": [2.05, 2.06, 2.07], "em": [2.10, 2.11, 2.125]})
    v = fq.ordering_verdict(good)
    assert v["same_order"] and v["all_resolved"] and v["observed"] == ["ms", "mined", "em"]
    bad = _summary({"ms": [2.10, 2.11, 2.12], "mined": [2.05, 2.06, 2.07], "em": [2.00, 2.01, 2.02]})
    v = fq.ordering_verdict(bad)
    assert not v["same_order"] and v["observed"] == ["em", "mined", "ms"]
    assert all(p["reversed"] and not p["resolved"] for p in v["pairs"])
    tiny = _summary({"ms": [2.0, 2.1, 2.2], "mined": [2.0001, 2.1001, 2.2001], "em": [2.0002, 2.1002, 2.2002]})
    v = fq.ordering_verdict(tiny)
    assert v["same_order"] and not v["all_resolved"]  # consistent but below 1e-3 nats
    assert not any(p["reversed"] for p in v["pairs"])


# ---- report formatting ----------------------------------------------------------------------------

def _results():
    summary = _summary({"sft": [3.0, 3.1, 3.2], "em": [2.9, 3.0, 3.1], "mined": [2.95, 3.0, 3.15],
                        "ms": [2.8, 2.9, 3.0]})
    diag = {"positions": 10, "valid_fraction": 0.9, "source_fed_fraction": 0.8, "kind_fraction": {"1:1": 0.75},
            "kind_fraction_all": {"1:1": 0.7}, "retained_mass_source_fed": 0.61, "top1_agreement_source_fed": 0.25,
            "source_own_top1": 0.3, "mapped_source_tokens": 0.282, "minCE_source_rate": 0.5}
    res = {"config": fq.config_presets()["quick"].to_dict(), "eval": {"texts": 4, "pivot_tokens": 400},
           "targets": summary, "references": {"pivot (before fusion)": {"ce": 3.5, "bpb": 1.5, "tokens": 400}},
           "diagnostics": {"em": diag}, "verdict": fq.ordering_verdict(summary)}
    res["reading"] = fq.reading_of(res)
    return res


def test_format_markdown_tables_and_verdict():
    res = _results()
    md = fq.format_markdown(res)
    assert "| target | CE mean ± std | PPL mean ± std | Δ SFT mean ± std | seeds |" in md
    assert "| SFT only (λ=1) | 3.1000 ± 0.1000 |" in md
    assert "| fused, MS map | 2.9000 ± 0.1000 |" in md and "-0.2000 ± 0.0000" in md
    assert "| fused, MinED map |" in md
    assert "| pivot (before fusion) | 3.5000 | 1.5000 | 400 |" in md
    assert "| em | 28.2% | 90.0% | 80.0% | 0.610 | 25.0% | 30.0% | 50.0% | 75.0% |" in md
    assert "observed by mean CE: ms < em < mined; different order" in md
    assert "does NOT reproduce" in res["reading"]
    # every table row has as many cells as its header
    for block in md.split("\n\n"):
        rows = [r for r in block.splitlines() if r.startswith("|")]
        if rows:
            assert len({r.count("|") for r in rows}) == 1, block


def test_write_outputs_json_md_png(tmp_path):
    paths = fq.write_outputs(_results(), tmp_path, "fq-test", plot=True)
    assert json.loads(Path(paths["json"]).read_text())["targets"]["ms"]["ce_mean"] == pytest.approx(2.9)
    assert Path(paths["md"]).read_text().startswith("## Fusion quality: quick")
    png = Path(paths["png"]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not list(tmp_path.glob("*.tmp*"))


# ---- diagnostics and data helpers -----------------------------------------------------------------

def test_remap_diagnostics_known_answer():
    # 5 positions: kinds 1:1, n:1 inside, n:1 end, 1:1, 1:1 (last: no gold next token)
    sample = {"group_kind": np.array([1, 3, 4, 1, 1], np.uint8),
              "remap_valid": np.array([True, True, True, False, True]),
              "retained_mass": np.array([0.5, 1.0, 0.3, 0.0, 0.9], np.float32),
              "topk_ids": np.array([[7, 1], [9, 2], [5, 5], [-1, -1], [4, 0]], np.int32),
              "input_ids": np.array([3, 7, 9, 4, 8], np.int32)}
    source = {"input_ids": np.array([1, 2, 3]), "topk_ids": np.array([[2, 0], [0, 0], [9, 9]])}
    d = fq.remap_diagnostics([sample], source_samples=[source])
    assert d["positions"] == 5 and d["valid_fraction"] == pytest.approx(0.8)
    # source-fed, with a next token: positions 0 (1:1), 2 (n:1 end), 3 (1:1, invalid)
    assert d["source_fed_fraction"] == pytest.approx(3 / 5)
    assert d["retained_mass_source_fed"] == pytest.approx((0.5 + 0.3 + 0.0) / 3)
    assert d["top1_agreement_source_fed"] == pytest.approx(1 / 3)  # position 0: 7 == next; 2: 5 != 4
    assert d["kind_fraction_all"] == pytest.approx({"1:1": 0.6, "n:1 inside": 0.2, "n:1 end": 0.2})
    assert d["kind_fraction"] == pytest.approx({"1:1": 0.5, "n:1 inside": 0.25, "n:1 end": 0.25})
    assert d["source_own_top1"] == pytest.approx(0.5)


def test_pack_blocks():
    out = fq.pack_blocks([np.array([1, 2, 3]), np.array([4, 5])], block=3, sep=0)
    assert out.tolist() == [[1, 2, 3], [0, 4, 5]]
    assert fq.pack_blocks([np.array([1])], block=4, sep=None).shape == (0, 4)


def test_seq_ce_override_replaces_only_seq_ce():
    class Reader:
        schema = "schema"
        sample_ids = ["a", "b"]

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"sample_id": self.sample_ids[i], "seq_ce": np.float32(9.0), "input_ids": np.arange(3)}

    r = fq.SeqCEOverride(Reader(), {"a": 1.5, "b": 2.5})
    assert len(r) == 2 and r.schema == "schema" and r.sample_ids == ["a", "b"]
    assert r[1]["seq_ce"] == pytest.approx(2.5) and r[1]["input_ids"].tolist() == [0, 1, 2]


# ---- command line ---------------------------------------------------------------------------------

def test_config_from_args_and_stems():
    p = fq.build_parser()
    cfg = fq.config_from_args(p.parse_args(["--quick", "--source", "qwen2", "--seeds", "4", "--variants",
                                            "sft,ms,self", "--fusion-steps", "5"]))
    assert (cfg.name, cfg.source, cfg.seeds, cfg.variants, cfg.fusion_train.steps) == (
        "quick", "qwen2", 4, ("sft", "ms", "self"), 5)
    assert fq.config_presets()["quick"].fusion_train.steps != 5  # presets are not mutated
    assert fq.results_stem(cfg) == "fusion_quality-quick-qwen2"
    assert fq.results_stem(fq.config_presets()["default"]) == "fusion_quality"
    with pytest.raises(TokalignError, match="unknown bogus"):
        fq.config_from_args(p.parse_args(["--variants", "sft,bogus"]))
    with pytest.raises(TokalignError, match="seeds"):
        fq.config_from_args(p.parse_args(["--seeds", "0"]))


@pytest.mark.parametrize("command", [["-m", "benchmarks.fusion_quality"], [str(REPO / "benchmarks" / "fusion_quality")]],
                         ids=["module", "folder"])
def test_command_line_help_and_bad_flag(command):
    # both documented spellings run the package's own command line (from any working directory for the folder)
    cwd = REPO if command[0] == "-m" else Path("/")
    ok = subprocess.run([sys.executable, *command, "--help"], cwd=cwd, capture_output=True, text=True)
    assert ok.returncode == 0 and "--minCE-metric" in ok.stdout  # the benchmark's own help
    bad = subprocess.run([sys.executable, *command, "--no-such-flag"], cwd=cwd, capture_output=True, text=True)
    assert bad.returncode == 2


# ---- data split on the real corpora ---------------------------------------------------------------

needs_shared = pytest.mark.skipif(
    not (shared_tokenizers() / "openchat-3.5").is_dir() or not (shared_corpora() / "code_math.jsonl").is_file(),
    reason="shared tokenizers / corpora not available")


@needs_shared
def test_prepare_data_splits_by_prompt_group_and_caches(tmp_path):
    cfg = fq.config_presets()["quick"]
    cfg.n_pretrain, cfg.n_fusion, cfg.n_eval, cfg.seq_len = 60, 20, 20, 32
    logs = []
    bench = fq.Bench(cfg, tmp_path, log=logs.append)
    out = fq.prepare_data(bench)
    splits = {s: fq.read_texts(out / ("%s.jsonl" % s)) for s in ("pretrain", "fusion", "eval")}
    assert [len(splits[s]) for s in ("pretrain", "fusion", "eval")] == [60, 20, 20]

    def group(sample_id):  # alpaca_eval/123/<model> -> alpaca_eval/123; other corpora: one group per id
        return "/".join(sample_id.split("/")[:2]) if sample_id.startswith("alpaca_eval/") else sample_id

    groups = {s: {group(x["id"]) for x in v} for s, v in splits.items()}
    assert not groups["eval"] & groups["fusion"] and not groups["eval"] & groups["pretrain"]
    assert not groups["fusion"] & groups["pretrain"]
    lengths = [len(bench.pivot_tok.encode(x["text"]).ids) for v in splits.values() for x in v]
    assert max(lengths) <= cfg.seq_len + 2 and max(lengths) >= cfg.seq_len - 2
    stamp = (out / "eval.jsonl").stat().st_mtime_ns
    assert fq.prepare_data(bench) == out and (out / "eval.jsonl").stat().st_mtime_ns == stamp  # cached


# ---- the whole pipeline ---------------------------------------------------------------------------

@pytest.mark.slow
@needs_shared
def test_quick_pipeline_end_to_end(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("tokalign.dump")
    rc = fq.main(["--quick", "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "results")])
    assert rc == 0
    res = json.loads((tmp_path / "results" / "fusion_quality-quick.json").read_text())
    assert set(res["targets"]) == {"sft", "em", "mined", "ms"}
    for name, row in res["targets"].items():
        assert row["seeds"] == [0, 1, 2] and all(math.isfinite(c) and 0 < c < 12 for c in row["ce"]), name
    ref = res["references"]
    assert ref["source (teacher)"]["bpb"] < ref["pivot (before fusion)"]["bpb"]  # the source is stronger
    d = res["diagnostics"]
    assert d["em"]["mapped_source_tokens"] < 0.5 < d["mined"]["mapped_source_tokens"]
    for m in ("em", "mined", "ms"):
        assert 0 <= d[m]["retained_mass_source_fed"] <= 1 and 0 <= d[m]["top1_agreement_source_fed"] <= 1
        assert 0 <= d[m]["minCE_source_rate"] <= 1
        assert sum(d[m]["kind_fraction_all"].values()) == pytest.approx(1.0)
    assert (tmp_path / "results" / "fusion_quality-quick.png").stat().st_size > 10_000
    assert "| fused, MS map |" in (tmp_path / "results" / "fusion_quality-quick.md").read_text()
    assert res["verdict"]["claimed"] == ["ms", "mined", "em"]


def _run_json(name, per_seed):
    return {"config": {"name": name},
            "targets": {v: {"seeds": list(range(len(x))), "ce": list(x)} for v, x in per_seed.items()}}


def test_compare_runs_orders_resolves_and_finds_contradictions(tmp_path, capsys):
    from benchmarks.fusion_quality.compare import compare_runs, kendall_tau, main

    assert kendall_tau(["a", "b", "c"], ["a", "b", "c"]) == 1.0
    assert kendall_tau(["a", "b", "c"], ["c", "b", "a"]) == -1.0
    assert kendall_tau(["a", "b", "c"], ["b", "a", "c"]) == pytest.approx(1 / 3)
    noise = [0.0, 0.001, -0.001]
    top = _run_json("top", {"sft": [0.70 + e for e in noise], "ms": [0.69 + e for e in noise],
                            "em": [0.70 + e + d for e, d in zip(noise, (0.0004, -0.0004, 0.0001))]})
    full = _run_json("full", {"sft": [0.60 + e for e in noise], "ms": [0.61 + e for e in noise],
                              "em": [0.60 + e for e in noise]})
    c = compare_runs(top, full)
    assert c["order"][0][0] == "ms" and c["order"][1][-1] == "ms"
    assert c["vs_sft"][0]["ms"]["sign"] == -1 and c["vs_sft"][1]["ms"]["sign"] == 1  # paired: noise cancels
    assert c["vs_sft"][0]["em"]["sign"] == 0  # within its noise
    assert ("sft", "ms") in c["contradictions"] and c["resolved_in_both_agree"] < c["resolved_in_both"]
    same = compare_runs(top, top)
    assert same["kendall_tau"] == 1.0 and not same["contradictions"]
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(top))
    b.write_text(json.dumps({"no": "targets"}))
    assert main([str(a), str(b)]) == 2
    assert "not a fusion_quality results JSON" in capsys.readouterr().err
