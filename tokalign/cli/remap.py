"""``tokalign remap``: project a source model's store onto the pivot vocabulary (engine: tokalign.remap.stores).

Written against the contracts of ``tokalign.store`` / ``tokalign.align`` / ``tokalign.vocab``
(docs/architecture.md); those modules are imported inside :func:`run`, so the pure helpers below
(join, byte offsets, sample building) work and are tested without them.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from ..errors import TokalignError
from ..remap import INSIDE_POLICIES, ONE_TO_MANY_POLICIES, RemapResult, concat_groups, prepare_map, remap_batch
from ..remap.ce import CE_DEFINITION, REMAP_CE_FIELD, source_nll_by_group

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
An interrupted run resumes: samples already committed in --out are skipped.
"""

#: zstd level of new output stores: compression dominates the remap's CPU time (docs/remap.md, Speed)
OUTPUT_COMPRESSION_LEVEL = 1
#: the output writer commits every this many positions (a whole shard at the default chunking, so that
#: no shard is rewritten; a kill loses at most this much work)
FLUSH_TOKENS = 1 << 19


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
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


# ---- pure helpers (tested without store / align / vocab) ------------------------------------------

def join_sample_ids(pivot_ids: Sequence[str], source_ids: Sequence[str]) -> Tuple[List[str], List[str], List[str]]:
    """(common ids in pivot order, ids only in the pivot store, ids only in the source store)."""
    src = set(source_ids)
    piv = set(pivot_ids)
    common = [i for i in pivot_ids if i in src]
    return common, [i for i in pivot_ids if i not in src], [i for i in source_ids if i not in piv]


def token_byte_offsets(token_texts: Sequence[bytes], ids: np.ndarray) -> Tuple[str, np.ndarray]:
    """The text a token sequence spells (as latin-1, one character per byte) and each token's
    [start, end) offsets into it, so that ``align.span`` can align two decodings of the same bytes."""
    ids = np.asarray(ids, dtype=np.int64)
    lengths = np.fromiter((len(token_texts[i]) for i in ids), dtype=np.int64, count=len(ids))
    ends = np.cumsum(lengths)
    offsets = np.stack([ends - lengths, ends], axis=1) if len(ids) else np.zeros((0, 2), np.int64)
    text = b"".join(token_texts[i] for i in ids).decode("latin-1")
    return text, offsets


def remapped_token_ce(result: Mapping[str, np.ndarray], input_ids: np.ndarray) -> np.ndarray:
    """Cross-entropy of each remapped distribution on the next pivot token (the ``remap_ce`` diagnostic):
    -log q(next) when the token is kept, else -log(tail mass) (a lower bound, since q(next) <= 1 - retained);
    0 for the last position and for invalid positions. Not the store's ``token_ce`` (see tokalign.remap.ce)."""
    from ..remap.stores import remapped_token_ce_packed

    n = int(result["topk_ids"].shape[0])
    return remapped_token_ce_packed(result["topk_ids"], result["topk_logits"], result["retained_mass"], result["valid"],
                                    input_ids, np.array([0, n], np.int64))


def build_samples(sample_ids: Sequence[str], pivot_samples: Sequence[Mapping[str, Any]], result: RemapResult,
                  source_samples: Sequence[Mapping[str, Any]], groups: Sequence[np.ndarray], *,
                  remap_ce: bool = True) -> List[Dict[str, Any]]:
    """Output sample dicts (store contract) for one remapped batch: ``token_ce`` is the source's NLL carried
    through ``groups`` (:func:`tokalign.remap.ce.source_nll_by_group`, computed for the whole batch at once);
    ``remap_ce`` adds the diagnostic :func:`remapped_token_ce` (the output schema must declare it)."""
    g, go = concat_groups(groups)
    s_off = np.r_[0, np.cumsum([len(s["input_ids"]) for s in source_samples])].astype(np.int64)
    cat = lambda name: (np.concatenate([np.asarray(s[name], np.float32) for s in source_samples])  # noqa: E731
                        if source_samples else np.zeros(0, np.float32))
    ce = source_nll_by_group(cat("token_ce"), s_off, g, go, result.offsets, source_lse=cat("logsumexp"))
    out = []
    for i, sid in enumerate(sample_ids):
        seq = result.sequence(i)
        ps = pivot_samples[i]
        extra = {REMAP_CE_FIELD: remapped_token_ce(seq, np.asarray(ps["input_ids"]))} if remap_ce else {}
        out.append({
            "sample_id": sid,
            "input_ids": np.asarray(ps["input_ids"], np.int32),
            "loss_mask": np.asarray(ps["loss_mask"], bool),
            "topk_ids": seq["topk_ids"],
            "topk_logits": seq["topk_logits"],
            "logsumexp": seq["logsumexp"],
            "token_ce": ce[result.offsets[i]:result.offsets[i + 1]],
            "group_kind": seq["group_kind"],
            "retained_mass": seq["retained_mass"],
            "source_position": seq["source_position"],
            "remap_valid": seq["valid"],
            **extra,
        })
    return out


def remap_samples(pivot_samples: Sequence[Mapping[str, Any]], source_samples: Sequence[Mapping[str, Any]],
                  groups: Sequence[np.ndarray], vocab_map: Any, *, k_out: int, inside: str, one_to_many: str,
                  threads: int = 0) -> RemapResult:
    """Array-level remap of a batch of joined samples (ragged arrays built from the sample dicts)."""
    def cat(samples, name, shape_tail, dtype):
        parts = [np.asarray(s[name]) for s in samples]
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros((0,) + shape_tail, dtype)

    k_src = int(np.asarray(source_samples[0]["topk_ids"]).shape[1]) if source_samples else 1
    s_off = np.r_[0, np.cumsum([len(s["input_ids"]) for s in source_samples])].astype(np.int64)
    p_off = np.r_[0, np.cumsum([len(s["input_ids"]) for s in pivot_samples])].astype(np.int64)
    g, go = concat_groups(groups)
    pivot_topk = None
    if inside == "pivot":
        kp = int(np.asarray(pivot_samples[0]["topk_ids"]).shape[1]) if pivot_samples else 1
        pivot_topk = (cat(pivot_samples, "topk_ids", (kp,), np.int32), cat(pivot_samples, "topk_logits", (kp,), np.float32),
                      cat(pivot_samples, "logsumexp", (), np.float32))
    return remap_batch(g, cat(source_samples, "topk_ids", (k_src,), np.int32),
                       cat(source_samples, "topk_logits", (k_src,), np.float32),
                       cat(source_samples, "logsumexp", (), np.float32), vocab_map,
                       cat(pivot_samples, "input_ids", (), np.int32), group_offsets=go, source_offsets=s_off,
                       pivot_offsets=p_off, pivot_topk=pivot_topk, k_out=k_out, inside=inside,
                       one_to_many=one_to_many, num_threads=threads)


# ---- the command ------------------------------------------------------------------------------------

def _tokenizer_name(schema: Any, given: str | None, which: str) -> str:
    if given:
        return given
    opts = getattr(schema, "options", None) or {}
    name = opts.get("tokenizer") or getattr(schema, "model", None)
    if not name:
        raise TokalignError(f"the {which} store does not name its tokenizer; pass --{which} TOK")
    return str(name)


def run(args: argparse.Namespace) -> int:
    try:
        from .. import load_tokenizer
        from ..remap.stores import REMAP_CE_EXTRA, REMAP_EXTRAS, TokenBytes, remap_stores
        from ..store import StoreSchema, open_store, open_writer
        from ..vocab import VocabMap
    except ImportError as exc:  # the stages land separately; say which one is missing
        raise TokalignError(f"remap: this build lacks a pipeline stage it needs ({exc})") from exc
    from tqdm import tqdm

    if args.top_k < 1:
        raise TokalignError(f"--top-k must be >= 1, got {args.top_k}")
    if args.batch_tokens < 1:
        raise TokalignError(f"--batch-tokens must be >= 1, got {args.batch_tokens}")
    if args.compression_level is not None and not 0 <= args.compression_level <= 9:
        raise TokalignError(f"--compression-level must be in 0..9, got {args.compression_level}")
    a = open_store(args.pivot_store)
    b = open_store(args.source_store)
    tok_p = load_tokenizer(_tokenizer_name(a.schema, args.pivot, "pivot"), tokenizer_dir=args.tokenizer_dir)
    tok_s = load_tokenizer(_tokenizer_name(b.schema, args.source, "source"), tokenizer_dir=args.tokenizer_dir)
    for store, tok, which, path in ((a, tok_p, "pivot", args.pivot_store), (b, tok_s, "source", args.source_store)):
        if tok.fingerprint != store.schema.tokenizer_fingerprint:
            raise TokalignError(f"{path}: the {which} store was written with tokenizer fingerprint "
                                f"{store.schema.tokenizer_fingerprint}, but the {which} tokenizer {tok.name} has "
                                f"{tok.fingerprint}")
    vmap = VocabMap.load(args.map_dir, expect_pivot=a.schema.tokenizer_fingerprint,
                         expect_source=b.schema.tokenizer_fingerprint)
    pm = prepare_map(vmap.matrix)
    if pm.pivot_vocab < tok_p.vocab_size or pm.source_vocab < tok_s.vocab_size:
        raise TokalignError(f"{args.map_dir}: map shape {pm.source_vocab} x {pm.pivot_vocab} is smaller than the "
                            f"vocabularies ({tok_s.vocab_size} source, {tok_p.vocab_size} pivot)")
    common, only_pivot, only_source = join_sample_ids(list(a.sample_ids), list(b.sample_ids))
    # output settings not given: those of the store being resumed, else the defaults
    defaults = {"compression_level": OUTPUT_COMPRESSION_LEVEL, "codec": "zstd", "logits_dtype": "float32"}
    try:
        existing = open_store(args.out, allow_incomplete=True).schema
        defaults = {key: getattr(existing, key) for key in defaults}
    except TokalignError:
        pass
    level, codec, logits_dtype = (defaults[key] if getattr(args, key) is None else getattr(args, key)
                                  for key in ("compression_level", "codec", "logits_dtype"))

    schema = StoreSchema(
        model=f"{b.schema.model} -> {tok_p.name}", tokenizer_fingerprint=a.schema.tokenizer_fingerprint,
        vocab_size=pm.pivot_vocab, k=int(args.top_k), logits_dtype=logits_dtype, kind="remapped",
        template=getattr(a.schema, "template", None),
        options={"pivot_store": str(args.pivot_store), "source_store": str(args.source_store),
                 "map": str(args.map_dir), "inside": args.inside, "one_to_many": args.one_to_many,
                 "source_model": b.schema.model, "source_fingerprint": b.schema.tokenizer_fingerprint,
                 "tokenizer": tok_p.name, "ce_definition": CE_DEFINITION},
        extras=REMAP_EXTRAS + (REMAP_CE_EXTRA,),
        compression_level=int(level), codec=codec,
    )
    writer = open_writer(args.out, schema, flush_tokens=FLUSH_TOKENS)
    todo = writer.remaining(common)
    with tqdm(total=len(todo), desc="remap", unit="sample", disable=args.json) as bar:
        totals = remap_stores(a, b, pm, writer, todo, TokenBytes.of(tok_p), TokenBytes.of(tok_s), k_out=args.top_k,
                              inside=args.inside, one_to_many=args.one_to_many, threads=args.threads,
                              batch_tokens=args.batch_tokens, progress=bar.update)
    writer.close()
    sec = totals.seconds
    report = {
        "out": str(args.out), "samples_written": len(todo), "samples_already_done": len(common) - len(todo),
        "only_in_pivot_store": len(only_pivot), "only_in_source_store": len(only_source),
        "only_in_pivot_examples": only_pivot[:5], "only_in_source_examples": only_source[:5],
        "inside": args.inside, "one_to_many": args.one_to_many, "top_k": args.top_k,
        "positions": totals.positions, "valid_positions": totals.valid, "masked": totals.masked,
        "nonfinite": totals.nonfinite, "empty": totals.empty, "group_kinds": totals.kinds,
        "mean_retained_mass": totals.mean_retained_mass,
        "alignment": totals.align_paths,
        "seconds": {k: round(v, 4) for k, v in sec.items()},
        "positions_per_s": round(totals.positions_per_s),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"tokalign remap: {len(todo)} samples -> {args.out} ({report['samples_already_done']} already done); "
              f"{totals.valid}/{totals.positions} positions valid, mean retained mass "
              f"{report['mean_retained_mass']:.3f}; {len(only_pivot)} ids only in the pivot store, "
              f"{len(only_source)} only in the source store; {totals.positions_per_s / 1e6:.2f} M positions/s",
              file=sys.stderr)
    return 0
