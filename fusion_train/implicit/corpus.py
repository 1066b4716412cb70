"""Prompts (and reference responses) from the shared corpora's rows (``../shared/corpora``, MANIFEST.md) for the
worked example in docs/implicit.md.

``python -m fusion_train.implicit.corpus CORPUS.jsonl --per-domain 4 --prompts P.jsonl [--references R.jsonl]``:
one prompt per ``group`` (the final assistant turn removed); math ``gold`` from the reference answer (GSM8K's
``#### n``, the last ``\\boxed{}``, or the whole answer for CMATH); code ``tests`` from the ``assert`` lines of
an MBPP+ prompt (code rows without asserts are skipped). ``--references`` writes the corpus' own responses as
sample rows (model = the corpus row's model).
"""
from __future__ import annotations

import argparse
import re
import sys
from typing import Any, Dict, List, Tuple

from .jsonl import read_jsonl, write_jsonl_atomic
from .verify.math import _boxed

__all__ = ["prompts_from_corpus", "main"]


def _gold(answer: str) -> str:
    m = re.findall(r"####\s*(.+)", answer)
    if m:
        return m[-1].strip()
    boxed = _boxed(answer)
    return boxed.strip() if boxed else answer.strip()


def prompts_from_corpus(path: str, per_domain: int = 4) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """``(prompts, reference sample rows)``: the first ``per_domain`` usable groups of each domain."""
    prompts: Dict[str, Dict[str, Any]] = {}
    refs: List[Dict[str, Any]] = []
    counts: Dict[str, int] = {}
    for _, row in read_jsonl(path):
        messages = row.get("messages") or []
        if len(messages) < 2 or messages[-1].get("role") != "assistant":
            continue
        domain, pid = row.get("domain", "chat"), row.get("group") or row["id"]
        if pid not in prompts:
            if counts.get(domain, 0) >= per_domain:
                continue
            prompt = {"prompt_id": pid, "messages": messages[:-1], "domain": domain}
            if domain == "math":
                prompt["gold"] = _gold(messages[-1]["content"])
            if domain == "code":
                tests = [ln.strip() for ln in messages[0]["content"].splitlines() if ln.strip().startswith("assert ")]
                if not tests:
                    continue
                prompt["tests"] = tests
            prompts[pid] = prompt
            counts[domain] = counts.get(domain, 0) + 1
        model = row.get("model") or "reference"
        sample = sum(1 for r in refs if r["prompt_id"] == pid and r["model"] == model)
        refs.append(dict(prompts[pid], model=model, sample=sample, text=messages[-1]["content"]))
    return list(prompts.values()), refs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fusion_train.implicit.corpus", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpora", nargs="+")
    p.add_argument("--per-domain", type=int, default=4)
    p.add_argument("--prompts", required=True)
    p.add_argument("--references")
    args = p.parse_args(argv)
    prompts, refs = [], []
    for path in args.corpora:
        a, b = prompts_from_corpus(path, args.per_domain)
        prompts += a
        refs += b
    write_jsonl_atomic(args.prompts, prompts)
    if args.references:
        write_jsonl_atomic(args.references, refs)
    print("%d prompts (%s)%s" % (len(prompts), ", ".join("%s %d" % (d, sum(x["domain"] == d for x in prompts))
                                                           for d in ("chat", "math", "code")),
                                 (", %d reference responses" % len(refs)) if args.references else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
