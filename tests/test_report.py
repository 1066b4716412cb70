"""tokalign report on real stats and maps (openchat-3.5 x internlm2)."""
import json

import pytest

from tokalign.cli import main


@pytest.fixture(scope="module")
def built(tmp_path_factory, tokenizers_dir, corpora_dir):
    d = tmp_path_factory.mktemp("report")
    lines = (corpora_dir / "alpacaeval_parallel.jsonl").read_text(encoding="utf-8").splitlines()[:200]
    (d / "c.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    common = ["--pivot", "openchat", "--source", "internlm2", "--tokenizer-dir", str(tokenizers_dir)]
    assert main(["build-stats", *common, "--corpus", str(d / "c.jsonl"), "--out", str(d / "stats"), "--no-progress"]) == 0
    for m in ("em", "ms"):
        extra = ["--stats", str(d / "stats")] if m == "ms" else []
        assert main(["vocab-map", *common, "--method", m, *extra, "--out", str(d / f"map-{m}")]) == 0
    return d


def test_report_json_figures_are_consistent(built, tokenizers_dir, capsys):
    capsys.readouterr()
    rc = main(["report", str(built / "map-em"), str(built / "map-ms"), "--stats", str(built / "stats"),
               "--tokenizer-dir", str(tokenizers_dir), "--json", "--plot", str(built / "fig.png")])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    em, ms = r["maps"]["map-em"], r["maps"]["map-ms"]
    for m in (em, ms):
        assert abs(sum(m["coverage"].values()) - 1) < 1e-9
        assert abs(sum(m["mass_coverage"].values()) - 1) < 1e-9
    # EM maps only identical texts; MS maps everything seen plus a MinED fallback.
    assert em["coverage"]["approximate"] == 0 and ms["coverage"]["unmapped"] < em["coverage"]["unmapped"]
    # Frequent tokens are mostly shared text: mass coverage beats vocabulary coverage.
    assert em["mass_coverage"]["exact"] > em["coverage"]["exact"]
    kinds = r["stats"]["group_kinds"]
    meta = json.loads((built / "stats" / "meta.json").read_text())
    assert kinds == meta["group_kinds"]
    top = r["stats"]["top_pairs"]
    assert len(top) == 30 and all(row["pivot"] != row["source"] for row in top)
    assert [row["count"] for row in top] == sorted((row["count"] for row in top), reverse=True)
    for row in ms["top_mappings"]:
        assert row["source"] != row["pivot"]
    assert 0 <= r["agreement_top1"]["map-em | map-ms"] <= 1
    png = (built / "fig.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


def test_report_refuses_mixed_pairs_and_non_artifacts(built, tmp_path, tokenizers_dir, capsys):
    common = ["--pivot", "openchat", "--source", "qwen2", "--tokenizer-dir", str(tokenizers_dir)]
    assert main(["vocab-map", *common, "--method", "em", "--out", str(tmp_path / "other")]) == 0
    capsys.readouterr()
    assert main(["report", str(built / "map-em"), str(tmp_path / "other")]) == 2
    assert "different tokenizer pairs" in capsys.readouterr().err
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "meta.json").write_text("{}")
    assert main(["report", str(tmp_path / "junk")]) == 2
    assert "neither a stats folder" in capsys.readouterr().err


def test_plot_without_matplotlib_is_one_line(built, tokenizers_dir, monkeypatch, capsys):
    """The README's Quick start after a core `pip install .` has no matplotlib: one line naming the extra."""
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    capsys.readouterr()
    rc = main(["report", str(built / "map-em"), "--tokenizer-dir", str(tokenizers_dir), "--plot",
               str(built / "nofig.png")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "tokalign[plot]" in err, err
    assert not (built / "nofig.png").exists()


def test_vocab_map_out_rules(built, tmp_path, tokenizers_dir, capsys):
    """vocab-map never writes into its --stats input, never replaces a folder silently, and --overwrite
    replaces only an earlier map; each refusal is one line."""
    common = ["--pivot", "openchat", "--source", "internlm2", "--tokenizer-dir", str(tokenizers_dir)]
    stats = built / "stats"
    before = {p.name: p.read_bytes() for p in stats.iterdir()}

    def refused(*extra, needle):
        capsys.readouterr()
        assert main(["vocab-map", *common, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err

    refused("--method", "ms", "--stats", str(stats), "--out", str(stats), needle="is the input --stats")
    refused("--method", "ms", "--stats", str(stats), "--out", str(stats / "sub"), needle="lies inside the input")
    assert {p.name: p.read_bytes() for p in stats.iterdir()} == before
    afile = tmp_path / "a-file"
    afile.write_text("x")
    refused("--method", "em", "--out", str(afile), needle="not a directory")
    out = tmp_path / "m"
    assert main(["vocab-map", *common, "--method", "em", "--out", str(out)]) == 0
    refused("--method", "em", "--out", str(out), needle="not empty")
    assert main(["vocab-map", *common, "--method", "em", "--out", str(out), "--overwrite"]) == 0
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    refused("--method", "em", "--out", str(user), "--overwrite", needle="not an earlier vocab map")
    assert (user / "notes.txt").read_text() == "mine"
