"""Dump a causal LM's per-token top-K distributions into a tokalign logit store (docs/dump.md).

    from tokalign.dump import DumpOptions, dump_logits
    summary = dump_logits("models/openchat", "models/openchat", "data.jsonl", "openchat.zarr",
                          DumpOptions(top_k=10, template="chat", mask_instruction=True))
    print(summary.line())

Pipeline of one rank: read the corpus -> take this rank's slice (``items[rank::world_size]``, corpus order) ->
tokenize (the model's tokenizer, plain text or its chat template) -> sort by length (longest first) -> pack
batches of at most ``batch_tokens`` padded tokens -> forward pass -> top-K, logsumexp and token cross-entropy
on the device (only ``K + 2`` numbers per token come back to the host) -> ``StoreWriter.append``.

Batches are packed greedily from the front of the sorted list and the writer commits only between batches,
so a resumed run re-forms exactly the batches an uninterrupted run would have used for the remaining
samples: a resumed store is identical to an uninterrupted one.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .. import __version__
from ..corpus import Corpus, CorpusItem
from ..errors import TokalignError
from .forward import forward_batch
from ..models.loading import learned_position_limit, load_causal_lm, model_output_size, torch_device
from .options import DumpOptions, DumpSummary
from .samples import batch_ranges, length_order, prepare_samples, resolve_special_tokens


def _rank_world(rank: Optional[int], world_size: Optional[int]) -> Tuple[int, int]:
    r = int(os.environ.get("RANK", "0")) if rank is None else int(rank)
    w = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else int(world_size)
    if w < 1 or not 0 <= r < w:
        raise TokalignError("rank %d is outside [0, world_size=%d)" % (r, w))
    return r, w


def _check_unique_ids(items: Sequence[CorpusItem]) -> None:
    seen: Dict[str, CorpusItem] = {}
    for it in items:
        first = seen.get(it.sample_id)
        if first is not None:
            raise TokalignError("%s:%d: duplicate sample id %r (first at %s:%d); store samples are joined by id"
                                % (it.file, it.line, it.sample_id, first.file, first.line))
        seen[it.sample_id] = it


def _refuse_nothing_to_dump(o: DumpOptions, corpus: Corpus, items: Sequence[CorpusItem],
                            my_items: Sequence[CorpusItem], prepared: Sequence[Any], counts: Dict[str, int]) -> None:
    """A run that would write no sample at all is an error (unless ``allow_empty``): an empty corpus, every line
    skipped as malformed, or every sequence empty or too long. A rank that gets no items because there are more
    ranks than items is not: its part is simply empty."""
    if o.allow_empty or prepared or (items and not my_items):
        return
    st = corpus.stats
    if not items:
        why = "the corpus has no items (%s)" % st.summary()
    else:
        why = "every item was skipped (%d empty after tokenization, %d longer than --max-length with --skip-long)" % (
            counts["skipped_empty"], counts["skipped_long"])
    raise TokalignError("nothing to dump: %s; nothing was written (pass --allow-empty to write an empty store)" % why)


def _spec_name(spec: Any) -> str:
    """A name that reloads from anywhere: absolute path for paths, else as given (alias, hub id)."""
    s = os.fspath(spec)
    return str(Path(s).expanduser().resolve()) if Path(s).expanduser().exists() else s


def dump_logits(model, tokenizer, corpus, out_url: Union[str, "os.PathLike[str]"],
                options: Optional[DumpOptions] = None, **overrides: Any) -> DumpSummary:
    """Write (this rank's part of) the logit store of ``model`` over ``corpus`` at ``out_url``.

    Args:
        model: a loaded causal LM (``torch.nn.Module`` returning ``.logits``) or a path / hub id / alias loaded
            with :func:`load_causal_lm` (``options.dtype``, ``.device``, ``.trust_remote_code``).
        tokenizer: a :class:`tokalign.tokenize.Tokenizer` or anything :func:`tokalign.load_tokenizer` takes
            (``None``: the model directory's tokenizer).
        corpus: a :class:`tokalign.corpus.Corpus` (its template wins) or corpus path(s) read with ``options.template``.
        out_url: store URL or path. An incomplete part is resumed (committed samples are skipped); a complete
            one is refused unless ``options.overwrite``.
        options: :class:`DumpOptions` (default: all defaults).
        overrides: :class:`DumpOptions` fields as keywords (``top_k=8``), applied over ``options``.

    Returns a :class:`DumpSummary`. Raises :class:`TokalignError` for bad input (message names the problem).
    """
    import torch
    from tqdm import tqdm

    from ..store import StoreSchema, StoreWriter, store_status
    from ..store import _zarrio
    from ..store.schema import part_name
    from ..tokenize import Tokenizer, load_tokenizer

    o = options if options is not None else DumpOptions()
    if overrides:
        o = replace(o, **overrides)
    rank, world_size = _rank_world(o.rank, o.world_size)
    o.check()
    top_k, template = int(o.top_k), o.template
    out = os.fspath(out_url)

    # -- tokenizer and corpus (cheap checks before the model is loaded)
    model_spec = None if isinstance(model, torch.nn.Module) else model
    if tokenizer is None:
        if model_spec is None:
            raise TokalignError("no tokenizer given for an already loaded model")
        tokenizer = model_spec
    tok_name = tokenizer.name if isinstance(tokenizer, Tokenizer) else _spec_name(tokenizer)
    if not isinstance(tokenizer, Tokenizer):
        tokenizer = load_tokenizer(tokenizer, tokenizer_dir=o.tokenizer_dir, trust_remote_code=o.trust_remote_code)
    if isinstance(corpus, Corpus):
        template = corpus.template
    else:
        corpus = Corpus(corpus, template=template, tokenizer=tokenizer, skip_bad=o.skip_bad)
    if template == "chat" and not tokenizer.has_chat_template:
        raise TokalignError("template 'chat': tokenizer %s has no chat template (use --template plain)" % tok_name)
    n_tok = int(tokenizer.vocab_size)
    if top_k > n_tok:
        raise TokalignError("top_k=%d is larger than the tokenizer's vocabulary (%d)" % (top_k, n_tok))
    add_special = resolve_special_tokens(o.special_tokens, template)
    items = list(corpus)
    corpus_stats = corpus.stats
    _check_unique_ids(items)
    my_items = items[rank::world_size]
    prepared, counts = prepare_samples(tokenizer, my_items, mask_instruction=o.mask_instruction,
                                       max_length=o.max_length, skip_long=o.skip_long, add_special_tokens=add_special)
    _refuse_nothing_to_dump(o, corpus, items, my_items, prepared, counts)
    if corpus_stats.synthesized_ids:
        print("tokalign dump-logits: warning: %d of %d corpus items have no \"id\" field, so their sample ids are "
              "file:line (e.g. %r); stores join by id, so this store joins only stores dumped from files of the same "
              "names: give every line an \"id\"" % (corpus_stats.synthesized_ids, len(items),
                                                   next((it.sample_id for it in items), "")), file=sys.stderr)
    ordered = length_order(prepared)
    provenance = [{"name": p["path"].rsplit("/", 1)[-1], "sha256": p["sha256"], "bytes": p["bytes"]}
                  for p in corpus.provenance()]

    # -- a complete part is refused before the (slow) model load
    pname = part_name(rank)
    status = store_status(out, o.storage_options)
    resumed = False
    if status["exists"] and pname in status["parts"]:
        if status["parts"][pname]["complete"] and not o.overwrite:
            raise TokalignError("%s: %s is already complete (%d samples); nothing to do (pass --overwrite to "
                                "rewrite it)" % (out, pname, status["parts"][pname]["samples"]))
        resumed = not o.overwrite

    # -- model
    if not o.progress:
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:  # pragma: no cover
            pass
    if model_spec is not None:
        model, model_name = load_causal_lm(model_spec, dtype=o.dtype, device=o.device,
                                           trust_remote_code=o.trust_remote_code, allow_pickle=o.allow_pickle)
        dev = next(model.parameters()).device
    else:
        given = getattr(getattr(model, "config", None), "_name_or_path", "")
        model_name = _spec_name(given) if given else type(model).__name__
        params = list(model.parameters())
        dev = params[0].device if params else torch.device("cpu")
        if o.device not in (None, "auto"):
            dev = torch_device(o.device) if isinstance(o.device, str) else torch.device(o.device)
            model.to(dev)
        model.eval()
    model_dtype = str(next(model.parameters()).dtype).replace("torch.", "") if list(model.parameters()) else "?"
    vocab = model_output_size(model)
    if vocab < n_tok:
        raise TokalignError("model %s has %d output logits but tokenizer %s has %d ids: the model's vocabulary is "
                            "smaller than the tokenizer's (wrong tokenizer for this model?)"
                            % (model_name, vocab, tok_name, n_tok))
    limit = learned_position_limit(model)
    if limit is not None and ordered and len(ordered[0]) > limit:
        longer = sum(1 for s in ordered if len(s) > limit)
        raise TokalignError("model %s has learned positions for %d tokens, but %d sequences are longer (up to %d "
                            "tokens): pass --max-length %d (truncate) or --skip-long; nothing was written"
                            % (model_name, limit, longer, len(ordered[0]), limit))
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(max_pos, int) and ordered and len(ordered[0]) > max_pos:
        print("tokalign dump-logits: warning: sequences of %d tokens exceed the model's max_position_embeddings=%d"
              % (len(ordered[0]), max_pos), file=sys.stderr)

    options = {
        "tokenizer": tok_name,
        "tokenizer_vocab_size": n_tok,
        "model_vocab_size": vocab,
        "topk_id_limit": n_tok,
        "template": template,
        "mask_instruction": bool(o.mask_instruction),
        "add_special_tokens": bool(add_special),
        "special_tokens": o.special_tokens,
        "max_length": int(o.max_length),
        "long": "skip" if o.skip_long else "truncate",
        "dtype": model_dtype,
        "data": provenance,
        "dump": "tokalign.dump",
    }
    schema_kw: Dict[str, Any] = dict(model=model_name, tokenizer_fingerprint=tokenizer.fingerprint,
                                     vocab_size=vocab, k=top_k, logits_dtype=o.store_dtype, kind="topk",
                                     template=tokenizer.chat_template if template == "chat" else None,
                                     options=options)
    schema_kw.update(o.schema_overrides or {})
    schema = StoreSchema(**schema_kw)

    # -- store: resume an incomplete part (the writer checks the schema is the same)
    writer = StoreWriter.open(out, schema, part=rank, num_parts=world_size, overwrite=o.overwrite,
                              storage_options=o.storage_options, flush_tokens=o.flush_tokens, on_duplicate="error",
                              on_empty="skip")
    before = writer.stats
    todo_ids = set(writer.remaining(s.sample_id for s in ordered))
    todo = [s for s in ordered if s.sample_id in todo_ids]
    if resumed:
        print("tokalign dump-logits: resuming %s" % writer.resume_report(), file=sys.stderr)
    ranges = batch_ranges([len(s) for s in todo], o.batch_tokens)
    pad_id = int(tokenizer.special_ids.get("pad", tokenizer.special_ids.get("eos", 0)))
    pad_id = pad_id if 0 <= pad_id < vocab else 0

    summary = DumpSummary(out=out, part=pname, rank=rank, world_size=world_size, model=model_name,
                          tokenizer=tok_name, device=str(dev), dtype=model_dtype, k=top_k,
                          model_vocab_size=vocab, tokenizer_vocab_size=n_tok, corpus_items=len(items),
                          rank_items=len(my_items), samples_already_done=len(ordered) - len(todo),
                          truncated=counts["truncated"], skipped_long=counts["skipped_long"],
                          skipped_empty=counts["skipped_empty"] + corpus_stats.skipped_empty,
                          skipped_bad=corpus_stats.skipped_bad_json + corpus_stats.skipped_bad_utf8
                          + corpus_stats.skipped_bad_schema, resumed=resumed)
    total_tokens = sum(len(s) for s in todo)
    t0 = time.perf_counter()
    desc = "dump-logits" if world_size == 1 else "dump-logits rank %d/%d" % (rank, world_size)
    with writer, tqdm(total=total_tokens, unit="tok", unit_scale=True, desc=desc, disable=not o.progress,
                      file=sys.stderr, dynamic_ncols=True) as bar:
        for lo, hi in ranges:
            batch = todo[lo:hi]
            samples = forward_batch(model, batch, device=dev, k=top_k, vocab_size=vocab, id_limit=n_tok,
                                    pad_id=pad_id)
            for s in samples:  # ids for the summary; the writer flags them (valid = False) itself
                if not (np.isfinite(s["logsumexp"]).all() and np.isfinite(s["token_ce"]).all()
                        and np.isfinite(s["topk_logits"]).all()):
                    summary.invalid_ids.append(s["sample_id"])
            writer.append(samples)
            summary.samples_written += len(batch)
            summary.tokens_written += sum(len(s) for s in batch)
            summary.batches += 1
            bar.update(sum(len(s) for s in batch))
            bar.set_postfix(samples=summary.samples_written, invalid=len(summary.invalid_ids), refresh=False)
    summary.seconds = time.perf_counter() - t0
    summary.tokens_per_s = summary.tokens_written / summary.seconds if summary.seconds > 0 else 0.0
    final = writer.summary()
    summary.samples = int(final["samples"])
    summary.invalid_samples = int(final["invalid_samples"]) - int(before["invalid_samples"])
    summary.nonfinite_values = int(final["nonfinite_values"]) - int(before["nonfinite_values"])
    summary.complete = bool(final["complete"])
    # per-part provenance of this dump (after close: the writer rewrites the part attributes while open)
    root = _zarrio.open_root(out, mode="r+", storage_options=o.storage_options)
    root[pname].update_attributes({"dump": {
        "items": len(my_items), "truncated": summary.truncated, "skipped_long": summary.skipped_long,
        "skipped_empty": summary.skipped_empty, "skipped_bad": summary.skipped_bad, "device": str(dev),
        "batch_tokens": int(o.batch_tokens), "tokalign_version": __version__,
        "torch_version": torch.__version__}})
    return summary
