"""DARE's random stream: counter-based, so a drop mask depends only on (seed, tensor, model, element).

Each (user seed, tensor name, model position) gets a 63-bit stream key (:func:`stream_key`, SHA-256).
Element ``i`` of a tensor (flat, row-major) takes 32 bits of ``splitmix64_mix(key + (i // 2 + 1) *
0x9E3779B97F4A7C15)``: the low half when ``i`` is even, the high half when odd, and is kept when
those bits, read as an unsigned integer u, satisfy ``u < floor(density * 2**32)`` (:func:`keep_below`).

The native kernel (``tokalign._core.merge_gta``, csrc/merge_kernel.cpp) and :func:`keep_mask` (torch
int64 ops; any device) compute the same bits, so a DARE merge gives the same mask for a seed on any
number of threads, on CPU or CUDA. (Before this stream, masks came from ``torch.rand`` with a
per-(tensor, model) ``torch.Generator``; merges made then are not reproduced bit for bit.)
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where the torch path runs, not for the native one
    import torch

GAMMA = 0x9E3779B97F4A7C15  # golden-ratio increment of splitmix64
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
_PAIRS_PER_CHUNK = 1 << 22  # bounds the int64 temporaries of keep_mask (~32 MB each)


def stream_key(seed: int, name: str, j: int) -> int:
    """The 63-bit key of model ``j``'s stream for tensor ``name`` under the user's ``seed``."""
    digest = hashlib.sha256(("%d\0%s\0%d" % (seed, name, j)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def keep_below(density: float) -> int:
    """The 32-bit cut-off for keep probability ``density`` in (0, 1): floor(density * 2^32)."""
    return max(0, min(int(density * 2.0 ** 32), 2 ** 32 - 1))


def _signed(x: int) -> int:
    """A 64-bit pattern as the int64 torch stores (two's complement)."""
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >= 1 << 63 else x


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 patterns (torch's >> is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def pair_bits(key: int, first_pair: int, n_pairs: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """int64 tensor of the 64-bit words of pairs ``first_pair .. first_pair + n_pairs - 1``
    (int64 arithmetic wraps modulo 2^64, which is what the unsigned splitmix64 needs)."""
    import torch

    z = torch.arange(first_pair + 1, first_pair + n_pairs + 1, dtype=torch.int64, device=device)
    z = z * _signed(GAMMA) + _signed(key)
    z = (z ^ _shr(z, 30)) * _signed(MIX1)
    z = (z ^ _shr(z, 27)) * _signed(MIX2)
    return z ^ _shr(z, 31)


def uniforms32(key: int, numel: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """int64 tensor [numel] of the elements' 32-bit uniforms (values in [0, 2^32))."""
    import torch

    bits = pair_bits(key, 0, (numel + 1) // 2, device)
    return torch.stack([bits & 0xFFFF_FFFF, _shr(bits, 32)], dim=1).reshape(-1)[:numel]


def keep_mask(key: int, density: float, numel: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """bool tensor [numel]: element i kept (its uniform is below ``keep_below(density)``)."""
    import torch

    below = keep_below(density)
    out = torch.empty(numel, dtype=torch.bool, device=device)
    n_pairs = (numel + 1) // 2
    for first in range(0, n_pairs, _PAIRS_PER_CHUNK):
        count = min(_PAIRS_PER_CHUNK, n_pairs - first)
        bits = pair_bits(key, first, count, device)
        pair_keep = torch.stack([(bits & 0xFFFF_FFFF) < below, _shr(bits, 32) < below], dim=1).reshape(-1)
        stop = min(numel, 2 * (first + count))
        out[2 * first:stop] = pair_keep[:stop - 2 * first]
    return out
