"""``fusion-train score``: a score for every sampled response (FuseChat-3.0's scoring stage).

Library entry point :func:`score` (options in :class:`ScoreOptions`). A response's ``score`` is the reward
model's output when one is given (any ``AutoModelForSequenceClassification`` with a single-label head, fed the
conversation through the reward model's own chat template); ``--verify math`` / ``--verify code`` add
``correct`` and ``verdict`` for prompts of that domain (the final answer against ``gold``; the prompt's
``tests`` in the sandbox of :mod:`.verify.code`). Both together are FuseChat-3.0's dual scoring: the builders
rank by ``score`` and require ``correct``. Without a reward model a verified response scores 1.0 (correct) or
0.0. Every response must get a score: a chat prompt without ``--reward-model`` is refused before any work.

Output: one line per prompt, the prompt's fields plus ``responses`` (docs/implicit.md), written through a
temporary file (an error leaves an existing output untouched).
"""
from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from tokalign.errors import TokalignError

from .formats import group_samples
from .jsonl import write_jsonl_atomic
from .verify.code import CODE_BLOCKS, SandboxOptions, sandbox_layers, verify_code
from .verify.math import verify_math

__all__ = ["ScoreOptions", "score", "summary_line", "load_reward_model", "reward_scores", "VERIFIERS"]

VERIFIERS = ("math", "code")


@dataclass
class ScoreOptions:
    """Options of :func:`score`. ``inputs``: sample files (``fusion-train sample`` rows, rank files too) and/or
    scored files (re-scored). ``max_length``: reward-model inputs longer than this many tokens are cut at the
    end (counted in the report). Code runs: ``code_timeout`` wall seconds, ``code_memory_mb``,
    ``code_workers`` sandboxes at a time, ``code_blocks`` which fenced blocks form the program."""

    inputs: Sequence[Union[str, Path]]
    out: Union[str, Path]
    reward_model: Optional[Union[str, Path]] = None
    verify: Sequence[str] = ()
    batch_size: int = 8
    max_length: int = 4096
    reward_template: Optional[str] = None
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False
    allow_pickle: bool = False      # a reward model whose only weights are pickled (*.bin): trusted files only
    code_timeout: float = 10.0
    code_memory_mb: int = 1024
    code_workers: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    code_blocks: str = "all"
    progress: bool = True


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_reward_model(path: Union[str, Path], *, dtype: str = "auto", device: str = "auto",
                      trust_remote_code: bool = False, allow_pickle: bool = False):
    """``(model, tokenizer)`` of a reward model: safetensors only (pickled ``*.bin`` weights only with
    ``allow_pickle``: unpickling runs code from the file), custom code only when asked, and refused
    unless its checkpoint holds a one-label sequence-classification head (a causal LM or a classifier with
    several labels would otherwise load with a freshly initialised, meaningless head)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from tokalign.models import refuse_remote_code, torch_device, torch_dtype

    p = Path(path)
    if not p.is_dir():
        raise TokalignError("--reward-model %s: not a model folder" % path)
    safetensors = any(p.glob("*.safetensors"))
    if not safetensors and not allow_pickle:
        raise TokalignError("--reward-model %s: no *.safetensors weights (pickled checkpoints are loaded only with "
                            "--allow-pickle, for files you trust)" % path)
    if not trust_remote_code:
        refuse_remote_code(p, path)
    try:
        config = AutoConfig.from_pretrained(str(p), trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - one line for any transformers error
        raise TokalignError("--reward-model %s: %s" % (path, _one_line(exc))) from None
    archs = list(getattr(config, "architectures", None) or [])
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise TokalignError("--reward-model %s is a %s, not a reward model (needs a *ForSequenceClassification "
                            "head with one output)" % (path, ", ".join(archs) or "model without architectures"))
    if getattr(config, "num_labels", 1) != 1:
        raise TokalignError("--reward-model %s has a %d-label classification head; a reward model has one output"
                            % (path, config.num_labels))
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            str(p), use_safetensors=True if safetensors else None, trust_remote_code=trust_remote_code,
            dtype=torch_dtype(dtype),
            output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(str(p), trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001
        raise TokalignError("cannot load --reward-model %s: %s" % (path, _one_line(exc))) from None
    missing = [k for k in info.get("missing_keys", ()) if "score" in k or "classifier" in k or "head" in k]
    if missing:
        raise TokalignError("--reward-model %s: its checkpoint has no trained head (%s missing)"
                            % (path, ", ".join(sorted(missing)[:3])))
    model.to(torch_device(device))
    model.eval()
    return model, tokenizer


def _conversation_ids(tokenizer, messages, response: str, template: Optional[str], max_length: int):
    conv = list(messages) + [{"role": "assistant", "content": response}]
    try:
        text = tokenizer.apply_chat_template(conv, tokenize=False, chat_template=template)
    except Exception as exc:  # noqa: BLE001 - jinja errors
        raise TokalignError("reward model chat template failed: %s" % _one_line(exc)) from None
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return ids[:max_length], len(ids) > max_length


def reward_scores(model, tokenizer, items: Sequence[Any], *, batch_size: int = 8, max_length: int = 4096,
                  template: Optional[str] = None, progress: bool = False) -> Dict[str, Any]:
    """Reward of each ``(messages, response_text)`` in ``items``: ``{"scores": [...], "truncated": n}``.
    Batches are built by length; padding uses an id that does not occur in the batch (so the model's
    "last token that is not padding" is the conversation's last token even where pad = EOS)."""
    import torch
    from tqdm import tqdm

    if template is None and not getattr(tokenizer, "chat_template", None):
        raise TokalignError("the reward model's tokenizer has no chat template; give one (--reward-template)")
    encoded, truncated = [], 0
    for messages, text in items:
        ids, cut = _conversation_ids(tokenizer, messages, text, template, max_length)
        encoded.append(ids)
        truncated += cut
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    scores: List[float] = [0.0] * len(encoded)
    text_config = model.config.get_text_config()
    vocab = int(getattr(text_config, "vocab_size", 0) or len(tokenizer))
    device = next(model.parameters()).device
    bar = tqdm(total=len(order), unit="resp", disable=not progress, leave=False, desc="reward")
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        used = {t for i in chunk for t in encoded[i]}
        pad = tokenizer.pad_token_id
        if pad is None or pad in used:
            pad = next(t for t in range(vocab - 1, -1, -1) if t not in used)
        width = max(len(encoded[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            ids[row, :len(encoded[i])] = torch.tensor(encoded[i], dtype=torch.long)
            mask[row, :len(encoded[i])] = 1
        text_config.pad_token_id = pad
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        for row, i in enumerate(chunk):
            scores[i] = float(logits[row, 0].float())
        bar.update(len(chunk))
    bar.close()
    return {"scores": scores, "truncated": truncated}


def _plan(rows: List[Dict[str, Any]], options: ScoreOptions) -> None:
    """Refuse, before any model loads, a prompt whose responses would get no score or no verdict."""
    verify = set(options.verify)
    for row in rows:
        domain, pid = row["domain"], row["prompt_id"]
        if domain in verify and domain == "math" and not row.get("gold"):
            raise TokalignError("math prompt %s has no \"gold\" answer to verify against" % pid)
        if domain in verify and domain == "code" and not row.get("tests"):
            raise TokalignError("code prompt %s has no \"tests\" to run" % pid)
        if options.reward_model is None and domain not in verify:
            hint = " or --verify %s" % domain if domain in VERIFIERS else ""
            raise TokalignError("%s prompt %s gets no score: give --reward-model%s" % (domain, pid, hint))


def score(options: ScoreOptions) -> Dict[str, Any]:
    """Score every response of ``options.inputs`` into ``options.out``; returns a report (prompts, responses,
    per-domain counts and correct rates, reward statistics, the sandbox's protections, seconds)."""
    t0 = time.monotonic()
    unknown = set(options.verify) - set(VERIFIERS)
    if unknown:
        raise TokalignError("--verify takes %s, not %s" % (" / ".join(VERIFIERS), ", ".join(sorted(unknown))))
    if options.code_blocks not in CODE_BLOCKS:
        raise TokalignError("--code-blocks must be one of %s" % ", ".join(CODE_BLOCKS))
    if not options.inputs:
        raise TokalignError("no --in files")
    rows = group_samples(options.inputs)
    _plan(rows, options)
    report: Dict[str, Any] = {"out": str(options.out), "prompts": len(rows), "responses": 0, "domains": {},
                              "reward_model": str(options.reward_model) if options.reward_model else None,
                              "verify": sorted(options.verify)}
    # verifiers first: cheap, and a broken sandbox shows before a reward model spends minutes
    verified: Dict[tuple, tuple] = {}
    math_jobs = [(row, r) for row in rows if row["domain"] == "math" and "math" in options.verify
                 for r in row["responses"]]
    for row, r in math_jobs:
        verified[(row["prompt_id"], r["model"], r["sample"])] = verify_math(r["text"], row["gold"])
    code_jobs = [(row, r) for row in rows if row["domain"] == "code" and "code" in options.verify
                 for r in row["responses"]]
    if code_jobs:
        sandbox = SandboxOptions(timeout=options.code_timeout, memory_mb=options.code_memory_mb,
                                 code_blocks=options.code_blocks)
        report["sandbox"] = sandbox_layers(sandbox)
        from tqdm import tqdm

        with ThreadPoolExecutor(max_workers=max(1, options.code_workers)) as pool:
            futures = [pool.submit(verify_code, r["text"], row["tests"], sandbox) for row, r in code_jobs]
            for (row, r), fut in zip(code_jobs, tqdm(futures, unit="run", disable=not options.progress,
                                                     leave=False, desc="code")):
                verified[(row["prompt_id"], r["model"], r["sample"])] = fut.result()
    rewards: Dict[tuple, float] = {}
    if options.reward_model is not None:
        model, tokenizer = load_reward_model(options.reward_model, dtype=options.dtype, device=options.device,
                                             trust_remote_code=options.trust_remote_code,
                                             allow_pickle=options.allow_pickle)
        template = options.reward_template
        if template and Path(template).is_file():
            template = Path(template).read_text(encoding="utf-8")
        keys = [(row["prompt_id"], r["model"], r["sample"]) for row in rows for r in row["responses"]]
        items = [(row["messages"], r["text"]) for row in rows for r in row["responses"]]
        out = reward_scores(model, tokenizer, items, batch_size=options.batch_size, max_length=options.max_length,
                            template=template, progress=options.progress)
        for key, value in zip(keys, out["scores"]):
            if not math.isfinite(value):
                raise TokalignError("the reward model gave %s for response %s/%s#%d (check its dtype: --dtype "
                                    "float32)" % (value, *key))
            rewards[key] = value
        report["truncated"] = out["truncated"]
        values = list(rewards.values())
        report["reward"] = {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}
        del model
    scored = []
    for row in rows:
        d = report["domains"].setdefault(row["domain"], {"prompts": 0, "responses": 0})
        d["prompts"] += 1
        responses = []
        for r in row["responses"]:
            key = (row["prompt_id"], r["model"], r["sample"])
            out_r = {"model": r["model"], "sample": r["sample"], "text": r["text"]}
            if key in verified:
                correct, verdict = verified[key]
                out_r["score"] = rewards.get(key, 1.0 if correct else 0.0)
                out_r["correct"] = bool(correct)
                out_r["verdict"] = verdict
                d["correct"] = d.get("correct", 0) + bool(correct)
            else:
                out_r["score"] = rewards[key]
            responses.append(out_r)
            d["responses"] += 1
        report["responses"] += len(responses)
        scored.append(dict({k: v for k, v in row.items() if k != "responses"}, responses=responses))
    write_jsonl_atomic(options.out, scored)
    report["seconds"] = time.monotonic() - t0
    return report


def summary_line(report: Dict[str, Any]) -> str:
    parts = []
    for domain, d in sorted(report["domains"].items()):
        extra = (", %d correct" % d["correct"]) if "correct" in d else ""
        parts.append("%s %d prompts / %d responses%s" % (domain, d["prompts"], d["responses"], extra))
    how = " + ".join(filter(None, ["reward model" if report.get("reward_model") else None,
                                   *("verify " + v for v in report.get("verify", []))]))
    return "scored %d responses of %d prompts (%s; %s) in %.1fs -> %s" % (
        report["responses"], report["prompts"], how, "; ".join(parts), report["seconds"], report["out"])
