"""Mapping statistics (``tokalign.stats``): C[p, s] = how often pivot token p and source token s
fall in one alignment group over a corpus.

* :mod:`tokalign.stats.matrix` -- the matrix (:class:`MappingStats`), its accumulator, shards and merge;
* :mod:`tokalign.stats.build` -- corpus -> tokenize -> align -> counts (:func:`build_stats`, the
  library entry point of ``tokalign build-stats``).
"""
from .build import METHODS, BuildOptions, build_stats, parse_shard, summary_line
from .matrix import (COUNTS_FILE, GROUP_KINDS, META_FILE, STATS_FILE, MappingStats, StatsAccumulator,
                     group_kind_counts, merge_stats)

__all__ = ["BuildOptions", "COUNTS_FILE", "GROUP_KINDS", "METHODS", "META_FILE", "MappingStats", "STATS_FILE",
           "StatsAccumulator", "build_stats", "group_kind_counts", "merge_stats", "parse_shard", "summary_line"]
