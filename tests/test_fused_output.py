"""Fused output layer + loss (fusion_train.fused_output) against the unfused path on materialised logits."""
import logging

import numpy as np
import pytest
import torch

from fusion_train.fuse import loss_registry
from fusion_train.fuse.losses import TAILS, TeacherTargets, combine_losses, fusion_loss, sft_loss
from fusion_train.fused_output import (
    OutputHead,
    chunk_rows_for,
    forward_hidden,
    fused_fusion_loss,
    fused_response_log_probs,
    fused_sequence_log_probs,
    fused_weighted_nll,
    head_mismatch,
    log_probs_at,
    output_head,
    token_log_probs,
)
from fusion_train.preference.losses import response_log_probs, weighted_sft_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")

H = 12


def _teacher(b, length, vocab, k, seed, holes=True):
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(vocab, generator=g)[:k] for _ in range(b * length)]).view(b, length, k)
    logits = torch.randn(b, length, k, generator=g).sort(-1, descending=True).values * 2.5
    probs = torch.softmax(logits, -1) * (0.5 + 0.5 * torch.rand(b, length, 1, generator=g))  # exact: a tail
    if holes:
        ids[0, 2] = -1  # nothing mapped
        ids[1 % b, 3, -2:] = -1  # fewer valid slots
    probs = torch.where(ids >= 0, probs, torch.zeros(()))
    return TeacherTargets(ids, probs, probs.sum(-1), torch.rand(b, generator=g) * 3,
                          torch.rand(b, length, generator=g) * 3)


def _problem(b=3, length=11, vocab=97, k=5, n_teachers=2, seed=0, tied=False, bias=False, dtype=torch.float32):
    """Hidden states from a small differentiable 'body' over embeddings (so a tied weight gets two gradients)."""
    g = torch.Generator().manual_seed(seed)
    emb = (torch.randn(vocab, H, generator=g) * 0.7).to(dtype).requires_grad_()
    proj = (torch.randn(H, H, generator=g) / H ** 0.5).to(dtype).requires_grad_()
    weight = emb if tied else (torch.randn(vocab, H, generator=g) * 0.7).to(dtype).requires_grad_()
    b_vec = (torch.randn(vocab, generator=g) * 0.3).to(dtype).requires_grad_() if bias else None
    input_ids = torch.randint(0, vocab, (b, length), generator=g)
    labels = input_ids.clone()
    labels[:, : length // 3] = -100  # the instruction
    labels[-1, -3:] = -100  # padding of the last row
    mask = torch.rand(b, length, generator=g) > 0.25
    teachers = [_teacher(b, length, vocab, k, seed + 1 + t) for t in range(n_teachers)]
    params = [p for p in (emb, proj, weight, b_vec) if p is not None]
    params = list({id(p): p for p in params}.values())
    return dict(emb=emb, proj=proj, weight=weight, bias=b_vec, input_ids=input_ids, labels=labels, mask=mask,
                teachers=teachers, params=params)


def _hidden(pb):
    return torch.tanh(pb["emb"][pb["input_ids"]] @ pb["proj"]) * 3


def _grads(loss, params):
    return torch.autograd.grad(loss, params, allow_unused=True)


def _assert_same(a, b, tol=1e-5):
    for x, y in zip(a, b):
        if x is None or y is None:
            assert (x is None or not x.abs().any()) and (y is None or not y.abs().any())
            continue
        torch.testing.assert_close(x.float(), y.float(), rtol=tol, atol=tol)


def _both(pb, head_kw, loss_kw, lambda_sft=0.9, use_labels=True, chunk_rows=4):
    head = OutputHead(pb["weight"], pb["bias"], **head_kw)
    labels = pb["labels"] if use_labels else None
    # unfused: the model's logits, then fusion_train.fuse.losses
    logits = head.logits(_hidden(pb))
    if use_labels and lambda_sft >= 1.0:
        ref = sft_loss(logits, labels)
        ref_parts = (ref, None)
    else:
        out = fusion_loss(logits, pb["teachers"], mask=pb["mask"], labels=labels, **loss_kw)
        ref = combine_losses(out.sft, out.loss, lambda_sft) if use_labels else out.loss
        ref_parts = (out.sft, out.loss)
    ref_g = _grads(ref, pb["params"])
    fused = fused_fusion_loss(_hidden(pb), head, pb["teachers"], labels=labels, lambda_sft=lambda_sft,
                              mask=pb["mask"], chunk_rows=chunk_rows, **loss_kw)
    fused_g = _grads(fused.loss, pb["params"])
    return ref, ref_parts, ref_g, fused, fused_g


LOSS_MODES = [(kind, tail, t) for kind in loss_registry.names() for tail in TAILS
              for t in ((1.0, 0.5, 2.0) if tail == "renormalize" else (1.0,))]


@pytest.mark.parametrize("kind,tail,temperature", LOSS_MODES)
@pytest.mark.parametrize("tied,softcap", [(False, None), (True, 4.0)])
def test_fusion_loss_equals_unfused(kind, tail, temperature, tied, softcap):
    pb = _problem(tied=tied)
    loss_kw = dict(kind=kind, tail=tail, temperature=temperature, granularity="token")
    ref, (ref_sft, ref_fus), ref_g, fused, fused_g = _both(pb, dict(softcap=softcap), loss_kw)
    assert fused.loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-5)
    assert fused.sft.item() == pytest.approx(ref_sft.item(), rel=1e-5, abs=1e-5)
    assert fused.fusion.item() == pytest.approx(ref_fus.item(), rel=1e-5, abs=1e-5)
    _assert_same(fused_g, ref_g)
    out = fusion_loss(OutputHead(pb["weight"]).logits(_hidden(pb)), pb["teachers"], mask=pb["mask"], **loss_kw)
    assert torch.equal(fused.choice, out.choice) and torch.equal(fused.choice_counts, out.choice_counts)


@pytest.mark.parametrize("variant", ["bias_scale", "sft_only", "fusion_only", "pivot_sequence", "no_mask"])
def test_fusion_loss_variants_equal_unfused(variant):
    pb = _problem(bias=variant == "bias_scale", seed=3)
    head_kw = dict(scale=0.6, softcap=3.0) if variant == "bias_scale" else {}
    loss_kw = dict(kind="kl", tail="bucket")
    if variant == "pivot_sequence":
        loss_kw.update(fusion="pivot", granularity="sequence")
    if variant == "no_mask":
        pb["mask"] = None
    lam = 1.0 if variant == "sft_only" else 0.9
    ref, _, ref_g, fused, fused_g = _both(pb, head_kw, loss_kw, lambda_sft=lam, use_labels=variant != "fusion_only")
    assert fused.loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-5)
    _assert_same(fused_g, ref_g)


def test_no_positions_gives_zero_loss_and_gradients():
    pb = _problem()
    pb["labels"][:] = -100
    pb["mask"][:] = False
    ref, _, ref_g, fused, fused_g = _both(pb, {}, dict(kind="ce", tail="exact"))
    assert fused.loss.item() == ref.item() == 0.0
    _assert_same(fused_g, ref_g)
    head = OutputHead(pb["weight"])
    empty = torch.zeros(0, H, requires_grad=True)
    lp = log_probs_at(empty, head, torch.zeros(0, 3, dtype=torch.long))
    assert lp.shape == (0, 3)
    gh, gw = torch.autograd.grad(lp.sum(), (empty, pb["weight"]))
    assert gh.shape == (0, H) and not gw.abs().any()


def test_chunk_size_does_not_change_the_result():
    pb = _problem(b=4, length=16, seed=5)
    runs = []
    for rows in (1, 3, 1000):
        out = fused_fusion_loss(_hidden(pb), OutputHead(pb["weight"]), pb["teachers"], labels=pb["labels"],
                                mask=pb["mask"], chunk_rows=rows)
        runs.append((out.loss.detach(), _grads(out.loss, pb["params"])))
    for loss, g in runs[1:]:
        assert loss.item() == pytest.approx(runs[0][0].item(), rel=1e-6)
        _assert_same(g, runs[0][1], tol=1e-6)
    assert chunk_rows_for(262144, 256) == 256
    assert chunk_rows_for(262144, 256, low_precision=True, softcap=True) == 102
    assert chunk_rows_for(10 ** 9, 1) == 1


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    n, v = 7, 13
    hidden = torch.randn(n, 4, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(v, 4, dtype=torch.float64, generator=g, requires_grad=True)
    bias = torch.randn(v, dtype=torch.float64, generator=g, requires_grad=True)
    ids = torch.randint(0, v, (n, 3), generator=g)
    ids[2, 1] = -1
    assert torch.autograd.gradcheck(
        lambda h, w, b: log_probs_at(h, OutputHead(w, b, softcap=2.0, scale=0.8), ids, chunk_rows=3),
        (hidden, weight, bias))
    # the loss function (gradients computed in the forward, scaled in the backward)
    b_, length = 2, 5
    teachers = [_teacher(b_, length, v, 3, s, holes=False) for s in (1, 2)]
    labels = torch.randint(0, v, (b_, length), generator=g)
    h3 = torch.randn(b_, length, 4, dtype=torch.float64, generator=g, requires_grad=True)

    def loss(h, w, b):
        out = fused_fusion_loss(h, OutputHead(w, b, softcap=3.0), teachers, labels=labels, kind="kl",
                                tail="bucket", chunk_rows=3)
        return out.loss * 1.7

    # torch's gradcheck runs the backward twice on one graph; this loss hands its gradients out once, so the
    # same central differences are taken here
    inputs = (h3, weight, bias)
    analytic = torch.autograd.grad(loss(*inputs), inputs)
    eps = 1e-6
    with torch.no_grad():
        for x, a in zip(inputs, analytic):
            flat = x.view(-1)
            numeric = torch.empty_like(flat)
            for i in range(flat.numel()):
                keep = flat[i].item()
                flat[i] = keep + eps
                up = loss(*inputs).item()
                flat[i] = keep - eps
                down = loss(*inputs).item()
                flat[i] = keep
                numeric[i] = (up - down) / (2 * eps)
            torch.testing.assert_close(a.reshape(-1), numeric, rtol=1e-5, atol=1e-7)
    out = loss(*inputs)
    out.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward through it runs once"):
        out.backward()


def test_bfloat16_close_to_float32():
    pb32 = _problem(seed=7)
    pb16 = {k: v for k, v in pb32.items()}
    pb16["emb"] = pb32["emb"].detach().bfloat16().requires_grad_()
    pb16["proj"] = pb32["proj"].detach().bfloat16().requires_grad_()
    pb16["weight"] = pb32["weight"].detach().bfloat16().requires_grad_()
    pb16["params"] = [pb16["emb"], pb16["proj"], pb16["weight"]]
    ref, _, ref_g, fused, fused_g = _both(pb16, {}, dict(kind="ce"), chunk_rows=5)
    exact = fused_fusion_loss(_hidden(pb32), OutputHead(pb32["weight"]), pb32["teachers"], labels=pb32["labels"],
                              mask=pb32["mask"])
    assert fused.loss.dtype == torch.float32 and fused_g[2].dtype == torch.bfloat16
    assert fused.loss.item() == pytest.approx(exact.loss.item(), rel=2e-2)
    assert fused.loss.item() == pytest.approx(ref.item(), rel=2e-2)
    for a, b in zip(fused_g, ref_g):
        assert torch.allclose(a.float(), b.float(), rtol=5e-2, atol=5e-2 * float(b.float().abs().max()))


def test_real_tokenizer_batch_equals_unfused(tokenizers_dir, corpora_dir):
    from tokalign import load_tokenizer
    from tokalign.testing import random_topk, read_items

    tok_dir = tokenizers_dir / "llama3.1"
    if not tok_dir.is_dir():
        pytest.skip("llama3.1 tokenizer not in the shared folder")
    tok = load_tokenizer(str(tok_dir))
    vocab = len(tok)
    items = read_items([corpora_dir / "alpacaeval_parallel.jsonl"], seed=0)[:2]
    rows = [np.asarray(tok.encode(it.text, add_special_tokens=True).ids[:40], dtype=np.int64) for it in items]
    length = max(len(r) for r in rows)
    input_ids = torch.zeros(len(rows), length, dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    rng = np.random.default_rng(0)
    pool = rng.choice(vocab, 4096, replace=False)
    teachers = []
    for t in range(2):
        ids = torch.full((len(rows), length, 10), -1, dtype=torch.long)
        probs = torch.zeros(len(rows), length, 10)
        for i, r in enumerate(rows):
            top_ids, top_logits, lse, _ = random_topk(rng, r, vocab, 10, pool)
            ids[i, : len(r)] = torch.from_numpy(top_ids.astype(np.int64))
            probs[i, : len(r)] = torch.from_numpy(np.exp(top_logits - lse[:, None]))
        teachers.append(TeacherTargets(ids, probs, probs.sum(-1), torch.rand(len(rows)), torch.rand(len(rows), length)))
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.from_numpy(r)
        labels[i, 4: len(r)] = torch.from_numpy(r[4:])
    mask = labels.ne(-100)
    g = torch.Generator().manual_seed(0)
    weight = (torch.randn(vocab, H, generator=g) * 0.5).requires_grad_()
    emb = (torch.randn(vocab, H, generator=g) * 0.5).requires_grad_()
    for tail in TAILS:
        hidden = torch.tanh(emb[input_ids]) * 2
        logits = OutputHead(weight).logits(hidden)
        out = fusion_loss(logits, teachers, mask=mask, labels=labels, tail=tail, granularity="token")
        ref = combine_losses(out.sft, out.loss, 0.9)
        ref_g = _grads(ref, [emb, weight])
        fused = fused_fusion_loss(torch.tanh(emb[input_ids]) * 2, OutputHead(weight), teachers, labels=labels,
                                  mask=mask, tail=tail, granularity="token", chunk_mb=4)
        assert fused.loss.item() == pytest.approx(ref.item(), rel=1e-5)
        _assert_same(_grads(fused.loss, [emb, weight]), ref_g)


# ---- preference-side functions ----------------------------------------------------------------------


def test_token_and_sequence_log_probs_equal_response_log_probs():
    pb = _problem(b=4, length=10, seed=11, tied=True)
    g = torch.Generator().manual_seed(1)
    resp = torch.zeros(4, 10, dtype=torch.bool)
    for i, start in enumerate((3, 5, 9, 10)):  # the last row has no response token
        resp[i, start:] = True
    head = OutputHead(pb["weight"], softcap=5.0)
    coef = torch.randn(4, 9, generator=g)
    ref_lp, ref_mask = response_log_probs(head.logits(_hidden(pb)), pb["input_ids"], resp)
    ref_g = _grads((ref_lp * coef).sum(), pb["params"])
    lp, mask = token_log_probs(_hidden(pb), head, pb["input_ids"], resp, chunk_rows=4)
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(lp, ref_lp, rtol=1e-5, atol=1e-5)
    _assert_same(_grads((lp * coef).sum(), pb["params"]), ref_g)
    seq, lengths = fused_sequence_log_probs(_hidden(pb), head, pb["input_ids"], resp)
    torch.testing.assert_close(seq, ref_lp.sum(-1), rtol=1e-5, atol=1e-5)
    assert lengths.tolist() == [7, 5, 1, 0]


@pytest.mark.parametrize("per_sequence", [False, True])
def test_weighted_nll_equals_weighted_sft_loss(per_sequence):
    pb = _problem(b=3, length=9, seed=13)
    head = OutputHead(pb["weight"])
    resp = torch.zeros(3, 9, dtype=torch.bool)
    resp[0, 3:], resp[1, 6:], resp[2, 2:] = True, True, True
    weights = torch.tensor([1.0, 0.1, 0.5])
    lp, mask = response_log_probs(head.logits(_hidden(pb)), pb["input_ids"], resp)
    ref = weighted_sft_loss(lp, mask, weights, per_sequence=per_sequence)
    ref_g = _grads(ref, pb["params"])
    # per position: the label, the sequence's weight (over its length for per_sequence), the global normaliser
    labels = torch.where(mask, pb["input_ids"][:, 1:], torch.full_like(mask, -100, dtype=torch.long))
    n = mask.sum(-1).float()
    w = weights[:, None] / (n.clamp_min(1)[:, None] if per_sequence else 1.0) * mask
    den = (weights * (n > 0)).sum() if per_sequence else (weights * n).sum()
    loss = fused_weighted_nll(_hidden(pb)[:, :-1], head, labels, w, normalizer=den)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    _assert_same(_grads(loss, pb["params"]), ref_g)


# ---- models and trainers ---------------------------------------------------------------------------


def _tiny_gemma2(vocab=64):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    cfg = Gemma2Config(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=64,
                       final_logit_softcapping=3.0, pad_token_id=0)
    return Gemma2ForCausalLM(cfg)


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_model_response_log_probs_equal_policy_forward(arch):
    from fusion_train.preference.trainer import policy_forward
    from fusion_train.testing import tiny_llama

    model = tiny_llama(64, hidden=16) if arch == "llama" else _tiny_gemma2()
    head = output_head(model)
    assert (head.softcap == 3.0) == (arch == "gemma2")
    assert (head.weight is model.get_input_embeddings().weight) == (arch == "gemma2")  # Gemma ties
    ids = torch.randint(3, 64, (3, 12), generator=torch.Generator().manual_seed(0))
    attn = torch.ones_like(ids)
    attn[2, -3:] = 0
    resp = torch.zeros_like(ids, dtype=torch.bool)
    resp[:, 5:] = True
    resp[2, -3:] = False
    hidden, outputs = forward_hidden(model, input_ids=ids, attention_mask=attn)
    assert outputs.logits.shape == (3, 1, 64) and head_mismatch(head, hidden, outputs) is None
    ref, ref_mask = policy_forward(model, ids, attn, resp, keep_logits=False)
    ref_g = torch.autograd.grad(ref.sum(), list(model.parameters()), allow_unused=True)
    lp, mask = fused_response_log_probs(model, ids, attn, resp, chunk_rows=5)
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(lp, ref, rtol=1e-5, atol=1e-5)
    _assert_same(torch.autograd.grad(lp.sum(), list(model.parameters()), allow_unused=True), ref_g)


def test_head_mismatch_names_the_difference():
    from fusion_train.testing import tiny_llama

    model = tiny_llama(64, hidden=16)
    ids = torch.randint(3, 64, (2, 6))
    hidden, outputs = forward_hidden(model, input_ids=ids, attention_mask=torch.ones_like(ids))
    wrong = OutputHead(model.lm_head.weight, softcap=2.0)
    assert "differ from the model's" in head_mismatch(wrong, hidden, outputs)


def _fuse_trainer(tmp_path, fused, model, **kw):
    from fusion_train.fuse.config import FusionConfig
    from fusion_train.fuse.data import FusionDataset
    from fusion_train.fuse.trainer import FusionTrainer
    from fusion_train.testing import InMemoryReader, random_samples, remapped_like

    vocab = model.config.vocab_size
    pivot = random_samples(8, vocab, 6, seed=0)
    src = remapped_like(pivot, vocab, 6, seed=1)
    fp = {"fingerprint": "e" * 64}
    ds = FusionDataset(InMemoryReader(pivot, fp), [InMemoryReader(src, fp)], names=["pivot", "src"])
    args = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, learning_rate=1e-2, logging_steps=1,
                report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0, max_steps=4,
                fused_output_loss=fused, fused_output_chunk_mb=0.01)
    args.update(kw)
    trainer = FusionTrainer(model=model, args=FusionConfig(**args), train_dataset=ds)
    trainer.train()
    return trainer, [h for h in trainer.state.log_history if "sft_loss" in h]


@pytest.mark.parametrize("arch,kw", [("llama", dict(granularity="token", tail="bucket", distill_loss="kl")),
                                     ("llama", dict(lambda_sft=1.0)),
                                     ("gemma2", dict(fusion_positions="response")),
                                     ("llama", dict(gradient_checkpointing=True)),
                                     ("llama", dict(bf16=True))])  # accelerate's autocast around the forward
def test_fusion_trainer_fused_and_unfused_trajectories_agree(tmp_path, arch, kw):
    from fusion_train.testing import tiny_llama

    make = (lambda: tiny_llama(96, hidden=16)) if arch == "llama" else (lambda: _tiny_gemma2(96))
    runs = {}
    for fused in (False, True):
        trainer, logs = _fuse_trainer(tmp_path / str(fused), fused, make(), **kw)
        assert (trainer.fused_output.off_reason(trainer.model) is None) == fused
        runs[fused] = logs
    assert len(runs[True]) == len(runs[False]) == 4
    tol = 1e-2 if kw.get("bf16") else 1e-4  # bf16 matmuls: chunked sums round differently
    for a, b in zip(runs[True], runs[False]):
        for key in ("loss", "sft_loss", "fusion_loss"):
            assert a[key] == pytest.approx(b[key], rel=tol, abs=1e-6), key
        assert a["choice_rate/pivot"] == b["choice_rate/pivot"]


def test_fusion_trainer_falls_back_when_the_head_disagrees(tmp_path, caplog, monkeypatch):
    from fusion_train.testing import tiny_llama

    model = tiny_llama(96, hidden=16)
    model.config.final_logit_softcapping = 2.0  # declared, but Llama's forward does not soft-cap
    with caplog.at_level(logging.WARNING, logger="fusion_train.fused_output.model"):
        trainer, logs = _fuse_trainer(tmp_path, True, model, max_steps=2)
    assert "differ from the model's" in trainer.fused_output.off_reason(model) and len(logs) == 2
    assert any("computing the loss from the model's logits" in r.message for r in caplog.records)


def test_trainer_setups_that_shard_the_output_layer_are_refused():
    from types import SimpleNamespace

    from fusion_train.fused_output import trainer_unsupported

    assert "FSDP" in trainer_unsupported(SimpleNamespace(is_fsdp_enabled=True))
    zero3 = SimpleNamespace(is_fsdp_enabled=False, is_deepspeed_enabled=True,
                            accelerator=SimpleNamespace(state=SimpleNamespace(
                                deepspeed_plugin=SimpleNamespace(zero_stage=3))))
    assert "ZeRO-3" in trainer_unsupported(zero3)
    zero3.accelerator.state.deepspeed_plugin.zero_stage = 2
    assert trainer_unsupported(zero3) is None


@pytest.mark.parametrize("kind", ["dpo", "wrpo", "crlft"])
def test_preference_trainers_fused_and_unfused_trajectories_agree(tmp_path, kind):
    """PreferenceTrainer / WeightedSFTTrainer with fused_output_loss=True (the default: response log-probs from
    FusedOutput.response_log_probs) and False (policy_forward over the model's logits) give the same losses and
    weights, step by step."""
    import fusion_train.preference.trainer as ptrainer
    from fusion_train.preference.config import PreferenceConfig, SFTConfig
    from fusion_train.preference.data import ChatEncoder, PreferenceDataset, SFTDataset, read_rows
    from preference_helpers import (TOKENIZERS, load_tiny, pair_rows, sft_rows, tiny_model_dir, trainer_kwargs,
                                    write_jsonl, wrpo_rows)

    if not (TOKENIZERS / "mistral-v1").is_dir():
        pytest.skip("shared tokenizers not found")
    model_dir = tiny_model_dir(tmp_path / "m")
    results = {}
    for fused in (False, True):
        model, tok = load_tiny(model_dir)
        # SGD: Adam would turn float rounding in near-zero gradients into lr-sized steps
        kw = trainer_kwargs(tmp_path / str(fused), max_steps=3, learning_rate=0.5, optim="sgd",
                            fused_output_loss=fused, fused_output_chunk_mb=0.05)
        if kind == "crlft":
            rows = read_rows(write_jsonl(tmp_path / "s.jsonl", sft_rows(8)), "sft")
            ds = SFTDataset(rows, ChatEncoder(tok), weights=[1.0, 0.1, 0.5, 1.0, 0.1, 0.1, 0.3, 1.0])
            trainer = ptrainer.WeightedSFTTrainer(model=model, args=SFTConfig(**kw), train_dataset=ds)
        else:
            fmt = "wrpo" if kind == "wrpo" else "pairs"
            rows = wrpo_rows(8) if kind == "wrpo" else pair_rows(8)
            ds = PreferenceDataset(read_rows(write_jsonl(tmp_path / ("%s.jsonl" % fmt), rows), fmt), ChatEncoder(tok))
            cfg = PreferenceConfig(**kw, loss=kind, beta=0.5, reference="live", alpha=0.4)
            trainer = ptrainer.PreferenceTrainer(model=model, args=cfg, train_dataset=ds)
        calls = []
        inner = trainer.fused_output.response_log_probs

        def counted(*args, **kwargs):
            out = inner(*args, **kwargs)
            calls.append(out is not None)
            return out

        trainer.fused_output.response_log_probs = counted
        trainer.train()
        assert (bool(calls) and all(calls)) == fused  # the fused path ran (and never fell back) only when asked
        results[fused] = ([h["loss"] for h in trainer.state.log_history if "loss" in h],
                          torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    (l0, p0), (l1, p1) = results[False], results[True]
    assert len(l0) == 3 and l1 == pytest.approx(l0, rel=1e-5, abs=1e-7)
    torch.testing.assert_close(p1, p0, rtol=1e-5, atol=1e-6)
