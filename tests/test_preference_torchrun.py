"""A real multi-process run: ``torchrun --nproc_per_node 2`` on CPU (gloo) for ``fusion-train dpo`` and
``fusion-train fuse``: a few steps give the loss of one process with the same global batch (~30 s each)."""
import json
import os
import subprocess
import sys

import pytest

from preference_helpers import SHARED, pair_rows, tiny_model_dir, write_jsonl

pytestmark = pytest.mark.slow

COMMON = ["--max-steps", "2", "--use-cpu", "--report-to", "none", "--logging-steps", "1", "--save-strategy", "no",
          "--disable-tqdm", "true", "--learning-rate", "1e-2", "--json"]


def _run(args, nproc, out):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "fusion_train.cli"] + args
    else:
        cmd = [sys.executable, "-m", "fusion_train.cli"] + args
    proc = subprocess.run(cmd + ["--output-dir", str(out)], env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _losses(out, name):
    summary = json.loads((out / name).read_text())
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return summary["train_loss"], [h["loss"] for h in history if "loss" in h]


def test_dpo_two_processes_equal_one(tmp_path):
    model = tiny_model_dir(tmp_path / "m")
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(8))
    base = ["dpo", "--model", str(model), "--data", str(data)] + COMMON
    _run(base + ["--per-device-train-batch-size", "4", "--ref-logps", str(tmp_path / "r1.json")], 1, tmp_path / "one")
    # two processes: the reference pass is split over them and gathered; the batch is 2 + 2
    _run(base + ["--per-device-train-batch-size", "2", "--ref-logps", str(tmp_path / "r2.json")], 2, tmp_path / "two")
    one, two = _losses(tmp_path / "one", "dpo_summary.json"), _losses(tmp_path / "two", "dpo_summary.json")
    r1, r2 = (sum(json.loads((tmp_path / n).read_text())["logps"], []) for n in ("r1.json", "r2.json"))
    assert r2 == pytest.approx(r1, rel=1e-5)
    assert two[1] == pytest.approx(one[1], rel=1e-5) and two[0] == pytest.approx(one[0], rel=1e-5)
    assert one[1][-1] < one[1][0]


def test_fuse_two_processes_equal_one(tmp_path):
    from tokalign import load_tokenizer
    from tokalign.testing import read_items, write_store

    tokdir = SHARED / "tokenizers" / "openchat-3.5"
    model = tiny_model_dir(tmp_path / "m", tokenizer="openchat-3.5")
    items = read_items([SHARED / "corpora" / "code_math.jsonl"], seed=0)[:8]
    write_store(tmp_path / "pivot.zarr", load_tokenizer(str(tokdir)), items, seed=0, max_length=96)
    base = ["fuse", "--model", str(model), "--pivot-store", str(tmp_path / "pivot.zarr"), "--max-length", "48",
            "--lambda-sft", "0.5"] + COMMON
    _run(base + ["--per-device-train-batch-size", "4"], 1, tmp_path / "one")
    _run(base + ["--per-device-train-batch-size", "2"], 2, tmp_path / "two")
    one, two = _losses(tmp_path / "one", "fuse_summary.json"), _losses(tmp_path / "two", "fuse_summary.json")
    # loss_normalization="global": both parts are token means over the step's whole batch (both processes)
    assert two[1] == pytest.approx(one[1], rel=1e-5) and two[0] == pytest.approx(one[0], rel=1e-5)
    assert one[1][-1] < one[1][0]
