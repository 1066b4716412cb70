"""``tokalign remap``: project a source model's store onto the pivot vocabulary (library: tokalign.remap.run)."""
from __future__ import annotations

import argparse
import json
import sys

from ..remap import INSIDE_POLICIES, ONE_TO_MANY_POLICIES, RemapOptions, run_stores
from ..remap.run import OUTPUT_COMPRESSION_LEVEL

EPILOG = """examples:
  tokalign remap --pivot-store openchat.zarr --source-store internlm2.zarr --map map-ms/ --out internlm2-on-openchat.zarr
  tokalign remap --pivot-store A.zarr --source-store B.zarr --map map/ --out C.zarr --top-k 10 --inside mask --json
  tokalign remap ... --one-to-many weighted --pivot openchat --source internlm2 --compression-level 5
  tokalign remap ... --codec lz4 --logits-dtype float16      # fastest to write and read; ~10 %% fewer bytes

Samples are joined by sample id (ids present in only one store are reported and skipped). The pivot
store's tokenizer must be the map's pivot and the source store's the map's source (fingerprints are
checked). The output store (kind "remapped") holds log-probabilities (logsumexp = 0, id -1 = empty slot)
plus per-position provenance: group_kind, retained_mass, source_position, remap_valid. Its token_ce is
the source model's own NLL of the text carried onto the pivot positions through the alignment groups, so
its seq_ce compares fairly with the pivot store's (MinCE); remap_ce holds -log q(next) under the stored
remapped distribution q (a diagnostic).
An interrupted run resumes: samples already committed in --out are skipped. A run that failed before it
committed anything starts over by itself when re-run with corrected inputs; --overwrite starts over in any case.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "remap",
        help="map a source store's top-k distributions into the pivot vocabulary",
        description="Remap a source model's top-k store onto the pivot tokenizer (next-token semantics: docs/remap.md).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--pivot-store", required=True, help="store of the pivot model (its input_ids define the output)")
    p.add_argument("--source-store", required=True, help="store of the source model")
    p.add_argument("--map", required=True, dest="map_dir", help="vocabulary map folder (map.npz + meta.json)")
    p.add_argument("--out", required=True, help="output store (created, or resumed when interrupted)")
    p.add_argument("--top-k", type=int, default=10, dest="top_k", help="K' slots kept per position (default 10)")
    p.add_argument("--inside", choices=INSIDE_POLICIES, default="onehot",
                   help="target of pivot positions inside a group (default onehot)")
    p.add_argument("--one-to-many", choices=ONE_TO_MANY_POLICIES, default="last", dest="one_to_many",
                   help="source distribution(s) for group ends with several source tokens (default last)")
    p.add_argument("--pivot", default=None, help="pivot tokenizer (default: from the pivot store's attributes)")
    p.add_argument("--source", default=None, help="source tokenizer (default: from the source store's attributes)")
    p.add_argument("--tokenizer-dir", default=None, help="folder holding tokenizer aliases")
    p.add_argument("--threads", type=int, default=0, help="native threads (0 = all cores)")
    p.add_argument("--batch-tokens", type=int, default=1 << 17, dest="batch_tokens",
                   help="pivot positions aligned, remapped and written together (default 131072)")
    p.add_argument("--compression-level", type=int, default=None, dest="compression_level",
                   help=f"zstd level (0-9) of a new output store (default {OUTPUT_COMPRESSION_LEVEL}: writing at the "
                        "store default 5 costs ~3x the CPU for ~10%% fewer bytes); a resumed store keeps its level")
    p.add_argument("--codec", choices=("zstd", "lz4"), default=None,
                   help="blosc codec of a new output store (default zstd; lz4 writes and reads faster, ~25%% larger)")
    p.add_argument("--logits-dtype", choices=("float32", "float16"), default=None, dest="logits_dtype",
                   help="dtype of the stored log-probabilities (default float32; float16 keeps ~3 significant "
                        "digits, -inf exact, and halves the largest array)")
    p.add_argument("--overwrite", action="store_true",
                   help="start --out over instead of resuming it (it must be a previous remap output)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options = RemapOptions(top_k=args.top_k, inside=args.inside, one_to_many=args.one_to_many,
                           pivot_tokenizer=args.pivot, source_tokenizer=args.source,
                           tokenizer_dir=args.tokenizer_dir, threads=args.threads, batch_tokens=args.batch_tokens,
                           compression_level=args.compression_level, codec=args.codec,
                           logits_dtype=args.logits_dtype, overwrite=args.overwrite, progress=not args.json)
    report = run_stores(args.pivot_store, args.source_store, args.map_dir, args.out, options)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"tokalign remap: {report['samples_written']} samples -> {args.out} "
              f"({report['samples_already_done']} already done); "
              f"{report['valid_positions']}/{report['positions']} positions valid, mean retained mass "
              f"{report['mean_retained_mass']:.3f}; {report['only_in_pivot_store']} ids only in the pivot store, "
              f"{report['only_in_source_store']} only in the source store; "
              f"{report['positions_per_s'] / 1e6:.2f} M positions/s", file=sys.stderr)
    return 0
