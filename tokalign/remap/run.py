"""``tokalign remap`` as a library call: open the two stores, check tokenizers and map, remap, write, report.

    from tokalign.remap import RemapOptions, run_stores
    report = run_stores("openchat.zarr", "internlm2.zarr", "map-ms/", "internlm2-on-openchat.zarr",
                        RemapOptions(top_k=10, inside="mask", progress=False))

The engine itself (batches, threads, the C++ stages) is :func:`tokalign.remap.stores.remap_stores`; this module
decides what it runs on: which samples (joined by id, minus those already committed in ``out``), which
tokenizers (named by the options or by the stores) and which output schema (kind "remapped").
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..errors import TokalignError
from .ce import CE_DEFINITION
from .kernel import INSIDE_POLICIES, ONE_TO_MANY_POLICIES, prepare_map
from .stores import BATCH_TOKENS, REMAP_CE_EXTRA, REMAP_EXTRAS, TokenBytes, remap_stores

#: zstd level of new output stores: compression dominates the remap's CPU time (docs/remap.md, Speed)
OUTPUT_COMPRESSION_LEVEL = 1
#: the output writer commits every this many positions (a whole shard at the default chunking, so that
#: no shard is rewritten; a kill loses at most this much work)
FLUSH_TOKENS = 1 << 19

PathOrStore = Union[str, Path, Any]


@dataclass
class RemapOptions:
    """What ``tokalign remap`` does besides its four paths (each field is the CLI option of the same name).

    ``compression_level`` / ``codec`` / ``logits_dtype`` left None: those of the output store being resumed,
    else zstd level :data:`OUTPUT_COMPRESSION_LEVEL` and float32. ``pivot_tokenizer`` / ``source_tokenizer``
    (``--pivot`` / ``--source``): a name, path or loaded tokenizer; None: the one the store names.
    ``overwrite``: rewrite ``out`` instead of resuming it. ``progress``: a progress bar on stderr.
    """

    top_k: int = 10
    inside: str = "onehot"
    one_to_many: str = "last"
    pivot_tokenizer: Any = None
    source_tokenizer: Any = None
    tokenizer_dir: Optional[str] = None
    threads: int = 0
    batch_tokens: int = BATCH_TOKENS
    compression_level: Optional[int] = None
    codec: Optional[str] = None
    logits_dtype: Optional[str] = None
    flush_tokens: int = FLUSH_TOKENS
    overwrite: bool = False
    progress: bool = True

    def check(self) -> None:
        """Raises TokalignError (naming the CLI option) for a value the run would refuse."""
        if self.top_k < 1:
            raise TokalignError(f"--top-k must be >= 1, got {self.top_k}")
        if self.batch_tokens < 1:
            raise TokalignError(f"--batch-tokens must be >= 1, got {self.batch_tokens}")
        if self.compression_level is not None and not 0 <= self.compression_level <= 9:
            raise TokalignError(f"--compression-level must be in 0..9, got {self.compression_level}")
        if self.inside not in INSIDE_POLICIES:
            raise TokalignError(f"--inside must be one of {', '.join(INSIDE_POLICIES)}, got {self.inside!r}")
        if self.one_to_many not in ONE_TO_MANY_POLICIES:
            raise TokalignError(f"--one-to-many must be one of {', '.join(ONE_TO_MANY_POLICIES)}, "
                                f"got {self.one_to_many!r}")


def join_sample_ids(pivot_ids: Sequence[str], source_ids: Sequence[str]) -> Tuple[List[str], List[str], List[str]]:
    """(common ids in pivot order, ids only in the pivot store, ids only in the source store)."""
    src = set(source_ids)
    piv = set(pivot_ids)
    common = [i for i in pivot_ids if i in src]
    return common, [i for i in pivot_ids if i not in src], [i for i in source_ids if i not in piv]


def _tokenizer(schema: Any, given: Any, which: str, tokenizer_dir: Optional[str]) -> Any:
    """The tokenizer given (name, path or loaded), else the one the store's attributes name."""
    from .. import load_tokenizer

    if given is not None and not isinstance(given, (str, Path)):
        return given
    if not given:
        opts = getattr(schema, "options", None) or {}
        given = opts.get("tokenizer") or getattr(schema, "model", None)
        if not given:
            raise TokalignError(f"the {which} store does not name its tokenizer; pass --{which} TOK")
    return load_tokenizer(str(given), tokenizer_dir=tokenizer_dir)


def _open(store: PathOrStore) -> Tuple[Any, str]:
    """(reader, its URL as given) of a URL / path or an opened :class:`tokalign.store.StoreReader`."""
    from ..store import open_store

    if isinstance(store, (str, Path)):
        return open_store(store), str(store)
    return store, str(store.url)


def _load_map(vocab_map: Any, pivot_fp: str, source_fp: str) -> Tuple[Any, str]:
    """(VocabMap, how the output's attributes name it) of a map folder or a loaded map; fingerprints checked."""
    from ..vocab import VocabMap

    if isinstance(vocab_map, (str, Path)):
        return VocabMap.load(vocab_map, expect_pivot=pivot_fp, expect_source=source_fp), str(vocab_map)
    for side, want in (("pivot", pivot_fp), ("source", source_fp)):
        have = (vocab_map.meta.get(side) or {}).get("fingerprint")
        if have != want:
            raise TokalignError("vocab map was built for %s tokenizer fingerprint %s, but the %s tokenizer given has "
                                "fingerprint %s" % (side, have, side, want))
    return vocab_map, "<%s map in memory>" % (vocab_map.method or "vocab")


def _refuse_input_as_output(out: Union[str, Path], inputs: Sequence[str]) -> None:
    """``--out`` naming one of the input stores would write into (or with --overwrite delete) an input."""
    try:
        o = Path(str(out)).expanduser().resolve()
        for given in inputs:
            if "://" not in given and Path(given).expanduser().resolve() == o:
                raise TokalignError(f"--out {out} is one of the input stores; choose another output path")
    except OSError:
        return


def _restart(existing: Any, schema: Any, out: Union[str, Path]) -> bool:
    """Whether to start ``out`` over although ``--overwrite`` was not given: only when it is the empty leftover of a
    failed remap (no sample committed) made with other settings. Any other difference is refused, naming the
    differing fields and how to start over."""
    import sys

    from ..store.schema import describe_difference

    if existing is None or existing.schema.identity() == schema.identity():
        return False
    diff = describe_difference(existing.schema.identity(), schema.identity())
    if len(existing) == 0 and not existing.complete:
        print(f"tokalign remap: {out} holds no committed sample (a failed run) and was started with other settings "
              f"({diff}): starting it over", file=sys.stderr)
        return True
    raise TokalignError(f"--out {out} holds a remap output made with other settings ({diff}); add --overwrite to "
                        "start it over, or choose another --out")


def run_stores(pivot_store: PathOrStore, source_store: PathOrStore, vocab_map: Any, out: Union[str, Path],
               options: Optional[RemapOptions] = None) -> Dict[str, Any]:
    """Remap ``source_store`` onto ``pivot_store``'s tokens through ``vocab_map`` into the store ``out``.

    ``pivot_store`` / ``source_store``: URLs or paths, or opened readers; ``vocab_map``: a map folder or a
    :class:`tokalign.vocab.VocabMap`; ``out``: created, or resumed when interrupted (the samples already
    committed there are skipped; the empty leftover of a failed run made with other settings is started over,
    any other one is refused naming the differing settings). Returns the report ``tokalign remap --json`` prints.
    """
    from tqdm import tqdm

    from ..store import StoreSchema, open_store, open_writer

    opt = options or RemapOptions()
    opt.check()
    a, a_url = _open(pivot_store)
    b, b_url = _open(source_store)
    tok_p = _tokenizer(a.schema, opt.pivot_tokenizer, "pivot", opt.tokenizer_dir)
    tok_s = _tokenizer(b.schema, opt.source_tokenizer, "source", opt.tokenizer_dir)
    for store, tok, which, path in ((a, tok_p, "pivot", a_url), (b, tok_s, "source", b_url)):
        if tok.fingerprint != store.schema.tokenizer_fingerprint:
            other = b if store is a else a
            hint = ("; it is the other store's tokenizer: are --pivot-store and --source-store swapped?"
                    if tok.fingerprint == other.schema.tokenizer_fingerprint else "")
            raise TokalignError(f"{path}: the {which} store was written with tokenizer fingerprint "
                                f"{store.schema.tokenizer_fingerprint} (model {store.schema.model}), but the {which} "
                                f"tokenizer {tok.name} has {tok.fingerprint}{hint}")
    vmap, map_name = _load_map(vocab_map, a.schema.tokenizer_fingerprint, b.schema.tokenizer_fingerprint)
    pm = prepare_map(vmap.matrix)
    if pm.pivot_vocab < tok_p.vocab_size or pm.source_vocab < tok_s.vocab_size:
        raise TokalignError(f"{map_name}: map shape {pm.source_vocab} x {pm.pivot_vocab} is smaller than the "
                            f"vocabularies ({tok_s.vocab_size} source, {tok_p.vocab_size} pivot)")
    common, only_pivot, only_source = join_sample_ids(list(a.sample_ids), list(b.sample_ids))
    # output settings not given: those of the store being resumed, else the defaults
    defaults = {"compression_level": OUTPUT_COMPRESSION_LEVEL, "codec": "zstd", "logits_dtype": "float32"}
    _refuse_input_as_output(out, (a_url, b_url))
    try:
        existing = open_store(out, allow_incomplete=True)
    except TokalignError:
        existing = None
    if existing is not None and existing.schema.kind != "remapped":  # --overwrite would delete a part of it
        raise TokalignError(f"--out {out} is a {existing.schema.kind} store, not a remap output; choose another "
                            "output path")
    if opt.overwrite:
        existing = None
    elif existing is not None:
        defaults = {key: getattr(existing.schema, key) for key in defaults}
    level, codec, logits_dtype = (defaults[key] if getattr(opt, key) is None else getattr(opt, key)
                                  for key in ("compression_level", "codec", "logits_dtype"))

    schema = StoreSchema(
        model=f"{b.schema.model} -> {tok_p.name}", tokenizer_fingerprint=a.schema.tokenizer_fingerprint,
        vocab_size=pm.pivot_vocab, k=int(opt.top_k), logits_dtype=logits_dtype, kind="remapped",
        template=getattr(a.schema, "template", None),
        options={"pivot_store": a_url, "source_store": b_url,
                 "map": map_name, "inside": opt.inside, "one_to_many": opt.one_to_many,
                 "source_model": b.schema.model, "source_fingerprint": b.schema.tokenizer_fingerprint,
                 "tokenizer": tok_p.name, "ce_definition": CE_DEFINITION},
        extras=REMAP_EXTRAS + (REMAP_CE_EXTRA,),
        compression_level=int(level), codec=codec,
    )
    overwrite = opt.overwrite or _restart(existing, schema, out)
    writer = open_writer(out, schema, flush_tokens=opt.flush_tokens, overwrite=overwrite)
    try:
        todo = writer.remaining(common)
        with tqdm(total=len(todo), desc="remap", unit="sample", disable=not opt.progress) as bar:
            totals = remap_stores(a, b, pm, writer, todo, TokenBytes.of(tok_p), TokenBytes.of(tok_s),
                                  k_out=opt.top_k, inside=opt.inside, one_to_many=opt.one_to_many,
                                  threads=opt.threads, batch_tokens=opt.batch_tokens, progress=bar.update)
        writer.close()
    except TokalignError as exc:
        writer.abort()  # what was committed stays; the lock goes
        done = writer.committed_samples
        raise TokalignError("%s (the output %s keeps the %d sample(s) committed before the error: the same command "
                            "resumes once the input is fixed; add --overwrite to start it over)"
                            % (exc, out, done)) from None
    except BaseException:
        writer.abort()
        raise
    return {
        "out": str(out), "samples_written": len(todo), "samples_already_done": len(common) - len(todo),
        "only_in_pivot_store": len(only_pivot), "only_in_source_store": len(only_source),
        "only_in_pivot_examples": only_pivot[:5], "only_in_source_examples": only_source[:5],
        "inside": opt.inside, "one_to_many": opt.one_to_many, "top_k": opt.top_k,
        "positions": totals.positions, "valid_positions": totals.valid, "masked": totals.masked,
        "nonfinite": totals.nonfinite, "empty": totals.empty, "group_kinds": totals.kinds,
        "mean_retained_mass": totals.mean_retained_mass,
        "alignment": totals.align_paths,
        "seconds": {k: round(v, 4) for k, v in totals.seconds.items()},
        "positions_per_s": round(totals.positions_per_s),
    }
