"""tokalign dump-logits: run a causal LM over a corpus and store its per-token top-K distributions.

Writes a tokalign logit store (docs/store.md): top-K ids and logits, logsumexp over the full vocabulary and
the gold token's cross-entropy for every position, computed on the device. Re-running the same command on an
interrupted store resumes it; a complete store is refused unless --overwrite. See docs/dump.md.
"""
import argparse

from .common import formatter, print_json

EPILOG = """examples:
  tokalign dump-logits --model models/openchat_3.5 --data data.jsonl --out openchat.zarr
  tokalign dump-logits --model models/internlm2-chat-20b --data data.jsonl --out internlm2.zarr \\
      --template chat --mask-instruction --top-k 10 --max-length 2048 --batch-tokens 32768 --dtype bf16
  # 8 GPUs: every rank writes its own part (part-0000R) of one store
  torchrun --nproc-per-node 8 -m tokalign dump-logits --model M --data data.jsonl --out m.zarr
  # interrupted? run the same command again: committed samples are skipped
  tokalign dump-logits --model M --data data.jsonl --out m.zarr --json

BOS: --special-tokens auto encodes plain text like tokenizer(text) (BOS when the model expects one) and chat
templates without extra special tokens (the template renders its own BOS), as transformers does.
A model whose output is larger than the tokenizer (padded embeddings) keeps ids >= len(tokenizer) out of the
top-K; logsumexp still covers the whole output. NaN/Inf samples are stored with valid=false and counted.
"""


def register(sub):
    p = sub.add_parser("dump-logits", help="store a causal LM's top-K distributions over a corpus",
                       description=__doc__, epilog=EPILOG, formatter_class=formatter())
    p.add_argument("--model", required=True, metavar="PATH_OR_ALIAS",
                   help="model directory (safetensors), hub id in the local cache, or tokenizer alias")
    p.add_argument("--data", required=True, nargs="+", metavar="FILE",
                   help="JSON Lines corpus file(s) / globs / builtin:sample (messages or text per line)")
    p.add_argument("--out", required=True, metavar="STORE", help="store path or URL (file://, s3://, ...)")
    p.add_argument("--tokenizer", metavar="PATH_OR_ALIAS",
                   help="tokenizer (default: the model's own, from --model)")
    p.add_argument("--tokenizer-dir", metavar="DIR",
                   help="folder of alias-named tokenizer dirs (default: $TOKALIGN_TOKENIZER_DIR)")
    p.add_argument("--top-k", type=int, default=10, help="top-K slots per position (default 10)")
    p.add_argument("--template", choices=["plain", "chat"], default="plain",
                   help="plain: turn contents joined by blank lines (default); chat: the tokenizer's chat template")
    p.add_argument("--mask-instruction", action="store_true",
                   help="loss mask on assistant tokens (+ their end-of-turn token) only; default: every token")
    p.add_argument("--max-length", type=int, default=2048, help="truncate sequences to this many tokens (2048)")
    p.add_argument("--skip-long", action="store_true", help="skip (and count) longer sequences instead")
    p.add_argument("--batch-tokens", type=int, default=16384,
                   help="padded tokens per forward batch; batches are length-bucketed (default 16384)")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32", "auto"],
                   help="model compute dtype (default bf16; auto = the checkpoint's)")
    p.add_argument("--store-dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"],
                   help="stored top-K logits dtype (default bfloat16)")
    p.add_argument("--special-tokens", default="auto", choices=["auto", "add", "none"],
                   help="add the tokenizer's special tokens (BOS): auto (see below), add, none")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--rank", type=int, help="writer rank (default $RANK, 0)")
    p.add_argument("--world-size", type=int, help="number of ranks (default $WORLD_SIZE, 1)")
    p.add_argument("--flush-tokens", type=int, default=65536,
                   help="commit after at least this many tokens (at batch boundaries; default 65536)")
    p.add_argument("--overwrite", action="store_true", help="rewrite this rank's part even when complete")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow model/tokenizer code from the model repository (off by default)")
    p.add_argument("--skip-bad", action="store_true", help="skip and count malformed corpus lines")
    p.add_argument("--allow-empty", action="store_true",
                   help="write an empty store when nothing is left to dump (default: an error)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="load a model folder that has only pickled weights (pytorch_model.bin; runs code on load: "
                        "only for files you trust)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..dump import DumpOptions, dump_logits

    options = DumpOptions(
        top_k=args.top_k, template=args.template, mask_instruction=args.mask_instruction, max_length=args.max_length,
        skip_long=args.skip_long, batch_tokens=args.batch_tokens, dtype=args.dtype, store_dtype=args.store_dtype,
        special_tokens=args.special_tokens, device=args.device, rank=args.rank, world_size=args.world_size,
        overwrite=args.overwrite, flush_tokens=args.flush_tokens, trust_remote_code=args.trust_remote_code,
        skip_bad=args.skip_bad, allow_empty=args.allow_empty, allow_pickle=args.allow_pickle,
        tokenizer_dir=args.tokenizer_dir, progress=not args.no_progress)
    summary = dump_logits(args.model, args.tokenizer, args.data, args.out, options)
    if args.json:
        print_json(summary.to_dict())
    else:
        print(summary.line())
    return 0
