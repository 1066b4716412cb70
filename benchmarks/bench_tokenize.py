"""Encoding throughput of tokalign's Tokenizer (ids + exact char offsets) against baselines measured in the
same run: the bare Rust ``tokenizers`` engine (ids + library offsets) and transformers' fast tokenizer
(``return_offsets_mapping=True``).

    python benchmarks/bench_tokenize.py [--tokenizer ../shared/tokenizers/qwen2] [--n 2000]
"""
import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # run from a checkout

from _timing import best_of  # noqa: E402
from tokalign.paths import shared_corpora, shared_tokenizers  # noqa: E402
from tokalign.tokenize import load_tokenizer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", default=str(shared_tokenizers() / "openchat-3.5"))
    ap.add_argument("--corpus", default=str(shared_corpora() / "alpacaeval_parallel.jsonl"))
    ap.add_argument("--n", type=int, default=2000, help="number of responses")
    args = ap.parse_args()
    texts = []
    with open(args.corpus, encoding="utf-8") as f:
        for line in f:
            texts.extend(m["content"] for m in json.loads(line)["messages"] if m["role"] == "assistant")
            if len(texts) >= args.n:
                break
    tok = load_tokenizer(args.tokenizer)
    tok.fingerprint  # build the canonical tables outside the timing
    n_tokens = sum(len(e) for e in tok.encode_batch(texts))
    exact = sum(e.offsets_exact for e in tok.encode_batch(texts))
    t_ours = best_of(lambda: tok.encode_batch(texts))
    t_engine = best_of(lambda: tok.engine.encode_batch(texts, add_special_tokens=False))
    hf = tok.hf
    t_hf = best_of(lambda: hf(texts, add_special_tokens=False, return_offsets_mapping=True))
    print("tokenizer %s: %d texts, %d tokens, exact offsets for %d/%d texts" % (
        tok.name, len(texts), n_tokens, exact, len(texts)))
    for label, t in (("tokalign encode_batch (ids+exact offsets)", t_ours),
                     ("tokenizers engine encode_batch (baseline)", t_engine),
                     ("transformers __call__ offsets (baseline)", t_hf)):
        print("  %-45s %7.3f s  %10.0f tokens/s" % (label, t, n_tokens / t))
    print("  ratio tokalign / engine: %.2fx time;  tokalign / transformers: %.2fx time" % (
        t_ours / t_engine, t_ours / t_hf))


if __name__ == "__main__":
    main()
