"""Checkpoint dtypes without torch: safetensors codes, sizes, the numpy dtype of the stored bytes,
and the exact fp32 conversions the native (numpy) merge path needs.

A :class:`DType` names a torch dtype (``DType.torch``, imported only when asked for) so the torch
path and the numpy path share one description of every tensor. numpy has no bfloat16: BF16 data is
kept as its raw ``uint16`` bits, widened to fp32 exactly (bits << 16) and narrowed with torch's
rounding (round to nearest even, NaN -> 0x7FC0), so both paths write the same bytes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import numpy as np

from tokalign.errors import TokalignError


@dataclass(frozen=True)
class DType:
    """One tensor dtype: safetensors ``code``, torch attribute ``name``, and its stored layout."""

    code: str
    name: str
    itemsize: int
    is_floating_point: bool
    storage: np.dtype  # numpy dtype of the stored bytes (BF16: uint16 bits)

    @property
    def torch(self) -> Any:
        """The torch dtype (imports torch)."""
        import torch

        return getattr(torch, self.name)

    def __str__(self) -> str:
        return self.name


_ALL = (
    DType("F64", "float64", 8, True, np.dtype(np.float64)),
    DType("F32", "float32", 4, True, np.dtype(np.float32)),
    DType("F16", "float16", 2, True, np.dtype(np.float16)),
    DType("BF16", "bfloat16", 2, True, np.dtype(np.uint16)),
    DType("I64", "int64", 8, False, np.dtype(np.int64)),
    DType("I32", "int32", 4, False, np.dtype(np.int32)),
    DType("I16", "int16", 2, False, np.dtype(np.int16)),
    DType("I8", "int8", 1, False, np.dtype(np.int8)),
    DType("U8", "uint8", 1, False, np.dtype(np.uint8)),
    DType("BOOL", "bool", 1, False, np.dtype(np.bool_)),
)
BY_CODE: Dict[str, DType] = {d.code: d for d in _ALL}
BY_NAME: Dict[str, DType] = {d.name: d for d in _ALL}
FLOAT32, FLOAT16, BFLOAT16 = BY_CODE["F32"], BY_CODE["F16"], BY_CODE["BF16"]

# output dtypes accepted by --dtype / the YAML's dtype
DTYPE_NAMES: Dict[str, DType] = {
    "float32": FLOAT32, "fp32": FLOAT32, "float16": FLOAT16, "fp16": FLOAT16, "bfloat16": BFLOAT16, "bf16": BFLOAT16,
}


def parse_dtype(name: str, field_name: str = "dtype") -> DType:
    """``"bfloat16"`` -> BF16; raise TokalignError naming ``field_name`` otherwise."""
    try:
        return DTYPE_NAMES[str(name).lower()]
    except KeyError:
        raise TokalignError("%s: unknown dtype %r (use one of float32, bfloat16, float16)" % (field_name, name)) from None


def as_dtype(value: Any) -> DType:
    """A DType from a DType, a safetensors code (``"BF16"``), a name (``"bfloat16"``) or a torch dtype."""
    if isinstance(value, DType):
        return value
    text = str(value)
    found = BY_CODE.get(text) or BY_NAME.get(text.replace("torch.", ""))
    if found is None:
        raise ValueError("unsupported dtype %r" % (value,))
    return found


def to_float32(stored: np.ndarray, dtype: DType) -> np.ndarray:
    """fp32 values of a float array in its stored layout (exact; F32 input is returned as is)."""
    if dtype is FLOAT32:
        return stored
    if dtype is BFLOAT16:
        return (stored.astype(np.uint32) << 16).view(np.float32)
    return stored.astype(np.float32)


def from_float32(values: np.ndarray, dtype: DType) -> np.ndarray:
    """fp32 ``values`` in ``dtype``'s stored layout, rounded as torch's ``.to(dtype)`` rounds."""
    if dtype is FLOAT32:
        return values
    if dtype is BFLOAT16:  # c10::round_to_nearest_even
        bits = values.view(np.uint32)
        out = ((bits + (((bits >> 16) & 1) + np.uint32(0x7FFF))) >> 16).astype(np.uint16)
        nan = np.isnan(values)
        if nan.any():
            out[nan] = 0x7FC0
        return out
    with np.errstate(over="ignore"):  # beyond the range: +-inf, as torch
        return values.astype(dtype.storage)
