"""Timing helper shared by the benchmark scripts (they run as ``python benchmarks/<name>.py``, so this
folder is on sys.path)."""
from __future__ import annotations

import time
from typing import Any, Callable, Optional


def best_of(fn: Callable[[], Any], repeat: int = 3, *, check: Optional[Callable[[Any], bool]] = None) -> float:
    """Seconds of the fastest of ``repeat`` calls of ``fn``; ``check(result)`` must hold for every call."""
    best = float("inf")
    for _ in range(max(1, int(repeat))):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
        if check is not None:
            assert check(result), "benchmark run returned %r" % (result,)
    return best
