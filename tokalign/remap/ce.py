"""``token_ce`` of a remapped store: the source model's exact NLL of the text, carried onto pivot positions
through the alignment groups (docs/remap.md, "token_ce and seq_ce of a remapped store").

Why not the CE under the remapped distribution q? ``-log q(next pivot token)`` is 0 at every ``inside``
position with ``onehot`` (q(gold) = 1) and only a lower bound (``-log tail``) when the gold token fell out
of the kept top-k, so the ``seq_ce`` of a remapped store was biased low and FuseChat's MinCE preferred
remapped teachers unfairly. The source store holds the model's exact per-token NLL over its full vocabulary
(source ``token_ce[j] = -log p_s(source token j + 1 | prefix)``); what differs between the two tokenizers
is only how the same text is cut. For a group covering pivot tokens ``[p0, p1)`` and source tokens
``[s0, s1)`` (same characters), the source NLL of the group's text is

    nll_g = sum(source token_ce[j - 1] for j in [s0, s1) if j >= 1)     (a sequence's first token: 0)

and it is spread evenly over the pivot positions predicting the group's pivot tokens, ``i - 1`` for
``i`` in ``[max(p0, 1), p1)``. So the output's ``token_ce`` sums, over any span of whole groups, to the
source model's NLL of that text, and the writer's ``seq_ce`` (mean over the pivot's loss positions) is
the source's total NLL of the response divided by the pivot's token count, exactly like the pivot store's.

Conventions:

* a pivot sequence's last position predicts nothing: 0 (the store convention);
* a group whose only pivot token is a sequence's first token (no predicting position) drops its NLL;
  a group without source tokens (pivot-only text, e.g. a truncated source) carries 0;
* a group whose NLL uses a source position with a non-finite ``token_ce`` or ``logsumexp`` (a broken
  source distribution; the source store flags that sample invalid) gives NaN at its pivot positions,
  so the writer flags the remapped sample invalid too (``valid = False``, its ``seq_ce`` NaN) and MinCE
  never picks it (fusion_train.fuse.losses.min_ce_choice treats non-finite CE as +inf). ``remap_valid`` /
  an empty remapped row does **not** change ``token_ce``: the source NLL of the text is still known.

Group sums are per-group sums in float64, one sequence at a time, so a sample's values do not depend on
which other samples share its batch: the per-sample path and the batched engine agree bit for bit. The
numpy version this C++ replaced is the reference in tests/remap_ce_reference.py.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

#: value of the output store's ``options["ce_definition"]``
CE_DEFINITION = "source_nll_by_group"
#: optional per-position extra of the output: the CE under the stored remapped distribution (diagnostic)
REMAP_CE_FIELD = "remap_ce"


def source_nll_by_group(source_ce: np.ndarray, source_offsets: np.ndarray, groups: np.ndarray,
                        group_offsets: np.ndarray, pivot_offsets: np.ndarray, *,
                        source_lse: Optional[np.ndarray] = None, threads: int = 0) -> np.ndarray:
    """Per-pivot-position source NLL (float32 [Np]) of a batch of aligned sequences (module docstring).

    ``source_ce`` float32 [Ns]: the source store's ``token_ce`` of the concatenated source sequences
    (``source_offsets`` [S + 1]); ``groups`` int [G, 4] ``(p0, p1, s0, s1)`` relative to each sequence, in
    order, ``group_offsets`` [S + 1]; ``pivot_offsets`` [S + 1]. ``source_lse`` [Ns] (optional): source
    positions with a non-finite logsumexp count as unknown NLL, like a non-finite ``token_ce``.
    C++ (``_core.source_nll_by_group``, OpenMP over sequences, one pass); each group's NLL is a float64 sum.
    Raises TokalignError when the groups do not cover both sequences' tokens.
    """
    from .._native import _core, call

    def as_int64(x: Any) -> np.ndarray:
        return np.ascontiguousarray(x, np.int64)

    lse = None if source_lse is None else np.ascontiguousarray(source_lse, np.float32)
    return call(_core.source_nll_by_group, np.ascontiguousarray(source_ce, np.float32), as_int64(source_offsets),
                as_int64(groups).reshape(-1, 4), as_int64(group_offsets), as_int64(pivot_offsets), lse, int(threads))


def wants_remap_ce(writer: Any) -> bool:
    """Whether ``writer``'s schema declares the diagnostic :data:`REMAP_CE_FIELD` extra."""
    return any(e.name == REMAP_CE_FIELD for e in getattr(writer.schema, "extras", ()))
