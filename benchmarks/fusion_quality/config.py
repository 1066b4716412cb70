"""What a fusion-quality run computes: the presets (:class:`BenchConfig`), the names of sources, maps and
targets, and the stable hash that names every cached stage."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from benchmarks._stages import config_to_dict

CACHE_VERSION = 1  # bump to invalidate every cached artifact
SOURCES = ("internlm2", "qwen2", "llama3")
PIVOT = "openchat-3.5"
MAP_METHODS = ("em", "mined", "ms")
#: fusion targets: "sft" = lambda 1 (no teacher), a map name = pivot + source remapped with that map,
#: "self" = lambda 0.9 with only the pivot's own store as target (self-distillation control)
VARIANTS = ("sft",) + MAP_METHODS + ("self",)
DEFAULT_VARIANTS = ("sft",) + MAP_METHODS
CORPORA = ("alpacaeval_parallel.jsonl", "code_math.jsonl")
#: remap group-kind codes (tokalign.remap.KIND_*) whose target comes from a source distribution
SOURCE_FED_KINDS = (1, 2, 4, 6)
KIND_LABELS = {1: "1:1", 2: "1:n", 3: "n:1 inside", 4: "n:1 end", 5: "n:m inside", 6: "n:m end", 7: "pivot only"}


@dataclass
class ModelSpec:
    """A small Llama: tied embeddings (the 32k-128k vocabularies dominate the parameters)."""

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    intermediate: int = 256


@dataclass
class TrainSpec:
    """Optimisation of one training run (batch = sequences per step)."""

    steps: int = 100
    batch: int = 8
    lr: float = 2e-3
    warmup: float = 0.1  # fraction of steps


@dataclass
class BenchConfig:
    """Everything that determines the results (hashed for the caches), plus run-time knobs."""

    name: str = "default"
    pivot: str = PIVOT
    source: str = "internlm2"
    seq_len: int = 128                 # pivot tokens per text (texts are cut at a pivot token boundary)
    n_pretrain: int = 3000             # texts in the pretraining split
    n_fusion: int = 320                # texts in the fusion split (dumped, remapped, trained on)
    n_eval: int = 200                  # held-out texts (prompts unseen by every model)
    split_salt: str = "fusion-quality-v1"
    # sizes: on 2 shared CPU cores the vocabulary x hidden output layer dominates the cost (internlm2's
    # 92k rows make the source ~3x slower per token than the pivot at the same width)
    pivot_model: ModelSpec = field(default_factory=lambda: ModelSpec(48, 2, 4, 192))
    source_model: ModelSpec = field(default_factory=lambda: ModelSpec(64, 2, 4, 256))
    pivot_train: TrainSpec = field(default_factory=lambda: TrainSpec(steps=60, batch=8, lr=3e-3))
    source_train: TrainSpec = field(default_factory=lambda: TrainSpec(steps=150, batch=8, lr=3e-3))
    pretrain_seed: int = 0
    fusion_train: TrainSpec = field(default_factory=lambda: TrainSpec(steps=40, batch=8, lr=1e-3, warmup=0.1))
    lambda_sft: float = 0.9
    #: sequence CE the MinCE choice compares for the source: "fusechat" = the source model's own CE on its own
    #: tokens (FuseChat's metric_ce, from the source store), "store" = the remapped store's seq_ce (tokalign
    #: remap: the source's own NLL of the response carried through the alignment, over the pivot's token count)
    minCE_metric: str = "fusechat"
    top_k: int = 10
    seeds: int = 3
    variants: Tuple[str, ...] = DEFAULT_VARIANTS
    # run-time only (not part of any cache key)
    device: str = "cpu"
    threads: int = 2

    def to_dict(self) -> Dict[str, Any]:
        return config_to_dict(self)


def config_presets() -> Dict[str, BenchConfig]:
    """The named configurations (``--config``); ``--quick`` is ``quick``."""
    quick = BenchConfig(
        name="quick", seq_len=96, n_pretrain=400, n_fusion=64, n_eval=48,
        pivot_model=ModelSpec(48, 1, 4, 128), source_model=ModelSpec(64, 2, 4, 256),
        pivot_train=TrainSpec(steps=12, batch=8, lr=3e-3), source_train=TrainSpec(steps=24, batch=8, lr=3e-3),
        fusion_train=TrainSpec(steps=8, batch=8, lr=1e-3), seeds=3)
    default = BenchConfig()
    gpu = BenchConfig(
        name="gpu", seq_len=256, n_pretrain=7000, n_fusion=2000, n_eval=600,
        pivot_model=ModelSpec(256, 4, 8, 1024), source_model=ModelSpec(512, 6, 8, 2048),
        pivot_train=TrainSpec(steps=600, batch=32, lr=1e-3), source_train=TrainSpec(steps=3000, batch=32, lr=1e-3),
        fusion_train=TrainSpec(steps=250, batch=16, lr=3e-4), seeds=5, device="cuda", threads=8)
    return {"quick": quick, "default": default, "gpu": gpu}


def config_hash(obj: Any, length: int = 16) -> str:
    """Stable hex digest of a JSON-able object (dataclasses allowed): key order and float/int spelling of
    equal values do not matter, any changed value does."""

    def norm(x: Any) -> Any:
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            return norm(asdict(x))
        if isinstance(x, Mapping):
            return {str(k): norm(v) for k, v in sorted(x.items(), key=lambda kv: str(kv[0]))}
        if isinstance(x, (list, tuple)):
            return [norm(v) for v in x]
        if isinstance(x, float) and x.is_integer():
            return int(x)
        if isinstance(x, (np.integer,)):
            return int(x)
        if isinstance(x, (np.floating,)):
            return norm(float(x))
        if isinstance(x, Path):
            return str(x)
        return x

    text = json.dumps(norm(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(("v%d|" % CACHE_VERSION + text).encode()).hexdigest()[:length]


def results_stem(cfg: BenchConfig) -> str:
    """``fusion_quality`` for the default preset, ``fusion_quality-<name>`` otherwise (and ``-<source>`` when
    the source is not internlm2)."""
    stem = "fusion_quality" if cfg.name == "default" else "fusion_quality-%s" % cfg.name
    return stem if cfg.source == "internlm2" else "%s-%s" % (stem, cfg.source)


def json_default(x: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars and paths."""
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, Path):
        return str(x)
    raise TypeError(type(x).__name__)
