"""tokalign convert-gguf: a GGUF file (or a model alias) as an ordinary Hugging Face model folder.

Writes config.json, model.safetensors (the de-quantised weights, float32 by default), the tokenizer files with
the GGUF's chat template, and generation_config.json, so that every tool that reads HF folders (dump-logits,
fusion-train fuse / merge, mergekit) reads it. The logits of the converted model equal those of the model
loaded from the GGUF file. Needs the ``gguf`` package (``pip install 'tokalign[gguf]'``).
"""
from .common import formatter

EPILOG = """examples:
  tokalign convert-gguf SmolLM2-135M-Instruct.Q4_1.gguf smollm2-hf/
  tokalign convert-gguf gemma3-270m gemma3-hf/ --dtype bf16     # alias: fetched into the model cache first
"""


def register(sub):
    p = sub.add_parser("convert-gguf", help="write a GGUF model as a Hugging Face folder (safetensors)",
                       description=__doc__, epilog=EPILOG, formatter_class=formatter())
    p.add_argument("gguf", metavar="GGUF_OR_ALIAS", help="a .gguf file, or smollm2-135m-instruct / gemma3-270m")
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="dtype of the stored weights (default fp32: the de-quantised values exactly)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT folder")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import time
    from pathlib import Path

    from ..artifacts import refuse_output_over_inputs
    from ..errors import TokalignError
    from ..models.cache import fetch_gguf, lookup_model_alias
    from ..models.gguf import convert_gguf
    from .common import print_json

    t0 = time.perf_counter()
    src = Path(args.gguf).expanduser()
    if not src.exists():
        if lookup_model_alias(args.gguf) is None:
            raise TokalignError("%s: no such GGUF file (and not a model alias: smollm2-135m-instruct, gemma3-270m)"
                                % args.gguf)
        src = fetch_gguf(args.gguf)
    elif src.is_dir():
        raise TokalignError("%s: a folder; convert-gguf takes one .gguf file" % src)
    refuse_output_over_inputs(args.out, [("GGUF file", str(src))])
    summary = convert_gguf(src, args.out, dtype=args.dtype, overwrite=args.overwrite)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print_json(summary)
    else:
        print("converted %s (%s, %.1fM parameters, vocabulary %d%s) -> %s in %.1fs: %s"
              % (summary["gguf"], summary["model_type"], summary["parameters"] / 1e6, summary["vocab_size"],
                 ", chat template" if summary["chat_template"] else "", summary["out"], summary["seconds"],
                 ", ".join(summary["files"])))
    return 0
