"""fusion_train.merge: mergekit as an oracle on tiny Llama models, hand-computed SCE/VaRM cases,
streaming IO, CLI behaviour and bad input."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from fusion_train.merge import MergeConfig, MergeOptions, ModelSpec, load_yaml, run_merge, validate
from fusion_train.merge.registry import TensorTask, get_method
from tokalign.errors import TokalignError

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# ------------------------------------------------------------------------------------------------
# fixtures: a tiny Llama base and three fine-tuned copies (transformers save_pretrained)


def _tiny_config(vocab=128, intermediate=64):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=intermediate, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                       tie_word_embeddings=False, torch_dtype="float32")


def _save_model(cfg, state, path: Path, seed: int):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    if state is not None:
        model.load_state_dict(state)
    model.save_pretrained(path, safe_serialization=True)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="session")
def family(tmp_path_factory) -> dict:
    """{'base': Path, 't1'..'t3': Path, 'root': Path}: fine-tuned = base + per-model noise with
    different scales per model and per tensor (so variance-based weights differ)."""
    root = tmp_path_factory.mktemp("family")
    cfg = _tiny_config()
    base = _save_model(cfg, None, root / "base", seed=0)
    out = {"root": root, "base": root / "base"}
    gen = torch.Generator().manual_seed(1)
    for j, scale in enumerate((0.01, 0.03, 0.02), start=1):
        state = {}
        for i, (k, v) in enumerate(base.items()):
            s = scale * (1 + (i * (j + 1)) % 3)
            state[k] = v + s * torch.randn(v.shape, generator=gen)
        _save_model(cfg, state, root / ("t%d" % j), seed=0)
        out["t%d" % j] = root / ("t%d" % j)
    return out


def _load_dir(path: Path) -> dict:
    out = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def _max_diff(a: dict, b: dict) -> float:
    assert set(a) == set(b), set(a) ^ set(b)
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _run_mergekit(conf: dict, out: Path) -> None:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge as mk_run
    from mergekit.options import MergeOptions as MkOptions

    mk_run(MergeConfiguration.model_validate(conf), str(out),
           options=MkOptions(copy_tokenizer=False, write_model_card=False, lazy_unpickle=False, quiet=True))


def _ours_from_yaml(conf: dict, tmp: Path, out: Path, **opts) -> dict:
    yml = tmp / ("%s.yml" % out.name)
    yml.write_text(yaml.safe_dump(conf))
    run_merge(load_yaml(yml), out, MergeOptions(progress=False, **opts))
    return _load_dir(out)


# ------------------------------------------------------------------------------------------------
# mergekit oracle (fp32, CPU): agreement within 1e-6


def _oracle_cases(f):
    b, t1, t2, t3 = (str(f[k]) for k in ("base", "t1", "t2", "t3"))
    return {
        "linear": ({"merge_method": "linear", "dtype": "float32",
                    "models": [{"model": t1, "parameters": {"weight": 0.5}}, {"model": t2, "parameters": {"weight": 0.3}},
                               {"model": t3, "parameters": {"weight": 0.2}}]}, {}),
        "task_arithmetic": ({"merge_method": "task_arithmetic", "base_model": b, "dtype": "float32",
                             "parameters": {"lambda": 0.8},
                             "models": [{"model": t1, "parameters": {"weight": 0.7}},
                                        {"model": t2, "parameters": {"weight": 0.4}},
                                        {"model": t3, "parameters": {"weight": -0.2}}]}, {}),
        "ties": ({"merge_method": "ties", "base_model": b, "dtype": "float32",
                  "models": [{"model": t1, "parameters": {"weight": 0.6, "density": 0.5}},
                             {"model": t2, "parameters": {"weight": 0.3, "density": 0.7}},
                             {"model": t3, "parameters": {"weight": 0.5, "density": 0.3}}]}, {}),
        "slerp": ({"merge_method": "slerp", "base_model": b, "dtype": "float32",
                   "parameters": {"t": [{"filter": "self_attn", "value": 0.2}, {"filter": "mlp", "value": [0.1, 0.9]},
                                        {"value": 0.6}]},
                   "models": [{"model": b}, {"model": t2}]}, {}),
        "sce_mergekit": ({"merge_method": "sce", "base_model": b, "dtype": "float32",
                          "parameters": {"select_topk": 0.3},
                          "models": [{"model": t1}, {"model": t2}, {"model": t3}]}, {"variant": "mergekit"}),
    }


@pytest.mark.parametrize("case", ["linear", "task_arithmetic", "ties", "slerp", "sce_mergekit"])
def test_matches_mergekit(family, tmp_path, case):
    conf, extra = _oracle_cases(family)[case]
    _run_mergekit(conf, tmp_path / "mk")
    ours_conf = json.loads(json.dumps(conf))
    ours_conf.setdefault("parameters", {}).update(extra)
    ours = _ours_from_yaml(ours_conf, tmp_path, tmp_path / "ours")
    theirs = _load_dir(tmp_path / "mk")
    diff = _max_diff(ours, theirs)
    assert diff <= 1e-6, "%s: max |ours - mergekit| = %g" % (case, diff)
    # and the merge actually moved away from the base (the comparison is not vacuous)
    base = _load_dir(family["base"])
    assert _max_diff(ours, base) > 1e-3


def test_merged_model_loads_with_transformers(family, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "m"
    cfg = validate(MergeConfig("sce", family["base"], [ModelSpec(family["t1"]), ModelSpec(family["t2"])]))
    summary = run_merge(cfg, out, MergeOptions(progress=False, max_shard_bytes=40_000))
    assert summary.n_shards > 1 and (out / "model.safetensors.index.json").is_file()
    assert (out / "config.json").is_file() and (out / "generation_config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(out)
    merged = _load_dir(out)
    sd = model.state_dict()
    for k, v in merged.items():
        assert torch.equal(sd[k], v), k
    logits = model(torch.tensor([[1, 2, 3, 4]])).logits
    assert torch.isfinite(logits).all()
    assert not list(tmp_path.glob(".m.merge-tmp"))


# ------------------------------------------------------------------------------------------------
# DARE: deterministic for a seed


def test_dare_deterministic_for_seed(family, tmp_path):
    def dare(name, seed, method="dare_ties", density=0.4):
        cfg = validate(MergeConfig(method, family["base"], [ModelSpec(family["t1"], {"weight": 0.5, "density": density}),
                                                            ModelSpec(family["t2"], {"weight": 0.5, "density": density})]))
        run_merge(cfg, tmp_path / name, MergeOptions(progress=False, seed=seed))
        return _load_dir(tmp_path / name)

    a, b, c = dare("a", 1), dare("b", 1), dare("c", 2)
    assert _max_diff(a, b) == 0.0
    assert _max_diff(a, c) > 1e-4
    # density 1 drops nothing: DARE-TIES == TIES (normalize off) and DARE-linear == task arithmetic
    full = dare("full", 3, density=1.0)
    cfg = validate(MergeConfig("ties", family["base"], [ModelSpec(family["t1"], {"weight": 0.5}), ModelSpec(family["t2"], {"weight": 0.5})],
                               {"normalize": False}))
    run_merge(cfg, tmp_path / "ties", MergeOptions(progress=False))
    assert _max_diff(full, _load_dir(tmp_path / "ties")) <= 1e-7


def test_dare_drop_rate_and_rescale():
    from fusion_train.merge.dare import random_drop

    delta = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    kept = random_drop(delta.clone(), 0.3, rescale=False, key=5)
    frac = float((kept != 0).float().mean())
    assert abs(frac - 0.3) < 0.01
    assert torch.equal(kept[kept != 0], delta[kept != 0])
    scaled = random_drop(delta.clone(), 0.3, rescale=True, key=5)
    assert torch.allclose(scaled.abs().sum(), delta.abs().sum(), rtol=1e-4)
    assert torch.equal(scaled != 0, kept != 0)
    assert torch.allclose(scaled[kept != 0], kept[kept != 0] * (delta.abs().sum() / kept.abs().sum()), rtol=1e-4)


# ------------------------------------------------------------------------------------------------
# SCE variant=fusechat and VaRM against hand-computed cases


def _task(base, models, params, name="w"):
    return TensorTask(name=name, base=torch.tensor(base, dtype=torch.float32),
                      models=[torch.tensor(m, dtype=torch.float32) for m in models],
                      model_params=[{} for _ in models], params=params)


def test_sce_hand_computed():
    sce = get_method("sce")()
    models = [[1.0, 4.0], [3.0, -1.0], [2.0, 1.0]]  # base = 0, so these are the deltas
    # tau = 1: eta = [8.5, 5, 2.5] / 16; element 1: sum > 0 erases model 2's -1
    out = sce.merge(_task([0.0, 0.0], models, {"select_topk": 1.0, "variant": "fusechat"}))
    assert torch.allclose(out, torch.tensor([57 / 32, 73 / 22]), atol=1e-6)
    # tau = 0.5: var = [2/3, 114/27] -> element 1 selected; eta from masked energies = [16, 1, 1] / 18
    fc = sce.merge(_task([0.0, 0.0], models, {"select_topk": 0.5, "variant": "fusechat"}))
    assert torch.allclose(fc, torch.tensor([21 / 18, 65 / 17]), atol=1e-6)
    # mergekit variant merges the masked deltas: the unselected element keeps the base value
    mk = sce.merge(_task([0.0, 0.0], models, {"select_topk": 0.5, "variant": "mergekit"}))
    assert torch.allclose(mk, torch.tensor([0.0, 65 / 17]), atol=1e-6)
    # all deltas zero under the mask -> uniform eta (fusechat); merged with unmasked deltas
    out = sce.merge(_task([1.0, 1.0], [[2.0, 1.0], [2.0, 1.0]], {"select_topk": 0.5, "variant": "fusechat"}))
    assert torch.allclose(out, torch.tensor([2.0, 1.0]))


def _sce_fusechat_reference(base: np.ndarray, models: list, tau: float) -> np.ndarray:
    """Plain-numpy transcription of the released FuseChat sce_merging (float64)."""
    d = np.stack([m - base for m in models]).astype(np.float64)
    n = len(models)
    if tau < 1:
        var = d.var(axis=0)
        k = int(tau * np.count_nonzero(var))
        mask = np.zeros(var.size)
        if k > 0:
            mask[np.argsort(-np.abs(var).ravel(), kind="stable")[:k]] = 1
        mask = mask.reshape(var.shape)
        energy = [float(((d[j] * mask) ** 2).sum()) / d[j].size for j in range(n)]
    else:
        energy = [float((d[j] ** 2).sum()) / d[j].size for j in range(n)]
    total = sum(energy)
    eta = [1.0 / n] * n if total == 0 else [e / total for e in energy]
    out = np.array(base, dtype=np.float64).copy()
    majority = np.where(d.sum(0) >= 0, 1.0, -1.0)
    for idx in np.ndindex(base.shape):
        num = den = 0.0
        for j in range(n):
            if np.sign(d[j][idx]) == majority[idx]:
                num += eta[j] * d[j][idx]
                den += eta[j]
        out[idx] += num / (den if den != 0 else 1.0)
    return out


@pytest.mark.parametrize("tau", [0.1, 0.35, 1.0])
def test_sce_fusechat_matches_reference(tau):
    g = torch.Generator().manual_seed(int(tau * 100))
    base = torch.randn(12, 9, generator=g)
    models = [base + s * torch.randn(12, 9, generator=g) for s in (0.1, 0.3, 0.2)]
    out = get_method("sce")().merge(TensorTask("w", base, models, [{}] * 3, {"select_topk": tau, "variant": "fusechat"}))
    ref = _sce_fusechat_reference(base.numpy(), [m.numpy() for m in models], tau)
    assert np.abs(out.numpy() - ref).max() < 1e-5


def _write_ckpt(path: Path, tensors: dict) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: torch.tensor(v, dtype=torch.float32) for k, v in tensors.items()}, str(path / "model.safetensors"),
              metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps({"architectures": ["Toy"], "model_type": "toy", "num_hidden_layers": 2}))
    return path


@pytest.fixture()
def varm_family(tmp_path):
    A, B, E = "model.layers.0.a.weight", "model.layers.0.b.weight", "model.embed.weight"
    base = _write_ckpt(tmp_path / "base", {A: [0.0, 0.0], B: [0.0, 0.0, 0.0, 0.0], E: [1.0, 1.0]})
    m1 = _write_ckpt(tmp_path / "m1", {A: [1.0, 1.0], B: [0.0, 0.0, 0.0, 0.0], E: [1.0, 3.0]})
    m2 = _write_ckpt(tmp_path / "m2", {A: [0.0, 2.0], B: [2.0, 0.0, 0.0, 2.0], E: [1.0, 1.0]})
    return tmp_path, base, [m1, m2], (A, B, E)


@pytest.mark.parametrize("granularity,expected", [
    # matrix: A: means 1, 2 -> W = 1/3, 2/3; B: means 0, 2 -> 0, 1; E: means 2, 0 -> 1, 0
    ("matrix", {"A": [1 / 3, 1 / 3 + 4 / 3], "B": [2.0, 0.0, 0.0, 2.0], "E": [1.0, 3.0]}),
    # layer 0 = A + B: sums of squares 2 and 4+8=12 over 6 entries -> W = 1/7, 6/7; E alone (as matrix)
    ("layer", {"A": [1 / 7, 1 / 7 + 12 / 7], "B": [12 / 7, 0.0, 0.0, 12 / 7], "E": [1.0, 3.0]}),
    # model: all 8 entries: sums 2+4=6 and 12 -> W = 1/3, 2/3
    ("model", {"A": [1 / 3, 1 / 3 + 4 / 3], "B": [4 / 3, 0.0, 0.0, 4 / 3], "E": [1.0, 1 / 3 * 3 + 2 / 3]}),
    # parameter: per element; A[0]: 1 vs 0 -> model 1; A[1]: 1 vs 4 -> 1/5, 4/5 -> 0.2 + 1.6;
    # B zeros where both deltas are 0 -> uniform average of equal values
    ("parameter", {"A": [1.0, 0.2 + 1.6], "B": [2.0, 0.0, 0.0, 2.0], "E": [1.0, 3.0]}),
])
def test_varm_hand_computed(varm_family, granularity, expected):
    tmp, base, models, (A, B, E) = varm_family
    cfg = validate(MergeConfig("varm", base, [ModelSpec(m) for m in models], {"granularity": granularity}))
    run_merge(cfg, tmp / ("out-" + granularity), MergeOptions(progress=False))
    got = _load_dir(tmp / ("out-" + granularity))
    for key, name in (("A", A), ("B", B), ("E", E)):
        assert torch.allclose(got[name], torch.tensor(expected[key]), atol=1e-6), (granularity, key, got[name])


# ------------------------------------------------------------------------------------------------
# IO / CLI behaviour and bad input


def _cli(*argv) -> int:
    from fusion_train.cli import main

    return main([str(a) for a in argv])


def test_cli_sce_json_and_overwrite(family, tmp_path, capsys):
    out = tmp_path / "o"
    rc = _cli("merge", "--method", "sce", "--base", family["base"], "--models", family["t1"], family["t2"],
              "--select-topk", "0.2", "--out", out, "--json", "--no-progress")
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == "sce" and summary["n_models"] == 2 and summary["n_merged"] == summary["n_tensors"]
    # not empty -> refused, nothing touched
    before = (out / "model.safetensors").read_bytes()
    rc = _cli("merge", "--method", "linear", "--base", family["base"], "--models", family["t1"], "--out", out, "--no-progress")
    assert rc == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before
    rc = _cli("merge", "--method", "linear", "--base", family["base"], "--models", family["t1"], "--out", out,
              "--overwrite", "--no-progress", "--dtype", "bfloat16")
    assert rc == 0
    merged = _load_dir(out)
    assert all(v.dtype == torch.bfloat16 for v in merged.values())
    t1 = _load_dir(family["t1"])
    assert _max_diff(merged, {k: v.to(torch.bfloat16) for k, v in t1.items()}) == 0.0
    assert json.loads((out / "config.json").read_text()).get("torch_dtype", json.loads((out / "config.json").read_text()).get("dtype")) == "bfloat16"


def test_cli_bad_parameter_is_one_line_error(family, tmp_path, capsys):
    rc = _cli("merge", "--method", "slerp", "--base", family["base"], "--models", family["t1"], family["t2"],
              "--t", "0.5", "--out", tmp_path / "x")
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "at most 1 model" in err and "\n" not in err
    rc = _cli("merge", "--method", "ties", "--base", family["base"], "--models", family["t1"], "--t", "0.5", "--out", tmp_path / "x")
    assert rc == 2 and "not a parameter of method ties" in capsys.readouterr().err
    bad = tmp_path / "bad.yml"
    bad.write_text("merge_method: ties\nbase_model: %s\nmodels:\n  - model: %s\n    parameters: {densty: 0.5}\n" % (family["base"], family["t1"]))
    rc = _cli("merge", "--config", bad, "--out", tmp_path / "x")
    err = capsys.readouterr().err
    assert rc == 2 and "bad.yml" in err and "models[0]" in err and "densty" in err


def _clone(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_bad_inputs_clear_errors(family, tmp_path):
    base = family["base"]
    # different architecture
    other = _clone(family["t1"], tmp_path / "arch")
    cfg = json.loads((other / "config.json").read_text())
    cfg["architectures"], cfg["model_type"] = ["MistralForCausalLM"], "mistral"
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TokalignError, match="architecture"):
        run_merge(validate(MergeConfig("ties", base, [ModelSpec(other)])), tmp_path / "o1", MergeOptions(progress=False))
    # different shapes
    _save_model(_tiny_config(intermediate=48), None, tmp_path / "shape", seed=3)
    with pytest.raises(TokalignError, match=r"mlp.*shape \[32, 48\] but base_model"):
        run_merge(validate(MergeConfig("ties", base, [ModelSpec(tmp_path / "shape")])), tmp_path / "o2", MergeOptions(progress=False))
    # NaN in a checkpoint
    nan = _clone(family["t1"], tmp_path / "nan")
    sd = load_file(str(nan / "model.safetensors"))
    sd["model.layers.1.self_attn.q_proj.weight"][3, 4] = float("nan")
    save_file(sd, str(nan / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(TokalignError, match=r"nan.*layers\.1\.self_attn\.q_proj.*NaN"):
        run_merge(validate(MergeConfig("sce", base, [ModelSpec(family["t2"]), ModelSpec(nan)])), tmp_path / "o3", MergeOptions(progress=False))
    # nothing that looks like a finished output was left behind
    assert not (tmp_path / "o3").exists()
    # missing model folder
    with pytest.raises(TokalignError, match="not found"):
        run_merge(validate(MergeConfig("ties", base, [ModelSpec(tmp_path / "nope")])), tmp_path / "o4", MergeOptions(progress=False))


def test_vocab_mismatch_policy(family, tmp_path):
    big = tmp_path / "big"
    sd = {k: v.clone() for k, v in _load_dir(family["t1"]).items()}
    torch.manual_seed(0)
    for k in ("model.embed_tokens.weight", "lm_head.weight"):
        sd[k] = torch.cat([sd[k], torch.randn(8, sd[k].shape[1])])
    cfg = _tiny_config(vocab=136)
    _save_model(cfg, sd, big, seed=0)
    mc = validate(MergeConfig("task_arithmetic", family["base"], [ModelSpec(big), ModelSpec(family["t2"])]))
    with pytest.raises(TokalignError, match="vocab.*136 rows.*--vocab-policy truncate"):
        run_merge(mc, tmp_path / "o", MergeOptions(progress=False))
    s = run_merge(mc, tmp_path / "o", MergeOptions(progress=False, vocab_policy="truncate"))
    assert s.truncated == ["lm_head.weight", "model.embed_tokens.weight"]
    got = _load_dir(tmp_path / "o")
    ref = validate(MergeConfig("task_arithmetic", family["base"], [ModelSpec(family["t1"]), ModelSpec(family["t2"])]))
    run_merge(ref, tmp_path / "r", MergeOptions(progress=False))
    assert _max_diff(got, _load_dir(tmp_path / "r")) == 0.0


def test_interrupted_merge_resumes(family, tmp_path, monkeypatch):
    from fusion_train.merge import ties

    cfg = validate(MergeConfig("ties", family["base"], [ModelSpec(family["t1"], {"density": 0.5}), ModelSpec(family["t2"])]))
    clean = tmp_path / "clean"
    run_merge(cfg, clean, MergeOptions(progress=False, max_shard_bytes=30_000))
    calls = {"n": 0}

    def flaky(orig):
        def merge(self, task):
            calls["n"] += 1
            if calls["n"] == 12:
                raise KeyboardInterrupt
            return orig(self, task)
        return merge

    # the native (numpy) path calls merge_array, the torch path merge: interrupt whichever runs
    for attr in ("merge", "merge_array"):
        monkeypatch.setattr(ties.Ties, attr, flaky(getattr(ties.Ties, attr)))
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_merge(cfg, out, MergeOptions(progress=False, max_shard_bytes=30_000))
    assert not out.exists()
    tmp = tmp_path / ".out.merge-tmp"
    assert tmp.is_dir() and list(tmp.glob("*.part"))
    monkeypatch.undo()
    s = run_merge(cfg, out, MergeOptions(progress=False, max_shard_bytes=30_000))
    assert s.resumed_shards >= 1 and not tmp.exists()
    assert _max_diff(_load_dir(out), _load_dir(clean)) == 0.0


def test_shard_writer_roundtrip(tmp_path):
    from fusion_train.merge.io import ShardWriter, plan_shards, write_index

    tensors = {"a": torch.randn(3, 5), "b": torch.arange(7, dtype=torch.int64), "c": torch.randn(2, 2).to(torch.bfloat16),
               "d": torch.zeros(0, 4)}
    shards = plan_shards([(k, tuple(v.shape), v.dtype) for k, v in tensors.items()], 64)
    assert len(shards) >= 2
    for s in shards:
        with ShardWriter(tmp_path, s) as w:
            for name, _, _ in s.entries:
                w.add(name, tensors[name])
    write_index(tmp_path, shards)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(tensors)
    for name, t in tensors.items():
        with safe_open(str(tmp_path / index["weight_map"][name]), framework="pt") as f:
            assert torch.equal(f.get_tensor(name), t)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(family, tmp_path):
    cfg = validate(MergeConfig("sce", family["base"], [ModelSpec(family["t1"]), ModelSpec(family["t2"]), ModelSpec(family["t3"])],
                               {"select_topk": 0.3}))
    run_merge(cfg, tmp_path / "cpu", MergeOptions(progress=False))
    run_merge(cfg, tmp_path / "gpu", MergeOptions(progress=False, device="cuda"))
    assert _max_diff(_load_dir(tmp_path / "cpu"), _load_dir(tmp_path / "gpu")) <= 1e-5


def test_out_never_destroys_an_input(family, tmp_path, capsys):
    """--out that is, contains or lies inside an input is refused, with or without --overwrite; --overwrite
    replaces only a previous merge output; nothing of the inputs is touched."""
    base = _clone(family["base"], tmp_path / "models" / "base")
    t1 = _clone(family["t1"], tmp_path / "models" / "t1")
    before = {p: p.read_bytes() for p in sorted((tmp_path / "models").rglob("*")) if p.is_file()}
    args = ("merge", "--method", "linear", "--base", base, "--models", t1, "--no-progress", "--overwrite")
    for out, how in ((base, "is the input base_model"), (tmp_path / "models", "contains the input"),
                     (t1 / "sub", "lies inside the input models[0]")):
        assert _cli(*args, "--out", out) == 2
        err = capsys.readouterr().err
        assert how in err and len(err.strip().splitlines()) == 1, err
    # a non-empty folder that is not a merge output is never replaced, even with --overwrite
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    assert _cli(*args, "--out", user) == 2
    assert "not a previous `fusion-train merge` output" in capsys.readouterr().err
    assert (user / "notes.txt").read_text() == "mine"
    after = {p: p.read_bytes() for p in sorted((tmp_path / "models").rglob("*")) if p.is_file()}
    assert after == before


def test_out_dot_is_the_working_directory(family, tmp_path, monkeypatch, capsys):
    """`--out .` merges into the (empty) working directory and leaves no temp folder behind."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert _cli("merge", "--method", "linear", "--base", family["base"], "--models", family["t1"],
                "--out", ".", "--no-progress") == 0
    assert (work / "model.safetensors").is_file() or list(work.glob("model-*.safetensors"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_full_disk_is_one_line_and_resumes(family, tmp_path, monkeypatch, capsys):
    """ENOSPC while writing a shard: one line naming the file and the fix, exit 2; the re-run resumes."""
    import errno

    from fusion_train.merge import io as merge_io

    orig, calls = merge_io.ShardWriter.add, {"n": 0}

    def full(self, name, array):
        calls["n"] += 1
        if calls["n"] == 12:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.part))
        return orig(self, name, array)

    monkeypatch.setattr(merge_io.ShardWriter, "add", full)
    out = tmp_path / "out"
    args = ("merge", "--method", "linear", "--base", family["base"], "--models", family["t1"], family["t2"],
            "--max-shard-size", "30000", "--no-progress", "--json")
    assert _cli(*args, "--out", out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err and ".part" in err
    assert "run the same command again" in err and not out.exists()
    monkeypatch.undo()
    assert _cli(*args, "--out", out) == 0
    assert json.loads(capsys.readouterr().out)["resumed_shards"] >= 1
