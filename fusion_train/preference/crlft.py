"""OpenChat's C-RLFT pieces: class-tag templates, the end-of-turn token, class weights, and C-RLFT records
from scored responses.

Every record has a class (its source: GPT-4 vs GPT-3.5 in the paper; here the source model, or any ``class``
field, e.g. source × correctness) and every class a weight (paper: expert 1, sub-optimal 0.1). Training is
class-weighted SFT on conversations whose turns carry the class tag (:class:`ConditionedTemplate`); inference
uses the expert class's prompt, which :func:`chat_template_jinja` writes into the saved tokenizer.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from tokalign.errors import TokalignError

__all__ = [
    "ConditionedTemplate",
    "chat_template_jinja",
    "parse_class_weights",
    "record_classes",
    "check_weights",
    "ensure_end_of_turn",
    "records_from_scored",
]


class ConditionedTemplate:
    """OpenChat-style template with a class tag, rendered for one class.

    ``placement``: ``role`` -- the tag opens every turn's role prefix (``GPT4 User: …<|end_of_turn|>GPT4
    Assistant:``, OpenChat); ``system`` -- one leading ``GPT4<|end_of_turn|>`` line, plain role prefixes;
    ``assistant`` -- only the assistant prefixes carry the tag. The response follows ``Assistant: `` and ends
    with the end-of-turn token (trained on).
    """

    def __init__(self, tag: str, *, placement: str = "role", end_of_turn: str = "<|end_of_turn|>",
                 bos: str = "") -> None:
        if placement not in ("role", "system", "assistant"):
            raise ValueError("placement must be role, system or assistant, got %r" % placement)
        self.tag, self.placement, self.eot, self.bos = tag, placement, end_of_turn, bos
        self.end_tokens = (end_of_turn,)

    def _prefix(self, role: str) -> str:
        tagged = self.placement == "role" or (self.placement == "assistant" and role == "assistant")
        return ("%s %s:" % (self.tag, role.title())) if tagged else "%s:" % role.title()

    def render(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> str:
        parts = [self.bos]
        if self.placement == "system":
            parts.append(self.tag + self.eot)
        for m in messages:
            parts.append("%s %s%s" % (self._prefix(m["role"]), m["content"], self.eot))
        if add_generation_prompt:
            parts.append(self._prefix("assistant"))
        return "".join(parts)


def chat_template_jinja(tag: str, placement: str = "role", end_of_turn: str = "<|end_of_turn|>") -> str:
    """A Jinja chat template rendering exactly :class:`ConditionedTemplate` for ``tag`` (the expert class):
    saved with the model so that ``apply_chat_template`` gives the expert prompt at inference."""
    t = ConditionedTemplate(tag, placement=placement, end_of_turn=end_of_turn)
    q = json.dumps  # a Jinja string literal is a JSON string literal for these characters
    head = "{{ bos_token }}" + ("{{ %s }}" % q(tag + end_of_turn) if placement == "system" else "")
    user, assistant = t._prefix("user"), t._prefix("assistant")
    return (head + "{% for message in messages %}"
            "{% if message['role'] == 'assistant' %}{{ " + q(assistant + " ") + " }}"
            "{% elif message['role'] == 'user' %}{{ " + q(user + " ") + " }}"
            "{% else %}{{ " + q((tag + " " if placement == "role" else "")) + " + message['role'].title() + ': ' }}"
            "{% endif %}{{ message['content'] + " + q(end_of_turn) + " }}{% endfor %}"
            "{% if add_generation_prompt %}{{ " + q(assistant) + " }}{% endif %}")


def parse_class_weights(text: Optional[str]) -> Dict[str, float]:
    """``"GPT4=1,GPT3=0.1"`` -> ``{"GPT4": 1.0, "GPT3": 0.1}`` (weights finite and >= 0, one > 0)."""
    if not text:
        raise TokalignError("--class-weights is required (CLASS=WEIGHT,...; paper: expert 1, sub-optimal 0.1)")
    out: Dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not sep or not name or not math.isfinite(weight) or weight < 0:
            raise TokalignError("--class-weights: %r is not CLASS=WEIGHT with a weight >= 0" % part)
        out[name] = weight
    if not any(w > 0 for w in out.values()):
        raise TokalignError("--class-weights: every weight is 0")
    return out


def record_classes(rows: Sequence[Tuple[str, Mapping[str, Any]]], class_key: str = "class") -> List[str]:
    """The class of each row: ``row[class_key]``, else its ``model`` (the source)."""
    out = []
    for where, row in rows:
        cls = row.get(class_key, row.get("model"))
        if not isinstance(cls, str) or not cls:
            raise TokalignError("%s: no class (no %r or 'model' field)" % (where, class_key))
        out.append(cls)
    return out


def check_weights(classes: Sequence[str], weights: Mapping[str, float]) -> None:
    counts: Dict[str, int] = defaultdict(int)
    for c in classes:
        counts[c] += 1
    missing = sorted(c for c in counts if c not in weights)
    if missing:
        raise TokalignError("class %s (%d rows) has no weight in --class-weights (given: %s)" % (
            ", ".join(repr(c) for c in missing), sum(counts[c] for c in missing), ", ".join(weights)))


def ensure_end_of_turn(tokenizer, model, token: str = "<|end_of_turn|>") -> Dict[str, Any]:
    """Add ``token`` as a special token when the tokenizer lacks it; its embedding (input, and output when
    untied) starts at the mean of the existing rows. Returns the vocabulary growth record."""
    import torch

    before = len(tokenizer)
    record = {"token": token, "added": False, "tokenizer_size_before": before, "tokenizer_size_after": before,
              "embedding_rows_before": model.get_input_embeddings().weight.shape[0]}
    if token in tokenizer.get_vocab():
        record["embedding_rows_after"] = record["embedding_rows_before"]
        return record
    tokenizer.add_special_tokens({"additional_special_tokens": [token]})
    new_id = tokenizer.convert_tokens_to_ids(token)
    rows = model.get_input_embeddings().weight.shape[0]
    if new_id >= rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[new_id] = emb[:before].mean(0)
        out = model.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != emb.data_ptr():
            out.weight[new_id] = out.weight[:before].mean(0)
    record.update(added=True, id=int(new_id), tokenizer_size_after=len(tokenizer),
                  embedding_rows_after=model.get_input_embeddings().weight.shape[0])
    return record


def records_from_scored(rows: Iterable[Mapping[str, Any]], *, statistic: str = "mean", low: float = 0.1,
                        per_source: str = "best") -> Tuple[List[Dict[str, Any]], Dict[str, float]]:
    """C-RLFT records and class weights from scored responses (one line per prompt with ``responses:
    [{model, text, score}]``, ``fusion-train score``'s output).

    Class = source model. Quality statistic per source: the ``mean`` (or ``median``) of its scores over all
    prompts. Weights as in the paper: the best source is the expert (1.0), every other gets ``low`` (0.1).
    ``per_source``: ``best`` keeps each source's best response per prompt (one record per prompt × source),
    ``all`` keeps every response.
    """
    if statistic not in ("mean", "median"):
        raise ValueError("statistic must be mean or median")
    if per_source not in ("best", "all"):
        raise ValueError("per_source must be best or all")
    records: List[Dict[str, Any]] = []
    scores: Dict[str, List[float]] = defaultdict(list)
    for row in rows:
        prompt = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        by_model: Dict[str, List[Mapping[str, Any]]] = defaultdict(list)
        for r in row["responses"]:
            if "model" not in r:
                raise TokalignError("prompt_id %s: a response has no model" % row.get("prompt_id"))
            by_model[r["model"]].append(r)
            scores[r["model"]].append(float(r["score"]))
        for model, rs in by_model.items():
            keep = [max(rs, key=lambda r: float(r["score"]))] if per_source == "best" else rs
            for r in keep:
                records.append({"prompt_id": row.get("prompt_id"), "messages": prompt + [
                    {"role": "assistant", "content": r["text"]}], "model": model, "class": model,
                    "score": float(r["score"])})
    if not scores:
        raise TokalignError("no scored responses")

    def stat(v: List[float]) -> float:
        s = sorted(v)
        return sum(s) / len(s) if statistic == "mean" else (s[len(s) // 2] + s[(len(s) - 1) // 2]) / 2

    quality = {m: stat(v) for m, v in scores.items()}
    expert = max(sorted(quality), key=lambda m: quality[m])
    weights = {m: (1.0 if m == expert else float(low)) for m in quality}
    return records, weights
