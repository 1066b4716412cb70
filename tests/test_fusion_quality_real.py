"""benchmarks/fusion_quality, real-model configuration: command line, trained-parameter selection and the
bits-per-byte metric (fast, on a tiny random Llama); the real run itself is recorded in benchmarks/RESULTS.md."""
import json
import math

import pytest

import benchmarks.fusion_quality as fq
from benchmarks.fusion_quality.real import RealConfig, real_presets, response_bits, trainable_names
from tokalign.errors import TokalignError


def test_real_is_the_default_configuration_and_quick_stays_from_scratch():
    p = fq.build_parser()
    cfg = fq.config_from_args(p.parse_args([]))
    assert isinstance(cfg, RealConfig) and cfg.name == "real"
    assert (cfg.pivot, cfg.source, cfg.lambda_sft, cfg.lambda_low) == ("smollm2-135m-instruct", "gemma3-270m", 0.9, 0.5)
    assert cfg.seeds >= 3 and set(cfg.variants) == {"sft", "em", "mined", "ms", "best@low", "self"}
    assert fq.config_from_args(p.parse_args(["--quick"])).name == "quick"
    gpu = fq.config_from_args(p.parse_args(["--config", "real-gpu"]))
    assert gpu.train_layers == 0 and gpu.n_fusion > cfg.n_fusion and gpu.fusion_train.steps > cfg.fusion_train.steps
    r = fq.config_from_args(p.parse_args(["--config", "real-reduced", "--seeds", "4", "--variants", "sft,ms",
                                          "--fusion-steps", "3"]))
    assert (r.seeds, r.variants, r.fusion_train.steps) == (4, ("sft", "ms"), 3)
    assert real_presets()["real-reduced"].fusion_train.steps != 3  # presets are not mutated
    with pytest.raises(TokalignError, match="unknown bogus"):
        fq.config_from_args(p.parse_args(["--variants", "sft,bogus"]))
    with pytest.raises(TokalignError, match="from-scratch source"):
        fq.config_from_args(p.parse_args(["--source", "qwen2"]))


def _tiny_llama():
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=4,
                                        num_attention_heads=2, num_key_value_heads=2)).eval()


def test_trainable_names_are_the_top_layers_and_the_final_norm():
    model = _tiny_llama()
    names = trainable_names(model, 2)
    assert names and all(n.startswith(("model.layers.2.", "model.layers.3.", "model.norm.")) for n in names)
    assert "model.norm.weight" in names and any(n.startswith("model.layers.2.") for n in names)
    assert len(trainable_names(model, 0)) == len(list(model.named_parameters()))


class _CharTok:
    """One token per character (ids 1..), a BOS (0) first, offsets like a fast tokenizer's."""

    def __call__(self, text, return_offsets_mapping=False):
        return {"input_ids": [0] + [1 + (ord(c) % 60) for c in text],
                "offset_mapping": [(0, 0)] + [(i, i + 1) for i in range(len(text))]}


def test_response_bits_counts_response_tokens_over_response_bytes():
    torch = pytest.importorskip("torch")
    model = _tiny_llama()
    items = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "yes ok"}]},
             {"messages": [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "é!"}]}]
    res = response_bits(model, _CharTok(), items, batch_tokens=8)
    nll, count = 0.0, 0
    for it in items:
        prompt, resp = it["messages"][0]["content"], it["messages"][1]["content"]
        enc = _CharTok()(prompt + "\n\n" + resp)
        ids = torch.tensor([enc["input_ids"]])
        with torch.no_grad():
            lp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        for i in range(len(prompt) + 3, ids.shape[1]):  # tokens starting inside the response (BOS shifts by one)
            nll -= float(lp[i - 1, ids[0, i]])
            count += 1
    nbytes = len("yes ok".encode()) + len("é!".encode())
    assert res["tokens"] == count == 8 and res["bytes"] == nbytes
    assert res["bpb"] == pytest.approx(nll / nbytes / math.log(2), rel=1e-5)
    assert res["ce"] == pytest.approx(nll / count, rel=1e-5)
    json.dumps(res)
