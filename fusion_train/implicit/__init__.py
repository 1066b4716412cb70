"""Implicit fusion, data side (``fusion_train.implicit``; docs/implicit.md): source models contribute text only.

* :func:`sample` (:mod:`~fusion_train.implicit.sample`, engines in :mod:`~fusion_train.implicit.engines`) --
  N responses per prompt from every source model;
* :func:`score` (:mod:`~fusion_train.implicit.score`) -- reward-model scores, math / code verdicts
  (:mod:`~fusion_train.implicit.verify`);
* :func:`build` (:mod:`~fusion_train.implicit.build`) -- FuseChat-3.0 SFT sets and same-source pairs, WRPO
  triples;
* :mod:`~fusion_train.implicit.formats` / :mod:`~fusion_train.implicit.jsonl` -- the JSON Lines formats;
* :mod:`~fusion_train.implicit.cli` -- ``fusion-train sample | score | build-pairs``.

Importing this package imports no torch.
"""
from .build import BuildOptions, build
from .sample import SampleOptions, sample
from .score import ScoreOptions, score

__all__ = ["BuildOptions", "SampleOptions", "ScoreOptions", "build", "sample", "score"]
