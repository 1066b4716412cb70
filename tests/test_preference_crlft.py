"""C-RLFT's pieces on their own (fusion_train.preference.crlft): the class-tag templates in the three placements,
the expert prompt saved for inference, records and class weights from scored responses, and the end-of-turn
token (added only when missing, embedding row = mean of the existing rows, growth recorded). Real tokenizers
from ../shared; CPU, seconds."""
import pytest
import torch

from fusion_train.preference.crlft import (ConditionedTemplate, chat_template_jinja, ensure_end_of_turn,
                                           records_from_scored)
from preference_helpers import TOKENIZERS, load_tiny, tiny_model_dir
from tokalign.errors import TokalignError

EOT = "<|end_of_turn|>"
CONVERSATION = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Sum 2+2?"}]
WITH_SYSTEM = [{"role": "system", "content": "Be brief."}] + CONVERSATION

# the rendered strings, written out by hand: what OpenChat's template and our two variants look like
RENDERED = {
    "role": "<s>GPT4 User: Hi<|end_of_turn|>GPT4 Assistant: Hello.<|end_of_turn|>"
            "GPT4 User: Sum 2+2?<|end_of_turn|>GPT4 Assistant:",
    "system": "<s>GPT4<|end_of_turn|>User: Hi<|end_of_turn|>Assistant: Hello.<|end_of_turn|>"
              "User: Sum 2+2?<|end_of_turn|>Assistant:",
    "assistant": "<s>User: Hi<|end_of_turn|>GPT4 Assistant: Hello.<|end_of_turn|>"
                 "User: Sum 2+2?<|end_of_turn|>GPT4 Assistant:",
}


@pytest.mark.parametrize("placement", sorted(RENDERED))
def test_class_tag_templates_render_each_placement(placement):
    t = ConditionedTemplate("GPT4", placement=placement, bos="<s>")
    assert t.render(CONVERSATION, add_generation_prompt=True) == RENDERED[placement]
    # a training conversation ends with the assistant turn closed by the end-of-turn token (trained on)
    closed = t.render(CONVERSATION[:2], add_generation_prompt=False)
    assert closed == RENDERED[placement].split("Hello.")[0] + "Hello." + EOT
    assert t.end_tokens == (EOT,)
    # another class: only the tag changes
    other = ConditionedTemplate("GPT3", placement=placement, bos="<s>").render(CONVERSATION, True)
    assert other == RENDERED[placement].replace("GPT4", "GPT3")
    with pytest.raises(ValueError):
        ConditionedTemplate("GPT4", placement="middle")


@pytest.mark.parametrize("placement", sorted(RENDERED))
def test_saved_chat_template_is_the_expert_prompt(placement):
    """The Jinja template written into the saved tokenizer renders exactly the expert class's template
    (``apply_chat_template`` at inference gives the prompt the expert's rows were trained under)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(TOKENIZERS / "mistral-v1"))
    tok.chat_template = chat_template_jinja("GPT4", placement, EOT)
    expert = ConditionedTemplate("GPT4", placement=placement, bos=tok.bos_token)
    for messages in (CONVERSATION, WITH_SYSTEM, CONVERSATION[:2]):
        for gen in (True, False):
            assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen) == \
                expert.render(messages, gen)
    assert tok.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True) == RENDERED[placement]
    # a tag or token with quotes / braces survives the Jinja string literals
    tok.chat_template = chat_template_jinja('G"{4}', placement, "<eot>")
    odd = ConditionedTemplate('G"{4}', placement=placement, end_of_turn="<eot>", bos=tok.bos_token)
    assert tok.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True) == \
        odd.render(CONVERSATION, True)


def _scored():
    def row(pid, answers):
        return {"prompt_id": pid, "messages": [{"role": "user", "content": "q %s" % pid}],
                "responses": [{"model": m, "text": "%s says %s" % (m, s), "score": s} for m, s in answers]}

    # mean scores: a 0.6, b 0.5 (its median 0.8 is the highest), c 0.2
    return [row("p1", [("a", 0.6), ("a", 0.7), ("b", 0.9), ("c", 0.2)]),
            row("p2", [("a", 0.5), ("b", 0.8), ("b", -0.2), ("c", 0.2)]),
            row("p3", [("a", 0.6), ("c", 0.2)])]


def test_records_from_scored_class_is_the_source_weight_from_its_mean_score():
    records, weights = records_from_scored(_scored())
    assert weights == {"a": 1.0, "b": 0.1, "c": 0.1}  # a has the best mean score: the expert
    # one record per prompt x source: that source's best response on that prompt
    assert [(r["prompt_id"], r["class"], r["score"]) for r in records] == [
        ("p1", "a", 0.7), ("p1", "b", 0.9), ("p1", "c", 0.2), ("p2", "a", 0.5), ("p2", "b", 0.8),
        ("p2", "c", 0.2), ("p3", "a", 0.6), ("p3", "c", 0.2)]
    for r in records:
        assert r["model"] == r["class"]
        assert r["messages"][0] == {"role": "user", "content": "q %s" % r["prompt_id"]}
        assert r["messages"][1] == {"role": "assistant", "content": "%s says %s" % (r["class"], r["score"])}
    everything, _ = records_from_scored(_scored(), per_source="all")
    assert len(everything) == 10
    # the statistic decides the expert: b's median (0.8) beats a's (0.6)
    _, by_median = records_from_scored(_scored(), statistic="median", low=0.25)
    assert by_median == {"a": 0.25, "b": 1.0, "c": 0.25}


def test_records_from_scored_bad_input():
    bad = _scored()
    del bad[1]["responses"][0]["model"]
    with pytest.raises(TokalignError, match="has no model"):
        records_from_scored(bad)
    with pytest.raises(TokalignError, match="no scored responses"):
        records_from_scored([{"prompt_id": "p", "messages": [], "responses": []}])
    with pytest.raises(ValueError):
        records_from_scored(_scored(), statistic="max")
    with pytest.raises(ValueError):
        records_from_scored(_scored(), per_source="worst")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("tiny") / "m")


def test_end_of_turn_token_is_added_with_the_mean_embedding(model_dir):
    model, tok = load_tiny(model_dir)
    n = len(tok)
    emb_before = model.get_input_embeddings().weight.detach().clone()
    out_before = model.get_output_embeddings().weight.detach().clone()
    assert EOT not in tok.get_vocab()
    record = ensure_end_of_turn(tok, model, EOT)
    assert record == {"token": EOT, "added": True, "id": n, "tokenizer_size_before": n, "tokenizer_size_after": n + 1,
                      "embedding_rows_before": n, "embedding_rows_after": n + 1}
    assert tok.convert_tokens_to_ids(EOT) == n
    assert tok("a" + EOT + "b", add_special_tokens=False)["input_ids"].count(n) == 1  # one special token
    emb, out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert torch.equal(emb[:n], emb_before) and torch.equal(out[:n], out_before)  # old rows untouched
    assert torch.allclose(emb[n], emb_before.mean(0), atol=1e-7)
    assert torch.allclose(out[n], out_before.mean(0), atol=1e-6)  # untied output row too
    assert model.config.vocab_size == n + 1
    # a second call (the tokenizer has it now) adds nothing
    again = ensure_end_of_turn(tok, model, EOT)
    assert again["added"] is False and again["tokenizer_size_after"] == n + 1
    assert again["embedding_rows_after"] == again["embedding_rows_before"] == n + 1


def test_end_of_turn_token_already_in_the_tokenizer_is_kept(tmp_path):
    # OpenChat's own tokenizer has <|end_of_turn|> (id 32000): nothing is added, no embedding changes
    model, tok = load_tiny(tiny_model_dir(tmp_path / "oc", tokenizer="openchat-3.5"))
    before = model.get_input_embeddings().weight.detach().clone()
    record = ensure_end_of_turn(tok, model, EOT)
    assert record["added"] is False and "id" not in record
    assert record["tokenizer_size_before"] == record["tokenizer_size_after"] == len(tok) == 32002
    assert torch.equal(model.get_input_embeddings().weight, before)


def test_end_of_turn_token_fills_a_padded_row_and_a_tied_head(tmp_path):
    from transformers import AutoTokenizer

    from tokalign.testing import tiny_llama

    tok = AutoTokenizer.from_pretrained(str(TOKENIZERS / "mistral-v1"))
    n = len(tok)
    # padded embeddings (rows beyond the tokenizer): the new id takes a free row, no resize
    model = tiny_llama(vocab=n + 8, hidden=16, layers=1, tie_word_embeddings=True)
    emb_before = model.get_input_embeddings().weight.detach().clone()
    record = ensure_end_of_turn(tok, model, EOT)
    assert record["added"] and record["id"] == n
    assert record["embedding_rows_before"] == record["embedding_rows_after"] == n + 8
    emb = model.get_input_embeddings().weight
    assert torch.allclose(emb[n], emb_before[:n].mean(0), atol=1e-7)  # mean of the tokenizer's rows only
    assert torch.equal(emb[n + 1:], emb_before[n + 1:])
    assert model.get_output_embeddings().weight.data_ptr() == emb.data_ptr()  # still tied
