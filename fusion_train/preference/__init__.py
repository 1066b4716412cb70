"""Preference and conditioned trainers (``fusion_train.preference``): the training half of implicit fusion
(docs/implicit.md).

* :mod:`~fusion_train.preference.losses` -- ``dpo_loss``, ``wrpo_loss``, ``AlphaSchedule``, ``weighted_sft_loss``
  (pure torch);
* :mod:`~fusion_train.preference.data` -- reading SFT sets, pairs and WRPO triples into token ids; collators;
* :mod:`~fusion_train.preference.config` / :mod:`~fusion_train.preference.trainer` -- ``PreferenceConfig`` /
  ``PreferenceTrainer`` (DPO, ln-DPO, WRPO), ``SFTConfig`` / ``CRLFTConfig`` / ``WeightedSFTTrainer``;
* :mod:`~fusion_train.preference.reference` -- reference log-probs precomputed in one pass;
* :mod:`~fusion_train.preference.crlft` -- OpenChat C-RLFT templates, end-of-turn token, class weights;
* :mod:`~fusion_train.preference.run` -- library entry points ``run_sft``, ``run_preference``, ``run_crlft``;
* ``cli/`` (``sft``, ``dpo``, ``wrpo``, ``crlft``) -- the ``fusion-train`` subcommands.

Importing this package imports no torch: the names are loaded on first use.
"""
from typing import Any

__all__ = ["dpo_loss", "wrpo_loss", "AlphaSchedule", "weighted_sft_loss", "PreferenceConfig", "SFTConfig",
           "CRLFTConfig", "PreferenceTrainer", "WeightedSFTTrainer", "run_sft", "run_preference", "run_crlft"]

# name -> submodule that defines it (torch / transformers are imported on first access)
_LAZY = {"dpo_loss": "losses", "wrpo_loss": "losses", "AlphaSchedule": "losses", "weighted_sft_loss": "losses",
         "PreferenceConfig": "config", "SFTConfig": "config", "CRLFTConfig": "config",
         "PreferenceTrainer": "trainer", "WeightedSFTTrainer": "trainer",
         "run_sft": "run", "run_preference": "run", "run_crlft": "run"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module("." + _LAZY[name], __name__), name)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
