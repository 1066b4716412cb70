"""Native merge kernels (tokalign._core.merge_*, fusion_train.merge.native) against the torch
reference implementation (fusion_train.merge.task_arithmetic / ties / dare) on random tensors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusion_train.merge import native, rng
from fusion_train.merge.dare import random_drop
from fusion_train.merge.registry import TensorTask
from fusion_train.merge.task_arithmetic import generalized_task_arithmetic
from fusion_train.merge.ties import magnitude_topk

core = pytest.importorskip("tokalign._core")
if not hasattr(core, "merge_gta"):
    pytest.skip("native core built without merge kernels", allow_module_level=True)

SPARSIFIERS = {"magnitude": magnitude_topk, "random": random_drop, "none": None}


def _family(seed: int, n_models: int, shape, quantise: bool = False):
    """base and models (base + noise); ``quantise`` rounds the deltas to 0.05 so many |delta| tie."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    models = []
    for j in range(n_models):
        delta = (0.02 * (j + 1)) * torch.randn(shape, generator=g)
        if quantise:
            delta = torch.round(delta * 20) / 20
        models.append(base + delta)
    return base, models


def _task(base, models, weights, densities, params, name="layer.w", seed=7):
    mp = [{"weight": w, "density": d} for w, d in zip(weights, densities)]
    return TensorTask(name, base, models, mp, params, seed=seed)


def _both(task, kind, consensus):
    """(native result, torch result) of one generalized-task-arithmetic merge."""
    sparsify = SPARSIFIERS[kind]
    fast = generalized_task_arithmetic(task, consensus=consensus, sparsify=sparsify, native_kind=kind)
    ref = generalized_task_arithmetic(task, consensus=consensus, sparsify=sparsify, native_kind=None)
    return fast, ref


# ------------------------------------------------------------------------------------------------
# top-k threshold: radix select == torch.kthvalue


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 9000), frac=st.floats(0.0, 1.0), seed=st.integers(0, 2 ** 31 - 1),
       style=st.sampled_from(["normal", "ties", "tiny", "mixed"]))
def test_topk_threshold_is_kthvalue(n, frac, seed, style):
    g = np.random.default_rng(seed)
    base = g.standard_normal(n).astype(np.float32)
    if style == "normal":
        delta = g.standard_normal(n) * 0.01
    elif style == "ties":  # few distinct magnitudes, both signs, exact zeros
        delta = g.integers(-3, 4, n) * 0.25
    elif style == "tiny":  # subnormal and huge magnitudes
        delta = g.standard_normal(n) * np.float32(1e-41) + (g.random(n) < 0.1) * 1e30
    else:
        delta = np.where(g.random(n) < 0.5, 0.0, g.standard_normal(n))
    model = (base + delta.astype(np.float32)).astype(np.float32)
    k = min(n, max(1, int(frac * n)))
    got = core.merge_topk_abs_threshold(base, model, k, 2)
    mag = torch.from_numpy(model - base).abs()  # the same fp32 subtraction the kernel does
    want = float(torch.kthvalue(mag, n - k + 1).values)
    assert got == want
    assert int((mag >= got).sum()) >= k  # at least k kept; more only through ties at the cut-off


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 9000), frac=st.floats(0.0, 1.0), seed=st.integers(0, 2 ** 31 - 1),
       style=st.sampled_from(["normal", "ties", "variance", "zeros"]))
def test_kth_largest_is_kthvalue(n, frac, seed, style):
    g = np.random.default_rng(seed)
    values = {"normal": lambda: g.standard_normal(n) * 1e3,
              "ties": lambda: g.integers(-3, 4, n) * 0.5,
              "variance": lambda: g.standard_normal(n) ** 2 * 1e-6,
              "zeros": lambda: np.where(g.random(n) < 0.5, -0.0, 0.0) + (g.random(n) < 0.1)}[style]().astype(np.float32)
    k = min(n, max(1, int(frac * n)))
    got = core.merge_kth_largest(values, k, 2)
    assert got == float(torch.kthvalue(torch.from_numpy(values), n - k + 1).values)


def test_sce_variance_mask_native_equals_torch(monkeypatch):
    from fusion_train.merge.sce import variance_mask

    for seed, quantise in ((0, False), (1, True)):
        base, models = _family(seed, 3, (300, 41), quantise)
        deltas = torch.stack([m - base for m in models])
        for tau in (0.01, 0.1, 0.5):
            fast = variance_mask(deltas, tau)
            monkeypatch.setenv("TOKALIGN_MERGE_NATIVE", "0")
            ref = variance_mask(deltas, tau)
            monkeypatch.delenv("TOKALIGN_MERGE_NATIVE")
            assert torch.equal(fast, ref) and 0 < int(fast.sum()) < fast.numel()


@pytest.mark.parametrize("variant", ["fusechat", "mergekit"])
@pytest.mark.parametrize("n_models", [1, 2, 3])
def test_sce_native_matches_torch(monkeypatch, variant, n_models):
    """SCE's kernels: same selection (exact), eta from double energies (torch: fp32 dots), so the
    merge agrees to float rounding; tau 0 / 1 and a model equal to the base (zero variance) included."""
    from fusion_train.merge.sce import Sce, population_variance

    sce = Sce()
    for case, shape in enumerate([(7,), (130, 65), (9001,)]):
        base, models = _family(10 * n_models + case, n_models, shape, quantise=case == 1)
        if case == 2:
            models[0] = base.clone()
        deltas = torch.stack([m - base for m in models])
        var = torch.empty(base.numel())
        core.merge_sce_variance(base.numpy().reshape(-1), [m.numpy().reshape(-1) for m in models], var.numpy())
        # torch's addcmul_ fuses multiply-add on AVX2 CPUs (the kernel emulates that); elsewhere it
        # rounds twice: equal up to the last bit
        assert torch.allclose(var.reshape(shape), population_variance(deltas), rtol=2e-7, atol=0)
        for tau in (0.0, 0.1, 0.35, 1.0):
            task = TensorTask("w", base, models, [{}] * n_models, {"select_topk": tau, "variant": variant})
            fast = sce.merge(task)
            monkeypatch.setenv("TOKALIGN_MERGE_NATIVE", "0")
            ref = sce.merge(task)
            monkeypatch.delenv("TOKALIGN_MERGE_NATIVE")
            assert torch.allclose(fast, ref, rtol=1e-6, atol=1e-6), (case, tau, float((fast - ref).abs().max()))
    arrays = [m.numpy() for m in models]
    one = native.sce_merge(base.numpy(), arrays, 0.1, variant, num_threads=1)
    assert np.array_equal(one, native.sce_merge(base.numpy(), arrays, 0.1, variant, num_threads=3))


@pytest.mark.parametrize("n_models", [1, 2, 3, 5])
def test_linear_native_equals_torch(monkeypatch, n_models):
    from fusion_train.merge.linear import Linear

    _, models = _family(n_models, n_models, (4096 + 17,))
    for normalize in (True, False):
        task = TensorTask("w", None, models, [{"weight": 0.2 + 0.3 * j} for j in range(n_models)], {"normalize": normalize})
        fast = Linear().merge(task)
        monkeypatch.setenv("TOKALIGN_MERGE_NATIVE", "0")
        ref = Linear().merge(task)
        monkeypatch.delenv("TOKALIGN_MERGE_NATIVE")
        # the kernel rounds each weighted add once, like torch's fused multiply-add (AVX2 CPUs)
        assert torch.allclose(fast, ref, rtol=1e-6, atol=1e-6)


def test_topk_threshold_argument_errors():
    a = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="k"):
        core.merge_topk_abs_threshold(a, a, 5)
    with pytest.raises(TypeError):
        core.merge_topk_abs_threshold(a.astype(np.float64), a, 1)


# ------------------------------------------------------------------------------------------------
# fused merge == torch reference


@pytest.mark.parametrize("kind", ["magnitude", "random", "none"])
@pytest.mark.parametrize("consensus", [True, False])
@pytest.mark.parametrize("n_models", [1, 2, 3])
def test_gta_equals_torch_exactly(kind, consensus, n_models):
    """Without L1 rescale the kernel performs the torch code's float operations in the same order:
    bit-identical results (TIES keeps every entry tying at the cut-off; DARE uses the same stream)."""
    for case, (shape, quantise) in enumerate([((7,), False), ((130, 65), True), ((4096 * 2 + 3,), False)]):
        base, models = _family(100 * n_models + case, n_models, shape, quantise)
        weights = [0.7, -0.4, 1.3][:n_models]
        densities = [0.5, 0.2, 1.0][:n_models] if case != 1 else [0.37, 0.0, 0.9][:n_models]
        for normalize, lam in ((True, 1.0), (False, 0.8)):
            task = _task(base, models, weights, densities, {"normalize": normalize, "lambda": lam, "rescale": False})
            fast, ref = _both(task, kind, consensus)
            assert fast.shape == ref.shape and fast.dtype == torch.float32
            assert torch.equal(fast, ref), (case, normalize, float((fast - ref).abs().max()))
            assert not torch.equal(fast, base)


@pytest.mark.parametrize("kind", ["magnitude", "random"])
@pytest.mark.parametrize("consensus", [True, False])
def test_gta_rescale_close_to_torch(kind, consensus):
    """With rescale the kernel sums L1 norms in double, torch in fp32: equal up to float rounding."""
    base, models = _family(3, 3, (257, 129))  # no exact ties: a sum of 0 could elect either sign
    task = _task(base, models, [0.5, 0.3, 0.8], [0.3, 0.6, 0.05], {"normalize": True, "lambda": 1.0, "rescale": True})
    fast, ref = _both(task, kind, consensus)
    scale = float(ref.abs().max())
    assert torch.allclose(fast, ref, rtol=1e-5, atol=1e-6 * scale)
    # the rescale did something: without it the merge differs clearly
    task.params["rescale"] = False
    plain, _ = _both(task, kind, consensus)
    assert float((plain - fast).abs().max()) > 1e-3


def test_gta_many_models_close_to_torch():
    """With more models torch's reduction may sum in another order: equal up to float rounding."""
    base, models = _family(5, 6, (3001,))
    task = _task(base, models, [0.3, 0.1, 0.5, 0.2, 0.4, 0.6], [0.5] * 6, {"normalize": True, "lambda": 1.0, "rescale": False})
    for kind in ("magnitude", "random", "none"):
        for consensus in (True, False):
            fast, ref = _both(task, kind, consensus)
            assert torch.allclose(fast, ref, rtol=0, atol=1e-6), (kind, consensus)


@pytest.mark.parametrize("kind", ["magnitude", "random"])
def test_results_do_not_depend_on_threads(kind):
    base, models = _family(11, 2, (40_000,))
    outs = []
    for threads in (1, 2, 3):
        outs.append(native.gta_merge(base.numpy(), [m.numpy() for m in models], [0.6, 0.4], sparsify=kind, densities=[0.3, 0.5], keys=[12, 34],
                                     consensus=True, normalize=True, rescale=True, lam=1.0, num_threads=threads))
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


def test_ties_edge_cases():
    # every |delta| equal: all tie at the cut-off, so all are kept (torch path: the same)
    base = torch.zeros(10)
    models = [torch.tensor([1.0, -1.0] * 5), torch.full((10,), 2.0)]
    task = _task(base, models, [1.0, 1.0], [0.1, 0.5], {"normalize": True, "lambda": 1.0, "rescale": False})
    fast, ref = _both(task, "magnitude", True)
    assert torch.equal(fast, ref)
    assert torch.equal(fast, torch.tensor([1.5, 2.0] * 5))  # elected +: model 0's -1 entries are dropped
    # empty tensors
    empty = _task(torch.zeros(0, 4), [torch.zeros(0, 4)], [1.0], [0.5], {"normalize": True, "lambda": 1.0, "rescale": False})
    fast, ref = _both(empty, "magnitude", True)
    assert fast.shape == (0, 4) and torch.equal(fast, ref)


# ------------------------------------------------------------------------------------------------
# DARE stream


@pytest.mark.parametrize("n", [1, 2, 4097, 100_001])
def test_random_mask_native_equals_torch_stream(n):
    for key in (0, 1, rng.stream_key(3, "model.layers.0.mlp.up_proj.weight", 1), 2 ** 63 - 1):
        for density in (0.1, 0.5, 0.97):
            got = core.merge_random_keep_mask(key, rng.keep_below(density), n, 2)
            want = rng.keep_mask(key, density, n).numpy()
            assert np.array_equal(got.astype(bool), want)


def test_random_mask_statistics():
    n = 400_000
    a = rng.keep_mask(rng.stream_key(0, "w", 0), 0.3, n)
    b = rng.keep_mask(rng.stream_key(0, "w", 1), 0.3, n)
    c = rng.keep_mask(rng.stream_key(1, "w", 0), 0.3, n)
    for m in (a, b, c):
        assert abs(float(m.float().mean()) - 0.3) < 0.005
    # independent streams: agreement rate p^2 + (1 - p)^2 = 0.58, not 1
    for x, y in ((a, b), (a, c)):
        assert abs(float((x == y).float().mean()) - 0.58) < 0.005
    # even and odd elements (the two halves of one 64-bit word) are not correlated
    assert abs(float((a[0::2] & a[1::2]).float().mean()) - 0.09) < 0.005


def test_stream_keys_are_stable():
    """Golden values: changing the key derivation or the stream changes every DARE merge."""
    assert rng.stream_key(0, "w", 0) == rng.stream_key(0, "w", 0)
    assert len({rng.stream_key(s, n, j) for s in (0, 1) for n in ("a", "b") for j in (0, 1)}) == 8
    assert rng.keep_mask(42, 0.5, 16).tolist() == core.merge_random_keep_mask(42, 2 ** 31, 16).astype(bool).tolist()
    assert rng.keep_below(0.5) == 2 ** 31 and rng.keep_below(1.0) == 2 ** 32 - 1 and rng.keep_below(0.0) == 0


# ------------------------------------------------------------------------------------------------
# dispatch: when the native path runs, and the switch


def test_dispatch_and_switch(monkeypatch):
    base, models = _family(1, 2, (64, 8))
    task = _task(base, models, [0.5, 0.5], [0.5, 0.5], {"normalize": True, "lambda": 1.0, "rescale": False})
    calls = {"n": 0}
    orig = native.gta_merge

    def counting(*a, **k):
        calls["n"] += 1
        return orig(*a, **k)

    monkeypatch.setattr(native, "gta_merge", counting)
    generalized_task_arithmetic(task, consensus=True, sparsify=magnitude_topk, native_kind="magnitude")
    assert calls["n"] == 1
    # a non-contiguous input goes through torch, with the same result
    strided = [m.t().contiguous().t() for m in models]
    assert not strided[0].is_contiguous()
    t2 = _task(base, strided, [0.5, 0.5], [0.5, 0.5], {"normalize": True, "lambda": 1.0, "rescale": False})
    out = generalized_task_arithmetic(t2, consensus=True, sparsify=magnitude_topk, native_kind="magnitude")
    assert calls["n"] == 1
    want = orig(base.numpy(), [m.numpy() for m in models], [0.5, 0.5], sparsify="magnitude", densities=[0.5, 0.5],
                consensus=True, normalize=True, rescale=False, lam=1.0)
    assert torch.equal(out, torch.from_numpy(want))
    monkeypatch.setenv("TOKALIGN_MERGE_NATIVE", "0")
    generalized_task_arithmetic(task, consensus=True, sparsify=magnitude_topk, native_kind="magnitude")
    assert calls["n"] == 1 and not native.enabled()


def test_binding_rejects_bad_arrays():
    a = np.zeros(8, np.float32)
    args = ([1.0], [0], [0], [0], [0], True, True, False, 1.0, 1.0)
    with pytest.raises(ValueError, match="different size"):
        core.merge_gta(a, [np.zeros(7, np.float32)], np.zeros(8, np.float32), *args)
    with pytest.raises(ValueError, match="not a C-contiguous float32"):
        core.merge_gta(a, [np.zeros(8, np.float64)], np.zeros(8, np.float32), *args)
    with pytest.raises(ValueError, match="overlaps"):
        core.merge_gta(a, [a], a, *args)
    with pytest.raises(TypeError):  # out must be float32 as given: never a silently discarded copy
        core.merge_gta(a, [a], np.zeros(8, np.float64), *args)
    with pytest.raises(ValueError, match="one entry per model"):
        core.merge_gta(a, [a], np.zeros(8, np.float32), [1.0, 2.0], *args[1:])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["magnitude", "random"])
def test_cuda_torch_path_matches_native(kind):
    """--device cuda runs the torch path; with the shared DARE stream it matches the CPU kernel."""
    base, models = _family(2, 3, (513, 77))
    task = _task(base, models, [0.5, 0.3, 0.8], [0.3, 0.6, 0.5], {"normalize": True, "lambda": 1.0, "rescale": True})
    cpu = generalized_task_arithmetic(task, consensus=True, sparsify=SPARSIFIERS[kind], native_kind=kind)
    gpu_task = _task(base.cuda(), [m.cuda() for m in models], [0.5, 0.3, 0.8], [0.3, 0.6, 0.5],
                     {"normalize": True, "lambda": 1.0, "rescale": True})
    gpu = generalized_task_arithmetic(gpu_task, consensus=True, sparsify=SPARSIFIERS[kind], native_kind=kind)
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)
