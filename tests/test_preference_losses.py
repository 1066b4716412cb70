"""Identities of the preference and conditioned losses (pure torch), and parity with TRL's DPO losses."""
import math

import pytest
import torch
import torch.nn.functional as F

from fusion_train.preference.losses import (AlphaSchedule, dpo_loss, response_log_probs, weighted_sft_loss,
                                            wrpo_loss)


def _logps(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g, dtype=torch.float64) * 5 - 20 for _ in range(6)]


def test_dpo_is_log2_when_policy_equals_reference():
    pc, pr, *_ = _logps()
    assert torch.allclose(dpo_loss(pc, pr, pc, pr, beta=0.1), torch.full((6,), math.log(2), dtype=torch.float32))
    lengths = torch.arange(1, 7)
    out = dpo_loss(pc, pr, pc, pr, beta=10, length_normalize=True, chosen_lengths=lengths, rejected_lengths=lengths)
    assert torch.allclose(out, torch.full((6,), math.log(2)))
    out = wrpo_loss(pc, pr, pc, pc, pr, pc, alpha=0.3, beta=0.01)
    assert torch.allclose(out, torch.full((6,), math.log(2)))


def test_dpo_closed_forms():
    pc, pr, rc, rr, _, _ = _logps()
    beta = 0.5
    h_w, h_l = (pc - rc).float(), (pr - rr).float()
    assert torch.allclose(dpo_loss(pc, pr, rc, rr, beta=beta), -F.logsigmoid(beta * (h_w - h_l)))
    nw, nl = torch.tensor([3, 5, 7, 1, 2, 9]), torch.tensor([4, 4, 2, 8, 1, 3])
    expect = -F.logsigmoid(beta * (h_w / nw - h_l / nl))
    got = dpo_loss(pc, pr, rc, rr, beta=beta, length_normalize=True, chosen_lengths=nw, rejected_lengths=nl)
    assert torch.allclose(got, expect)
    eps = 0.1
    z = beta * (h_w - h_l)
    expect = -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)
    assert torch.allclose(dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=eps), expect)
    with pytest.raises(ValueError):
        dpo_loss(pc, pr, rc, rr, beta=beta, length_normalize=True)


def test_wrpo_reduces_to_dpo_at_alpha_0_and_1():
    ps, pt, pl, rs, rt, rl = _logps(seed=1)
    beta = 0.2
    assert torch.allclose(wrpo_loss(ps, pt, pl, rs, rt, rl, alpha=0.0, beta=beta), dpo_loss(pt, pl, rt, rl, beta=beta))
    assert torch.allclose(wrpo_loss(ps, pt, pl, rs, rt, rl, alpha=1.0, beta=beta), dpo_loss(ps, pl, rs, rl, beta=beta))


def test_wrpo_gradient_is_eq8():
    ps, pt, pl, rs, rt, rl = [t.clone().requires_grad_(i < 3) for i, t in enumerate(_logps(seed=2))]
    alpha, beta = 0.3, 0.7
    wrpo_loss(ps, pt, pl, rs, rt, rl, alpha=alpha, beta=beta).sum().backward()
    with torch.no_grad():
        # Eq. 8: ∇L = −β σ(r̂_l − r̂_w) [α ∇log π(y_ws) + (1−α) ∇log π(y_wt) − ∇log π(y_l)]
        r_w = alpha * beta * (ps - rs) + (1 - alpha) * beta * (pt - rt)
        r_l = beta * (pl - rl)
        s = torch.sigmoid(r_l - r_w)
    assert torch.allclose(ps.grad, -beta * s * alpha, atol=1e-6)
    assert torch.allclose(pt.grad, -beta * s * (1 - alpha), atol=1e-6)
    assert torch.allclose(pl.grad, beta * s, atol=1e-6)


def test_alpha_schedule():
    s = AlphaSchedule(0.1)
    assert [s.at(x, 100) for x in (0, 50, 100, 150)] == pytest.approx([0.0, 0.05, 0.1, 0.1])
    assert AlphaSchedule(0.1, dynamic=False).at(0, 100) == 0.1
    with pytest.raises(ValueError):
        AlphaSchedule(1.5)


def _sft_batch(seed=0, b=5, t=7, v=11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=g, dtype=torch.float64).float()
    ids = torch.randint(0, v, (b, t), generator=g)
    mask = torch.rand(b, t, generator=g) < 0.6
    mask[:, 0] = False
    mask[:, 1] = True
    return logits, ids, mask


def test_weighted_sft_with_unit_weights_is_token_mean_cross_entropy():
    logits, ids, mask = _sft_batch()
    tok, m = response_log_probs(logits, ids, mask)
    labels = ids.masked_fill(~mask, -100)
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert weighted_sft_loss(tok, m).item() == pytest.approx(ce.item(), rel=1e-5)
    assert weighted_sft_loss(tok, m, torch.ones(5)).item() == pytest.approx(ce.item(), rel=1e-5)


def test_weighted_sft_scale_invariance_and_zero_weight_gradient():
    logits, ids, mask = _sft_batch(seed=1)
    w = torch.tensor([1.0, 0.1, 0.0, 1.0, 0.5])
    tok, m = response_log_probs(logits, ids, mask)
    for per_sequence in (False, True):
        a = weighted_sft_loss(tok, m, w, per_sequence=per_sequence)
        b = weighted_sft_loss(tok, m, 7.5 * w, per_sequence=per_sequence)
        assert a.item() == pytest.approx(b.item(), rel=1e-6)
    leaf = logits.clone().requires_grad_(True)
    tok, m = response_log_probs(leaf, ids, mask)
    weighted_sft_loss(tok, m, w).backward()
    assert leaf.grad[2].abs().max().item() == 0.0
    assert leaf.grad[0].abs().max().item() > 0.0


def test_weighted_sft_per_sequence_closed_form():
    logits, ids, mask = _sft_batch(seed=2)
    w = torch.tensor([1.0, 0.1, 0.3, 1.0, 0.5])
    tok, m = response_log_probs(logits, ids, mask)
    per_seq = (tok * m).sum(-1) / m.sum(-1)
    expect = -(w * per_seq).sum() / w.sum()
    assert weighted_sft_loss(tok, m, w, per_sequence=True).item() == pytest.approx(expect.item(), rel=1e-6)


def test_response_log_probs_gathers_log_softmax_and_accepts_kept_logits():
    logits, ids, mask = _sft_batch(seed=3)
    mask[:, :3] = False
    tok, m = response_log_probs(logits, ids, mask)
    ref = torch.log_softmax(logits[:, :-1].double(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    assert torch.allclose(tok.double(), ref * m, atol=1e-5)
    tok2, m2 = response_log_probs(logits[:, 2:], ids, mask)  # positions 0, 1 predict no response token
    assert torch.equal(m, m2) and torch.allclose(tok, tok2)
    with pytest.raises(ValueError):
        response_log_probs(logits[:, 4:], ids, mask)


# ---- parity with TRL (the pinned dev-extra test oracle) -------------------------------------------------

@pytest.mark.parametrize("loss_type,ours", [("sigmoid", "dpo"), ("sigmoid_norm", "ln_dpo")])
def test_parity_with_trl(tmp_path, loss_type, ours):
    trl = pytest.importorskip("trl")
    import datasets

    from preference_helpers import load_tiny, pair_rows, tiny_model_dir
    from fusion_train.preference.data import ChatEncoder, PreferenceCollator, PreferenceDataset, read_rows
    from fusion_train.preference.losses import dpo_loss as our_dpo
    from fusion_train.preference.trainer import policy_forward
    from preference_helpers import write_jsonl

    torch.set_num_threads(1)
    model, tok = load_tiny(tiny_model_dir(tmp_path / "m"))
    ref, _ = load_tiny(tiny_model_dir(tmp_path / "r", seed=1))  # a reference unlike the policy: h != 0
    tok.pad_token = tok.eos_token
    rows = pair_rows(4)
    beta = 0.5
    cfg = trl.DPOConfig(output_dir=str(tmp_path / "trl"), beta=beta, loss_type=[loss_type], report_to="none",
                        use_cpu=True, per_device_train_batch_size=4, max_length=None)
    trainer = trl.DPOTrainer(model=model, ref_model=ref, args=cfg, processing_class=tok,
                             train_dataset=datasets.Dataset.from_list(rows))
    examples = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer.data_collator(examples)
    trl_loss = trainer.compute_loss(trainer.model, batch).item()

    data = PreferenceDataset(read_rows(write_jsonl(tmp_path / "p.jsonl", rows), "pairs"), ChatEncoder(tok))
    for ex, it in zip(examples, data.items):  # the same tokens: prompt / completion split, EOS included
        assert it["prompt_ids"] == ex["prompt_ids"]
        assert it["responses"] == [ex["chosen_ids"], ex["rejected_ids"]]
    ours_batch = PreferenceCollator(tok.pad_token_id)(data.items)
    args = (ours_batch["input_ids"], ours_batch["attention_mask"], ours_batch["response_mask"])
    with torch.no_grad():
        tp, m = policy_forward(model, *args)
        tr, _ = policy_forward(ref, *args)
    lp, lr, n = tp.sum(-1).view(2, 4), tr.sum(-1).view(2, 4), m.sum(-1).view(2, 4)
    loss = our_dpo(lp[0], lp[1], lr[0], lr[1], beta=beta, length_normalize=ours == "ln_dpo",
                   chosen_lengths=n[0], rejected_lengths=n[1]).mean().item()
    assert loss == pytest.approx(trl_loss, rel=1e-4)
    assert abs(loss - math.log(2)) > 1e-3  # a test that could fail: the rewards are not all 0
