"""``build-stats``: stream a corpus through both tokenizers, align, and count co-aligned token pairs.

Per batch of items: both tokenizers encode in parallel (Rust), the alignment runs in C++ over the
whole batch (OpenMP), and the pair counts are accumulated in C++; Python only moves arrays.
Memory is bounded by the batch size plus the number of distinct (pivot, source) pairs.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator, List, Optional, Sequence

from .. import __version__
from .. import align as _align
from ..corpus import Corpus, CorpusItem
from ..errors import TokalignError
from .matrix import MappingStats, StatsAccumulator

METHODS = ("span", "dtw")


@dataclass
class BuildOptions:
    method: str = "span"  # "span" (exact, from offsets) or "dtw" (FuseChat's DP)
    template: str = "plain"  # "plain" or "chat" (each side rendered with its own chat template)
    assistant_only: bool = False
    max_chars: Optional[int] = None
    shard: tuple = (0, 1)  # (index, count): items with position % count == index
    batch_size: int = 256
    skip_bad: bool = False
    tie_break: str = "fusechat"
    band: object = "auto"
    device: str = "auto"  # dtw: "auto" | "cpu" | "cuda" (tokalign.device); results are identical
    allow_empty: bool = False  # an empty result (no item aligned) is an error unless this is set

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["shard"] = "%d/%d" % self.shard
        d.pop("device")  # where it ran does not change the counts; meta.json stays reproducible
        d.pop("allow_empty")  # nor does permission to be empty
        return d


def parse_shard(spec: str) -> tuple:
    """``"I/N"`` -> (I, N) with 0 <= I < N."""
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise TokalignError("--shard must look like I/N (e.g. 0/4), got %r" % spec) from None
    if n < 1 or not 0 <= i < n:
        raise TokalignError("--shard I/N needs 0 <= I < N, got %r" % spec)
    return i, n


def _batches(it: Iterable, size: int) -> Iterator[list]:
    it = iter(it)
    while True:
        chunk = list(itertools.islice(it, size))
        if not chunk:
            return
        yield chunk


@dataclass
class _Items:
    """Corpus iteration for both sides (one text per side when each uses its own chat template)."""

    pivot: Corpus
    source: Optional[Corpus]
    shard: tuple
    seen: int = field(default=0)

    def __iter__(self) -> Iterator[tuple]:
        i, n = self.shard
        pairs = zip(self.pivot, self.source) if self.source is not None else ((x, x) for x in self.pivot)
        for k, (p, s) in enumerate(pairs):
            if k % n == i:
                self.seen += 1
                yield p, s


def build_stats(pivot, source, corpus: Sequence[str] | str, options: BuildOptions = BuildOptions(),
                progress: bool = True) -> MappingStats:
    """Build the mapping-statistics matrix of ``pivot`` x ``source`` tokenizers over ``corpus`` files."""
    if options.method not in METHODS:
        raise TokalignError("method must be one of %s, not %r" % (", ".join(METHODS), options.method))
    common = dict(assistant_only=options.assistant_only, max_chars=options.max_chars, skip_bad=options.skip_bad)
    if options.template == "chat":
        pc = Corpus(corpus, template="chat", tokenizer=pivot, max_chars=options.max_chars, skip_bad=options.skip_bad)
        sc = Corpus(corpus, template="chat", tokenizer=source, max_chars=options.max_chars, skip_bad=options.skip_bad)
    else:
        pc, sc = Corpus(corpus, template=options.template, **common), None
    items = _Items(pc, sc, options.shard)
    acc = StatsAccumulator(pivot.vocab_size, source.vocab_size)
    tables = None
    device = "cpu"
    if options.method == "dtw":
        from ..device import resolve_device

        device = resolve_device(options.device)  # --device cuda without a GPU fails here, before any work
        tables = (_align.TokenTable(pivot.raw_tokens()), _align.TokenTable(source.raw_tokens()))
    skipped_empty = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="build-stats", unit=" items", dynamic_ncols=True)
    t0 = time.perf_counter()
    for chunk in _batches(items, options.batch_size):
        pitems: List[CorpusItem] = [p for p, _ in chunk]
        sitems: List[CorpusItem] = [s for _, s in chunk]
        penc = pivot.encode_batch([x.text for x in pitems])
        senc = source.encode_batch([x.text for x in sitems])
        keep = [k for k in range(len(chunk)) if len(penc[k].ids) and len(senc[k].ids)]
        skipped_empty += len(chunk) - len(keep)
        penc = [penc[k] for k in keep]
        senc = [senc[k] for k in keep]
        if options.method == "dtw":
            alns = _align.batch([e.ids for e in penc], [e.ids for e in senc], pivot_table=tables[0],
                                source_table=tables[1], method="dtw", band=options.band,
                                tie_break=options.tie_break, device=device)
        elif sc is None:
            alns = _align.batch(method="span", pivot_offsets=[e.offsets for e in penc],
                                source_offsets=[e.offsets for e in senc])
        else:  # different renderings: diff the texts, DTW over the differing stretches
            alns = [_align.span(pe.offsets, se.offsets, pivot_text=pitems[k].text, source_text=sitems[k].text,
                                tie_break=options.tie_break, device=device)
                    for k, pe, se in zip(keep, penc, senc)]
        acc.add([e.ids for e in penc], [e.ids for e in senc], [a.groups for a in alns])
        if bar is not None:
            bar.update(len(chunk))
            dt = max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix_str("%.2fM tok/s" % (acc.pivot_tokens / dt / 1e6), refresh=False)
    if bar is not None:
        bar.close()
    if acc.items == 0 and not options.allow_empty:
        hint = " (--assistant-only: items without an assistant turn are empty)" if options.assistant_only else ""
        raise TokalignError("nothing to count: no item of the corpus was aligned (%s; %d empty after tokenization%s); "
                            "nothing was written (pass --allow-empty to write empty statistics)"
                            % (pc.stats.summary(), skipped_empty, hint))
    seconds = time.perf_counter() - t0
    m = acc.matrix()
    meta = {
        "kind": "tokalign.stats",
        "tokalign_version": __version__,
        "pivot_name": pivot.name,
        "source_name": source.name,
        "pivot_fingerprint": pivot.fingerprint,
        "source_fingerprint": source.fingerprint,
        "pivot_vocab": pivot.vocab_size,
        "source_vocab": source.vocab_size,
        "corpus_files": pc.provenance(),
        "items": acc.items,
        "skipped_items": skipped_empty + pc.stats.skipped,
        "pivot_tokens": acc.pivot_tokens,
        "source_tokens": acc.source_tokens,
        "pairs": int(m.nnz),
        "group_kinds": dict(acc.kinds),
        "shard": "%d/%d" % options.shard,
        "options": options.as_dict(),
    }
    stats = MappingStats(m, meta, acc.pivot_counts, acc.source_counts)
    stats.seconds = seconds  # not in meta: meta must be reproducible
    return stats


def summary_line(stats: MappingStats) -> str:
    m = stats.meta
    secs = getattr(stats, "seconds", 0.0) or 1e-9
    kinds = m["group_kinds"]
    total = max(sum(kinds.values()), 1)
    return ("build-stats: %d items, %d pivot / %d source tokens, %d distinct pairs in %.1fs (%.2fM pivot tok/s); "
            "groups 1:1 %.1f%%, 1:n %.1f%%, n:1 %.1f%%, n:m %.1f%%; skipped %d"
            % (m["items"], m["pivot_tokens"], m["source_tokens"], m["pairs"], secs, m["pivot_tokens"] / secs / 1e6,
               100 * kinds["1:1"] / total, 100 * kinds["1:n"] / total, 100 * kinds["n:1"] / total,
               100 * kinds["n:m"] / total, m["skipped_items"]))
