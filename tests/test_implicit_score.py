"""``fusion-train score``: a tiny reward model (batched = one at a time), wrong heads refused, verifiers and
dual scoring, and the CLI chain sample -> score -> build-pairs with one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from fusion_train.cli import main  # noqa: E402
from fusion_train.implicit.score import ScoreOptions, load_reward_model, reward_scores, score  # noqa: E402
from implicit_tiny import reward_model, source_models, write_prompts  # noqa: E402
from tokalign.errors import TokalignError  # noqa: E402


@pytest.fixture(scope="module")
def rm(tmp_path_factory):
    return reward_model(tmp_path_factory.mktemp("rm") / "rm")


def _sample_rows(path: Path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _responses(domain="chat", **extra):
    rows = []
    for pid, texts in (("a", ["The answer is 4.", "It is 4.", "\\boxed{4}"]), ("b", ["Paris", "London is the capital"])):
        for model in ("m1", "m2"):
            for i, t in enumerate(texts):
                rows.append(dict({"prompt_id": pid, "messages": [{"role": "user", "content": "q " + pid}],
                                  "domain": domain, "model": model, "sample": i, "text": t}, **extra))
    return rows


def test_reward_batches_equal_single_runs(rm):
    model, tok = load_reward_model(rm, dtype="fp32", device="cpu")
    items = [([{"role": "user", "content": "Say hi"}], t) for t in ("hi", "hello there, friend", "", "x " * 30)]
    one = reward_scores(model, tok, items, batch_size=1)["scores"]
    many = reward_scores(model, tok, items, batch_size=4)["scores"]
    assert max(abs(a - b) for a, b in zip(one, many)) < 1e-5
    assert len(set(round(s, 6) for s in one)) == 4


def test_wrong_heads_are_refused(rm, tmp_path):
    three = reward_model(tmp_path / "rm3", num_labels=3)
    lm = source_models(tmp_path)[0]
    src = _sample_rows(tmp_path / "r.jsonl", _responses())
    for path, match in ((three, "3-label"), (lm, "LlamaForCausalLM, not a reward model")):
        with pytest.raises(TokalignError, match=match):
            score(ScoreOptions(inputs=[src], out=tmp_path / "s.jsonl", reward_model=path, progress=False))
    assert not (tmp_path / "s.jsonl").exists()


def test_dual_scoring_math(rm, tmp_path):
    src = _sample_rows(tmp_path / "r.jsonl", _responses("math", gold="4"))
    report = score(ScoreOptions(inputs=[src], out=tmp_path / "s.jsonl", reward_model=rm, verify=["math"],
                                dtype="fp32", device="cpu", progress=False))
    rows = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [r["prompt_id"] for r in rows] == ["a", "b"] and report["responses"] == 10
    a = {(r["model"], r["sample"]): r for r in rows[0]["responses"]}
    assert all(a[(m, i)]["correct"] for m in ("m1", "m2") for i in range(3))
    assert not any(r["correct"] for r in rows[1]["responses"])
    assert len({r["score"] for r in rows[0]["responses"]}) > 1  # reward-model scores, not 0/1
    # verify only: 1.0 / 0.0
    score(ScoreOptions(inputs=[src], out=tmp_path / "v.jsonl", verify=["math"], progress=False))
    v = [json.loads(x) for x in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert {r["score"] for r in v[0]["responses"]} == {1.0} and {r["score"] for r in v[1]["responses"]} == {0.0}


def test_code_verify_through_score(tmp_path):
    rows = []
    for i, text in enumerate(["```python\ndef f(x):\n    return x + 1\n```", "def f(x):\n    return x",
                              "def f(x):\n    while True:\n        pass"]):
        rows.append({"prompt_id": "c", "messages": [{"role": "user", "content": "write f"}], "domain": "code",
                     "tests": ["assert f(1) == 2"], "model": "m", "sample": i, "text": text})
    src = _sample_rows(tmp_path / "r.jsonl", rows)
    report = score(ScoreOptions(inputs=[src], out=tmp_path / "s.jsonl", verify=["code"], code_timeout=2,
                                progress=False))
    out = json.loads((tmp_path / "s.jsonl").read_text())
    assert [r["correct"] for r in out["responses"]] == [True, False, False]
    assert out["responses"][2]["verdict"].startswith("timeout")
    assert report["sandbox"]["audit_hook"]


def test_score_input_errors(rm, tmp_path):
    out = tmp_path / "s.jsonl"
    out.write_text("earlier output\n")
    rows = _responses()
    del rows[3]["model"]
    src = _sample_rows(tmp_path / "r.jsonl", rows)
    with pytest.raises(TokalignError, match=r"r\.jsonl:4: a response of prompt a has no \"model\""):
        score(ScoreOptions(inputs=[src], out=out, reward_model=rm, progress=False))
    src = _sample_rows(tmp_path / "r.jsonl", _responses())
    with pytest.raises(TokalignError, match="chat prompt a gets no score: give --reward-model"):
        score(ScoreOptions(inputs=[src], out=out, verify=["math"], progress=False))
    assert out.read_text() == "earlier output\n"


def test_cli_chain_and_errors(rm, tmp_path, capsys):
    models = source_models(tmp_path / "models")
    prompts = write_prompts(tmp_path / "p.jsonl", 4)
    assert main(["sample", "--models", *map(str, models), "--prompts", str(prompts), "--n", "2",
                 "--max-new-tokens", "4", "--out", str(tmp_path / "r.jsonl"), "--dtype", "fp32", "--device", "cpu",
                 "--no-progress"]) == 0
    assert "sampled 16 responses" in capsys.readouterr().out
    assert main(["score", "--reward-model", str(rm), "--in", str(tmp_path / "r.jsonl"), "--out",
                 str(tmp_path / "s.jsonl"), "--dtype", "fp32", "--device", "cpu", "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["responses"] == 16 and report["domains"]["chat"]["prompts"] == 4
    assert main(["build-pairs", "--recipe", "fusechat3", "--in", str(tmp_path / "s.jsonl"), "--out",
                 str(tmp_path / "data"), "--window", "0", "1", "--split", "1:1"]) == 0
    line = capsys.readouterr().out
    assert line.startswith("fusechat3: 4 prompts -> 2 SFT")
    report = json.loads((tmp_path / "data" / "report.json").read_text())
    assert report["total"]["sft"] == 2 and report["total"]["dpo"] == 2  # window [0, 1]: every prompt pairs
    # bad input: exit 2, one line naming file:line
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt_id": "x", "messages": [{"role": "user", "content": "q"}], "responses": [{"model": "m", '
                   '"sample": 0, "text": "t", "score": NaN}]}\n')
    assert main(["build-pairs", "--recipe", "fusechat3", "--in", str(bad), "--out", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.jsonl:1: malformed JSON" in err
    assert json.loads((tmp_path / "data" / "report.json").read_text()) == report
    for cmd in ("sample", "score", "build-pairs"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert "examples:" in capsys.readouterr().out


def test_pickled_reward_model_needs_allow_pickle(rm, tmp_path):
    from test_implicit_sample import _pickled_copy

    pickled = _pickled_copy(Path(rm), tmp_path / "rm")
    with pytest.raises(TokalignError, match="--allow-pickle"):
        load_reward_model(pickled, dtype="fp32", device="cpu")
    items = [([{"role": "user", "content": "Say hi"}], t) for t in ("hi", "hello there")]
    got = reward_scores(*load_reward_model(pickled, dtype="fp32", device="cpu", allow_pickle=True), items)["scores"]
    want = reward_scores(*load_reward_model(rm, dtype="fp32", device="cpu"), items)["scores"]
    assert got == pytest.approx(want, abs=1e-6)
