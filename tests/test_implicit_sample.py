"""``fusion-train sample`` on tiny random models over real tokenizers: counts, per-model chat templates, and
resume after SIGKILL giving the same file as an uninterrupted run (greedy and seeded sampling)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

from fusion_train.implicit.engines import TransformersEngine, ModelSpec  # noqa: E402
from fusion_train.implicit.sample import SampleOptions, sample  # noqa: E402
from implicit_tiny import source_models, write_prompts  # noqa: E402
from tokalign.errors import TokalignError  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return source_models(tmp_path_factory.mktemp("models"))


def _options(models, prompts, out, **kw):
    base = dict(prompts=prompts, out=out, models=[str(m) for m in models], n=2, max_new_tokens=6, batch_size=3,
                dtype="fp32", device="cpu", progress=False)
    base.update(kw)
    return SampleOptions(**base)


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_counts_and_fields(models, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", 3, "math")
    report = sample(_options(models, prompts, tmp_path / "r.jsonl"))
    rows = _rows(tmp_path / "r.jsonl")
    assert len(rows) == report["written"] == 3 * 2 * 2
    keys = {(r["prompt_id"], r["model"], r["sample"]) for r in rows}
    assert keys == {("p%d" % i, m, s) for i in range(3) for m in ("qwen", "llama") for s in range(2)}
    for r in rows:
        assert r["domain"] == "math" and r["gold"] and r["finish_reason"] in ("stop", "length")
        assert isinstance(r["seed"], int) and 0 < r["new_tokens"] <= 6 and isinstance(r["text"], str)
    assert report["models"]["qwen"]["sampling"]["temperature"] == 0.8
    assert report["models"]["qwen"]["sampling"]["top_p"] == 0.95
    # the same command again writes nothing
    again = sample(_options(models, prompts, tmp_path / "r.jsonl"))
    assert again["written"] == 0 and again["skipped"] == 12


def test_each_model_gets_its_own_chat_template(models):
    from transformers import AutoTokenizer

    messages = [{"role": "user", "content": "Hello there"}]
    encoded = {}
    for path in models:
        engine = TransformersEngine(ModelSpec(path=str(path)), dtype="fp32", device="cpu")
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
        expected = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = engine.encode(messages)
        assert tok.decode(ids) == expected
        encoded[path.name] = tok.decode(ids)
        assert engine.stops  # EOS / end-of-turn ids
    assert "<|im_start|>assistant" in encoded["qwen"]
    assert "<|start_header_id|>assistant<|end_header_id|>" in encoded["llama"]
    # a per-model template replaces the tokenizer's own
    engine = TransformersEngine(ModelSpec(path=str(models[0]), chat_template="Q: {{ messages[-1]['content'] }}\nA:"),
                                dtype="fp32", device="cpu")
    assert engine.tokenizer.decode(engine.encode(messages)) == "Q: Hello there\nA:"


def _child(options_json: str) -> str:
    return ("import json, sys\nfrom fusion_train.implicit.sample import SampleOptions, sample\n"
            "sample(SampleOptions(**json.loads(sys.argv[1])))\n")


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_resume_after_sigkill_gives_the_same_file(models, tmp_path, temperature):
    prompts = write_prompts(tmp_path / "p.jsonl", 3)
    kw = dict(temperature=temperature, batch_size=2, max_new_tokens=4)
    sample(_options(models, prompts, tmp_path / "full.jsonl", **kw))
    full = (tmp_path / "full.jsonl").read_bytes()

    # a real SIGKILL in the middle of a run
    out = tmp_path / "killed.jsonl"
    opts = _options(models, prompts, out, **kw)
    spec = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()}
    proc = subprocess.Popen([sys.executable, "-c", _child(""), json.dumps(spec)], env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = out.read_bytes() if out.exists() else b""
    assert len(partial) < len(full) or proc.returncode == 0
    report = sample(opts)
    assert out.read_bytes() == full
    assert report["skipped"] == partial.count(b"\n")

    # a kill in the middle of a line and of a batch: cut the finished file inside its 5th row
    cut = tmp_path / "cut.jsonl"
    lines = full.split(b"\n")
    cut.write_bytes(b"\n".join(lines[:4]) + b"\n" + lines[4][: len(lines[4]) // 2])
    meta = (tmp_path / "full.jsonl.meta.json").read_bytes()
    (tmp_path / "cut.jsonl.meta.json").write_bytes(meta)
    sample(_options(models, prompts, cut, **kw))
    assert cut.read_bytes() == full


def test_resume_with_other_options_is_refused(models, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", 2)
    sample(_options(models[:1], prompts, tmp_path / "r.jsonl", max_new_tokens=3))
    before = (tmp_path / "r.jsonl").read_bytes()
    with pytest.raises(TokalignError, match="other options .*n"):
        sample(_options(models[:1], prompts, tmp_path / "r.jsonl", n=3, max_new_tokens=3))
    assert (tmp_path / "r.jsonl").read_bytes() == before


def test_bad_prompts(models, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt_id": "a", "messages": [{"role": "assistant", "content": "hi"}]}\n')
    with pytest.raises(TokalignError, match=r"bad\.jsonl:1: prompt a has no user turn"):
        sample(_options(models, bad, tmp_path / "r.jsonl"))
    bad.write_text('{"prompt_id": "a", "messages": [{"role": "user", "content": "hi"}]}\n{"prompt_id": \n')
    with pytest.raises(TokalignError, match=r"bad\.jsonl:2: malformed JSON"):
        sample(_options(models, bad, tmp_path / "r.jsonl"))
    assert not (tmp_path / "r.jsonl").exists()


def test_ranks_take_disjoint_slices(models, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", 3)
    seen = []
    for rank in range(2):
        report = sample(_options(models[:1], prompts, tmp_path / "r.jsonl", n=1, max_new_tokens=2, rank=rank,
                                 world_size=2))
        seen += [r["prompt_id"] for r in _rows(report["out"])]
        assert report["out"].endswith("r.rank%d-of-2.jsonl" % rank)
    assert sorted(seen) == ["p0", "p1", "p2"]


def _pickled_copy(model_dir: Path, dest: Path) -> Path:
    """The model folder with its safetensors weights re-saved as a pickled pytorch_model.bin."""
    import shutil

    import torch
    from safetensors.torch import load_file

    shutil.copytree(model_dir, dest)
    for f in dest.glob("*.safetensors"):
        torch.save(load_file(str(f)), dest / "pytorch_model.bin")
        f.unlink()
    return dest


def test_pickled_weights_need_allow_pickle(models, tmp_path):
    """Same policy as dump-logits and the trainers: a folder with only pytorch_model.bin is refused, naming
    --allow-pickle; with it, the model samples as its safetensors twin does."""
    pickled = _pickled_copy(Path(models[0]), tmp_path / Path(models[0]).name)
    prompts = write_prompts(tmp_path / "p.jsonl", 2, "math")
    with pytest.raises(TokalignError, match="--allow-pickle"):
        sample(_options([pickled], prompts, tmp_path / "refused.jsonl", temperature=0.0))
    sample(_options([pickled], prompts, tmp_path / "pickled.jsonl", temperature=0.0, allow_pickle=True))
    sample(_options([models[0]], prompts, tmp_path / "safe.jsonl", temperature=0.0))
    assert [r["text"] for r in _rows(tmp_path / "pickled.jsonl")] == [r["text"] for r in _rows(tmp_path / "safe.jsonl")]
