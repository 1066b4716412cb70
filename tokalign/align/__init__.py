"""Token alignment (``tokalign.align``): pairs of tokenizations of one text -> alignment groups.

* :func:`dtw` -- FuseChat's DTW over token strings (C++, banded with an exact check);
* :func:`span` -- exact alignment from character offsets of the same text (DTW where texts differ);
* :func:`batch` -- many pairs at once, GIL released, all cores; ``device="cuda"`` uses
  :mod:`tokalign.align.cuda` (the GPU kernel, CPU fallback per pair).

The code is in :mod:`tokalign.align.alignment`; this face re-exports it.
"""
from .alignment import KINDS, Alignment, TokenTable, batch, dtw, span

__all__ = ["Alignment", "TokenTable", "dtw", "span", "batch", "KINDS"]
