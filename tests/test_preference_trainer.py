"""PreferenceTrainer / WeightedSFTTrainer on a tiny random Llama over the mistral-v1 tokenizer (CPU, seconds):
gradient accumulation, precomputed vs live reference, the WRPO α ramp through resume, and the CLIs."""
import json

import pytest
import torch

from fusion_train.cli import main
from fusion_train.preference.config import CRLFTConfig, PreferenceConfig, SFTConfig
from fusion_train.preference.data import ChatEncoder, PreferenceDataset, SFTDataset, read_rows
from fusion_train.preference.reference import load_or_compute
from fusion_train.preference.trainer import PreferenceTrainer, WeightedSFTTrainer
from preference_helpers import (load_tiny, pair_rows, sft_rows, tiny_model_dir, trainer_kwargs, write_jsonl,
                                wrpo_rows)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("tiny") / "m")


def _pairs(tmp_path, tok, n=8, fmt="pairs"):
    rows = pair_rows(n) if fmt == "pairs" else wrpo_rows(n)
    return PreferenceDataset(read_rows(write_jsonl(tmp_path / ("%s.jsonl" % fmt), rows), fmt), ChatEncoder(tok))


def _flat_params(model):
    return torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])


def _one_sgd_step(tmp_path, model_dir, make_trainer, bs, ga):
    model, tok = load_tiny(model_dir)
    before = _flat_params(model)
    trainer = make_trainer(model, tok, dict(per_device_train_batch_size=bs, gradient_accumulation_steps=ga,
                                            max_steps=1, optim="sgd", learning_rate=1.0, max_grad_norm=0.0,
                                            lr_scheduler_type="constant", output_dir=str(tmp_path / ("o%d" % bs))))
    trainer.train()
    loss = trainer.state.log_history[0]["loss"]
    return loss, before - _flat_params(model)


@pytest.mark.parametrize("kind", ["dpo", "wrpo", "crlft"])
def test_gradient_accumulation_2x4_equals_one_batch_of_8(tmp_path, model_dir, kind):
    def make(model, tok, kw):
        if kind == "crlft":
            rows = read_rows(write_jsonl(tmp_path / "s.jsonl", sft_rows(8)), "sft")
            weights = [1.0, 0.1, 0.1, 1.0, 0.1, 0.1, 0.1, 1.0]  # unequal weights and lengths
            ds = SFTDataset(rows, ChatEncoder(tok), weights=weights)
            return WeightedSFTTrainer(model=model, args=SFTConfig(**trainer_kwargs(tmp_path, **kw)), train_dataset=ds)
        ds = _pairs(tmp_path, tok, fmt="wrpo" if kind == "wrpo" else "pairs")
        cfg = PreferenceConfig(**trainer_kwargs(tmp_path, **kw), loss="wrpo" if kind == "wrpo" else "dpo", beta=0.5,
                               reference="live", alpha=0.4, alpha_dynamic=False)
        return PreferenceTrainer(model=model, args=cfg, train_dataset=ds)

    loss8, grad8 = _one_sgd_step(tmp_path, model_dir, make, 8, 1)
    loss4, grad4 = _one_sgd_step(tmp_path, model_dir, make, 4, 2)
    assert grad8.abs().max() > 0
    assert loss4 == pytest.approx(loss8, rel=1e-4)
    assert torch.allclose(grad4, grad8, atol=1e-6, rtol=1e-4)


def test_precomputed_reference_gives_the_live_trajectory(tmp_path, model_dir):
    results = []
    for reference in ("live", "precomputed"):
        model, tok = load_tiny(model_dir)
        ds = _pairs(tmp_path, tok)
        if reference == "precomputed":
            info = load_or_compute(model, ds, tmp_path / "ref.json")
            assert info["computed"] and (tmp_path / "ref.json").exists()
        cfg = PreferenceConfig(**trainer_kwargs(tmp_path / reference, max_steps=3, learning_rate=5e-3),
                               loss="ln_dpo", beta=2.0, reference=reference)
        trainer = PreferenceTrainer(model=model, args=cfg, train_dataset=ds)
        assert (trainer.ref_model is None) == (reference == "precomputed")
        trainer.train()
        results.append(([h["loss"] for h in trainer.state.log_history if "loss" in h], _flat_params(model)))
    (l1, p1), (l2, p2) = results
    assert l1 == pytest.approx(l2, rel=1e-5)
    assert l1[-1] < l1[0]
    assert torch.allclose(p1, p2, atol=1e-6)


def test_reference_file_for_other_data_or_model_is_refused(tmp_path, model_dir):
    from tokalign.errors import TokalignError

    model, tok = load_tiny(model_dir)
    load_or_compute(model, _pairs(tmp_path, tok, n=8), tmp_path / "ref.json")
    with pytest.raises(TokalignError, match="other data"):
        load_or_compute(model, _pairs(tmp_path, tok, n=6), tmp_path / "ref.json")
    other, _ = load_tiny(tiny_model_dir(tmp_path / "other", seed=3))
    with pytest.raises(TokalignError, match="another starting model"):
        load_or_compute(other, _pairs(tmp_path, tok, n=8), tmp_path / "ref.json")


def _wrpo_alphas(tmp_path, model_dir, resume_dir=None, **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    model, tok = load_tiny(model_dir)
    cfg = PreferenceConfig(**trainer_kwargs(tmp_path, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                                            max_steps=4, **kw), loss="wrpo", alpha=0.2, reference="live")
    trainer = PreferenceTrainer(model=model, args=cfg, train_dataset=_pairs(tmp_path, tok, fmt="wrpo"))
    seen = []
    original = trainer.current_alpha
    trainer.current_alpha = lambda: seen.append((trainer.state.global_step, original())) or seen[-1][1]
    trainer.train(resume_from_checkpoint=resume_dir)
    return seen, [h for h in trainer.state.log_history if "loss" in h]


def test_wrpo_alpha_ramps_per_optimizer_step_and_survives_resume(tmp_path, model_dir):
    seen, logs = _wrpo_alphas(tmp_path / "full", model_dir)
    # read once per micro-batch, constant within each accumulation window: α_end · s / T
    assert seen == [(s, pytest.approx(0.2 * s / 4)) for s in (0, 0, 1, 1, 2, 2, 3, 3)]
    assert [h["alpha"] for h in logs] == pytest.approx([0.0, 0.05, 0.1, 0.15])
    for h in logs:
        for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                    "rewards/source_chosen", "rewards/target_chosen", "rewards/source_accuracies",
                    "rewards/target_accuracies"):
            assert key in h
    _wrpo_alphas(tmp_path / "part", model_dir, save_strategy="steps", save_steps=2)
    seen2, logs2 = _wrpo_alphas(tmp_path / "part", model_dir, resume_dir=str(tmp_path / "part" / "checkpoint-2"))
    assert seen2 == seen[4:]
    assert [h["loss"] for h in logs2[-2:]] == pytest.approx([h["loss"] for h in logs[2:]], rel=1e-5)


# ---- CLI --------------------------------------------------------------------------------------------------

COMMON = ["--max-steps", "2", "--per-device-train-batch-size", "4", "--use-cpu", "--report-to", "none",
          "--logging-steps", "1", "--save-strategy", "no", "--disable-tqdm", "true"]


def test_cli_sft_dpo_wrpo_crlft_train_and_summarise(tmp_path, model_dir, capsys):
    sft = write_jsonl(tmp_path / "sft.jsonl", sft_rows(8))
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(8))
    wrpo = write_jsonl(tmp_path / "wrpo.jsonl", wrpo_rows(8))
    m = str(model_dir)
    assert main(["sft", "--model", m, "--data", str(sft), "--output-dir", str(tmp_path / "sft")] + COMMON) == 0
    assert json.loads((tmp_path / "sft" / "sft_summary.json").read_text())["global_step"] == 2
    assert main(["dpo", "--model", m, "--data", str(pairs), "--loss", "ln_dpo", "--beta", "10", "--output-dir",
                 str(tmp_path / "dpo"), "--json"] + COMMON) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["reference"]["computed"] and (tmp_path / "pairs.jsonl.ref-logps.json").exists()
    assert "rewards/accuracies" in summary["last_log"]
    assert main(["wrpo", "--model", m, "--data", str(wrpo), "--alpha", "0.1", "--output-dir", str(tmp_path / "w"),
                 "--reference", "live"] + COMMON) == 0
    assert "alpha" in json.loads((tmp_path / "w" / "wrpo_summary.json").read_text())["last_log"]
    assert main(["crlft", "--model", m, "--data", str(sft), "--class-weights", "src0=1,src1=0.1", "--output-dir",
                 str(tmp_path / "c")] + COMMON) == 0
    summary = json.loads((tmp_path / "c" / "crlft_summary.json").read_text())
    assert summary["vocabulary"]["added"] and summary["expert_class"] == "src0"
    assert summary["classes"] == {"src0": 4, "src1": 4}
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tmp_path / "c"), trust_remote_code=False)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt == "<s>src0 User: Hi<|end_of_turn|>src0 Assistant:"


def _error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line or "Traceback" in line]
    assert len(lines) == 1 and lines[0].startswith("fusion-train: error: "), err
    return lines[0]


def test_cli_bad_input_is_one_line(tmp_path, model_dir, capsys):
    m = str(model_dir)
    rows = pair_rows(4)
    same = [dict(rows[0], rejected=rows[0]["chosen"])] + rows[1:]
    base = ["--model", m, "--output-dir", str(tmp_path / "o")] + COMMON
    assert "chosen equals rejected" in _error(capsys, ["dpo", "--data", str(write_jsonl(tmp_path / "a.jsonl", same))]
                                              + base)
    assert "leaves no room" in _error(capsys, ["dpo", "--data", str(write_jsonl(tmp_path / "b.jsonl", rows)),
                                               "--max-length", "8"] + base)
    empty = [dict(rows[0], chosen=[{"role": "assistant", "content": "  "}])] + rows[1:]
    assert "empty" in _error(capsys, ["dpo", "--data", str(write_jsonl(tmp_path / "c.jsonl", empty))] + base)
    err = _error(capsys, ["wrpo", "--data", str(write_jsonl(tmp_path / "d.jsonl", rows))] + base)
    assert "not a wrpo row" in err and "fusion-train dpo" in err
    err = _error(capsys, ["crlft", "--data", str(write_jsonl(tmp_path / "e.jsonl", sft_rows(4))),
                          "--class-weights", "src0=1"] + base)
    assert "'src1'" in err and "no weight" in err
    (tmp_path / "f.jsonl.ref-logps.json").write_text(json.dumps({"format": "fusion-train-ref-logps/1", "rows": 3,
                                                                   "data_fingerprint": "x", "logps": []}))
    assert "other data" in _error(capsys, ["dpo", "--data", str(write_jsonl(tmp_path / "f.jsonl", rows))] + base)
    assert "--loss wrpo" in _error(capsys, ["dpo", "--data", str(tmp_path / "f.jsonl"), "--loss", "wrpo"] + base)


def test_truncation_is_counted(tmp_path, model_dir):
    _, tok = load_tiny(model_dir)
    rows = read_rows(write_jsonl(tmp_path / "p.jsonl", pair_rows(4)), "pairs")
    ds = PreferenceDataset(rows, ChatEncoder(tok), max_length=16, max_prompt_length=12)
    assert ds.stats["truncated_prompts"] == 4 and ds.stats["truncated_responses"] > 0
    assert all(len(it["prompt_ids"]) + len(r) <= 16 for it in ds.items for r in it["responses"])
    # every full response ends with the template's EOS
    full = PreferenceDataset(rows, ChatEncoder(tok))
    assert all(r[-1] == tok.eos_token_id for it in full.items for r in it["responses"])


def test_crlft_config_rejects_bad_placement(tmp_path):
    from tokalign.errors import TokalignError

    with pytest.raises(TokalignError):
        CRLFTConfig(**trainer_kwargs(tmp_path), placement="middle")


def test_cli_pickled_weights_need_allow_pickle(tmp_path, model_dir, capsys):
    """Same policy as dump-logits and fuse: a folder with only pytorch_model.bin is refused, naming
    --allow-pickle; with it, the trainer runs."""
    import shutil

    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    shutil.copytree(model_dir, pickled)
    for f in pickled.glob("*.safetensors"):
        torch.save(load_file(str(f)), pickled / "pytorch_model.bin")
        f.unlink()
    sft = str(write_jsonl(tmp_path / "sft.jsonl", sft_rows(8)))
    base = ["sft", "--model", str(pickled), "--data", sft] + COMMON
    assert "--allow-pickle" in _error(capsys, base + ["--output-dir", str(tmp_path / "o1")])
    assert main(base + ["--output-dir", str(tmp_path / "o2"), "--allow-pickle"]) == 0
