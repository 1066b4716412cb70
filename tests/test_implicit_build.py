"""build-pairs rules on hand-made scored data (FuseChat-3.0 and WRPO recipes, docs/implicit.md)."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from fusion_train.implicit.build import BuildOptions, build, split_prompts
from tokalign.errors import TokalignError


def _prompt(pid, domain="chat", **extra):
    return dict({"prompt_id": pid, "messages": [{"role": "user", "content": "question %s" % pid}], "domain": domain},
                **extra)


def _resp(model, sample, score, correct=None, text=None):
    r = {"model": model, "sample": sample, "text": text or "%s-%d-%s" % (model, sample, score), "score": score}
    if correct is not None:
        r["correct"] = correct
    return r


def _write(path: Path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _read(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _build(tmp_path, rows, name="out", **kw):
    src = _write(tmp_path / ("%s_in.jsonl" % name), rows)
    kw.setdefault("recipe", "fusechat3")
    report = build(BuildOptions(input=src, out=tmp_path / name, **kw))
    return report, tmp_path / name


def test_pairs_come_from_one_source(tmp_path):
    # across sources the best (A 0.60) and worst (B 0.20) would make a 0.40 gap; within A it is 0.05
    row = dict(_prompt("p"), responses=[_resp("A", 0, 0.60), _resp("A", 1, 0.55), _resp("B", 0, 0.30),
                                         _resp("B", 1, 0.20)])
    report, out = _build(tmp_path, [row], split="0:1")
    pairs = _read(out / "pairs.jsonl")
    assert len(pairs) == 1
    p = pairs[0]
    assert p["model"] == "A" and p["chosen_score"] == 0.60 and p["rejected_score"] == 0.55
    assert p["chosen"] == [{"role": "assistant", "content": "A-0-0.6"}]
    assert p["rejected"] == [{"role": "assistant", "content": "A-1-0.55"}]
    assert p["prompt"] == row["messages"]
    # policy all: B's gap of 0.10 qualifies too (window end inclusive)
    _, out_all = _build(tmp_path, [row], name="all", split="0:1", policy="all")
    assert sorted(p["model"] for p in _read(out_all / "pairs.jsonl")) == ["A", "B"]
    for p in _read(out_all / "pairs.jsonl"):
        assert p["chosen"][0]["content"].startswith(p["model"]) and p["rejected"][0]["content"].startswith(p["model"])


@pytest.mark.parametrize("gap,kept", [(0.01, True), (0.1, True), (0.0099, False), (0.1001, False), (0.05, True),
                                      (0.0, False)])
def test_window_edges_are_inclusive(tmp_path, gap, kept):
    row = dict(_prompt("p"), responses=[_resp("A", 0, 0.25 + gap), _resp("A", 1, 0.25)])
    report, out = _build(tmp_path, [row], split="0:1")
    assert len(_read(out / "pairs.jsonl")) == (1 if kept else 0)
    split = _read(out / "split.jsonl")[0]
    assert split["split"] == ("dpo" if kept else "dropped")
    if not kept:
        assert "window" in split["reason"] or "two responses" in split["reason"]
    # a wider window keeps everything with a positive gap
    _, out2 = _build(tmp_path, [row], name="wide", split="0:1", window=(0.0, 1.0))
    assert len(_read(out2 / "pairs.jsonl")) == 1


def test_math_chosen_correct_rejected_incorrect(tmp_path):
    row = dict(_prompt("m", "math", gold="4"), responses=[
        _resp("A", 0, 0.90, False), _resp("A", 1, 0.85, True), _resp("A", 2, 0.80, False), _resp("A", 3, 0.84, False),
        _resp("B", 0, 0.70, True), _resp("B", 1, 0.69, True)])  # B has no incorrect response: no pair from B
    _, out = _build(tmp_path, [row], split="0:1", policy="all")
    pairs = _read(out / "pairs.jsonl")
    assert [p["model"] for p in pairs] == ["A"]
    assert pairs[0]["chosen_score"] == 0.85 and pairs[0]["rejected_score"] == 0.80
    # SFT: the best correct response over all sources, not the best-scored (incorrect) one
    _, out = _build(tmp_path, [row], name="sft", split="1:0")
    sft = _read(out / "sft.jsonl")
    assert sft[0]["model"] == "A" and sft[0]["score"] == 0.85
    assert sft[0]["messages"][-1] == {"role": "assistant", "content": "A-1-0.85"}


def test_code_rules_and_all_fail_dropped(tmp_path):
    rows = [
        dict(_prompt("c1", "code", tests=["assert f()"]), responses=[_resp("A", 0, 0.5, True), _resp("A", 1, 0.45, False)]),
        dict(_prompt("c2", "code", tests=["assert f()"]), responses=[_resp("A", 0, 0.5, False), _resp("B", 0, 0.9, False)]),
        dict(_prompt("c3", "code", tests=["assert f()"]), responses=[_resp("A", 0, 0.5, False), _resp("A", 1, 0.9, False)]),
    ]
    report, out = _build(tmp_path, rows, split="0:1")
    pairs = _read(out / "pairs.jsonl")
    assert [p["prompt_id"] for p in pairs] == ["c1"]
    assert pairs[0]["chosen"][0]["content"] == "A-0-0.5"
    split = {s["prompt_id"]: s for s in _read(out / "split.jsonl")}
    assert split["c2"]["split"] == split["c3"]["split"] == "dropped"
    assert split["c2"]["reason"] == "every response fails its tests"
    assert report["dropped_reasons"]["every response fails its tests"] == 2
    # all-fail prompts are dropped from the SFT part too
    _, out = _build(tmp_path, rows, name="sft", split="1:0")
    assert [r["prompt_id"] for r in _read(out / "sft.jsonl")] == ["c1"]


def _many(n=30):
    rows = []
    for i in range(n):
        domain = ("chat", "math", "code")[i % 3]
        extra = {"gold": "1"} if domain == "math" else {"tests": ["assert True"]} if domain == "code" else {}
        correct = None if domain == "chat" else True
        rows.append(dict(_prompt("q%02d" % i, domain, **extra), responses=[
            _resp("A", 0, 0.5 + i / 1000, correct), _resp("A", 1, 0.47, None if correct is None else False),
            _resp("B", 0, 0.3, correct), _resp("B", 1, 0.28, None if correct is None else False)]))
    return rows


def test_split_is_deterministic_and_order_independent(tmp_path):
    rows = _many(30)
    parts = split_prompts(rows, (4, 6), seed=0)
    shuffled = list(rows)
    random.Random(5).shuffle(shuffled)
    assert split_prompts(shuffled, (4, 6), seed=0) == parts
    assert split_prompts(rows, (4, 6), seed=1) != parts
    for domain in ("chat", "math", "code"):  # 10 prompts per domain -> 4 SFT, 6 DPO
        ids = [r["prompt_id"] for r in rows if r["domain"] == domain]
        assert sum(parts[i] == "sft" for i in ids) == 4
    # the files too: a shuffled input gives the same split.jsonl (as a mapping) and the same sets
    _, a = _build(tmp_path, rows, name="a")
    _, b = _build(tmp_path, shuffled, name="b")
    key = lambda rs: sorted(json.dumps(r, sort_keys=True) for r in rs)  # noqa: E731
    for name in ("split.jsonl", "sft.jsonl", "pairs.jsonl"):
        assert key(_read(a / name)) == key(_read(b / name))


def test_report_counts_equal_files(tmp_path):
    rows = _many(30)
    rows[2]["responses"] = [dict(r, correct=False) for r in rows[2]["responses"]]  # a code prompt: all fail
    for policy in ("best_chosen", "all", "random"):
        report, out = _build(tmp_path, rows, name=policy, policy=policy)
        sft, pairs, split = (_read(out / n) for n in ("sft.jsonl", "pairs.jsonl", "split.jsonl"))
        assert json.loads((out / "report.json").read_text()) == report
        assert report["total"]["sft"] == len(sft) == report["files"]["sft.jsonl"]
        assert report["total"]["dpo"] == len(pairs) == report["files"]["pairs.jsonl"]
        assert report["total"]["total"] == len(split) == len(rows)
        assert report["total"]["dropped"] == sum(s["split"] == "dropped" for s in split)
        assert report["total"]["dpo_prompts"] == len({p["prompt_id"] for p in pairs})
        for domain, d in report["domains"].items():
            assert d["sft"] == sum(r["domain"] == domain for r in sft)
            assert d["dpo"] == sum(r["domain"] == domain for r in pairs)
            assert d["total"] == sum(r["domain"] == domain for r in rows)
        assert report["options"]["policy"] == policy and report["options"]["split"] == "4:6"
    assert len(_read(tmp_path / "all" / "pairs.jsonl")) > len(_read(tmp_path / "best_chosen" / "pairs.jsonl"))


def _wrpo_input(n=9):
    return [dict(_prompt("w%d" % i), responses=[_resp("A", 0, 0.9, text="src-best-%d" % i), _resp("B", 0, 0.2)])
            for i in range(n)]


def test_wrpo_two_steps_order_and_identical_dropped(tmp_path):
    rows = _wrpo_input(9)
    report, out = _build(tmp_path, rows, recipe="wrpo")
    assert report["total"]["sft"] == 3 and report["pending_target_prompts"] == 6
    targets = _read(out / "target_prompts.jsonl")
    assert len(targets) == 6 and not (out / "wrpo.jsonl").exists()
    assert all(set(t) == {"prompt_id", "messages", "domain"} for t in targets)
    sft = _read(out / "sft.jsonl")
    assert all(r["messages"][-1]["content"].startswith("src-best-") for r in sft)
    # the SFT'd target's scored samples for the 6 preference prompts; one prompt's samples are identical
    scored = []
    for k, t in enumerate(targets):
        texts = ["same", "same", "same"] if k == 0 else ["t-good", "t-mid", "t-bad"]
        scored.append(dict(t, responses=[_resp("target", j, s, text=x) for j, (x, s) in
                                         enumerate(zip(texts, (0.8, 0.5, 0.1)))]))
    tfile = _write(tmp_path / "target.jsonl", scored)
    report, out = _build(tmp_path, rows, recipe="wrpo", target_samples=tfile)
    triples = _read(out / "wrpo.jsonl")
    assert len(triples) == 5 == report["files"]["wrpo.jsonl"] == report["total"]["dpo"]
    assert not (out / "target_prompts.jsonl").exists()
    for t in triples:
        assert set(t) >= {"prompt_id", "messages", "chosen", "rejected"}
        assert t["chosen"] == ["src-best-%s" % t["prompt_id"][1:], "t-good"]  # source first, then target
        assert t["rejected"] == ["t-bad"]
        assert t["chosen_models"] == ["A", "target"]
    split = {s["prompt_id"]: s for s in _read(out / "split.jsonl")}
    assert split[targets[0]["prompt_id"]]["split"] == "dropped"
    assert split[targets[0]["prompt_id"]]["reason"] == "target samples all identical"


def test_wrpo_target_samples_for_other_prompts(tmp_path):
    rows = _wrpo_input(9)
    _build(tmp_path, rows, recipe="wrpo")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    other = [dict(_prompt("elsewhere"), responses=[_resp("target", 0, 0.1), _resp("target", 1, 0.2)])]
    with pytest.raises(TokalignError, match="not prompts of this input"):
        _build(tmp_path, rows, recipe="wrpo", target_samples=_write(tmp_path / "t.jsonl", other))
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before  # nothing lost


@pytest.mark.parametrize("mutate,match", [
    (lambda rows: rows[0]["responses"][0].update(score=float("nan")), "NaN|finite"),
    (lambda rows: rows[0]["responses"][0].pop("model"), "no \"model\""),
    (lambda rows: rows[0].update(messages=[{"role": "system", "content": "x"}]), "no user turn"),
    (lambda rows: rows[1]["responses"][0].pop("correct"), "no boolean \"correct\""),
])
def test_bad_input_is_one_line_and_loses_nothing(tmp_path, mutate, match):
    rows = _many(6)
    _build(tmp_path, rows)  # an earlier build
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    bad = json.loads(json.dumps(rows))
    mutate(bad)
    src = tmp_path / "bad.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in bad))  # json writes NaN as NaN (invalid JSON)
    with pytest.raises(TokalignError, match=match) as err:
        build(BuildOptions(recipe="fusechat3", input=src, out=tmp_path / "out"))
    assert "bad.jsonl:" in str(err.value) and "\n" not in str(err.value)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


def test_malformed_jsonl_names_file_and_line(tmp_path):
    src = tmp_path / "s.jsonl"
    good = json.dumps(dict(_prompt("a"), responses=[_resp("A", 0, 0.1)]))
    src.write_text(good + "\n\n" + '{"prompt_id": "b", "messages": [\n')
    with pytest.raises(TokalignError, match=r"s\.jsonl:3: malformed JSON"):
        build(BuildOptions(recipe="fusechat3", input=src, out=tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_random_policy_is_seeded(tmp_path):
    rows = _many(12)
    a = _read(_build(tmp_path, rows, name="r1", policy="random", split="0:1")[1] / "pairs.jsonl")
    b = _read(_build(tmp_path, rows, name="r2", policy="random", split="0:1")[1] / "pairs.jsonl")
    assert a == b and len(a) == 12
    assert not math.isnan(a[0]["chosen_score"])
