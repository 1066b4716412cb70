"""tokalign align (CLI) on real tokenizers, and the CLI's one-line errors."""
import json

import pytest

from tokalign.cli import main

TEXT = "Hello world! 你好，世界。 def f(x):\n    return x**2  # 3.14159"


@pytest.mark.parametrize("method", ["span", "dtw"])
@pytest.mark.parametrize("source", ["internlm2", "qwen2", "llama3"])
def test_groups_cover_both_token_sequences_in_order(tokenizers_dir, capsys, method, source):
    assert main(["align", "--pivot", "openchat", "--source", source, "--tokenizer-dir", str(tokenizers_dir),
                 "--text", TEXT, "--method", method, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (a,) = out["alignments"]
    p_next = s_next = 0
    for g in a["groups"]:
        assert g["pivot_range"][0] == p_next and g["source_range"][0] == s_next
        p_next, s_next = g["pivot_range"][1], g["source_range"][1]
    assert (p_next, s_next) == (a["pivot_tokens"], a["source_tokens"])
    assert sum(a["kind_counts"].values()) == len(a["groups"])
    if method == "span":  # each group covers the same characters on both sides
        for g in a["groups"]:
            assert "".join(g["pivot"]).strip() == "".join(g["source"]).strip() or "\\x" in "".join(g["source"])


def test_corpus_limit_and_text_output(tokenizers_dir, corpora_dir, capsys):
    assert main(["align", "--pivot", "openchat", "--source", "internlm2", "--tokenizer-dir", str(tokenizers_dir),
                 "--corpus", str(corpora_dir / "code_math.jsonl"), "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("pivot (openchat)") == 2 and "<->" in out


def test_unknown_alias_lists_known_ones(capsys):
    assert main(["align", "--pivot", "no-such-model", "--source", "openchat", "--text", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "internlm2" in err


def test_missing_path_is_one_line(tmp_path, capsys):
    assert main(["align", "--pivot", str(tmp_path / "nope"), "--source", "openchat", "--text", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err


def test_every_subcommand_has_help_with_examples(capsys):
    from tokalign.cli import SUBCOMMANDS, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in sub.choices:
        assert name in SUBCOMMANDS
        assert "examples:" in sub.choices[name].format_help(), name


def test_demo_runs_offline_on_embedded_tokenizers(tmp_path, capsys, monkeypatch):
    """The README's main job: no --tokenizer-dir, no hub: the embedded openchat / mistral-nemo serve."""
    monkeypatch.delenv("TOKALIGN_TOKENIZER_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    assert main(["demo", "--out", str(tmp_path / "demo"), "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{"):out.rindex("}") + 1])
    assert set(report["maps"]) == {"map-em", "map-mined", "map-ms"}
    assert report["maps"]["map-mined"]["coverage"]["unmapped"] < 0.01
    for name in ("stats/stats.npz", "map-ms/map.npz", "report.json", "report.txt"):
        assert (tmp_path / "demo" / name).is_file()


def test_device_cuda_without_gpu_is_one_line(capsys):
    from tokalign.device import cuda_available

    if cuda_available()[0]:
        pytest.skip("a CUDA device is present")
    assert main(["align", "--pivot", "openchat", "--source", "openchat", "--text", "x", "--method", "dtw",
                 "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--device cuda" in err


def test_demo_without_matplotlib_says_so_and_finishes(tmp_path, capsys, monkeypatch):
    """The README's main job after a core `pip install .` (no matplotlib): every artifact but the figure, and
    one line saying why the figure is missing and which extra brings it."""
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    err = capsys.readouterr().err
    assert "no report.png" in err and "tokalign[plot]" in err
    assert (tmp_path / "demo" / "report.txt").is_file() and not (tmp_path / "demo" / "report.png").exists()
