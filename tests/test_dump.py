"""tokalign.dump / `tokalign dump-logits`: store arrays against a reference computed from the model's full
logits, multi-rank union, resume after SIGKILL, NaN/Inf flagging, instruction masking, vocabulary checks.

Models are tiny random Llama-style LMs whose vocabularies are real tokenizers (tokalign/testing.py).
"""
import json
import shutil
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tokalign.testing import save_tiny_causal_lm  # noqa: E402

from tokalign import load_tokenizer  # noqa: E402
from tokalign.cli import main as cli_main  # noqa: E402
from tokalign.corpus import Corpus  # noqa: E402
from tokalign.dump import (  # noqa: E402
    DumpOptions,
    assistant_token_mask,
    batch_ranges,
    dump_logits,
    length_order,
    prepare_samples,
    topk_statistics,
)
from tokalign.errors import TokalignError  # noqa: E402
from tokalign.store import open_store, store_status  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TOKEN_FIELDS = ("input_ids", "loss_mask", "topk_ids", "topk_logits", "logsumexp", "token_ce")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("dump")


@pytest.fixture(scope="session")
def corpus_file(work, corpora_dir):
    """20 short items: English code/math, Chinese multi-turn chat (non-ASCII, several assistant turns)."""
    picked = []
    for name, want in (("code_math.jsonl", 12), ("chat_multiturn_zh.jsonl", 8)):
        n = 0
        with open(corpora_dir / name, encoding="utf-8") as f:
            for line in f:
                obj = json.loads(line)
                if sum(len(m["content"]) for m in obj["messages"]) <= 360:
                    picked.append(line if line.endswith("\n") else line + "\n")
                    n += 1
                    if n == want:
                        break
    assert len(picked) == 20
    path = work / "corpus.jsonl"
    path.write_text("".join(picked), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def openchat_model(work, tokenizers_dir):
    return save_tiny_causal_lm(work / "tiny-openchat", tokenizers_dir / "openchat-3.5", seed=0)


@pytest.fixture(scope="session")
def internlm2_model(work, tokenizers_dir):
    return save_tiny_causal_lm(work / "tiny-internlm2", tokenizers_dir / "internlm2", seed=1)


def _load_fp32(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, use_safetensors=True).eval()


def _reference(model, input_ids, k, id_limit=None):
    """Straightforward reference from the full logits of one unpadded sequence (float64 on the host)."""
    with torch.no_grad():
        full = model(input_ids=torch.as_tensor(input_ids, dtype=torch.long)[None]).logits[0].double().numpy()
    lse = np.log(np.exp(full - full.max(1, keepdims=True)).sum(1)) + full.max(1)
    ce = np.zeros(len(input_ids))
    ce[:-1] = lse[:-1] - full[np.arange(len(input_ids) - 1), np.asarray(input_ids[1:], dtype=np.int64)]
    allowed = full if id_limit is None else full[:, :id_limit]
    return full, allowed, lse, ce


def _check_sample_against_reference(s, full_allowed, lse, ce, k, *, logit_rtol, lse_atol):
    """Stored top-K ids/logits, logsumexp and token_ce against the reference of one sample."""
    top = np.argpartition(-full_allowed, k - 1, axis=1)[:, :k]  # the reference top-K (any order)
    kth = np.take_along_axis(full_allowed, top, 1).min(1)
    ids = s["topk_ids"].astype(np.int64)
    assert (ids >= 0).all() and (ids < full_allowed.shape[1]).all()
    ref_at_ids = np.take_along_axis(full_allowed, ids, 1)
    # every stored id belongs to the reference top-K (up to near-ties at the K-th value)
    assert (ref_at_ids >= kth[:, None] - 1e-4).all()
    # stored logits are the reference logits at those ids, rounded to bf16 (8 significant bits)
    np.testing.assert_allclose(s["topk_logits"], ref_at_ids, rtol=logit_rtol, atol=1e-5)
    # slot order: descending
    assert (np.diff(s["topk_logits"], axis=1) <= 0).all()
    exact = (np.sort(ids, 1) == np.sort(top, 1)).all(1)
    assert exact.mean() > 0.97  # ties aside, the same ids
    np.testing.assert_allclose(s["logsumexp"], lse, rtol=0, atol=lse_atol)
    np.testing.assert_allclose(s["token_ce"], ce, rtol=0, atol=lse_atol * 2)
    assert s["token_ce"][-1] == 0.0
    target = np.zeros(len(ce), bool)
    target[:-1] = s["loss_mask"][1:]
    if target.any():
        np.testing.assert_allclose(s["seq_ce"], ce[target].mean(), rtol=1e-5)
    else:
        assert np.isnan(s["seq_ce"])


def _store_by_id(url):
    st = open_store(url)
    return {sid: st.by_id(sid) for sid in st.sample_ids}, st


# ------------------------------------------------------------------------------------------ reference
@pytest.mark.parametrize("case", ["openchat-chat-mask", "internlm2-plain"])
def test_store_matches_full_logits_reference(case, request, work, corpus_file):
    model_dir = request.getfixturevalue("openchat_model" if case.startswith("openchat") else "internlm2_model")
    chat = "chat" in case
    out = work / ("ref-%s.zarr" % case)
    summary = dump_logits(str(model_dir), None, corpus_file, out,
                          DumpOptions(top_k=8, template="chat" if chat else "plain", mask_instruction="mask" in case,
                                      dtype="fp32", batch_tokens=700, progress=False, overwrite=True))
    assert summary.samples_written == 20 and summary.complete and summary.invalid_samples == 0
    assert summary.batches < 20  # several samples per padded batch
    tok = load_tokenizer(str(model_dir))
    samples, store = _store_by_id(out)
    assert store.schema.k == 8 and store.schema.vocab_size == tok.vocab_size
    assert store.schema.tokenizer_fingerprint == tok.fingerprint
    assert store.schema.template == (tok.chat_template if chat else None)
    assert store.schema.options["dtype"] == "float32" and store.schema.options["tokenizer"] == str(model_dir)
    # write order: longest first
    assert list(store.lengths) == sorted(store.lengths, reverse=True)
    model = _load_fp32(model_dir)
    items = {it.sample_id: it for it in Corpus(corpus_file, template="chat" if chat else "plain", tokenizer=tok)}
    assert set(samples) == set(items)
    for sid, s in samples.items():
        expect_ids = tok.encode(items[sid].text, add_special_tokens=not chat).ids
        np.testing.assert_array_equal(s["input_ids"], expect_ids)
        assert s["input_ids"][0] == tok.special_ids["bos"] and (s["input_ids"][1:] != tok.special_ids["bos"]).all()
        _, allowed, lse, ce = _reference(model, s["input_ids"], 8)
        _check_sample_against_reference(s, allowed, lse, ce, 8, logit_rtol=2 ** -8, lse_atol=2e-4)
        assert s["valid"]


def test_bf16_model_within_bf16_rounding(work, corpus_file, openchat_model):
    """--dtype bf16: the stored top-K logits are the bf16 logits; compared with the fp32 reference they differ by
    bf16 rounding of the whole forward pass, not more."""
    out = work / "bf16.zarr"
    summary = dump_logits(str(openchat_model), None, corpus_file, out,
                          DumpOptions(top_k=4, dtype="bf16", batch_tokens=2048, max_length=96, progress=False,
                                      overwrite=True))
    assert summary.dtype == "bfloat16"
    samples, store = _store_by_id(out)
    assert store.schema.options["dtype"] == "bfloat16"
    model = _load_fp32(openchat_model)
    agree = []
    for s in samples.values():
        full, allowed, lse, ce = _reference(model, s["input_ids"], 4)
        # topk_logits are exactly representable in bf16 (they are the model's bf16 logits)
        bits = s["topk_logits"].view(np.uint32) & 0xFFFF
        assert (bits == 0).all()
        ref_at_ids = np.take_along_axis(full, s["topk_ids"].astype(np.int64), 1)
        np.testing.assert_allclose(s["topk_logits"], ref_at_ids, rtol=0.03, atol=0.25)
        np.testing.assert_allclose(s["logsumexp"], lse, atol=0.25)
        agree.append((s["topk_ids"][:, 0] == full.argmax(1)).mean())
    assert np.mean(agree) > 0.8


# ------------------------------------------------------------------------------------------ multi-rank
def test_two_ranks_union_equals_single_rank(work, corpus_file, openchat_model):
    single, multi = work / "single.zarr", work / "multi.zarr"
    opts = DumpOptions(top_k=5, template="chat", mask_instruction=True, dtype="fp32", batch_tokens=1, progress=False,
                       overwrite=True)
    dump_logits(str(openchat_model), None, corpus_file, single, opts)
    s0 = dump_logits(str(openchat_model), None, corpus_file, multi, opts, rank=0, world_size=2)  # keywords override
    assert not store_status(multi)["complete"]  # part-00001 missing
    s1 = dump_logits(str(openchat_model), None, corpus_file, multi, replace(opts, rank=1, world_size=2))
    assert (s0.part, s1.part) == ("part-00000", "part-00001")
    assert s0.samples_written == s1.samples_written == 10
    status = store_status(multi)
    assert status["complete"] and status["num_parts"] == 2
    a, _ = _store_by_id(single)
    b, store_b = _store_by_id(multi)
    assert len(store_b) == 20 and set(a) == set(b)
    items = [it.sample_id for it in Corpus(corpus_file)]
    assert set(store_b.sample_ids[10:]) == set(items[1::2])  # part order, then write order: part-00001 last
    for sid in a:
        for f in TOKEN_FIELDS:
            np.testing.assert_array_equal(a[sid][f], b[sid][f], err_msg="%s %s" % (sid, f))
        assert a[sid]["seq_ce"] == b[sid]["seq_ce"] or (np.isnan(a[sid]["seq_ce"]) and np.isnan(b[sid]["seq_ce"]))


def test_rank_from_torchrun_environment(work, corpus_file, openchat_model, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    out = work / "env-rank.zarr"
    s = dump_logits(str(openchat_model), None, corpus_file, out,
                    DumpOptions(top_k=2, dtype="fp32", max_length=32, progress=False, overwrite=True))
    assert (s.rank, s.world_size, s.part, s.rank_items) == (1, 3, "part-00001", 7)
    st = open_store(out, allow_incomplete=True)
    items = [it.sample_id for it in Corpus(corpus_file)]
    assert sorted(st.sample_ids) == sorted(items[1::3])


# ------------------------------------------------------------------------------------------ resume
KILL_CHILD = r"""
import os, signal, sys
import torch
torch.set_num_threads(1)
from tokalign.dump import DumpOptions, dump_logits, load_causal_lm
model_dir, corpus, out, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
model, _ = load_causal_lm(model_dir, dtype="fp32", device="cpu")
calls = [0]
def hook(module, args, kwargs):
    calls[0] += 1
    if calls[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)   # no cleanup, no flush: a hard kill mid-run
model.register_forward_pre_hook(hook, with_kwargs=True)
dump_logits(model, model_dir, corpus, out, DumpOptions(top_k=6, template="chat", mask_instruction=True, dtype="fp32",
                                                      batch_tokens=400, flush_tokens=0, progress=False))
"""


def _cli(*argv):
    return cli_main([str(a) for a in argv])


def test_resume_after_sigkill_equals_uninterrupted(work, corpus_file, openchat_model, capsys):
    killed, straight = work / "killed.zarr", work / "straight.zarr"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", KILL_CHILD, str(openchat_model), str(corpus_file), str(killed), "4"],
                          env=env, cwd=str(REPO), capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    status = store_status(killed)
    committed = status["parts"]["part-00000"]["samples"]
    assert not status["complete"] and 0 < committed < 20  # three batches committed, then the kill
    common = ["--data", corpus_file, "--top-k", 6, "--template", "chat", "--mask-instruction", "--dtype", "fp32",
              "--batch-tokens", 400, "--flush-tokens", 0, "--device", "cpu", "--no-progress", "--json"]
    capsys.readouterr()
    assert _cli("dump-logits", "--model", openchat_model, "--tokenizer", openchat_model, "--out", killed, *common) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["resumed"] and report["samples_already_done"] == committed
    assert report["samples_written"] == 20 - committed and report["complete"]
    assert _cli("dump-logits", "--model", openchat_model, "--out", straight, *common) == 0
    capsys.readouterr()
    a, b = open_store(killed), open_store(straight)
    assert list(a.sample_ids) == list(b.sample_ids)  # same order, nothing lost or duplicated
    for i in range(len(a)):
        x, y = a[i], b[i]
        for f in TOKEN_FIELDS:
            np.testing.assert_array_equal(x[f], y[f], err_msg="%s %s" % (x["sample_id"], f))
    # a complete store is refused (exit 2, one line naming the part), unless --overwrite
    assert _cli("dump-logits", "--model", openchat_model, "--out", killed, *common) == 2
    err = capsys.readouterr().err
    assert "already complete" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------ NaN / Inf
def test_nonfinite_logits_flag_the_sample(work, corpus_file, openchat_model):
    from tokalign.dump import load_causal_lm

    tok = load_tokenizer(str(openchat_model))
    items = list(Corpus(corpus_file, tokenizer=tok))
    prepared, _ = prepare_samples(tok, items, mask_instruction=False, max_length=2048, skip_long=False,
                                  add_special_tokens=True)
    poison = {prepared[3].sample_id: float("nan"), prepared[11].sample_id: float("inf")}
    by_ids = {tuple(p.input_ids.tolist()): p.sample_id for p in prepared}
    model, _ = load_causal_lm(str(openchat_model), dtype="fp32", device="cpu")

    def hook(module, args, kwargs, output):  # batch_tokens=1: one sample per forward
        sid = by_ids[tuple(kwargs["input_ids"][0].tolist())]
        if sid in poison:
            output.logits[0, 2, 17] = poison[sid]
        return output

    model.register_forward_hook(hook, with_kwargs=True)
    out = work / "nan.zarr"
    s = dump_logits(model, str(openchat_model), corpus_file, out,
                    DumpOptions(top_k=4, batch_tokens=1, progress=False, overwrite=True))
    assert s.invalid_samples == 2 and sorted(s.invalid_ids) == sorted(poison)
    assert s.nonfinite_values >= 2 and "2 invalid" in s.line()
    st = open_store(out)
    assert int((~st.valid).sum()) == 2
    for sid in st.sample_ids:
        x = st.by_id(sid)
        assert bool(x["valid"]) == (sid not in poison)
    bad = st.by_id(prepared[3].sample_id)
    assert np.isnan(bad["logsumexp"][2]) and np.isfinite(np.delete(bad["logsumexp"], 2)).all()
    assert np.isnan(bad["topk_logits"][2]).any()
    inf = st.by_id(prepared[11].sample_id)
    assert np.isinf(inf["logsumexp"][2]) and inf["topk_ids"][2, 0] == 17
    assert len(list(st.iter_batches(64, only_valid=True))[0]) == 18


# ------------------------------------------------------------------------------------------ masking
@pytest.mark.parametrize("name", ["openchat-3.5", "internlm2"])
def test_mask_instruction_covers_exactly_the_responses(name, tokenizers_dir, corpus_file):
    tok = load_tokenizer(str(tokenizers_dir / name))
    items = list(Corpus(corpus_file, template="chat", tokenizer=tok))
    prepared, counts = prepare_samples(tok, items, mask_instruction=True, max_length=4096, skip_long=False,
                                       add_special_tokens=False)
    assert counts == {"truncated": 0, "skipped_long": 0, "skipped_empty": 0}
    eot = tok.special_ids.get("end_of_turn", tok.special_ids.get("im_end"))
    multi_turn = 0
    for item, p in zip(items, prepared):
        ids, mask = p.input_ids, p.loss_mask
        assert ids[0] == tok.special_ids["bos"] and not mask[0]
        # independent check by decoding: masked tokens spell the responses, unmasked ones the prompts
        masked_text = tok.decode(ids[mask])
        prompt_text = tok.decode(ids[~mask])
        assistants = [m["content"] for m in item.messages if m["role"] == "assistant"]
        users = [m["content"] for m in item.messages if m["role"] == "user"]
        multi_turn += len(assistants) > 1
        for a in assistants:
            assert a.strip()[:40] in masked_text and a.strip()[-20:] in masked_text
        for u in users:
            assert u.strip()[:40] in prompt_text
            assert u.strip()[:40] not in masked_text
        # each response's end-of-turn token is trained on; the other end-of-turn tokens (after prompts) are not
        eot_pos = np.flatnonzero(ids == eot)
        assert mask[eot_pos].sum() == len(assistants)
        assert mask.sum() < len(mask)
    assert multi_turn > 0


def test_mask_plain_template_and_default(tokenizers_dir, corpus_file):
    tok = load_tokenizer(str(tokenizers_dir / "openchat-3.5"))
    items = list(Corpus(corpus_file, template="plain"))
    masked, _ = prepare_samples(tok, items, mask_instruction=True, max_length=4096, skip_long=False,
                                add_special_tokens=True)
    full, _ = prepare_samples(tok, items, mask_instruction=False, max_length=4096, skip_long=False,
                              add_special_tokens=True)
    for item, m, f in zip(items, masked, full):
        assert f.loss_mask.all()
        np.testing.assert_array_equal(m.input_ids, f.input_ids)
        last = [x["content"] for x in item.messages if x["role"] == "assistant"][-1]
        assert tok.decode(m.input_ids[m.loss_mask]).rstrip().endswith(last.rstrip()[-20:])
        assert not m.loss_mask[:2].any()


def test_assistant_token_mask_unit():
    # tokens: [BOS] "Hi" " there" "!" [EOT] "\n"
    offsets = np.array([[0, 0], [0, 2], [2, 8], [8, 9], [9, 16], [16, 17]])
    ids = np.array([1, 10, 11, 12, 5, 13])
    special = np.zeros(20, bool)
    special[[1, 5]] = True
    np.testing.assert_array_equal(assistant_token_mask(offsets, ids, [(3, 9)], special),
                                  [False, False, True, True, True, False])
    special[5] = False  # not a special token after the response: not trained on
    np.testing.assert_array_equal(assistant_token_mask(offsets, ids, [(3, 9)], special),
                                  [False, False, True, True, False, False])


# ------------------------------------------------------------------------------------------ vocabularies
def test_padded_output_vocab_masks_extra_ids(work, corpus_file, tokenizers_dir):
    tok_dir = tokenizers_dir / "openchat-3.5"
    n_tok = load_tokenizer(str(tok_dir)).vocab_size
    model_dir = save_tiny_causal_lm(work / "tiny-padded", tok_dir, seed=2, vocab_size=n_tok + 62, padded_scale=4.0)
    out = work / "padded.zarr"
    s = dump_logits(str(model_dir), None, corpus_file, out,
                    DumpOptions(top_k=6, dtype="fp32", max_length=48, progress=False, overwrite=True))
    assert (s.model_vocab_size, s.tokenizer_vocab_size) == (n_tok + 62, n_tok)
    samples, st = _store_by_id(out)
    assert st.schema.vocab_size == n_tok + 62
    assert st.schema.options["tokenizer_vocab_size"] == n_tok and st.schema.options["model_vocab_size"] == n_tok + 62
    model = _load_fp32(model_dir)
    would_enter = 0
    for x in samples.values():
        assert (x["topk_ids"] < n_tok).all()
        full, allowed, lse, ce = _reference(model, x["input_ids"], 6, id_limit=n_tok)
        would_enter += int((np.argpartition(-full, 5, 1)[:, :6] >= n_tok).any(1).sum())
        _check_sample_against_reference(x, allowed, lse, ce, 6, logit_rtol=2 ** -8, lse_atol=2e-4)
    assert would_enter > 0  # the padded rows really compete: without masking they would be stored


def test_model_vocab_smaller_than_tokenizer_is_refused(work, corpus_file, tokenizers_dir):
    model_dir = save_tiny_causal_lm(work / "tiny-small", tokenizers_dir / "openchat-3.5", vocab_size=32000)
    with pytest.raises(TokalignError, match="smaller than the tokenizer"):
        dump_logits(str(model_dir), None, corpus_file, work / "small.zarr", dtype="fp32", progress=False)
    assert not (work / "small.zarr").exists()  # refused before anything is written


def test_remote_code_and_pickle_checkpoints_refused(work, corpus_file, openchat_model):
    import shutil

    remote = work / "remote-code-model"
    shutil.copytree(openchat_model, remote, dirs_exist_ok=True)
    cfg = json.loads((remote / "config.json").read_text())
    cfg.update(model_type="totally_custom_lm", auto_map={"AutoModelForCausalLM": "modeling_custom.CustomLM"})
    (remote / "config.json").write_text(json.dumps(cfg))
    (remote / "modeling_custom.py").write_text("raise SystemExit('remote code must not run')\n")
    with pytest.raises(TokalignError, match="trust-remote-code"):
        dump_logits(str(remote), None, corpus_file, work / "remote.zarr", progress=False)
    pickled = work / "pickled-model"
    pickled.mkdir(exist_ok=True)
    shutil.copyfile(openchat_model / "config.json", pickled / "config.json")
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(TokalignError, match="safetensors"):
        dump_logits(str(pickled), str(openchat_model), corpus_file, work / "pickled.zarr", progress=False)


# ------------------------------------------------------------------------------------------ lengths
def test_truncate_skip_long_and_empty_are_counted(work, corpus_file, openchat_model):
    data = work / "lengths.jsonl"
    lines = corpus_file.read_text(encoding="utf-8").splitlines()[:6]
    lines.append(json.dumps({"id": "empty-text", "text": ""}))
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok = load_tokenizer(str(openchat_model))
    lengths = [len(tok.encode(it.text, add_special_tokens=True)) for it in Corpus(data)]
    max_len = int(np.median(lengths))
    n_long = sum(n > max_len for n in lengths)
    assert 0 < n_long < 6
    out = work / "trunc.zarr"
    s = dump_logits(str(openchat_model), None, data, out,
                    DumpOptions(top_k=3, dtype="fp32", max_length=max_len, progress=False, overwrite=True))
    assert (s.truncated, s.skipped_long, s.skipped_empty, s.samples_written) == (n_long, 0, 1, 6)
    st = open_store(out)
    assert st.lengths.max() == max_len and len(st) == 6
    assert st.parts and json.dumps(st.attrs["options"]["long"]) == '"truncate"'
    s = dump_logits(str(openchat_model), None, data, work / "skip.zarr",
                    DumpOptions(top_k=3, dtype="fp32", max_length=max_len, skip_long=True, progress=False,
                                overwrite=True))
    assert (s.truncated, s.skipped_long, s.skipped_empty, s.samples_written) == (0, n_long, 1, 6 - n_long)
    assert "skipped %d long, 1 empty" % n_long in s.line()


def test_batch_ranges_packs_padded_tokens():
    rng = np.random.default_rng(0)
    lengths = sorted(rng.integers(1, 300, 200).tolist(), reverse=True)
    ranges = batch_ranges(lengths, 1000)
    assert ranges[0][0] == 0 and ranges[-1][1] == 200
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    for lo, hi in ranges:
        assert (hi - lo) * max(lengths[lo:hi]) <= 1000
        if hi < 200:  # greedy: the next sequence would not have fit
            assert (hi - lo + 1) * max(lengths[lo:hi + 1]) > 1000
    # any suffix starting at a batch boundary re-forms the same batches (what makes resume exact)
    cut = ranges[5][0]
    assert [(a + cut, b + cut) for a, b in batch_ranges(lengths[cut:], 1000)] == ranges[5:]
    assert batch_ranges([5000, 10], 1000) == [(0, 1), (1, 2)]


def test_length_order_is_stable():
    from tokalign.dump import PreparedSample

    ss = [PreparedSample(str(i), i, np.zeros(n, np.int32), np.ones(n, bool)) for i, n in enumerate([3, 5, 3, 5])]
    assert [s.sample_id for s in length_order(ss)] == ["1", "3", "0", "2"]


def test_topk_statistics_small_example():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0], [0.0, 0.0, 5.0, 1.0], [2.0, 2.5, -1.0, 9.0]])
    ids, vals, lse, ce = topk_statistics(logits, torch.tensor([2, 3]), 2, id_limit=3, row_chunk=2)
    np.testing.assert_array_equal(ids.numpy(), [[1, 2], [2, 0], [1, 0]])
    np.testing.assert_allclose(vals.numpy(), [[3, 2], [5, 0], [2.5, 2]])
    ref = torch.logsumexp(logits.double(), 1).numpy()
    np.testing.assert_allclose(lse.numpy(), ref, rtol=1e-6)  # over the full row, id_limit aside
    np.testing.assert_allclose(ce.numpy(), [ref[0] - 2.0, ref[1] - 1.0, 0.0], rtol=1e-6)


# ------------------------------------------------------------------------------------------ CLI
def test_cli_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        _cli("dump-logits", "--help")
    text = capsys.readouterr().out
    assert "examples:" in text and "torchrun" in text and "--mask-instruction" in text


def test_cli_bad_input_is_one_line(work, openchat_model, capsys):
    bad = work / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"oops"\n', encoding="utf-8")
    assert _cli("dump-logits", "--model", openchat_model, "--data", bad, "--out", work / "bad.zarr",
                "--no-progress") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.jsonl:2" in err
    dup = work / "dup.jsonl"
    dup.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', encoding="utf-8")
    assert _cli("dump-logits", "--model", openchat_model, "--data", dup, "--out", work / "dup.zarr",
                "--no-progress") == 2
    assert "duplicate sample id 'a'" in capsys.readouterr().err
    assert not (work / "bad.zarr").exists() and not (work / "dup.zarr").exists()


# ------------------------------------------------------------------------------ runs that produce nothing
def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


def test_nothing_to_dump_is_an_error(work, openchat_model, tmp_path, capsys):
    """An empty corpus, or one whose every line --skip-bad skipped, ends non-zero with one line and no store;
    --allow-empty writes the (empty) store on purpose."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n[1, 2]\n")
    common = ("--model", openchat_model, "--dtype", "fp32", "--device", "cpu", "--no-progress")
    assert _cli("dump-logits", *common, "--data", empty, "--out", tmp_path / "e.zarr") == 2
    _one_line_error(capsys, "nothing to dump", "--allow-empty")
    assert _cli("dump-logits", *common, "--data", bad, "--skip-bad", "--out", tmp_path / "b.zarr") == 2
    _one_line_error(capsys, "nothing to dump", "bad JSON 1")
    assert not (tmp_path / "e.zarr").exists() and not (tmp_path / "b.zarr").exists()
    assert _cli("dump-logits", *common, "--data", empty, "--allow-empty", "--out", tmp_path / "e.zarr") == 0
    assert store_status(str(tmp_path / "e.zarr"))["exists"]


def test_learned_positions_shorter_than_sequences_refused_before_work(tokenizers_dir, corpus_file, tmp_path, capsys):
    """GPT-2-style learned positions (n_positions=16) and longer sequences: one line naming the fix, no store;
    with --max-length at the limit it runs."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from tokalign.testing import TOKENIZER_FILES

    tok = load_tokenizer(str(tokenizers_dir / "gpt2"))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=tok.vocab_size, n_positions=16, n_embd=32, n_layer=1, n_head=2))
    model_dir = tmp_path / "tiny-gpt2"
    model.save_pretrained(model_dir)
    for name in TOKENIZER_FILES:
        if (tokenizers_dir / "gpt2" / name).is_file():
            shutil.copy(tokenizers_dir / "gpt2" / name, model_dir / name)
    common = ("--model", model_dir, "--data", corpus_file, "--dtype", "fp32", "--device", "cpu", "--no-progress",
              "--top-k", "4")
    assert _cli("dump-logits", *common, "--out", tmp_path / "g.zarr") == 2
    _one_line_error(capsys, "learned positions for 16 tokens", "--max-length 16")
    assert not (tmp_path / "g.zarr").exists()
    assert _cli("dump-logits", *common, "--max-length", "16", "--out", tmp_path / "g.zarr") == 0
    assert len(open_store(str(tmp_path / "g.zarr"))) == 20


def test_synthesized_sample_ids_warn(work, openchat_model, corpus_file, tmp_path, capsys):
    """Lines without an "id" get file:line ids, which never join with a store dumped from a file of another
    name: the dump says so."""
    no_ids = tmp_path / "no_ids.jsonl"
    lines = corpus_file.read_text(encoding="utf-8").splitlines()[:3]
    no_ids.write_text("".join(json.dumps({k: v for k, v in json.loads(x).items() if k != "id"}) + "\n" for x in lines))
    assert _cli("dump-logits", "--model", openchat_model, "--data", no_ids, "--dtype", "fp32", "--device", "cpu",
                "--no-progress", "--out", tmp_path / "n.zarr") == 0
    err = capsys.readouterr().err
    assert "3 of 3 corpus items have no \"id\"" in err and "no_ids.jsonl:1" in err


def test_pickled_weights_need_allow_pickle(openchat_model, corpus_file, tmp_path, capsys):
    """A folder with only pytorch_model.bin (a pickle) is refused with one line naming --allow-pickle."""
    from transformers import AutoModelForCausalLM

    pickled = tmp_path / "pickled"
    model = AutoModelForCausalLM.from_pretrained(str(openchat_model), use_safetensors=True, trust_remote_code=False)
    pickled.mkdir()
    model.config.save_pretrained(pickled)  # transformers 5 writes safetensors only: pickle the weights by hand
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    for f in openchat_model.iterdir():
        if f.name.startswith("tokenizer") or f.name.endswith(".model") or f.name == "special_tokens_map.json":
            shutil.copy(f, pickled / f.name)
    assert not list(pickled.glob("*.safetensors")) and (pickled / "pytorch_model.bin").is_file()
    common = ("--model", pickled, "--data", corpus_file, "--dtype", "fp32", "--device", "cpu", "--no-progress")
    capsys.readouterr()
    assert _cli("dump-logits", *common, "--out", tmp_path / "p.zarr") == 2
    _one_line_error(capsys, "no *.safetensors weights", "--allow-pickle")
    assert _cli("dump-logits", *common, "--allow-pickle", "--out", tmp_path / "p.zarr") == 0
