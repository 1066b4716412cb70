"""Schema of a tokalign logit store: array names, dtypes, chunking and attributes.

A store is a Zarr v3 group with one sub-group per writer part (``part-00000``, ...). Every part holds the
same ragged arrays over all tokens of its sequences; the root group holds the schema (attributes below).
The full format is described in ``docs/store.md``; this module is its single source of truth in code.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..errors import TokalignError

FORMAT_NAME = "tokalign.logit-store"
#: 2: every chunk ends with the crc32c of its payload (zarr's crc32c codec) and every chunk under the committed
#: rows is written (zarr's write_empty_chunks), so a missing object is loss; 1: neither (still read, unprotected)
FORMAT_VERSION = 2
CHECKSUMMED_SINCE = 2
FORMAT_VERSIONS = (1, 2)
#: part indices are 5 digits (part-00000 ... part-99999)
MAX_PARTS = 100000

PART_PREFIX = "part-"
PART_RE = re.compile(r"^part-(\d{5})$")

KINDS = ("topk", "remapped")
#: blosc compressors a store may use (byte shuffle either way): zstd is smaller, lz4 ~3-4x cheaper to
#: encode and ~3x cheaper to decode at ~25% more bytes (docs/store.md, "Chunks, shards, compression")
CODECS = ("zstd", "lz4")
LOGIT_DTYPES = ("bfloat16", "float16", "float32")

# token-axis arrays every store has: name -> stored numpy dtype (topk arrays are set per schema)
TOKEN_ARRAYS = ("input_ids", "loss_mask", "topk_ids", "topk_logits", "logsumexp", "token_ce")
# sample-axis arrays; ``offsets`` has S + 1 entries (offsets[0] == 0)
SAMPLE_ARRAYS = ("offsets", "sample_id", "seq_ce", "valid", "nonfinite")
# float arrays whose non-finite values are counted per sample (topk_logits only at valid slots)
CHECKED_FLOAT_ARRAYS = ("topk_logits", "logsumexp", "token_ce")

EXTRA_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
EXTRA_DTYPES = ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "float16", "float32", "float64")


def part_name(part: int) -> str:
    """Name of the sub-group written by rank ``part`` (``part-00003``)."""
    if not 0 <= int(part) <= 99999:
        raise TokalignError("part index must be in [0, 99999], got %r" % (part,))
    return "%s%05d" % (PART_PREFIX, int(part))


def ids_dtype_for(vocab_size: int) -> str:
    """Narrowest signed integer dtype that holds every id in [-1, vocab_size)."""
    return "int16" if vocab_size <= np.iinfo(np.int16).max + 1 else "int32"


def stored_logits_dtype(logits_dtype: str) -> str:
    """numpy has no bfloat16: bf16 logits are stored as their raw 16-bit patterns (uint16)."""
    return "uint16" if logits_dtype == "bfloat16" else logits_dtype


@dataclass(frozen=True)
class ExtraArray:
    """An optional per-token array declared at creation (e.g. ``group_kind`` uint8 of remapped stores)."""

    name: str
    dtype: str
    shape: Tuple[int, ...] = ()  # trailing shape after the token axis

    def to_json(self) -> Dict[str, Any]:
        return {"dtype": self.dtype, "shape": list(self.shape)}


def _parse_extras(extras: Optional[Mapping[str, Any]]) -> Tuple[ExtraArray, ...]:
    out = []
    for name, spec in (extras or {}).items():
        if isinstance(spec, ExtraArray):
            spec = spec.to_json()
        if isinstance(spec, str) or isinstance(spec, np.dtype) or isinstance(spec, type):
            spec = {"dtype": spec, "shape": []}
        dtype = np.dtype(spec["dtype"]).name
        shape = tuple(int(s) for s in spec.get("shape", ()))
        if not EXTRA_NAME_RE.match(name):
            raise TokalignError("extra array name %r must match %s" % (name, EXTRA_NAME_RE.pattern))
        if name in TOKEN_ARRAYS or name in SAMPLE_ARRAYS:
            raise TokalignError("extra array name %r clashes with a core array" % name)
        if dtype not in EXTRA_DTYPES:
            raise TokalignError("extra array %r: dtype %s not supported (one of %s)" % (name, dtype, ", ".join(EXTRA_DTYPES)))
        if any(s <= 0 for s in shape):
            raise TokalignError("extra array %r: trailing shape %r must be positive" % (name, shape))
        out.append(ExtraArray(name, dtype, shape))
    return tuple(sorted(out, key=lambda e: e.name))


@dataclass(frozen=True)
class StoreSchema:
    """What a store holds; saved in the root group's attributes and checked on resume and on read.

    ``kind="topk"``: raw top-k logits of a model plus the logsumexp over its FULL vocabulary, so
    ``p = exp(logit - logsumexp)`` is exact. ``kind="remapped"``: log-probabilities over a pivot vocabulary
    (written by ``tokalign.remap``) with ``logsumexp = 0`` and id ``-1`` for invalid slots.
    """

    model: str
    tokenizer_fingerprint: str
    vocab_size: int
    k: int
    logits_dtype: str = "bfloat16"
    kind: str = "topk"
    template: Optional[str] = None
    options: Dict[str, Any] = field(default_factory=dict)
    extras: Tuple[ExtraArray, ...] = ()
    ids_dtype: Optional[str] = None  # default: narrowest of int16 / int32 for vocab_size
    chunk_tokens: int = 32768
    shard_tokens: int = 524288
    chunk_samples: int = 8192
    shard_samples: int = 131072
    compression_level: int = 5
    codec: str = "zstd"

    def __post_init__(self) -> None:
        extras = self.extras
        if isinstance(extras, (tuple, list)):
            extras = {e.name: e for e in extras}
        object.__setattr__(self, "extras", _parse_extras(extras))
        if self.ids_dtype is None:
            object.__setattr__(self, "ids_dtype", ids_dtype_for(int(self.vocab_size)))
        self.validate()

    # -- checks -------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`TokalignError` naming the field when the schema is unusable."""
        if not isinstance(self.model, str) or not self.model:
            raise TokalignError("store schema: model must be a non-empty string")
        if not isinstance(self.tokenizer_fingerprint, str) or not self.tokenizer_fingerprint:
            raise TokalignError("store schema: tokenizer_fingerprint must be a non-empty string")
        if int(self.vocab_size) <= 0:
            raise TokalignError("store schema: vocab_size must be positive, got %r" % (self.vocab_size,))
        if int(self.k) <= 0:
            raise TokalignError("store schema: k must be positive, got %r" % (self.k,))
        if int(self.k) > int(self.vocab_size):
            raise TokalignError("store schema: k=%d is larger than the vocabulary (vocab_size=%d)" % (self.k, self.vocab_size))
        if self.logits_dtype not in LOGIT_DTYPES:
            raise TokalignError("store schema: logits_dtype %r not one of %s" % (self.logits_dtype, ", ".join(LOGIT_DTYPES)))
        if self.kind not in KINDS:
            raise TokalignError("store schema: kind %r not one of %s" % (self.kind, ", ".join(KINDS)))
        if self.ids_dtype not in ("int16", "int32"):
            raise TokalignError("store schema: ids_dtype %r not int16 or int32" % (self.ids_dtype,))
        if int(self.vocab_size) - 1 > np.iinfo(self.ids_dtype).max:
            raise TokalignError("store schema: ids_dtype %s cannot hold vocab_size=%d" % (self.ids_dtype, self.vocab_size))
        if self.codec not in CODECS:
            raise TokalignError("store schema: codec %r not one of %s" % (self.codec, ", ".join(CODECS)))
        if not 0 <= int(self.compression_level) <= 9:
            raise TokalignError("store schema: compression_level must be in 0..9, got %r" % (self.compression_level,))
        for name, chunk, shard in (("tokens", self.chunk_tokens, self.shard_tokens),
                                   ("samples", self.chunk_samples, self.shard_samples)):
            if chunk <= 0 or shard <= 0 or shard % chunk:
                raise TokalignError("store schema: shard_%s=%d must be a positive multiple of chunk_%s=%d"
                                    % (name, shard, name, chunk))
        try:
            import json

            json.dumps(self.options)
        except (TypeError, ValueError) as exc:
            raise TokalignError("store schema: options must be JSON-serialisable (%s)" % exc)

    # -- derived --------------------------------------------------------------------------------
    @property
    def stored_logits_dtype(self) -> str:
        return stored_logits_dtype(self.logits_dtype)

    def token_array_specs(self) -> Dict[str, Tuple[str, Tuple[int, ...]]]:
        """Token-axis arrays: name -> (stored dtype, trailing shape)."""
        k = int(self.k)
        specs = {
            "input_ids": ("int32", ()),
            "loss_mask": ("bool", ()),
            "topk_ids": (self.ids_dtype, (k,)),
            "topk_logits": (self.stored_logits_dtype, (k,)),
            "logsumexp": ("float32", ()),
            "token_ce": ("float32", ()),
        }
        for e in self.extras:
            specs[e.name] = (e.dtype, e.shape)
        return specs

    @staticmethod
    def sample_array_specs() -> Dict[str, Tuple[str, Tuple[int, ...]]]:
        """Sample-axis arrays: name -> (stored dtype, trailing shape); ``offsets`` has one more entry."""
        return {"offsets": ("int64", ()), "sample_id": ("str", ()), "seq_ce": ("float32", ()),
                "valid": ("bool", ()), "nonfinite": ("int32", ())}

    # -- (de)serialisation -----------------------------------------------------------------------
    def to_attrs(self) -> Dict[str, Any]:
        """Root-group attributes (JSON)."""
        from .. import __version__

        arrays = {name: {"axis": "token", "dtype": dt, "shape": list(sh)} for name, (dt, sh) in self.token_array_specs().items()}
        arrays["topk_logits"]["logical_dtype"] = self.logits_dtype
        arrays.update({name: {"axis": "sample", "dtype": dt, "shape": list(sh)} for name, (dt, sh) in self.sample_array_specs().items()})
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "tokalign_version": __version__,
            "model": self.model,
            "tokenizer_fingerprint": self.tokenizer_fingerprint,
            "vocab_size": int(self.vocab_size),
            "k": int(self.k),
            "kind": self.kind,
            "logits_dtype": self.logits_dtype,
            "ids_dtype": self.ids_dtype,
            "template": self.template,
            "options": dict(self.options),
            "extras": {e.name: e.to_json() for e in self.extras},
            "chunks": {"chunk_tokens": self.chunk_tokens, "shard_tokens": self.shard_tokens,
                       "chunk_samples": self.chunk_samples, "shard_samples": self.shard_samples,
                       "compressor": {"name": "blosc", "cname": self.codec, "clevel": self.compression_level,
                                      "shuffle": "shuffle"}},
            "arrays": arrays,
        }

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], where: str = "store") -> "StoreSchema":
        """Rebuild the schema from root-group attributes; a clear error when they are not a tokalign store."""
        if attrs.get("format") != FORMAT_NAME:
            raise TokalignError("%s is not a tokalign logit store (root attribute format=%r)" % (where, attrs.get("format")))
        version = format_version(attrs, where)
        if version > FORMAT_VERSION:
            raise TokalignError("%s has format_version %s; this tokalign reads up to %d (upgrade tokalign)"
                                % (where, version, FORMAT_VERSION))
        try:
            ch = attrs["chunks"]
            return cls(model=attrs["model"], tokenizer_fingerprint=attrs["tokenizer_fingerprint"],
                       vocab_size=int(attrs["vocab_size"]), k=int(attrs["k"]), logits_dtype=attrs["logits_dtype"],
                       kind=attrs["kind"], template=attrs.get("template"), options=dict(attrs.get("options") or {}),
                       extras=dict(attrs.get("extras") or {}), ids_dtype=attrs["ids_dtype"],
                       chunk_tokens=int(ch["chunk_tokens"]), shard_tokens=int(ch["shard_tokens"]),
                       chunk_samples=int(ch["chunk_samples"]), shard_samples=int(ch["shard_samples"]),
                       compression_level=int(ch.get("compressor", {}).get("clevel", 5)),
                       codec=str(ch.get("compressor", {}).get("cname", "zstd")))
        except KeyError as exc:
            raise TokalignError("%s: root attribute %s is missing" % (where, exc))
        except (TypeError, ValueError, AttributeError) as exc:
            raise TokalignError("%s: root attributes are not a valid store schema (%s)" % (where, exc)) from None

    def identity(self) -> Dict[str, Any]:
        """The fields that must agree between parts of one store and between a store and its resumer (the format
        version is not one: a writer continues a store in the format it was created in)."""
        d = self.to_attrs()
        d.pop("tokalign_version")
        d.pop("format_version")
        return d

    def replace(self, **changes: Any) -> "StoreSchema":
        return dataclasses.replace(self, **changes)


def _int_attr(value: Any, what: str, where: str, lo: int, hi: int) -> int:
    """``value`` as an int in [lo, hi], else a one-line error naming the attribute (bools and floats refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= int(value) <= hi:
        raise TokalignError("%s: attribute %s=%r is impossible (an integer in [%d, %d] expected); the store's "
                            "metadata is damaged or was edited" % (where, what, value, lo, hi))
    return int(value)


def format_version(attrs: Mapping[str, Any], where: str = "store") -> int:
    """The root attribute ``format_version`` (checked: 1 or more)."""
    return _int_attr(attrs.get("format_version"), "format_version", where, 1, 1 << 30)


def num_parts_attr(attrs: Mapping[str, Any], where: str = "store") -> int:
    """The root attribute ``num_parts`` (checked: 1 .. MAX_PARTS; absent = 0, a root no writer finished creating)."""
    if "num_parts" not in attrs:
        return 0
    return _int_attr(attrs.get("num_parts"), "num_parts", where, 1, MAX_PARTS)


def committed_attr(attrs: Mapping[str, Any], where: str) -> Dict[str, int]:
    """A part's ``committed`` counts, each a non-negative int (absent = 0)."""
    committed = attrs.get("committed")
    if committed is None:
        committed = {}
    if not isinstance(committed, Mapping):
        raise TokalignError("%s: attribute committed=%r is impossible (a mapping of counts expected); the store's "
                            "metadata is damaged or was edited" % (where, committed))
    return {k: _int_attr(v, "committed.%s" % k, where, 0, 1 << 62) for k, v in committed.items()}


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_difference(a: Mapping[str, Any], b: Mapping[str, Any], limit: int = 6) -> str:
    """The differing fields of two attribute dicts, by dotted path, values shortened (for error messages):
    ``k: 10 != 3; chunks.compressor: {'cname': 'lz4'} != {'cname': 'zstd'}``. Where two dicts differ only in
    plain values, those entries are shown side by side as small dicts."""
    out: List[str] = []

    def walk(x: Any, y: Any, path: str) -> None:
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            keys = sorted(set(x) | set(y), key=str)
            differ = [k for k in keys if x.get(k) != y.get(k)]
            nested = [k for k in differ if isinstance(x.get(k), Mapping) and isinstance(y.get(k), Mapping)]
            plain = [k for k in differ if k not in nested]
            if path and plain:
                def side(d: Mapping[str, Any]) -> str:
                    return "{%s}" % ", ".join("%r: %s" % (k, _short(d[k], 60)) for k in plain if k in d)

                out.append("%s: %s != %s" % (path, side(x), side(y)))
            elif plain:
                out.extend("%s: %s != %s" % (k, _short(x.get(k)), _short(y.get(k))) for k in plain)
            for k in nested:
                walk(x[k], y[k], "%s.%s" % (path, k) if path else str(k))
        elif x != y:
            out.append("%s: %s != %s" % (path or "value", _short(x), _short(y)))

    walk(a, b, "")
    if not out:
        return "no difference"
    more = "; and %d more" % (len(out) - limit) if len(out) > limit else ""
    return "; ".join(out[:limit]) + more


# -- bfloat16 <-> float32, exact and vectorised (numpy has no bfloat16) ------------------------------
def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Raw bf16 bit patterns (uint16) -> float32. Exact: bf16 is the top half of a float32."""
    bits = np.asarray(bits, dtype=np.uint16)
    out = np.empty(bits.shape, dtype=np.uint32)
    np.left_shift(bits, 16, out=out, dtype=np.uint32)  # one pass, no uint32 temporary
    return out.view(np.float32)


def float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns (uint16), round-to-nearest-even like torch; NaN stays NaN."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32)
    rounded = ((u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        # keep sign, force a quiet-NaN payload so rounding never turns NaN into Inf
        rounded[nan] = ((u[nan] >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16)
    return rounded


def bf16_bits_nonfinite(bits: np.ndarray) -> np.ndarray:
    """Mask of Inf/NaN bf16 patterns (exponent all ones)."""
    return (np.asarray(bits, dtype=np.uint16) & np.uint16(0x7F80)) == np.uint16(0x7F80)
