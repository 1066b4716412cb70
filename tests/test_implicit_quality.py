"""benchmarks/implicit_quality: the --quick run end to end on the real models (slow, gguf) and the report's
arithmetic (fast)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.implicit_quality.config import presets
from benchmarks.implicit_quality.report import _ms, _se_verdict

REPO = Path(__file__).resolve().parents[1]


def test_presets_budget_and_seeds():
    p = presets()
    assert p["default"].seeds >= 3 and p["reduced"].seeds >= 3 and p["gpu"].seeds >= 3
    assert p["gpu"].train_layers == 0 and p["default"].train_layers > 0
    assert p["gpu"].n_train > p["default"].n_train > p["reduced"].n_train > p["quick"].n_train
    assert p["default"].alpha_end == 0.1 and p["default"].alpha_high > 0.1


def test_mean_std_and_verdict():
    assert _ms([1.0, 3.0]) == {"mean": 2.0, "std": pytest.approx(2 ** 0.5)}
    assert _se_verdict([0.1, 0.12, 0.11]) == "better than SFT-only by > 2 s.e."
    assert _se_verdict([-0.1, 0.1, 0.0]) == "within 2 s.e. of SFT-only"
    assert _se_verdict([0.0, 0.0, 0.0]) == "identical on every seed"


@pytest.mark.slow
@pytest.mark.gguf
def test_quick_run_end_to_end(tmp_path):
    pytest.importorskip("gguf")
    try:
        from tokalign.models.cache import converted_dir

        converted_dir("smollm2-135m-instruct"), converted_dir("gemma3-270m")
    except Exception as exc:  # no network and no cache: the models cannot be had
        pytest.skip("real models unavailable: %s" % exc)
    cmd = [sys.executable, "-m", "benchmarks.implicit_quality", "--quick", "--threads", "1", "--no-plot",
           "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "res"), "--json"]
    out = subprocess.run(cmd, cwd=str(REPO), capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout)
    arms = res["arms"]
    for arm in ("untouched", "sft", "dpo", "ln_dpo", "wrpo_sft", "wrpo@0.1", "wrpo@high", "crlft"):
        assert arm in arms, arm
        assert 0.0 <= arms[arm]["accuracy_ms"]["mean"] <= 1.0
    assert (tmp_path / "res" / "implicit_quality-quick.md").exists()
    # a second run is all cache hits
    again = subprocess.run(cmd, cwd=str(REPO), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and json.loads(again.stdout)["arms"]["sft"]["accuracy"] == arms["sft"]["accuracy"]
