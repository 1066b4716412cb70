"""Reading the implicit-fusion data sets (docs/implicit.md) into token ids, and the collators.

Three row formats (JSON Lines, written by ``fusion-train build-pairs``):

* SFT set ``{"prompt_id", "messages": [... , {"role": "assistant", ...}], "model", "score"}``;
* preference pairs ``{"prompt_id", "prompt": [...], "chosen": [assistant message], "rejected": [...], ...}``
  (the conversational format TRL and alignment-handbook read);
* WRPO triples ``{"prompt_id", "messages": [prompt], "chosen": [y_ws, y_wt], "rejected": [y_l]}`` (source first).

A response is rendered with the chat template after its prompt; its tokens are where the tokenised
``prompt + response`` leaves the tokenised prompt-with-generation-prompt (TRL's rule, so the two agree), and
they include the template's end-of-turn token (EOS appended when the template has none). Truncation policy:
a prompt longer than ``max_prompt_length`` keeps its last ``max_prompt_length`` tokens; a response that does
not fit in ``max_length`` after its prompt is cut at the end; both are counted in :attr:`stats` (the summary);
a prompt that leaves no room for a response is an error.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from tokalign.errors import TokalignError

__all__ = [
    "FORMATS",
    "read_rows",
    "ChatEncoder",
    "PlainTemplate",
    "HFTemplate",
    "PreferenceDataset",
    "SFTDataset",
    "PreferenceCollator",
    "SFTCollator",
]

# format name -> the keys that identify it (used to say what a file in the wrong format looks like)
FORMATS = {
    "sft": ("messages",),
    "pairs": ("prompt", "chosen", "rejected"),
    "wrpo": ("messages", "chosen", "rejected"),
}
_COMMAND = {"sft": "fusion-train sft / crlft", "pairs": "fusion-train dpo", "wrpo": "fusion-train wrpo"}


def _guess_format(row: Mapping[str, Any]) -> Optional[str]:
    if "prompt" in row and "chosen" in row:
        return "pairs"
    if "messages" in row and "chosen" in row:
        return "wrpo"
    if "responses" in row:
        return "scored responses"
    if "messages" in row:
        return "sft"
    return None


def _messages(value: Any, where: str, what: str) -> List[Dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise TokalignError("%s: %s must be a non-empty list of {role, content} messages" % (where, what))
    for m in value:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise TokalignError("%s: %s holds a message that is not {\"role\": str, \"content\": str}" % (where, what))
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _response_text(value: Any, where: str, what: str) -> str:
    """A response given as a string, an assistant message or a one-message list (TRL's conversational form)."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict):
        if value.get("role", "assistant") != "assistant" or not isinstance(value.get("content"), str):
            raise TokalignError("%s: %s must be an assistant message" % (where, what))
        value = value["content"]
    if not isinstance(value, str):
        raise TokalignError("%s: %s must be a string or an assistant message" % (where, what))
    if not value.strip():
        raise TokalignError("%s: %s is empty (a response must have text to train on)" % (where, what))
    return value


def read_rows(path, fmt: str) -> List[Tuple[str, Dict[str, Any]]]:
    """``[(FILE:LINE, row)]`` of a data file in format ``fmt`` (sft | pairs | wrpo), normalised to
    ``{"prompt_id", "prompt": messages, "responses": [text, ...]}`` (pairs and wrpo) or ``{"prompt_id",
    "messages", ...}`` (sft, other keys kept). One TokalignError line for a row in another format, a missing
    field, an empty response or a chosen response equal to a rejected one."""
    from fusion_train.implicit.jsonl import read_jsonl

    if fmt not in FORMATS:
        raise ValueError("format must be one of %s" % ", ".join(FORMATS))
    out = []
    for where, row in read_jsonl(path):
        missing = [k for k in FORMATS[fmt] if k not in row]
        guessed = _guess_format(row)
        if missing or (guessed != fmt and not (fmt == "sft" and guessed == "sft")):
            hint = (" (this looks like %s; train it with %s)" % (guessed, _COMMAND.get(guessed, "another command"))
                    if guessed and guessed != fmt else "")
            raise TokalignError("%s: not a %s row: expected keys %s, got %s%s" % (
                where, fmt, ", ".join(FORMATS[fmt]), ", ".join(sorted(row)) or "none", hint))
        pid = str(row.get("prompt_id", where))
        if fmt == "sft":
            messages = _messages(row["messages"], where, "messages")
            if not any(m["role"] == "assistant" for m in messages):
                raise TokalignError("%s: messages hold no assistant turn to train on" % where)
            for m in messages:
                if m["role"] == "assistant" and not m["content"].strip():
                    raise TokalignError("%s: an assistant turn is empty" % where)
            out.append((where, dict(row, prompt_id=pid, messages=messages)))
            continue
        prompt = _messages(row["prompt"] if fmt == "pairs" else row["messages"], where, "the prompt")
        if not any(m["role"] == "user" for m in prompt):
            raise TokalignError("%s: the prompt has no user turn" % where)
        if fmt == "pairs":
            chosen = [_response_text(row["chosen"], where, "chosen")]
            rejected = [_response_text(row["rejected"], where, "rejected")]
        else:
            if not isinstance(row["chosen"], list) or len(row["chosen"]) != 2:
                raise TokalignError("%s: WRPO chosen must be [y_ws, y_wt] (source first, then target)" % where)
            if not isinstance(row["rejected"], list) or len(row["rejected"]) != 1:
                raise TokalignError("%s: WRPO rejected must be [y_l]" % where)
            chosen = [_response_text(row["chosen"][0], where, "chosen[0] (y_ws)"),
                      _response_text(row["chosen"][1], where, "chosen[1] (y_wt)")]
            rejected = [_response_text(row["rejected"][0], where, "rejected[0] (y_l)")]
        for i, c in enumerate(chosen):
            if c == rejected[0]:
                raise TokalignError("%s: prompt_id %s: chosen%s equals rejected (no preference to learn)"
                                    % (where, pid, "[%d]" % i if fmt == "wrpo" else ""))
        out.append((where, {"prompt_id": pid, "prompt": prompt, "responses": chosen + rejected}))
    if not out:
        raise TokalignError("%s: no rows" % path)
    return out


# ---- templates --------------------------------------------------------------------------------------

class HFTemplate:
    """The tokenizer's own chat template (``apply_chat_template``)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.end_tokens: Tuple[str, ...] = ()

    def render(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)


class PlainTemplate:
    """For tokenizers without a chat template: ``User: ...\\nAssistant: ...<eos>\\n`` after the BOS text."""

    def __init__(self, tokenizer) -> None:
        self.bos = tokenizer.bos_token or ""
        self.eos = tokenizer.eos_token or ""
        self.end_tokens = (self.eos,) if self.eos else ()

    def render(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> str:
        parts = [self.bos]
        for m in messages:
            end = self.eos if m["role"] == "assistant" else ""
            parts.append("%s: %s%s\n" % (m["role"].title(), m["content"], end))
        if add_generation_prompt:
            parts.append("Assistant:")
        return "".join(parts)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class ChatEncoder:
    """Token ids of prompts and responses under a template (default: the tokenizer's chat template, else
    :class:`PlainTemplate`). Rendered text is tokenised without added special tokens (templates write BOS)."""

    def __init__(self, tokenizer, template: Any = None) -> None:
        self.tokenizer = tokenizer
        if template is None:
            template = HFTemplate(tokenizer) if getattr(tokenizer, "chat_template", None) else PlainTemplate(tokenizer)
        self.template = template
        ends = [tokenizer.eos_token_id] + [tokenizer.convert_tokens_to_ids(t) for t in template.end_tokens]
        self.end_ids = {i for i in ends if isinstance(i, int) and i >= 0}
        self.eos_appended = 0

    def ids(self, text: str) -> List[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _close(self, response: List[int]) -> List[int]:
        # the response must end the turn: EOS / EOT included (a template without one gets the EOS appended)
        if response and not self.end_ids.intersection(response) and self.tokenizer.eos_token_id is not None:
            self.eos_appended += 1
            return response + [self.tokenizer.eos_token_id]
        return response

    def encode_response(self, prompt: Sequence[Mapping[str, str]], response: str) -> Tuple[List[int], List[int]]:
        """``(prompt_ids, response_ids)`` of one response after its prompt."""
        prompt_ids = self.ids(self.template.render(prompt, True))
        full = self.ids(self.template.render(list(prompt) + [{"role": "assistant", "content": response}], False))
        start = _common_prefix(prompt_ids, full)
        return full[:start], self._close(full[start:])

    def encode_turns(self, messages: Sequence[Mapping[str, str]]) -> Tuple[List[int], List[bool]]:
        """``(input_ids, train_mask)`` of a whole conversation; ``train_mask`` marks every assistant turn's tokens."""
        full = self.ids(self.template.render(messages, False))
        mask = [False] * len(full)
        for k, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before = self.ids(self.template.render(messages[:k], True)) if k else []
            upto = self.ids(self.template.render(messages[:k + 1], False))
            start = _common_prefix(before, full)
            stop = _common_prefix(upto, full)
            for t in range(start, stop):
                mask[t] = True
        if not self.end_ids.intersection(t for t, keep in zip(full, mask) if keep) and \
                self.tokenizer.eos_token_id is not None:
            self.eos_appended += 1
            full, mask = full + [self.tokenizer.eos_token_id], mask + [True]
        return full, mask


# ---- data sets --------------------------------------------------------------------------------------

def _fingerprint(parts: Sequence[Any]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, separators=(",", ":")).encode())
    return h.hexdigest()


class PreferenceDataset:
    """Tokenised preference rows: item ``i`` is ``{"prompt_ids", "responses": [ids, ...]}`` (pairs: chosen,
    rejected; WRPO: y_ws, y_wt, y_l), plus ``"ref_logps"`` once :meth:`attach_reference` ran.

    ``stats``: rows, truncated_prompts, truncated_responses, eos_appended.
    """

    def __init__(self, rows: Sequence[Tuple[str, Mapping[str, Any]]], encoder: ChatEncoder, *,
                 max_length: Optional[int] = None, max_prompt_length: Optional[int] = None) -> None:
        if max_length is not None and max_prompt_length is not None and max_prompt_length >= max_length:
            raise TokalignError("max_prompt_length (%d) must be below max_length (%d)" % (max_prompt_length, max_length))
        self.items: List[Dict[str, Any]] = []
        self.prompt_ids: List[str] = []
        self.stats = {"rows": 0, "truncated_prompts": 0, "truncated_responses": 0, "eos_appended": 0}
        before = encoder.eos_appended
        for where, row in rows:
            responses = [encoder.encode_response(row["prompt"], text) for text in row["responses"]]
            # responses whose tokens merge with the prompt's end keep the shared prefix only (TRL's rule)
            prompt_ids = min((p for p, _ in responses), key=len)
            responses = [p[len(prompt_ids):] + r for p, r in responses]
            if max_prompt_length is not None and len(prompt_ids) > max_prompt_length:
                prompt_ids = prompt_ids[-max_prompt_length:]
                self.stats["truncated_prompts"] += 1
            if max_length is not None:
                if len(prompt_ids) >= max_length:
                    raise TokalignError(
                        "%s: prompt_id %s: the prompt has %d tokens, max_length %d leaves no room for the response "
                        "(raise --max-length or set --max-prompt-length)" % (where, row["prompt_id"], len(prompt_ids),
                                                                            max_length))
                room = max_length - len(prompt_ids)
                if any(len(r) > room for r in responses):
                    self.stats["truncated_responses"] += 1
                    responses = [r[:room] for r in responses]
            for r, text in zip(responses, row["responses"]):
                if not r:
                    raise TokalignError("%s: prompt_id %s: a response tokenises to nothing: %r"
                                        % (where, row["prompt_id"], text[:40]))
            for r in responses[:-1]:
                if r == responses[-1]:
                    raise TokalignError("%s: prompt_id %s: chosen and rejected have the same tokens%s" % (
                        where, row["prompt_id"], " after truncation to max_length" if max_length else ""))
            self.items.append({"prompt_ids": prompt_ids, "responses": responses})
            self.prompt_ids.append(row["prompt_id"])
        self.stats["rows"] = len(self.items)
        self.stats["eos_appended"] = encoder.eos_appended - before
        self.n_responses = len(self.items[0]["responses"]) if self.items else 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return self.items[i]

    def fingerprint(self) -> str:
        """sha256 of every row's token ids: what a precomputed reference file must have been computed for."""
        return _fingerprint([[it["prompt_ids"], it["responses"]] for it in self.items])

    def attach_reference(self, logps: Sequence[Sequence[float]]) -> None:
        if len(logps) != len(self.items):
            raise ValueError("%d reference rows for %d examples" % (len(logps), len(self.items)))
        for it, row in zip(self.items, logps):
            it["ref_logps"] = [float(x) for x in row]


class SFTDataset:
    """Tokenised conversations: item ``i`` is ``{"input_ids", "train_mask", "weight"}`` (assistant tokens only).

    ``weights`` (one per row, default 1) are C-RLFT's class weights. ``stats``: rows, truncated (cut at
    ``max_length``, counted), eos_appended.
    """

    def __init__(self, rows: Sequence[Tuple[str, Mapping[str, Any]]], encoder: Any, *,
                 max_length: Optional[int] = None, weights: Optional[Sequence[float]] = None) -> None:
        self.items: List[Dict[str, Any]] = []
        self.stats = {"rows": 0, "truncated": 0, "eos_appended": 0}
        for k, (where, row) in enumerate(rows):
            # one encoder, or one per row (C-RLFT: the row's class picks the template)
            enc = encoder if isinstance(encoder, ChatEncoder) else encoder(row)
            before = enc.eos_appended
            ids, mask = enc.encode_turns(row["messages"])
            self.stats["eos_appended"] += enc.eos_appended - before
            if max_length is not None and len(ids) > max_length:
                ids, mask = ids[:max_length], mask[:max_length]
                self.stats["truncated"] += 1
                if not any(mask[1:]):
                    raise TokalignError("%s: prompt_id %s: the first assistant turn starts after max_length %d "
                                        "(raise --max-length)" % (where, row.get("prompt_id"), max_length))
            if not any(mask[1:]):
                raise TokalignError("%s: prompt_id %s: the assistant turns tokenise to nothing"
                                    % (where, row.get("prompt_id")))
            weight = 1.0 if weights is None else float(weights[k])
            self.items.append({"input_ids": ids, "train_mask": mask, "weight": weight})
        self.stats["rows"] = len(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return self.items[i]


# ---- collators --------------------------------------------------------------------------------------

def _pad(rows: Sequence[Sequence[Any]], value: Any, length: int):
    import torch

    return torch.tensor([list(r) + [value] * (length - len(r)) for r in rows])


def _padded_length(rows: Sequence[Sequence[Any]], multiple: Optional[int]) -> int:
    length = max(len(r) for r in rows)
    if multiple:
        length = -(-length // multiple) * multiple
    return length


@dataclass
class PreferenceCollator:
    """One batch holding every response of every example: rows ``r·B + i`` are response ``r`` of example ``i``
    (pairs: all chosen, then all rejected; WRPO: y_ws, y_wt, y_l), each ``prompt + response``, right-padded.

    Yields ``input_ids``, ``attention_mask``, ``response_mask`` ``[R·B, L]`` (1 on response tokens, EOS
    included; 0 on prompt and padding) and, when every example has them, ``ref_logps [B, R]`` (float32).
    """

    pad_token_id: int = 0
    pad_to_multiple_of: Optional[int] = None

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
        import torch

        n = len(examples[0]["responses"])
        seqs, masks = [], []
        for r in range(n):
            for ex in examples:
                seqs.append(list(ex["prompt_ids"]) + list(ex["responses"][r]))
                masks.append([0] * len(ex["prompt_ids"]) + [1] * len(ex["responses"][r]))
        length = _padded_length(seqs, self.pad_to_multiple_of)
        batch = {
            "input_ids": _pad(seqs, self.pad_token_id, length),
            "attention_mask": _pad([[1] * len(s) for s in seqs], 0, length),
            "response_mask": _pad(masks, 0, length),
        }
        if all("ref_logps" in ex for ex in examples):
            batch["ref_logps"] = torch.tensor([ex["ref_logps"] for ex in examples], dtype=torch.float32)
        return batch


@dataclass
class SFTCollator:
    """``input_ids``, ``attention_mask``, ``response_mask`` (the assistant tokens) ``[B, L]`` and ``weights [B]``."""

    pad_token_id: int = 0
    pad_to_multiple_of: Optional[int] = None

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
        import torch

        seqs = [ex["input_ids"] for ex in examples]
        length = _padded_length(seqs, self.pad_to_multiple_of)
        return {
            "input_ids": _pad(seqs, self.pad_token_id, length),
            "attention_mask": _pad([[1] * len(s) for s in seqs], 0, length),
            "response_mask": _pad([[int(m) for m in ex["train_mask"]] for ex in examples], 0, length),
            "weights": torch.tensor([float(ex.get("weight", 1.0)) for ex in examples], dtype=torch.float32),
        }
