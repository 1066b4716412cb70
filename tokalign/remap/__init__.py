"""Remapping source top-k distributions into the pivot vocabulary (``tokalign.remap``; docs/remap.md).

* :mod:`tokalign.remap.kernel` -- the C++ kernel over ragged arrays (:func:`remap_batch`), re-exported here;
* :mod:`tokalign.remap.torch_path` -- the same semantics vectorised in torch (GPU; needs torch);
* :mod:`tokalign.remap.ce` -- the source's NLL carried through the alignment groups (``token_ce``);
* :mod:`tokalign.remap.stores` -- the store-to-store engine (gather, align, remap, write);
* :mod:`tokalign.remap.run` -- ``tokalign remap`` as a library call (:func:`run_stores`, :class:`RemapOptions`).
"""
from .kernel import (EMPTY_ID, EMPTY_LOGIT, INSIDE_POLICIES, KIND_1_1, KIND_1_N, KIND_N_1_END, KIND_N_1_INSIDE,
                     KIND_N_M_END, KIND_N_M_INSIDE, KIND_NAMES, KIND_PIVOT_ONLY, ONE_TO_MANY_POLICIES, SOURCE_KINDS,
                     WEIGHTED_DEFINITION, PreparedMap, RemapResult, concat_groups, prepare_map, remap_batch,
                     remap_sequence)
from .run import RemapOptions, run_stores

__all__ = ["EMPTY_ID", "EMPTY_LOGIT", "INSIDE_POLICIES", "KIND_1_1", "KIND_1_N", "KIND_NAMES", "KIND_N_1_END",
           "KIND_N_1_INSIDE", "KIND_N_M_END", "KIND_N_M_INSIDE", "KIND_PIVOT_ONLY", "ONE_TO_MANY_POLICIES",
           "PreparedMap", "RemapOptions", "RemapResult", "SOURCE_KINDS", "WEIGHTED_DEFINITION", "concat_groups", "prepare_map",
           "remap_batch", "remap_sequence", "run_stores"]
