"""Fusion training (``fusion_train.fuse``): λ·SFT + (1−λ)·MinCE-fused sparse distillation (docs/fuse.md).

* :func:`run` (:mod:`~fusion_train.fuse.run`) -- the library entry point: config, model and stores in,
  a trained model and a summary out;
* :mod:`~fusion_train.fuse.losses` -- sparse-target losses (pure torch); the distillation losses are
  registered in :mod:`~fusion_train.fuse.loss_registry`;
* :mod:`~fusion_train.fuse.data` -- store-backed dataset and the sparse collator;
* :mod:`~fusion_train.fuse.config` / :mod:`~fusion_train.fuse.trainer` -- ``FusionConfig`` (TrainingArguments)
  and ``FusionTrainer`` (a ``transformers.Trainer``);
* :mod:`~fusion_train.fuse.cli` -- ``fusion-train fuse``.

Importing this package imports no torch: ``FusionConfig`` and ``FusionTrainer`` are loaded on first use.
``fusion_train.fuse.run`` is the function (the module of the same name is
``importlib.import_module("fusion_train.fuse.run")``).
"""
from typing import Any

from .run import run

__all__ = ["FusionConfig", "FusionTrainer", "run"]

# name -> submodule that defines it (imports transformers, hence torch: loaded on first access)
_LAZY = {"FusionConfig": "config", "FusionTrainer": "trainer"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module("." + _LAZY[name], __name__), name)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
