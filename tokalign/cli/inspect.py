"""``tokalign inspect STORE``: schema, counts, size on disk, bytes/token, NaN counts and completeness of a store
and integrity (library: tokalign.store.inspect)."""
from __future__ import annotations

import argparse
import json

from ..store import inspect_store
from ..store.inspect import format_text

EPILOG = """examples:
  tokalign inspect /data/openchat-sharegpt.zarr
  tokalign inspect file:///data/openchat-sharegpt.zarr --json
  tokalign inspect s3://bucket/stores/qwen.zarr --scan     # re-count NaN/Inf by reading every array
exit status: 0 complete, 1 incomplete (a part missing or not closed), 2 damaged (a missing object; with --scan
also a chunk whose checksum or decoding fails, or counts that disagree) or not a readable store.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="describe a logit store (schema, counts, size, NaN counts, completeness)",
        description="Describe a tokalign logit store: schema attributes, samples and tokens per part, size on "
                    "storage and bytes per token, NaN/Inf counts and whether every part was closed.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("store", help="store URL or path (any fsspec URL: file://, memory://, s3://, ...)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--scan", action="store_true",
                   help="read every chunk of every array: verify its checksum and decoding and the committed counts "
                        "(one line per bad chunk), and count NaN/Inf values (reads the whole store)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = inspect_store(args.store, scan=args.scan)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=False, default=str))
    else:
        print(format_text(report))
    if report.get("damage"):
        return 2
    return 0 if report["complete"] else 1
