"""The torch-free merge path (fusion_train.merge.runner.ArrayPath: numpy arrays + native kernels)
against the torch path (TorchPath, ``TOKALIGN_MERGE_NATIVE=0``), the numpy dtype conversions against
torch's, and that the CLI really does not import torch (or transformers) when the kernels can merge."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from fusion_train.merge import MergeConfig, MergeOptions, ModelSpec, run_merge, validate
from fusion_train.merge import native, runner
from fusion_train.merge.dtypes import BFLOAT16, FLOAT16, FLOAT32, from_float32, to_float32
from fusion_train.merge.registry import TensorTask, get_method

REPO = Path(__file__).resolve().parent.parent
core = pytest.importorskip("tokalign._core")
if not hasattr(core, "merge_gta"):
    pytest.skip("native core built without merge kernels", allow_module_level=True)

NATIVE_METHODS = ["linear", "task_arithmetic", "ties", "dare_ties", "dare_linear", "sce"]


def _write_model(path: Path, state: dict) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                                                  "num_hidden_layers": 2, "torch_dtype": "float32"}))
    return path


def _family(root: Path, dtype: torch.dtype = torch.float32, n_models: int = 3) -> dict:
    """base + n fine-tuned copies (Llama-like names, an int64 buffer that is copied, not merged)."""
    g = torch.Generator().manual_seed(0)
    shapes = {"model.embed_tokens.weight": (64, 16), "model.layers.0.mlp.up_proj.weight": (40, 16),
              "model.layers.1.self_attn.q_proj.weight": (16, 16), "model.norm.weight": (16,),
              "lm_head.weight": (64, 16)}
    base = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    out = {"base": _write_model(root / "base", {**{k: v.to(dtype) for k, v in base.items()},
                                                "model.rotary.inv_freq_idx": torch.arange(8)})}
    for j in range(1, n_models + 1):
        state = {k: (v + (0.01 * j) * torch.randn(v.shape, generator=g)).to(dtype) for k, v in base.items()}
        state["model.rotary.inv_freq_idx"] = torch.arange(8)
        out["t%d" % j] = _write_model(root / ("t%d" % j), state)
    return out


def _config(method: str, fam: dict, **params) -> MergeConfig:
    """Three models with per-model weight / density where the method has them."""
    cls = get_method(method)
    models = [ModelSpec(fam[k], {n: v for n, v in (("weight", w), ("density", d)) if cls.param(n) is not None})
              for k, w, d in (("t1", 0.5, 0.6), ("t2", 0.3, 0.4), ("t3", 0.4, 0.8))]
    return validate(MergeConfig(method, None if method == "linear" else fam["base"], models, dict(params)))


def _run(cfg: MergeConfig, out: Path, monkeypatch, *, native_on: bool, **opts) -> dict:
    """Merge with the array path (native_on: the torch path must not run) or the torch path."""
    with monkeypatch.context() as m:
        if native_on:
            def no_torch(*a, **k):
                raise AssertionError("the torch path ran")
            m.setattr(runner.TorchPath, "__init__", no_torch)
        else:
            m.setenv("TOKALIGN_MERGE_NATIVE", "0")
        run_merge(cfg, out, MergeOptions(progress=False, **opts))
    return load_file(str(out / "model.safetensors"))


def _diff(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    assert all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape for k in a)
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


# ------------------------------------------------------------------------------------------------
# whole merges: array path == torch path


CASES = {
    "linear": {},
    "task_arithmetic": {"lambda": 0.8},
    "ties": {},
    "dare_ties": {"rescale": False},
    "dare_ties_rescale": {},
    "dare_linear": {"rescale": False},
    "sce_fusechat": {"select_topk": 0.3},
    "sce_mergekit": {"select_topk": 0.3, "variant": "mergekit"},
}
# the kernel does the torch code's float operations in order: bit for bit (<= 3 models); the rest
# agree to float rounding (docs/merge.md)
EXACT = {"task_arithmetic", "ties", "dare_ties", "dare_linear"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_array_path_equals_torch_path(tmp_path, monkeypatch, case):
    method = case.replace("_rescale", "").replace("_fusechat", "").replace("_mergekit", "")
    fam = _family(tmp_path / "m")
    cfg = _config(method, fam, **CASES[case])
    fast = _run(cfg, tmp_path / "fast", monkeypatch, native_on=True, seed=3)
    ref = _run(cfg, tmp_path / "ref", monkeypatch, native_on=False, seed=3)
    diff = _diff(fast, ref)
    if case in EXACT:
        assert diff == 0.0, case
    else:  # SCE's eta and DARE's L1 norms are summed in double by the kernels, in fp32 by torch
        scale = max(float(t.abs().max()) for t in ref.values())
        assert diff <= 1e-7 * scale, (case, diff)
    assert torch.equal(fast["model.rotary.inv_freq_idx"], torch.arange(8))
    assert float((fast["model.norm.weight"].double() - load_file(str(fam["t1"] / "model.safetensors"))[
        "model.norm.weight"].double()).abs().max()) > 1e-4  # it merged something


@pytest.mark.parametrize("in_dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("out_dtype", ["bfloat16", "float16", "float32", None])
def test_dtypes_array_path_equals_torch_path(tmp_path, monkeypatch, in_dtype, out_dtype):
    """bf16/fp16 inputs widened exactly, outputs rounded as torch's .to(dtype): the same bytes."""
    fam = _family(tmp_path / "m", in_dtype)
    cfg = _config("task_arithmetic", fam, **{"lambda": 0.8})
    cfg.out_dtype = out_dtype
    fast = _run(cfg, tmp_path / "fast", monkeypatch, native_on=True)
    ref = _run(cfg, tmp_path / "ref", monkeypatch, native_on=False)
    assert _diff(fast, ref) == 0.0
    want = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, None: in_dtype}[out_dtype]
    assert fast["lm_head.weight"].dtype == want
    cfg_json = json.loads((tmp_path / "fast" / "config.json").read_text())
    assert cfg_json["torch_dtype"] == (out_dtype or "float32")


def test_conversions_match_torch():
    """dtypes.to_float32 / from_float32 against torch on rounding ties, subnormals, inf, NaN, overflow."""
    g = np.random.default_rng(0)
    bits = g.integers(0, 2 ** 32, 200_000, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32).copy()  # every kind of float, NaNs included
    values[:8] = [0.0, -0.0, np.inf, -np.inf, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 65520.0, 1e-45]
    t = torch.from_numpy(values)
    for dt, tdt in ((BFLOAT16, torch.bfloat16), (FLOAT16, torch.float16), (FLOAT32, torch.float32)):
        stored = from_float32(values, dt)
        assert stored.dtype == dt.storage
        want = t.to(tdt).view(torch.int16 if tdt != torch.float32 else torch.int32).numpy()
        got = stored.view(want.dtype)
        finite = np.isfinite(values)
        assert np.array_equal(got[finite], want[finite]), dt
        back = to_float32(stored, dt)
        ref = t.to(tdt).float().numpy()
        assert np.array_equal(back[finite], ref[finite])
        assert np.array_equal(np.isnan(back), np.isnan(ref))


def test_methods_merge_array_is_the_torch_cpu_kernel():
    """merge_array on numpy == merge on CPU torch tensors (which runs the same kernel on views)."""
    g = torch.Generator().manual_seed(5)
    base = torch.randn(300, 7, generator=g)
    models = [base + 0.02 * torch.randn(300, 7, generator=g) for _ in range(3)]
    for name in NATIVE_METHODS:
        cls = get_method(name)
        assert cls.has_native()
        method = cls(None)
        mp = [{"weight": 0.6, "density": 0.5}, {"weight": 0.3, "density": 0.3}, {"weight": 0.4, "density": 0.9}]
        mp = [{k: v for k, v in p.items() if cls.param(k) is not None} for p in mp]
        params = {p.name: p.default for p in cls.params if p.scope == "shared"}
        if name == "sce":
            params["select_topk"] = 0.2
        use_base = cls.uses_base
        torch_task = TensorTask("model.layers.0.w", base if use_base else None, models, mp, params, seed=2)
        np_task = torch_task.with_tensors(base.numpy() if use_base else None, [m.numpy() for m in models])
        got = method.merge_array(np_task)
        assert isinstance(got, np.ndarray) and got.shape == (300, 7)
        assert np.array_equal(got, method.merge(torch_task).numpy()), name
    assert not get_method("slerp").has_native() and not get_method("varm").has_native()


def test_array_path_falls_back_to_torch_per_tensor(tmp_path, monkeypatch):
    """A tensor the kernels cannot take (e.g. >= 2^32 elements; simulated) runs the torch code on
    the same numpy arrays: the torch path's result."""
    fam = _family(tmp_path / "m")
    cfg = _config("ties", fam)
    ref = _run(cfg, tmp_path / "ref", monkeypatch, native_on=False)
    monkeypatch.setattr(native, "applicable", lambda arrays: False)
    got = run_merge(cfg, tmp_path / "fb", MergeOptions(progress=False))
    assert got.device == "cpu"
    assert _diff(load_file(str(tmp_path / "fb" / "model.safetensors")), ref) == 0.0


def test_array_path_refuses_nan(tmp_path):
    fam = _family(tmp_path / "m")
    bad = load_file(str(fam["t2"] / "model.safetensors"))
    bad["model.layers.0.mlp.up_proj.weight"][3, 4] = float("nan")
    save_file(bad, str(fam["t2"] / "model.safetensors"), metadata={"format": "pt"})
    from tokalign.errors import TokalignError

    with pytest.raises(TokalignError, match=r"models\[1\].*t2.*up_proj.*NaN"):
        run_merge(_config("linear", fam), tmp_path / "o", MergeOptions(progress=False))
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------
# the CLI does not import torch / transformers unless the torch path is needed

_PROBE = r"""
import json, sys
from fusion_train.cli import main
for argv in json.loads(sys.argv[1]):
    try:
        rc = main(argv)
    except SystemExit as exc:  # --help
        rc = exc.code
    assert rc == 0, (argv, rc)
print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers'})))
"""


def _probe(runs: list, env_extra: dict = None) -> list:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(runs)], capture_output=True, text=True, env=env,
                          cwd=str(REPO), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cli_native_methods_do_not_import_torch(tmp_path):
    fam = _family(tmp_path / "m")
    models = [str(fam[k]) for k in ("t1", "t2")]
    runs = [["merge", "--help"]]
    for method in NATIVE_METHODS:
        base = [] if method == "linear" else ["--base", str(fam["base"])]
        runs.append(["merge", "--method", method] + base + ["--models"] + models +
                    ["--out", str(tmp_path / method), "--no-progress", "--threads", "1", "--dtype", "bfloat16"])
    assert _probe(runs) == []
    assert all((tmp_path / m / "model.safetensors").is_file() for m in NATIVE_METHODS)


def test_cli_imports_torch_only_when_needed(tmp_path):
    """The probe can fail: the torch path (switch off, or a method without a kernel) imports torch."""
    fam = _family(tmp_path / "m")
    lin = ["merge", "--method", "linear", "--models", str(fam["t1"]), str(fam["t2"]), "--no-progress"]
    assert _probe([lin + ["--out", str(tmp_path / "a")]], {"TOKALIGN_MERGE_NATIVE": "0"}) == ["torch"]
    slerp = ["merge", "--method", "slerp", "--base", str(fam["base"]), "--models", str(fam["t1"]), "--t", "0.3",
             "--no-progress", "--out", str(tmp_path / "b")]
    assert _probe([slerp]) == ["torch"]
