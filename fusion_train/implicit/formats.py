"""The interchange formats of implicit fusion (docs/implicit.md) and their checks.

* prompt: ``{"prompt_id", "messages", "domain", "gold"?, "tests"?}``;
* sample row (``fusion-train sample``): the prompt fields plus ``{"model", "sample", "seed", "text",
  "finish_reason", "new_tokens"}``, one line per response;
* scored prompt (``fusion-train score``): the prompt fields plus ``"responses": [{"model", "sample", "text",
  "score", "correct"?, "verdict"?}]``, one line per prompt.

Each ``check_*`` returns the row (normalised) or raises TokalignError naming ``FILE:LINE`` and the field.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Sequence, Tuple

from tokalign.errors import TokalignError

from .jsonl import read_jsonl

__all__ = ["DOMAINS", "PROMPT_FIELDS", "check_prompt", "check_sample_row", "check_scored", "read_prompts",
           "read_scored", "group_samples", "prompt_fields"]

DOMAINS = ("chat", "math", "code")
ROLES = ("system", "user", "assistant", "tool")
PROMPT_FIELDS = ("prompt_id", "messages", "domain", "gold", "tests")
VERIFIED = ("math", "code")  # domains whose correctness a verifier decides


def _fail(where: str, what: str) -> TokalignError:
    return TokalignError("%s: %s" % (where, what))


def check_messages(messages: Any, where: str, field: str = "messages") -> List[Dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise _fail(where, "%r must be a non-empty list of {role, content}" % field)
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise _fail(where, "%s[%d] must be {\"role\": str, \"content\": str}" % (field, i))
        if m["role"] not in ROLES:
            raise _fail(where, "%s[%d] has role %r (one of %s)" % (field, i, m["role"], ", ".join(ROLES)))
    return messages


def check_prompt(row: Dict[str, Any], where: str) -> Dict[str, Any]:
    """A prompt row: an id, messages with a user turn and ending with one, a known domain, ``gold`` (str)
    and ``tests`` (list of str) when present."""
    pid = row.get("prompt_id")
    if not isinstance(pid, (str, int)) or isinstance(pid, bool) or pid == "":
        raise _fail(where, "missing \"prompt_id\" (a string)")
    messages = check_messages(row.get("messages"), where)
    if not any(m["role"] == "user" for m in messages):
        raise _fail(where, "prompt %s has no user turn" % pid)
    if messages[-1]["role"] != "user":
        raise _fail(where, "prompt %s ends with a %s turn; a prompt ends with the user turn to answer"
                    % (pid, messages[-1]["role"]))
    domain = row.get("domain", "chat")
    if domain not in DOMAINS:
        raise _fail(where, "prompt %s: domain %r (one of %s)" % (pid, domain, ", ".join(DOMAINS)))
    if "gold" in row and row["gold"] is not None and not isinstance(row["gold"], (str, int, float)):
        raise _fail(where, "prompt %s: \"gold\" must be a string" % pid)
    tests = row.get("tests")
    if tests is not None and (not isinstance(tests, list) or not all(isinstance(t, str) for t in tests)):
        raise _fail(where, "prompt %s: \"tests\" must be a list of strings (Python statements)" % pid)
    out = dict(row)
    out["prompt_id"] = str(pid)
    out["domain"] = domain
    if out.get("gold") is not None:
        out["gold"] = str(out["gold"])
    return out


def prompt_fields(row: Dict[str, Any]) -> Dict[str, Any]:
    """The prompt part of a sample or scored row (the fields a later stage copies through)."""
    return {k: row[k] for k in PROMPT_FIELDS if k in row and row[k] is not None}


def _read_unique(path: Any, check, what: str) -> List[Dict[str, Any]]:
    """Every row of ``path`` through ``check(row, where)``; a repeated ``prompt_id`` or an empty file is an
    error naming the file (and line)."""
    rows, seen = [], {}
    for where, row in read_jsonl(path):
        r = check(row, where)
        if r["prompt_id"] in seen:
            raise _fail(where, "prompt_id %s repeats %s" % (r["prompt_id"], seen[r["prompt_id"]]))
        seen[r["prompt_id"]] = where
        rows.append(r)
    if not rows:
        raise TokalignError("%s: no %s" % (path, what))
    return rows


def read_prompts(path: Any) -> List[Dict[str, Any]]:
    """All prompts of a file, checked; a repeated ``prompt_id`` is an error."""
    return _read_unique(path, check_prompt, "prompts")


def _check_response_id(r: Dict[str, Any], where: str, pid: str) -> Tuple[str, int]:
    model = r.get("model")
    if not isinstance(model, str) or not model:
        raise _fail(where, "a response of prompt %s has no \"model\"" % pid)
    sample = r.get("sample")
    if not isinstance(sample, int) or isinstance(sample, bool) or sample < 0:
        raise _fail(where, "a response of prompt %s (model %s) has no \"sample\" index" % (pid, model))
    if not isinstance(r.get("text"), str):
        raise _fail(where, "response %s/%s#%d has no \"text\"" % (pid, model, sample))
    return model, sample


def check_sample_row(row: Dict[str, Any], where: str) -> Dict[str, Any]:
    out = check_prompt(row, where)
    _check_response_id(row, where, out["prompt_id"])
    return out


def check_score(value: Any, where: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(where, "%s: \"score\" must be a number, got %r" % (what, value))
    if not math.isfinite(value):
        raise _fail(where, "%s: score is %s (not a finite number)" % (what, value))
    return float(value)


def check_scored(row: Dict[str, Any], where: str, *, need_scores: bool = True) -> Dict[str, Any]:
    """A scored prompt: prompt fields plus a non-empty ``responses`` list; every response names its model and
    sample, and (``need_scores``) has a finite score; math/code responses carry a boolean ``correct``."""
    out = check_prompt(row, where)
    pid = out["prompt_id"]
    responses = row.get("responses")
    if not isinstance(responses, list) or not responses:
        raise _fail(where, "prompt %s has no \"responses\" list" % pid)
    seen = set()
    for r in responses:
        if not isinstance(r, dict):
            raise _fail(where, "prompt %s: every response must be an object" % pid)
        key = _check_response_id(r, where, pid)
        if key in seen:
            raise _fail(where, "prompt %s: response %s#%d appears twice" % (pid, key[0], key[1]))
        seen.add(key)
        if need_scores:
            what = "response %s/%s#%d" % (pid, key[0], key[1])
            r["score"] = check_score(r.get("score"), where, what)
            if out["domain"] in VERIFIED and not isinstance(r.get("correct"), bool):
                raise _fail(where, "%s (%s) has no boolean \"correct\": score it with --verify %s"
                            % (what, out["domain"], out["domain"]))
    return out


def read_scored(path: Any) -> List[Dict[str, Any]]:
    """All scored prompts of a file, checked; a repeated ``prompt_id`` is an error."""
    return _read_unique(path, check_scored, "scored prompts")


def group_samples(paths: Sequence[Any]) -> List[Dict[str, Any]]:
    """Read sample rows (one response a line) and/or scored rows (a ``responses`` list) from ``paths`` into
    one row per prompt, in order of first appearance; responses keep their fields (scores are recomputed by
    the scorer). A prompt whose fields differ between lines, or a response seen twice, is an error."""
    by_id: Dict[str, Dict[str, Any]] = {}
    first: Dict[str, Tuple[str, Dict[str, Any]]] = {}
    for path in paths:
        for where, row in read_jsonl(path):
            if "responses" in row:
                p = check_scored(row, where, need_scores=False)
                responses = [dict(r) for r in row["responses"]]
            else:
                p = check_sample_row(row, where)
                responses = [{k: row[k] for k in ("model", "sample", "text", "seed", "finish_reason") if k in row}]
            pid = p["prompt_id"]
            fields = prompt_fields(p)
            if pid in by_id:
                if fields != first[pid][1]:
                    raise _fail(where, "prompt %s differs from its first appearance at %s" % (pid, first[pid][0]))
            else:
                first[pid] = (where, fields)
                by_id[pid] = dict(fields, responses=[])
            have = {(r["model"], r["sample"]) for r in by_id[pid]["responses"]}
            for r in responses:
                if (r["model"], r["sample"]) in have:
                    raise _fail(where, "response %s/%s#%d appears twice" % (pid, r["model"], r["sample"]))
                by_id[pid]["responses"].append(r)
    if not by_id:
        raise TokalignError("no responses in %s" % ", ".join(str(p) for p in paths))
    return list(by_id.values())


def models_in(rows: Iterable[Dict[str, Any]]) -> List[str]:
    seen: Dict[str, None] = {}
    for row in rows:
        for r in row["responses"]:
            seen.setdefault(r["model"], None)
    return list(seen)
