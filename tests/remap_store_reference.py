"""The per-sample store-to-store remap that ``tokalign remap`` ran before tokalign.remap.stores: samples read one
by one with ``by_id``, each aligned in Python (token bytes -> text + offsets -> ``align.span`` with the text
diff), 64 samples remapped per kernel call, written as sample dicts. Kept as the reference the fast path must
reproduce exactly (tests/test_remap_store.py) and as the baseline of benchmarks/remap_speed.py."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from remap_samples import build_samples, remap_samples, token_byte_offsets
from tokalign.align import span
from tokalign.errors import TokalignError
from tokalign.remap.ce import wants_remap_ce

BATCH_SAMPLES = 64


def remap_per_sample(pivot, source, prepared_map, writer, sample_ids: Sequence[str], pivot_texts, source_texts, *,
                     k_out: int = 10, inside: str = "onehot", one_to_many: str = "last", threads: int = 0) -> int:
    """Appends the remapped ``sample_ids`` to ``writer`` (not closed); returns the positions written."""
    positions = 0
    ids_all = list(sample_ids)
    for lo in range(0, len(ids_all), BATCH_SAMPLES):
        ids = ids_all[lo:lo + BATCH_SAMPLES]
        ps = [pivot.by_id(i) for i in ids]
        ss = [source.by_id(i) for i in ids]
        groups = []
        for sid, x, y in zip(ids, ps, ss):
            tp, op = token_byte_offsets(pivot_texts, x["input_ids"])
            ts, os_ = token_byte_offsets(source_texts, y["input_ids"])
            try:
                groups.append(np.asarray(span(op, os_, pivot_text=tp, source_text=ts).groups, np.int64))
            except TokalignError as exc:
                raise TokalignError(f"sample {sid}: {exc}") from exc
        res = remap_samples(ps, ss, groups, prepared_map, k_out=k_out, inside=inside, one_to_many=one_to_many,
                            threads=threads)
        writer.append(build_samples(ids, ps, res, ss, groups, remap_ce=wants_remap_ce(writer)))
        positions += int(res.topk_ids.shape[0])
    return positions
