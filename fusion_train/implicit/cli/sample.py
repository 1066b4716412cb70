"""``fusion-train sample``: N responses per prompt from every source model (:func:`fusion_train.implicit.sample`)."""
from __future__ import annotations

import argparse

EPILOG = """examples:
  # FuseChat-3.0 chat sampling: 5 responses per prompt from each source, the paper's 0.8 / 0.95
  fusion-train sample --models gemma-2-27b-it/ Mistral-Large/ Qwen2.5-72B-Instruct/ --prompts prompts.jsonl \\
      --n 5 --max-new-tokens 2048 --out responses.jsonl
  # per-model sampling (Qwen: 0.7 / 0.8 / repetition penalty 1.05) from each model's generation_config.json
  fusion-train sample --models a/ qwen/ --sampling-defaults generation_config --prompts p.jsonl --out r.jsonl
  # per-model parameters and chat templates from a file: {models: [{path, name, temperature, top_p, top_k,
  # repetition_penalty, chat_template, max_new_tokens}]}
  fusion-train sample --model-config sources.yml --prompts p.jsonl --n 8 --out r.jsonl
  # 8 GPUs: each rank samples its slice into r.rank{R}-of-8.jsonl
  torchrun --nproc-per-node 8 -m fusion_train.cli sample --models a/ b/ --prompts p.jsonl --out r.jsonl
  # vLLM (when installed); greedy decoding with --temperature 0
  fusion-train sample --engine vllm --models a/ --prompts p.jsonl --out r.jsonl --json

Re-running the same command resumes: rows already in --out are kept and not generated again (the options must
be the same; --overwrite starts over). Output: one line per response (docs/implicit.md).
"""


def register(subparsers) -> argparse.ArgumentParser:
    from ..engines import ENGINES
    from ..sample import SAMPLING_DEFAULTS

    p = subparsers.add_parser("sample", help="sample N responses per prompt from every source model",
                              description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("input and output")
    io.add_argument("--models", nargs="+", default=[], metavar="DIR", help="source model folders (name: folder name)")
    io.add_argument("--model-config", metavar="YAML", help="per-model paths, names, sampling and chat templates")
    io.add_argument("--prompts", required=True, metavar="JSONL", help="prompts: {prompt_id, messages, domain, ...}")
    io.add_argument("--out", required=True, metavar="JSONL", help="responses, one per line (resumed if present)")
    io.add_argument("--overwrite", action="store_true", help="start --out over instead of resuming it")
    g = p.add_argument_group("sampling")
    g.add_argument("--n", type=int, default=5, help="responses per prompt and model (paper: 5 chat, 8 code)")
    g.add_argument("--max-new-tokens", type=int, default=1024)
    g.add_argument("--sampling-defaults", choices=SAMPLING_DEFAULTS, default="paper",
                   help="paper: temperature 0.8, top-p 0.95; generation_config: each model's own file")
    g.add_argument("--temperature", type=float, help="for every model (0 = greedy); --model-config entries win")
    g.add_argument("--top-p", type=float)
    g.add_argument("--top-k", type=int, help="0 = off (default)")
    g.add_argument("--repetition-penalty", type=float)
    g.add_argument("--seed", type=int, default=0, help="base seed (each batch's seed derives from it)")
    r = p.add_argument_group("runtime")
    r.add_argument("--engine", choices=ENGINES, default="transformers",
                   help="vllm / llama.cpp only where installed (never by this project)")
    r.add_argument("--batch-size", type=int, default=8, help="responses generated together")
    r.add_argument("--dtype", default="auto", help="auto, bf16, fp16, fp32")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    r.add_argument("--trust-remote-code", action="store_true", help="run models' own code (off by default)")
    r.add_argument("--allow-pickle", action="store_true",
                   help="load model folders with only pickled weights (pytorch_model.bin): runs code from the "
                        "file, so for checkpoints you trust only (default: safetensors only)")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from tokalign.cli.common import print_json

    from ..sample import SampleOptions, sample, summary_line

    report = sample(SampleOptions(
        prompts=args.prompts, out=args.out, models=args.models, model_config=args.model_config, n=args.n,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=args.seed,
        sampling_defaults=args.sampling_defaults, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        repetition_penalty=args.repetition_penalty, engine=args.engine, dtype=args.dtype, device=args.device,
        trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle, overwrite=args.overwrite, progress=not args.no_progress))
    if args.json:
        print_json(report)
    else:
        print(summary_line(report))
    return 0
