"""Miniature behaviour checks of the preference and conditioned trainers: tiny random Llamas on the real
mistral-v1 tokenizer, trained on CPU for a few steps on toy rules, then measured on held-out prompts.

Checked by hand with mutated trainers: a flipped DPO sign, a static α where the ramp should be, and α put on
the target response instead of the source each make a test here fail. A gather misaligned by one position is
not caught by these toys (the rule is learnt through the following tokens too): the loss unit tests cover it
(docs/implicit.md, "Measured toy numbers", has the numbers over seeds). The held-out rewards are measured here independently of the trainer's
gather: a full forward, ``log_softmax`` and the labels' log-probabilities at the next position, summed over the
response tokens. One seed runs in the default suite; the other seeds are marked slow.
"""
import random

import pytest
import torch

from fusion_train.preference.config import CRLFTConfig, PreferenceConfig, SFTConfig
from fusion_train.preference.crlft import ConditionedTemplate
from fusion_train.preference.data import ChatEncoder, PreferenceDataset, read_rows
from fusion_train.preference.run import run_crlft, run_sft
from fusion_train.preference.trainer import PreferenceTrainer
from preference_helpers import load_tiny, tiny_model_dir, trainer_kwargs, write_jsonl

WORDS = ("apple river stone cloud green music light paper table window garden silver orange yellow winter "
         "summer").split()
SLOW_SEEDS = [pytest.param(s, marks=pytest.mark.slow) for s in (1, 2)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _words(rng):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4)))


def _prompt(rng):
    return "Tell me about %s." % " ".join(rng.choice(WORDS) for _ in range(3))


@torch.no_grad()
def _logps(model, dataset):
    """``[N, R]`` summed response log-probs, one plain forward per response (not the trainer's code path)."""
    model.eval()
    out = []
    for item in dataset.items:
        row = []
        for resp in item["responses"]:
            ids = torch.tensor([list(item["prompt_ids"]) + list(resp)])
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
            gathered = logp.gather(-1, ids[0, 1:, None])[:, 0]
            row.append(float(gathered[len(item["prompt_ids"]) - 1:].sum()))
        out.append(row)
    model.train()
    return torch.tensor(out, dtype=torch.float64)


def _accuracy(diff):
    """Fraction of examples with reward(a) > reward(b); a tie counts one half (chance)."""
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())


def _train(model, dataset, tmp_path, **cfg):
    seed = cfg.pop("seed")
    steps = cfg.pop("max_steps")
    args = PreferenceConfig(**trainer_kwargs(tmp_path, max_steps=steps, learning_rate=1e-2, logging_steps=steps,
                                             per_device_train_batch_size=8, seed=seed), reference="live", **cfg)
    PreferenceTrainer(model=model, args=args, train_dataset=dataset).train()


# ---- DPO / ln-DPO: a toy rule learned from pairs, checked on held-out prompts ---------------------------------

def _pair_rows(n, seed, swap=False):
    """Rule: a chosen answer opens with "Yes, ", a rejected one with "No, "; the rest is random words (different
    in the two), so only the opening generalises to new prompts."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        prompt = _prompt(rng)
        chosen, rejected = "Yes, %s." % _words(rng), "No, %s." % _words(rng)
        if swap:
            chosen, rejected = rejected, chosen
        rows.append({"prompt_id": "s%d-%d" % (seed, i), "prompt": [{"role": "user", "content": prompt}],
                     "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}]})
    return rows


def _dpo_toy(tmp_path, seed, loss, beta, swap=False):
    model, tok = load_tiny(tiny_model_dir(tmp_path / "m", seed=seed))
    enc = ChatEncoder(tok)
    train = PreferenceDataset(read_rows(write_jsonl(tmp_path / "train.jsonl", _pair_rows(32, 100 + seed, swap)),
                                        "pairs"), enc)
    test = PreferenceDataset(read_rows(write_jsonl(tmp_path / "test.jsonl", _pair_rows(32, 200 + seed)), "pairs"),
                             enc)
    ref = _logps(model, test)
    lengths = torch.tensor([[len(r) for r in it["responses"]] for it in test.items], dtype=torch.float64)

    def reward_accuracy():
        h = _logps(model, test) - ref
        if loss == "ln_dpo":
            h = h / lengths
        return _accuracy(h[:, 0] - h[:, 1])

    before = reward_accuracy()
    _train(model, train, tmp_path / "out", seed=seed, max_steps=6, loss=loss, beta=beta)
    return {"before": before, "after": reward_accuracy(),
            "prior": _accuracy(ref[:, 0] - ref[:, 1])}  # does the untrained model already like "Yes"?


@pytest.mark.parametrize("loss,beta", [("dpo", 0.1), ("ln_dpo", 10.0)])
@pytest.mark.parametrize("seed", [0] + SLOW_SEEDS)
def test_dpo_raises_held_out_reward_accuracy_from_chance(tmp_path, seed, loss, beta):
    got = _dpo_toy(tmp_path, seed, loss, beta)
    assert got["before"] == 0.5, got  # policy = reference: every reward is 0
    assert 0.25 <= got["prior"] <= 0.75, got  # and the starting model does not know the rule already
    assert got["after"] >= 0.9, got


def test_dpo_follows_the_labels_not_the_responses(tmp_path):
    """The same toy with chosen and rejected swapped in training: the held-out accuracy on the true labels falls
    to near 0 (a sign error, or a preference for some property of the responses, would not)."""
    got = _dpo_toy(tmp_path, 0, "dpo", 0.1, swap=True)
    assert got["after"] <= 0.1, got


# ---- WRPO: α_end and the ramp --------------------------------------------------------------------------------

def _wrpo_rows(n, seed):
    """Target pair: y_wt opens with "Yes, ", y_l with "No, " (random words after). The source response y_ws is y_l
    continued with more words: what the target pair teaches (push "No, ..." down) lowers it too, so only the
    source term of the loss (weight α) can make it beat y_l; and raising it raises y_l's opening, against the
    target pair."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        prompt = _prompt(rng)
        wt, rejected = "Yes, %s." % _words(rng), "No, %s." % _words(rng)
        ws = "%s %s." % (rejected[:-1], _words(rng))
        rows.append({"prompt_id": "s%d-%d" % (seed, i), "messages": [{"role": "user", "content": prompt}],
                     "chosen": [{"role": "assistant", "content": ws}, {"role": "assistant", "content": wt}],
                     "rejected": [{"role": "assistant", "content": rejected}]})
    return rows


def _wrpo_toy(tmp_path, seed, runs):
    model_dir = tiny_model_dir(tmp_path / "m", seed=seed)
    train_path = write_jsonl(tmp_path / "train.jsonl", _wrpo_rows(32, 100 + seed))
    test_path = write_jsonl(tmp_path / "test.jsonl", _wrpo_rows(32, 200 + seed))
    out = {}
    for alpha, dynamic in runs:
        model, tok = load_tiny(model_dir)
        enc = ChatEncoder(tok)
        train = PreferenceDataset(read_rows(train_path, "wrpo"), enc)
        test = PreferenceDataset(read_rows(test_path, "wrpo"), enc)
        ref = _logps(model, test)
        _train(model, train, tmp_path / "out", seed=seed, max_steps=8, loss="wrpo", beta=0.1, alpha=alpha,
               alpha_dynamic=dynamic)
        h = _logps(model, test) - ref
        source, target = h[:, 0] - h[:, 2], h[:, 1] - h[:, 2]
        out[alpha, dynamic] = {"source_acc": _accuracy(source), "target_acc": _accuracy(target),
                               "source_margin": float(source.mean()), "target_margin": float(target.mean())}
    return out


@pytest.mark.parametrize("seed", [0] + SLOW_SEEDS)
def test_wrpo_source_accuracy_rises_with_alpha_and_the_ramp_keeps_the_target(tmp_path, seed):
    got = _wrpo_toy(tmp_path, seed, [(0.1, True), (0.9, True), (0.9, False)])
    small, large, static = got[0.1, True], got[0.9, True], got[0.9, False]
    # the hybrid's source part: y_ws beats y_l on held-out prompts only when α_end is large
    assert large["source_acc"] >= 0.85, got
    assert small["source_acc"] <= 0.6, got
    assert large["source_acc"] - small["source_acc"] >= 0.3, got
    assert large["source_margin"] > small["source_margin"], got
    # on-policy pair: the ramp (α from 0 to α_end) keeps it better than α_end from the first step
    assert large["target_acc"] >= 0.95, got
    assert static["target_acc"] < large["target_acc"], got
    assert large["target_margin"] > 2 * static["target_margin"], got


# ---- C-RLFT: 15 % expert / 85 % sub-optimal ------------------------------------------------------------------

def _mixture_rows(n, seed):
    """Expert (class GPT4, 15 %) answers open with "Yes, ", sub-optimal ones (GPT3, 85 %) with "No, "."""
    rng = random.Random(seed)
    n_expert = round(0.15 * n)
    rows = []
    for i in range(n):
        expert = i < n_expert
        answer = "%s, %s." % ("Yes" if expert else "No", _words(rng))
        rows.append({"prompt_id": "s%d-%d" % (seed, i), "model": "GPT4" if expert else "GPT3",
                     "messages": [{"role": "user", "content": _prompt(rng)},
                                  {"role": "assistant", "content": answer}]})
    rng.shuffle(rows)
    return rows


@torch.no_grad()
def _expert_margins(model, tok, render, prompts, seed):
    """Per prompt: log π("Yes, <words>.") − log π("No, <words>.") (same words) after the rendered prompt."""
    model.eval()
    rng = random.Random(seed)
    margins = []
    for prompt in prompts:
        words = _words(rng)
        logps = []
        for opening in ("Yes", "No"):
            messages = [{"role": "user", "content": prompt}]
            enc = ChatEncoder(tok, template=render)
            prompt_ids, response_ids = enc.encode_response(messages, "%s, %s." % (opening, words))
            ids = torch.tensor([prompt_ids + response_ids])
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
            logps.append(float(logp.gather(-1, ids[0, 1:, None])[len(prompt_ids) - 1:].sum()))
        margins.append(logps[0] - logps[1])
    return torch.tensor(margins)


class _SavedTemplate:
    """The saved tokenizer's own chat template (what inference uses)."""

    def __init__(self, tok):
        self.tok, self.end_tokens = tok, ()

    def render(self, messages, add_generation_prompt):
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _crlft_toy(tmp_path, seed):
    model_dir = tiny_model_dir(tmp_path / "m", seed=seed)
    data = write_jsonl(tmp_path / "mix.jsonl", _mixture_rows(40, 100 + seed))
    rng = random.Random(300 + seed)
    prompts = [_prompt(rng) for _ in range(24)]
    kw = trainer_kwargs(tmp_path, max_steps=70, learning_rate=5e-3, lr_scheduler_type="constant",
                        per_device_train_batch_size=8, seed=seed)
    kw["output_dir"] = str(tmp_path / "crlft")
    summary = run_crlft(CRLFTConfig(**kw, class_weights="GPT4=1,GPT3=0.1"), str(model_dir), data)
    assert summary["classes"] == {"GPT3": 34, "GPT4": 6} and summary["expert_class"] == "GPT4"
    model, tok = load_tiny(tmp_path / "crlft")
    expert = _expert_margins(model, tok, _SavedTemplate(tok), prompts, seed)
    assert tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                   add_generation_prompt=True) == "<s>GPT4 User: x<|end_of_turn|>GPT4 Assistant:"
    sub = _expert_margins(model, tok, ConditionedTemplate("GPT3", bos=tok.bos_token), prompts, seed)
    kw["output_dir"] = str(tmp_path / "sft")
    run_sft(SFTConfig(**kw), str(model_dir), data)
    model, tok = load_tiny(tmp_path / "sft")
    sft = _expert_margins(model, tok, _SavedTemplate(tok), prompts, seed)
    return {"crlft_expert": expert, "crlft_sub": sub, "sft": sft}


@pytest.mark.parametrize("seed", [0] + SLOW_SEEDS)
def test_crlft_prefers_the_expert_under_the_expert_prompt_where_sft_does_not(tmp_path, seed):
    got = _crlft_toy(tmp_path, seed)
    summary = {k: (round(float(v.mean()), 3), float((v > 0).double().mean())) for k, v in got.items()}
    # C-RLFT, expert prompt (the saved chat template): the expert opening wins on every held-out prompt
    assert (got["crlft_expert"] > 0).all() and got["crlft_expert"].mean() > 0.5, summary
    # plain SFT on the same mixture follows the 85 %: the sub-optimal opening wins
    assert (got["sft"] < 0).all() and got["sft"].mean() < -1.0, summary
    # the class tag is what conditions it: the same model under the sub-optimal class's prompt prefers "No"
    assert (got["crlft_sub"] < got["crlft_expert"]).all() and got["crlft_sub"].mean() < 0, summary
