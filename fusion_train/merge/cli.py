"""``fusion-train merge``: merge same-architecture models in parameter space."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from fusion_train.merge.config import MergeConfig, ModelSpec, load_yaml, validate
from fusion_train.merge.io import parse_size
from fusion_train.merge.registry import get_method, method_names
from fusion_train.merge.runner import VOCAB_POLICIES, MergeOptions, run_merge
from tokalign.errors import TokalignError

EPILOG = """examples:
  # FuseChat-2 SCE of two fused targets onto the pivot (tau = 10%%, released-code semantics)
  fusion-train merge --method sce --base pivot/ --models t1/ t2/ --out merged/
  # mergekit's SCE semantics, tau = 20%%
  fusion-train merge --method sce --variant mergekit --select-topk 0.2 --base pivot/ --models t1/ t2/ --out merged/
  # FuseChat-1 VaRM, one weight per transformer layer
  fusion-train merge --method varm --granularity layer --base pivot/ --models t1/ t2/ --out merged/
  # TIES with per-model weights and densities, bf16 output, on the GPU
  fusion-train merge --method ties --base pivot/ --models t1/ t2/ --weights 0.6 0.4 --density 0.5 \\
      --dtype bfloat16 --device cuda --out merged/
  # DARE-TIES, reproducible with a seed
  fusion-train merge --method dare_ties --base pivot/ --models t1/ t2/ --density 0.3 --seed 1 --out merged/
  # SLERP halfway between the base and one model
  fusion-train merge --method slerp --base a/ --models b/ --t 0.5 --out merged/
  # a mergekit YAML config (merge_method, base_model, models[].parameters, parameters, dtype)
  fusion-train merge --config merge.yml --out merged/ --json

Methods: %s. The output gets the base's config, tokenizer and generation config.
An interrupted merge leaves only OUT's hidden temp folder (.OUT.merge-tmp); re-running resumes it.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "merge",
        help="merge models in parameter space (SCE, VaRM, TIES, DARE, SLERP, ...)",
        description="Merge same-architecture models (streaming safetensors, fp32 math on CPU or CUDA). On CPU, "
                    "methods with native kernels (linear, task_arithmetic, ties, dare_*, sce) run without torch.",
        epilog=EPILOG % ", ".join(method_names()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("what to merge (either --config or --method/--base/--models)")
    src.add_argument("--config", type=Path, help="mergekit-style YAML file")
    src.add_argument("--method", choices=method_names(), help="merge method")
    src.add_argument("--base", type=Path, help="base / pivot model folder")
    src.add_argument("--models", type=Path, nargs="+", help="model folders to merge into the base")
    p.add_argument("--out", type=Path, required=True, help="output folder (must be empty unless --overwrite)")

    m = p.add_argument_group("method parameters (override the YAML's top-level parameters)")
    m.add_argument("--weights", type=float, nargs="+", help="per-model weight (linear, task_arithmetic, ties, dare_*)")
    m.add_argument("--density", type=float, nargs="+", help="fraction kept: one value or one per model (ties, dare_*)")
    m.add_argument("--lambda", dest="lambda_", type=float, help="scale of the merged delta (task_arithmetic, ties, dare_*)")
    m.add_argument("--normalize", choices=("true", "false"), help="divide by the sum of weights")
    m.add_argument("--rescale", choices=("true", "false"), help="DARE/TIES: rescale kept deltas to the L1 norm")
    m.add_argument("--select-topk", type=float, help="SCE tau (default 0.1)")
    m.add_argument("--variant", choices=("fusechat", "mergekit"), help="SCE variant (default fusechat)")
    m.add_argument("--granularity", choices=("model", "layer", "matrix", "parameter"), help="VaRM unit (default matrix)")
    m.add_argument("--t", type=float, help="SLERP interpolation factor (0 = base)")
    m.add_argument("--seed", type=int, default=0, help="seed for DARE's random drops (default 0)")

    o = p.add_argument_group("execution")
    o.add_argument("--dtype", help="output dtype: float32 | bfloat16 | float16 (default: the base's)")
    o.add_argument("--device", default="cpu", help="compute device: cpu | cuda | cuda:N (default cpu)")
    o.add_argument("--threads", type=int, default=0,
                   help="CPU threads for tensor math, native kernels and torch (default 0 = their default; "
                        "1 is fastest on an oversubscribed machine)")
    o.add_argument("--max-shard-size", default="2GB", help="output shard size limit (default 2GB)")
    o.add_argument("--vocab-policy", choices=VOCAB_POLICIES, default="refuse",
                   help="embedding/lm_head row-count mismatch: refuse (default) or truncate to the base's rows")
    o.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    o.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    o.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def _per_model(values: Optional[List[float]], n: int, flag: str) -> Optional[List[float]]:
    if values is None:
        return None
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise TokalignError("%s: give one value or one per model (%d models), got %d" % (flag, n, len(values)))
    return values


def build_config(args: argparse.Namespace) -> MergeConfig:
    """The MergeConfig described by --config and/or the command-line options."""
    if args.config is not None:
        if args.models or args.base or args.method:
            raise TokalignError("--config: do not combine with --method/--base/--models (edit the YAML instead)")
        cfg = load_yaml(args.config)
    else:
        if not args.method or not args.models:
            raise TokalignError("give --config FILE, or --method and --models (and --base for most methods)")
        for label, path in [("--base", args.base)] + [("--models", m) for m in args.models]:
            if path is not None and not Path(path).is_dir():
                raise TokalignError("%s: model folder %s not found" % (label, path))
        cfg = MergeConfig(args.method, args.base, [ModelSpec(Path(m)) for m in args.models])
    cls = get_method(cfg.method)
    names = {p.name for p in cls.params}
    n = len(cfg.models)
    shared: Dict[str, Any] = {
        "lambda": args.lambda_, "normalize": args.normalize, "rescale": args.rescale, "select_topk": args.select_topk,
        "variant": args.variant, "granularity": args.granularity, "t": args.t,
    }
    for key, value in shared.items():
        if value is None:
            continue
        if key not in names:
            raise TokalignError("--%s: not a parameter of method %s" % (key.replace("_", "-"), cfg.method))
        cfg.parameters[key] = value
    for key, flag, values in (("weight", "--weights", args.weights), ("density", "--density", args.density)):
        vals = _per_model(values, n, flag)
        if vals is None:
            continue
        if key not in names:
            raise TokalignError("%s: not a parameter of method %s" % (flag, cfg.method))
        for mspec, v in zip(cfg.models, vals):
            mspec.parameters[key] = v
    if args.dtype:
        cfg.out_dtype = args.dtype
    return validate(cfg)


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    if args.threads < 0:
        raise TokalignError("--threads: must be >= 0, got %d" % args.threads)
    opts = MergeOptions(device=args.device, threads=args.threads, max_shard_bytes=parse_size(args.max_shard_size), overwrite=args.overwrite,
                        vocab_policy=args.vocab_policy, seed=args.seed, progress=not args.no_progress)
    summary = run_merge(cfg, args.out, opts)
    if args.json:
        print(json.dumps(summary.to_dict(), sort_keys=True))
    else:
        print(summary.line())
    return 0
