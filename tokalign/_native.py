"""The one boundary to the compiled extensions (``tokalign._core``, optional ``tokalign._cuda``).

Importing a native function goes through here so that an unbuilt extension gives one friendly
line, and so that native errors reach users as :class:`~tokalign.errors.TokalignError`.
"""
from __future__ import annotations

from typing import Any

from .errors import TokalignError

__all__ = ["cuda_call"]


def cuda_call(fn, *args: Any, **kwargs: Any):
    """Call a ``tokalign._cuda`` function; its argument errors and CUDA runtime failures (out of
    memory, launch errors) become one-line :class:`TokalignError`."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        raise TokalignError("cuda: %s" % exc) from None
    except RuntimeError as exc:
        raise TokalignError(str(exc)) from None
