"""Fusion training (``fusion_train.fuse``): λ·SFT + (1−λ)·MinCE-fused sparse distillation (docs/fuse.md).

* :mod:`~fusion_train.fuse.losses` -- sparse-target losses (pure torch);
* :mod:`~fusion_train.fuse.data` -- store-backed dataset and the sparse collator;
* :mod:`~fusion_train.fuse.config` / :mod:`~fusion_train.fuse.trainer` -- ``FusionConfig`` (TrainingArguments)
  and ``FusionTrainer`` (a ``transformers.Trainer``);
* :mod:`~fusion_train.fuse.cli` -- ``fusion-train fuse``.

Importing this package imports no torch; import the submodules.
"""
