"""The whole FuseChat pipeline on CPU with real tokenizers and tiny random models:

dump-logits (pivot openchat-3.5, source internlm2) -> build-stats -> vocab-map ms -> remap ->
fusion-train fuse (two targets) -> fusion-train merge --method sce -> load and generate.
"""
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fusion_train.cli import main as ft_main  # noqa: E402
from tokalign.cli import main as ta_main  # noqa: E402
from tokalign.store import open_store  # noqa: E402

from tokalign.testing import save_tiny_causal_lm  # noqa: E402


def _ok(rc):
    assert rc == 0


def test_pipeline_end_to_end(tmp_path, tokenizers_dir, corpora_dir, capsys):
    os.environ["HF_HUB_OFFLINE"] = "1"
    lines = (corpora_dir / "code_math.jsonl").read_text(encoding="utf-8").splitlines()[:12]
    corpus = tmp_path / "data.jsonl"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    pivot = save_tiny_causal_lm(tmp_path / "pivot", tokenizers_dir / "openchat-3.5", seed=1)
    source = save_tiny_causal_lm(tmp_path / "source", tokenizers_dir / "internlm2", seed=2)

    for name, model in (("pivot", pivot), ("source", source)):
        _ok(ta_main(["dump-logits", "--model", str(model), "--data", str(corpus), "--out", str(tmp_path / f"{name}.zarr"),
                     "--top-k", "8", "--max-length", "256", "--mask-instruction", "--template", "plain",
                     "--no-progress"]))
    _ok(ta_main(["build-stats", "--pivot", str(pivot), "--source", str(source), "--corpus", str(corpus),
                 "--out", str(tmp_path / "stats"), "--no-progress"]))
    _ok(ta_main(["vocab-map", "--pivot", str(pivot), "--source", str(source), "--method", "ms",
                 "--stats", str(tmp_path / "stats"), "--out", str(tmp_path / "map-ms")]))
    _ok(ta_main(["vocab-map", "--pivot", str(pivot), "--source", str(source), "--method", "em",
                 "--out", str(tmp_path / "map-em")]))
    for m in ("ms", "em"):
        _ok(ta_main(["remap", "--pivot-store", str(tmp_path / "pivot.zarr"), "--source-store",
                     str(tmp_path / "source.zarr"), "--map", str(tmp_path / f"map-{m}"),
                     "--out", str(tmp_path / f"source-{m}.zarr"), "--top-k", "8", "--json"]))
    capsys.readouterr()

    remapped = open_store(str(tmp_path / "source-ms.zarr"))
    pivot_store = open_store(str(tmp_path / "pivot.zarr"))
    assert len(remapped) == len(pivot_store) == 12
    assert remapped.schema.tokenizer_fingerprint == pivot_store.schema.tokenizer_fingerprint
    s = remapped[0]
    p = pivot_store.by_id(s["sample_id"])
    np.testing.assert_array_equal(s["input_ids"], p["input_ids"])
    valid = s["topk_ids"][:, 0] >= 0
    assert valid.mean() > 0.5  # most positions carry a remapped distribution
    probs = np.exp(s["topk_logits"][valid]).sum(axis=1)
    assert np.all(probs <= 1 + 1e-4) and np.all(probs > 0)

    targets = []
    for k, m in enumerate(("ms", "em")):
        out = tmp_path / f"target-{m}"
        _ok(ft_main(["fuse", "--model", str(pivot), "--pivot-store", str(tmp_path / "pivot.zarr"),
                     "--teacher-store", str(tmp_path / f"source-{m}.zarr"), "--output-dir", str(out),
                     "--max-steps", "3", "--per-device-train-batch-size", "4", "--learning-rate", "1e-3",
                     "--logging-steps", "1", "--save-strategy", "no", "--report-to", "none", "--seed", str(k),
                     "--use-cpu", "--json"]))
        targets.append(out)
    summary = capsys.readouterr().out
    assert "choice_rate" in summary or "fusion_loss" in summary

    merged = tmp_path / "merged"
    _ok(ft_main(["merge", "--method", "sce", "--base", str(pivot), "--models", *map(str, targets),
                 "--out", str(merged), "--no-progress"]))
    from transformers import AutoModelForCausalLM

    from tokalign import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(str(merged), use_safetensors=True)
    base = AutoModelForCausalLM.from_pretrained(str(pivot), use_safetensors=True)
    changed = any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), base.state_dict().values()))
    assert changed  # the fused deltas reached the merged model
    tok = load_tokenizer(str(merged))
    ids = torch.tensor([tok.encode("def f(x):", add_special_tokens=True).ids.tolist()])
    out = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 5
    assert int(out.max()) < model.config.vocab_size

