"""Zarr v3 ragged store of per-token top-k distributions (one group per model and dataset).

Write with :class:`StoreWriter` (``create`` / ``resume`` / ``open``), read with :func:`open_store`; the format
(arrays, dtypes, chunks, attributes, parts, resume protocol) is documented in ``docs/store.md``.

    schema = StoreSchema(model="openchat", tokenizer_fingerprint=tok.fingerprint, vocab_size=32002, k=10)
    with StoreWriter.open("file:///data/openchat.zarr", schema) as w:
        for batch in batches(w.remaining(all_ids)):
            w.append(batch)               # list of sample dicts
    store = open_store("file:///data/openchat.zarr", expect_fingerprint=tok.fingerprint)
    sample = store.by_id("alpaca/0001")   # or store[i]; store.iter_batches(64, max_tokens=16384)
    report = inspect_store("file:///data/openchat.zarr")   # what `tokalign inspect` prints, as a dict

Modules: schema (attributes, dtypes), validate (a batch checked before it is written), writer, reader,
gather (whole samples in any order through a chunk cache), inspect, lock (one writer per part); _shards / _zarrio
are the I/O below them (and where every read checks that its objects exist and its chunks' checksums match).
"""
from .inspect import inspect as inspect_store
from .reader import StoreReader, open_store, store_status
from .schema import (
    ExtraArray,
    StoreSchema,
    bf16_bits_to_float32,
    float32_to_bf16_bits,
)
from .writer import StoreWriter, open_writer

__all__ = [
    "ExtraArray",
    "StoreReader",
    "StoreSchema",
    "StoreWriter",
    "bf16_bits_to_float32",
    "float32_to_bf16_bits",
    "inspect_store",
    "open_store",
    "open_writer",
    "store_status",
]
