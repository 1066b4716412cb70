"""Sparse losses, MinCE selection, dataset and collator against dense / loop references."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tokalign.errors import TokalignError
from fusion_train.fuse.data import FusionCollator, FusionDataset
from fusion_train.fuse.losses import (
    TeacherTargets,
    combine_losses,
    fusion_loss,
    min_ce_choice,
    sft_loss,
    sparse_cross_entropy,
    sparse_distill_loss,
    sparse_kl_div,
    student_log_probs_at,
)
from fusion_train.testing import InMemoryReader, random_samples, remapped_like

V, K = 50, 6


def _targets(n, seed=0, log_probs=False):
    """Teacher top-k from full random logits: ids [n, K] (with invalid slots and one empty row),
    raw top-k logits, lse, and exact probs."""
    g = torch.Generator().manual_seed(seed)
    full = torch.randn(n, V, generator=g, dtype=torch.float64) * 2.5
    lse = torch.logsumexp(full, -1)
    top, ids = full.topk(K, -1)
    ids = ids.clone()
    ids[1, -2:] = -1  # fewer valid slots
    ids[3, 2] = -1  # hole in the middle
    ids[5, :] = -1  # nothing mapped at this position
    if log_probs:  # remapped-store convention: log-probs with lse = 0
        top, lse = top - lse[:, None], torch.zeros_like(lse)
    probs = torch.where(ids >= 0, torch.exp(top - lse[:, None]), torch.zeros(()))
    return ids, top.float(), lse.float(), probs.float()


def _dense_reference(logits, ids, top, lse, *, kind, tail, temperature):
    """Per-position loss computed the obvious way: expand the target to [N, V]."""
    logq = F.log_softmax(logits.double(), -1)
    valid = ids >= 0
    dense = torch.zeros(logits.shape, dtype=torch.float64)
    if tail == "renormalize":  # FuseChat: softmax of the stored top-k logits / T
        z = torch.where(valid, top.double() / temperature, torch.full_like(top.double(), -float("inf")))
        p = torch.softmax(z, -1).nan_to_num(0.0)
    else:
        p = torch.where(valid, torch.exp(top.double() - lse.double()[:, None]), torch.zeros((), dtype=torch.float64))
    for n in range(ids.shape[0]):
        for k in range(ids.shape[1]):
            if valid[n, k]:
                dense[n, ids[n, k]] += p[n, k]
    if kind == "ce":
        loss = -(dense * logq).sum(-1)
    else:
        loss = F.kl_div(logq, dense, reduction="none").sum(-1)
    if tail == "bucket":
        in_topk = dense > 0
        q_tail = torch.where(in_topk, torch.zeros_like(logq), logq.exp()).sum(-1)
        r = (1 - dense.sum(-1)).clamp_min(0)
        term = -r * torch.log(q_tail) if kind == "ce" else r * (torch.log(r) - torch.log(q_tail))
        loss = loss + torch.where(valid.any(-1), term, torch.zeros_like(term))
    return loss, valid.any(-1)


@pytest.mark.parametrize("kind", ["ce", "kl"])
@pytest.mark.parametrize(
    "tail,temperature", [("renormalize", 1.0), ("renormalize", 2.0), ("renormalize", 0.5), ("exact", 1.0), ("bucket", 1.0)]
)
@pytest.mark.parametrize("log_probs", [False, True])
def test_sparse_loss_matches_dense_reference(kind, tail, temperature, log_probs):
    n = 12
    ids, top, lse, probs = _targets(n, seed=1, log_probs=log_probs)
    logits = (torch.randn(n, V, generator=torch.Generator().manual_seed(2)) * 2).requires_grad_(True)
    mask = torch.ones(n, dtype=torch.bool)
    mask[7] = False
    got = sparse_distill_loss(logits, ids, probs, kind=kind, tail=tail, temperature=temperature, mask=mask)
    ref_pos, has = _dense_reference(logits, ids, top, lse, kind=kind, tail=tail, temperature=temperature)
    weight = (mask & has).double()
    ref = (ref_pos * weight).sum() / weight.sum()
    assert got.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    (g_got,) = torch.autograd.grad(got, logits)
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g_got.double(), g_ref.double(), rtol=1e-4, atol=1e-6)
    per_pos = sparse_distill_loss(logits, ids, probs, kind=kind, tail=tail, temperature=temperature, reduction="none")
    assert per_pos[5].item() == 0.0  # empty target contributes nothing
    if kind == "kl" and tail in ("renormalize", "bucket"):
        assert (ref_pos[has] >= -1e-9).all()  # true divergences


def test_kl_is_zero_when_student_equals_teacher_and_ce_wrappers():
    n = 8
    g = torch.Generator().manual_seed(5)
    full = torch.randn(n, V, generator=g) * 2
    top, ids = full.topk(K, -1)
    probs = torch.exp(top - torch.logsumexp(full, -1, keepdim=True))
    # the student IS the teacher: exact-tail KL and bucket KL vanish
    for tail in ("exact", "bucket"):
        assert sparse_kl_div(full, ids, probs, tail=tail).abs().item() < 1e-5
    ce = sparse_cross_entropy(full, ids, probs, tail="exact")
    assert ce.item() == pytest.approx(sparse_distill_loss(full, ids, probs, kind="ce", tail="exact").item())


def test_distill_losses_come_from_the_registry():
    import dataclasses

    from fusion_train.fuse import loss_registry
    from fusion_train.fuse.config import FusionConfig

    assert loss_registry.names() == ("ce", "kl")
    field = {f.name: f for f in dataclasses.fields(FusionConfig)}["distill_loss"]
    assert tuple(field.metadata["choices"]) == loss_registry.names()
    assert all(n in field.metadata["help"] for n in loss_registry.names())
    ids, _, _, probs = _targets(6)
    logits = torch.randn(6, V)
    with pytest.raises(ValueError, match="kind must be one of ce, kl"):
        sparse_distill_loss(logits, ids, probs, kind="js")

    # a registered loss is usable by name everywhere, bucket tail included; here: half the cross-entropy
    @loss_registry.register("half_ce", help="half the cross-entropy (test only)")
    def _half_ce(p, logp, logq):
        return -0.5 * (p * logq).sum(-1)

    try:
        for tail in ("renormalize", "bucket"):
            half = sparse_distill_loss(logits, ids, probs, kind="half_ce", tail=tail)
            full = sparse_distill_loss(logits, ids, probs, kind="ce", tail=tail)
            assert half.item() == pytest.approx(0.5 * full.item(), rel=1e-6)
    finally:
        loss_registry._LOSSES.pop("half_ce")


def test_exact_tail_rejects_temperature():
    ids, top, lse, probs = _targets(8)
    with pytest.raises(ValueError, match="temperature"):
        sparse_cross_entropy(torch.zeros(8, V), ids, probs, tail="exact", temperature=2.0)
    with pytest.raises(ValueError, match="tail"):
        sparse_cross_entropy(torch.zeros(8, V), ids, probs, tail="drop")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gather_log_softmax_value_and_gradient(dtype):
    g = torch.Generator().manual_seed(11)
    logits = (torch.randn(3, 5, V, generator=g) * 3).to(dtype).requires_grad_(True)
    ids = torch.randint(0, V, (3, 5, 4), generator=g)
    ids[0, 1, 2] = -1
    weights = torch.rand(3, 5, 4, generator=g) * (ids >= 0)
    keep = logits.detach().clone()
    got = student_log_probs_at(logits, ids, chunk_rows=4)  # several chunks
    ref_logits = logits.detach().float().requires_grad_(True)
    ref = torch.log_softmax(ref_logits, -1).gather(-1, ids.clamp_min(0))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    (got * weights).sum().backward()
    (ref * weights).sum().backward()
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(logits.grad.float(), ref_logits.grad, rtol=tol, atol=tol)
    assert logits.grad.dtype == dtype
    assert torch.equal(logits.detach(), keep)  # backward must not touch the logits


def test_sft_loss_matches_cross_entropy():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 9, V, generator=g, requires_grad=True)
    labels = torch.randint(0, V, (2, 9), generator=g)
    labels[0, :4] = -100
    labels[1, 7:] = -100
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)
    got = sft_loss(logits, labels)
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(torch.autograd.grad(got, logits)[0], torch.autograd.grad(ref, logits)[0])
    # the fused path (labels gathered with the fusion targets) gives the same SFT loss
    teachers = _teacher_batch(2, b=2, l=9)
    fused = fusion_loss(logits, teachers, labels=labels)
    assert fused.sft.item() == pytest.approx(ref.item(), rel=1e-6)
    assert fused.loss.item() == pytest.approx(fusion_loss(logits, teachers).loss.item(), rel=1e-6)


def test_combine_losses_default_lambda():
    assert combine_losses(torch.tensor(2.0), torch.tensor(4.0)).item() == pytest.approx(0.9 * 2 + 0.1 * 4)


def _teacher_batch(n_teachers, b=3, l=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    teachers = []
    for t in range(n_teachers):
        full = torch.randn(b, l, V, generator=g) * 2
        top, ids = full.topk(K, -1)
        probs = torch.exp(top - torch.logsumexp(full, -1, keepdim=True))
        if t > 0:  # sources have unmapped positions
            empty = torch.rand(b, l, generator=g) < 0.25
            ids = torch.where(empty.unsqueeze(-1), torch.full_like(ids, -1), ids)
            probs = torch.where(empty.unsqueeze(-1), torch.zeros_like(probs), probs)
        token_ce = torch.rand(b, l, generator=g) * 3
        seq_ce = torch.rand(b, generator=g) * 3
        teachers.append(TeacherTargets(ids, probs, probs.sum(-1), seq_ce, token_ce))
    return teachers


def _choice_reference(teachers, granularity, include_pivot=True):
    b, l = teachers[0].ids.shape[:2]
    out = torch.zeros(b, l, dtype=torch.long)
    for i in range(b):
        for j in range(l):
            best, best_ce = 0, float("inf")
            for t, tt in enumerate(teachers):
                if t == 0 and not include_pivot:
                    continue
                has = bool((tt.ids[i, j] >= 0).any())
                ce = float(tt.seq_ce[i]) if granularity == "sequence" else float(tt.token_ce[i, j])
                if granularity == "token" and not has:
                    continue
                if ce < best_ce:  # strict: ties keep the earlier teacher
                    best, best_ce = t, ce
            if not bool((teachers[best].ids[i, j] >= 0).any()):
                best = 0  # FuseChat "bad case": fall back to the pivot
            out[i, j] = best
    return out


@pytest.mark.parametrize("granularity", ["sequence", "token"])
@pytest.mark.parametrize("n_teachers", [2, 3])
@pytest.mark.parametrize("include_pivot", [True, False])
def test_min_ce_choice_matches_loop(granularity, n_teachers, include_pivot):
    teachers = _teacher_batch(n_teachers, seed=n_teachers)
    got = min_ce_choice(teachers, granularity=granularity, include_pivot=include_pivot)
    assert torch.equal(got, _choice_reference(teachers, granularity, include_pivot))
    assert set(got.unique().tolist()) <= set(range(n_teachers))


def test_min_ce_ties_go_to_pivot_and_fallback():
    teachers = _teacher_batch(2, b=2, l=4)
    teachers[0].seq_ce[:] = 1.0
    teachers[1].seq_ce[:] = torch.tensor([1.0, 0.5])  # tie in row 0, source better in row 1
    teachers[1].ids[1, 2] = -1
    choice = min_ce_choice(teachers, granularity="sequence")
    assert choice[0].tolist() == [0, 0, 0, 0]
    assert choice[1].tolist() == [1, 1, 0, 1]  # unmapped position falls back to the pivot


@pytest.mark.parametrize("granularity", ["sequence", "token"])
@pytest.mark.parametrize("kind", ["ce", "kl"])
def test_fusion_loss_matches_per_position_reference(granularity, kind):
    teachers = _teacher_batch(3, seed=7)
    b, l = teachers[0].ids.shape[:2]
    logits = torch.randn(b, l, V, generator=torch.Generator().manual_seed(8)) * 2
    mask = torch.ones(b, l, dtype=torch.bool)
    mask[0, -2:] = False
    out = fusion_loss(logits, teachers, mask=mask, granularity=granularity, kind=kind)
    choice = _choice_reference(teachers, granularity)
    logq = F.log_softmax(logits.double(), -1)
    total, count = 0.0, 0
    counts = [0, 0, 0]
    for i in range(b):
        for j in range(l):
            if not mask[i, j]:
                continue
            t = teachers[choice[i, j]]
            valid = t.ids[i, j] >= 0
            p = t.probs[i, j][valid].double()
            p = p / p.sum()
            lq = logq[i, j, t.ids[i, j][valid]]
            total += float(-(p * lq).sum() if kind == "ce" else (p * (p.log() - lq)).sum())
            count += 1
            counts[int(choice[i, j])] += 1
    assert out.loss.item() == pytest.approx(total / count, rel=1e-5)
    assert out.choice_counts.tolist() == counts
    assert int(out.positions) == count


# ---- dataset and collator ------------------------------------------------------------------


def _stores(n=5, fp="f" * 64, src_fp=None, seed=0):
    pivot = random_samples(n, V, K, seed=seed, min_len=5, max_len=11)
    src = remapped_like(pivot, V, K, seed=seed + 1)
    return (
        InMemoryReader(pivot, {"fingerprint": fp}),
        InMemoryReader(src, {"fingerprint": src_fp or fp}),
    )


def test_collator_pads_sparse_targets_and_masks_instructions():
    pivot, src = _stores()
    ds = FusionDataset(pivot, [src], names=["pivot", "src"])
    items = [ds[i] for i in range(3)]
    batch = FusionCollator(pad_token_id=0, pad_to_multiple_of=8)(items)
    lengths = [len(it["input_ids"]) for it in items]
    width = batch["input_ids"].shape[1]
    assert width % 8 == 0 and width >= max(lengths) and width < max(lengths) + 8
    for name, t in batch.items():
        if isinstance(t, torch.Tensor):
            assert t.numel() <= 3 * width  # nothing vocabulary-sized
    for b, it in enumerate(items):
        n = lengths[b]
        assert batch["attention_mask"][b].sum() == n
        expect = np.where(it["loss_mask"], it["input_ids"], -100)
        assert batch["labels"][b, :n].tolist() == expect.tolist()
        assert (batch["labels"][b, n:] == -100).all()
        assert not it["loss_mask"][0] and (batch["labels"][b, 0] == -100)  # instruction masked
        for t, teacher in enumerate(batch["teachers"]):
            raw = it["teachers"][t]
            assert teacher["ids"].shape == (3, width, K) and teacher["probs"].dtype == torch.float32
            valid = raw["topk_ids"] >= 0
            p = np.where(valid, np.exp(raw["topk_logits"] - raw["logsumexp"][:, None]), 0)
            np.testing.assert_allclose(teacher["probs"][b, :n].numpy(), p, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(teacher["mass"][b, :n].numpy(), p.sum(-1), rtol=1e-5, atol=1e-6)
            assert (teacher["ids"][b, n:] == -1).all() and (teacher["probs"][b, n:] == 0).all()
            assert teacher["seq_ce"][b] == pytest.approx(float(raw["seq_ce"]))
    assert batch["fusion_mask"].sum() == sum(lengths)  # FuseChat: all real tokens
    resp = FusionCollator(fusion_positions="response")(items)["fusion_mask"]
    for b, it in enumerate(items):
        assert resp[b, : lengths[b] - 1].tolist() == it["loss_mask"][1:].tolist()
        assert not resp[b, lengths[b] - 1 :].any()


def test_dataset_missing_samples_error_or_skip():
    pivot, src = _stores(n=6)
    src.samples = [s for s in src.samples if s["sample_id"] not in ("s2", "s4")]
    src.__init__(src.samples, src.attrs)
    with pytest.raises(TokalignError, match=r"'s2'.*source store src"):
        FusionDataset(pivot, [src], names=["pivot", "src"])
    ds = FusionDataset(pivot, [src], names=["pivot", "src"], on_missing="skip")
    assert len(ds) == 4 and ds.skipped == 2 and ds.missing_by_store == {"src": 2}
    assert [ds[i]["sample_id"] for i in range(4)] == ["s0", "s1", "s3", "s5"]
    # joined by id, not by position: the source row used is the one with the same id
    assert np.array_equal(ds[3]["teachers"][1]["topk_ids"], src.by_id("s5")["topk_ids"])


def test_dataset_fingerprint_checks_name_both_sides():
    pivot, src = _stores(fp="a" * 64, src_fp="b" * 64)
    with pytest.raises(TokalignError, match=r"source store qwen.*bbbb.*pivot store pivot.*aaaa"):
        FusionDataset(pivot, [src], names=["pivot", "qwen"])
    pivot, src = _stores(fp="a" * 64)
    with pytest.raises(TokalignError, match=r"pivot store pivot.*aaaa.*model's tokenizer has cccc"):
        FusionDataset(pivot, [src], names=["pivot", "src"], expected_fingerprint="c" * 64)


def test_dataset_rejects_misaligned_or_out_of_vocab_stores():
    pivot, src = _stores()
    bad = dict(src.samples[1])
    bad["token_ce"] = bad["token_ce"][:-1]
    src.samples[1] = bad
    ds = FusionDataset(pivot, [src], names=["pivot", "src"])
    with pytest.raises(TokalignError, match=r"store src sample 's1': field token_ce"):
        ds[1]
    pivot, src = _stores()
    ds = FusionDataset(pivot, [src], names=["pivot", "src"], vocab_size=V - 1)
    with pytest.raises(TokalignError, match="outside the model vocabulary"):
        for i in range(len(ds)):
            ds[i]
    pivot, src = _stores()
    swapped = dict(src.samples[0])
    swapped["input_ids"] = np.asarray(swapped["input_ids"])[::-1].copy()
    src.samples[0] = swapped
    with pytest.raises(TokalignError, match="input_ids differ"):
        FusionDataset(pivot, [src], names=["pivot", "src"])[0]


def test_dataset_truncates_to_max_length():
    pivot, src = _stores()
    ds = FusionDataset(pivot, [src], max_length=4)
    item = ds[0]
    assert len(item["input_ids"]) == 4
    assert all(t["topk_ids"].shape[0] == 4 and t["token_ce"].shape == (4,) for t in item["teachers"])
