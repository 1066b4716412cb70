"""FusionTrainer and ``fusion-train fuse`` on a tiny random Llama with in-memory stores (CPU, fast)."""
import importlib
import json
import shutil

import pytest
import torch

from fusion_train.cli import main
from fusion_train.fuse.config import FusionConfig
from fusion_train.fuse.data import FusionCollator, FusionDataset
from fusion_train.fuse.losses import sft_loss
from fusion_train.testing import InMemoryReader, random_samples, remapped_like, tiny_llama
from fusion_train.fuse.trainer import FusionTrainer

V, K = 320, 8
FP = "e" * 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _dataset(n=8, n_sources=1, seed=0):
    pivot = random_samples(n, V, K, seed=seed)
    sources = [remapped_like(pivot, V, K, seed=seed + 1 + i) for i in range(n_sources)]
    readers = [InMemoryReader(pivot, {"fingerprint": FP})] + [InMemoryReader(s, {"fingerprint": FP}) for s in sources]
    names = ["pivot"] + ["src%d" % i for i in range(n_sources)]
    return FusionDataset(readers[0], readers[1:], names=names)


def _config(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=2,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    base.update(kw)
    return FusionConfig(**base)


def test_sft_part_equals_model_loss():
    model = tiny_llama(V)
    batch = FusionCollator()([_dataset(n=3)[i] for i in range(3)])
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    assert sft_loss(out.logits, batch["labels"]).item() == pytest.approx(out.loss.item(), rel=1e-5)


@pytest.mark.parametrize("granularity,n_sources", [("sequence", 1), ("token", 2)])
def test_trainer_logs_losses_and_choice_rates(tmp_path, granularity, n_sources):
    ds = _dataset(n_sources=n_sources)
    trainer = FusionTrainer(
        model=tiny_llama(V), args=_config(tmp_path, max_steps=4, granularity=granularity), train_dataset=ds
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "sft_loss" in h]
    assert len(logs) == 2
    for h in logs:
        rates = [h["choice_rate/%s" % n] for n in ds.names]
        assert sum(rates) == pytest.approx(1.0, abs=1e-5)
        assert all(0 < r < 1 for r in rates)  # random CEs: every teacher wins somewhere
        # the logged total is lambda * SFT + (1 - lambda) * fusion
        assert h["loss"] == pytest.approx(0.9 * h["sft_loss"] + 0.1 * h["fusion_loss"], rel=1e-3)
        assert 0 < h["topk_mass/pivot"] < 1


def test_given_normalizers_replace_the_batch_counts_and_keep_the_dtype():
    """sft_loss / fusion_loss with the step's counts (float64, as the trainer all-reduces them) divide the same
    sums and stay float32; loss_counts gives this batch's own denominators."""
    from fusion_train.fuse.losses import TeacherTargets, fusion_loss, loss_counts

    ds = _dataset(n=3, n_sources=1)
    batch = FusionCollator()([ds[i] for i in range(3)])
    teachers = [TeacherTargets.from_dict(t) for t in batch["teachers"]]
    logits = torch.randn(*batch["input_ids"].shape, V)
    counts = loss_counts(batch["labels"], teachers, mask=batch["fusion_mask"])
    own = fusion_loss(logits, teachers, mask=batch["fusion_mask"], labels=batch["labels"])
    assert int(counts[1]) == int(own.positions) and int(counts[0]) == int(batch["labels"][:, 1:].ne(-100).sum())
    doubled = counts * 2
    half = fusion_loss(logits, teachers, mask=batch["fusion_mask"], labels=batch["labels"],
                       sft_normalizer=doubled[0], fusion_normalizer=doubled[1])
    assert half.loss.dtype == half.sft.dtype == torch.float32
    assert half.loss.item() == pytest.approx(own.loss.item() / 2, rel=1e-6)
    assert half.sft.item() == pytest.approx(own.sft.item() / 2, rel=1e-6)
    assert sft_loss(logits, batch["labels"], normalizer=doubled[0]).item() == pytest.approx(own.sft.item() / 2,
                                                                                            rel=1e-6)


def _one_step(tmp_path, batch, accumulate, **kw):
    """The logged loss of one optimizer step over the first 4 samples and the weights after it."""
    trainer = FusionTrainer(
        model=tiny_llama(V, seed=0),
        # plain SGD with lr 1: the weights move by the gradient itself (Adam's first step would hide its size)
        args=_config(tmp_path, max_steps=1, logging_steps=1, lambda_sft=0.5, per_device_train_batch_size=batch,
                     gradient_accumulation_steps=accumulate, optim="sgd", learning_rate=1.0, **kw),
        train_dataset=_dataset(n=4, n_sources=2),
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "sft_loss" in h]
    return logs[0], [p.detach().clone() for p in trainer.model.parameters()]


@pytest.mark.parametrize("fused", [True, False])
def test_gradient_accumulation_equals_one_batch(tmp_path, fused):
    """loss_normalization="global": 2 micro-batches of 2 accumulated are one batch of 4 (the samples' response
    lengths differ, so averaging the two micro-batch means — FuseChat's "micro_batch" — is not)."""
    one, w_one = _one_step(tmp_path / "one", 4, 1, fused_output_loss=fused)
    two, w_two = _one_step(tmp_path / "two", 2, 2, fused_output_loss=fused)
    for key in ("loss", "sft_loss", "fusion_loss"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key
    for a, b in zip(w_two, w_one):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    micro, w_micro = _one_step(tmp_path / "micro", 2, 2, fused_output_loss=fused, loss_normalization="micro_batch")
    # measured: the micro-batch means move some weights 7e-3 away from the one-batch step, the global 2e-8
    assert max((a - b).abs().max().item() for a, b in zip(w_micro, w_one)) > 1e-4


def test_loss_decreases_on_repeated_batch(tmp_path):
    ds = _dataset(n=4)
    model = tiny_llama(V)
    trainer = FusionTrainer(model=model, args=_config(tmp_path, max_steps=25, lambda_sft=0.5), train_dataset=ds)
    batch = trainer.data_collator([ds[i] for i in range(4)])

    def total_loss():
        model.eval()
        with torch.no_grad():
            return trainer.compute_loss(model, trainer._prepare_inputs(dict(batch))).item()

    before = total_loss()
    trainer.train()
    after = total_loss()
    assert after < 0.8 * before


def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path):
    ds = _dataset()
    kw = dict(lr_scheduler_type="constant", learning_rate=5e-3, logging_steps=1)
    straight = FusionTrainer(model=tiny_llama(V), args=_config(tmp_path / "a", max_steps=6, **kw), train_dataset=ds)
    straight.train()

    first = FusionTrainer(
        model=tiny_llama(V),
        args=_config(tmp_path / "b", max_steps=3, save_strategy="steps", save_steps=3, **kw),
        train_dataset=ds,
    )
    first.train()
    ckpt = tmp_path / "b" / "checkpoint-3"
    assert ckpt.is_dir()
    resumed = FusionTrainer(
        model=tiny_llama(V, seed=123),  # weights come from the checkpoint
        args=_config(tmp_path / "b", max_steps=6, **kw),
        train_dataset=ds,
    )
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert resumed.state.global_step == 6
    for (name, a), (_, b) in zip(straight.model.named_parameters(), resumed.model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    assert any("choice_rate/src0" in h and h["step"] == 6 for h in resumed.state.log_history)


def test_run_library_entry_point_with_loaded_model_and_readers(tmp_path):
    import fusion_train.fuse as fuse

    pivot = random_samples(8, V, K, seed=3)
    summary = fuse.run(
        _config(tmp_path / "out", max_steps=2),
        tiny_llama(V),
        InMemoryReader(pivot, {"fingerprint": FP}),
        [InMemoryReader(remapped_like(pivot, V, K, seed=4), {"fingerprint": FP})],
        teacher_names=["src"],
    )
    assert summary["global_step"] == 2 and summary["teachers"] == ["pivot", "src"]
    assert "choice_rate/src" in summary["last_log"]
    assert json.loads((tmp_path / "out" / "fuse_summary.json").read_text())["global_step"] == 2


def test_importing_the_package_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, fusion_train.fuse as f; assert callable(f.run); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- CLI ---------------------------------------------------------------------------------------


@pytest.fixture()
def cli_env(tmp_path, monkeypatch):
    """A saved tiny model and in-memory stores reachable through fusion_train.fuse.run.open_reader."""
    model_dir = tmp_path / "pivot-model"
    tiny_llama(V).save_pretrained(model_dir)
    pivot = random_samples(8, V, K, seed=3)
    stores = {
        "mem://pivot": InMemoryReader(pivot, {"fingerprint": FP}),
        "mem://internlm2": InMemoryReader(remapped_like(pivot, V, K, seed=4), {"fingerprint": FP}),
        "mem://wrong-vocab": InMemoryReader(remapped_like(pivot, V, K, seed=5), {"fingerprint": "9" * 64}),
        "mem://partial": InMemoryReader(remapped_like(pivot, V, K, seed=6)[:6], {"fingerprint": FP}),
    }
    # the module, not the function the package face re-exports under the same name
    monkeypatch.setattr(importlib.import_module("fusion_train.fuse.run"), "open_reader", lambda url: stores[url])
    return model_dir, tmp_path


def _fuse_args(model_dir, out, *extra):
    return [
        "fuse", "--model", str(model_dir), "--pivot-store", "mem://pivot", "--teacher-store", "mem://internlm2",
        "--output-dir", str(out), "--per-device-train-batch-size", "4", "--learning-rate", "1e-3",
        "--logging-steps", "1", "--report-to", "none", "--use-cpu", "--disable-tqdm", "true", *extra,
    ]


def test_cli_trains_saves_refuses_and_resumes(cli_env, capsys):
    from transformers import AutoModelForCausalLM

    model_dir, tmp = cli_env
    out = tmp / "fused"
    rc = main(_fuse_args(model_dir, out, "--max-steps", "2", "--save-steps", "2", "--activation-checkpointing",
                         "--bf16", "--json"))
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["global_step"] == 2 and summary["teachers"] == ["pivot", "internlm2"]
    assert "choice_rate/internlm2" in summary["last_log"]
    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert loaded.config.vocab_size == V
    assert (out / "checkpoint-2").is_dir() and (out / "fuse_summary.json").is_file()

    rc = main(_fuse_args(model_dir, out, "--max-steps", "2"))
    assert rc == 2
    assert "not empty" in capsys.readouterr().err

    rc = main(_fuse_args(model_dir, out, "--max-steps", "4", "--resume-from-checkpoint", "last"))
    assert rc == 0
    summary = json.loads((out / "fuse_summary.json").read_text())
    assert summary["global_step"] == 4 and summary["resumed_from"].endswith("checkpoint-2")


def test_cli_rejects_teacher_in_wrong_vocabulary(cli_env, capsys):
    model_dir, tmp = cli_env
    args = _fuse_args(model_dir, tmp / "o", "--max-steps", "1")
    args[args.index("mem://internlm2")] = "mem://wrong-vocab"
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0  # one line, raised before the weights load
    assert "wrong-vocab" in err and "pivot" in err and "9999" in err and "eeee" in err
    assert not (tmp / "o").exists() or not any((tmp / "o").iterdir())


def test_cli_missing_samples_error_or_skip(cli_env, capsys):
    model_dir, tmp = cli_env
    args = _fuse_args(model_dir, tmp / "o", "--max-steps", "1", "--json")
    args[args.index("mem://internlm2")] = "mem://partial"
    assert main(args) == 2
    assert "'s6'" in capsys.readouterr().err
    assert main(args + ["--on-missing", "skip"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["samples"] == 6 and summary["skipped_samples"] == 2


def test_cli_bad_options_and_help(cli_env, capsys):
    model_dir, tmp = cli_env
    assert main(_fuse_args(model_dir, tmp / "o", "--tail", "exact", "--temperature", "2")) == 2
    assert "temperature" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["fuse", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "--resume-from-checkpoint" in text and "--lambda_sft" in text


def test_cli_never_runs_remote_code_or_unpickles_unasked(cli_env, capsys):
    """A model whose config needs its repository's code (auto_map, unknown model_type) is refused with one
    line and no prompt; a folder with only pytorch_model.bin (a pickle) is refused unless --allow-pickle."""
    import torch

    model_dir, tmp = cli_env
    remote = tmp / "remote-model"
    shutil.copytree(model_dir, remote)
    cfg = json.loads((remote / "config.json").read_text())
    cfg.update(model_type="evil_llama", auto_map={"AutoConfig": "configuration_evil.EvilConfig",
                                                  "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"})
    (remote / "config.json").write_text(json.dumps(cfg))
    marker = tmp / "ran"
    (remote / "configuration_evil.py").write_text("open(%r, 'w').write('x')\n" % str(marker))
    assert main(_fuse_args(remote, tmp / "o1", "--max-steps", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "custom code" in err and "--trust-remote-code" in err, err
    assert not marker.exists()

    pickled = tmp / "pickled-model"
    pickled.mkdir()
    shutil.copy(model_dir / "config.json", pickled / "config.json")
    from safetensors.torch import load_file

    torch.save(load_file(str(model_dir / "model.safetensors")), pickled / "pytorch_model.bin")
    assert main(_fuse_args(pickled, tmp / "o2", "--max-steps", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--allow-pickle" in err, err
    assert main(_fuse_args(pickled, tmp / "o3", "--max-steps", "1", "--allow-pickle", "--json")) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["global_step"] == 1
