"""Configurations of the implicit-fusion benchmark: every field but the run-time knobs is part of a cache key."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Tuple

from benchmarks._stages import config_to_dict

TARGET_MODEL = "smollm2-135m-instruct"  # the target, and a source sampled with its own chat template
SOURCE_MODEL = "gemma3-270m"            # a base model: sampled with a few-shot prompt

#: arms in report order; "untouched" and "explicit" train nothing here
ARMS = ("untouched", "sft", "dpo", "ln_dpo", "wrpo_sft", "wrpo@0.1", "wrpo@high", "crlft", "explicit")
ARM_LABELS = {
    "untouched": "1. target untouched",
    "sft": "2. SFT-only (FuseChat-3.0 stage 1)",
    "dpo": "3a. FuseChat-3.0: SFT → DPO",
    "ln_dpo": "3b. FuseChat-3.0: SFT → LN-DPO",
    "wrpo_sft": "4·. WRPO's SFT stage (1/3 of prompts)",
    "wrpo@0.1": "4a. WRPO α 0→0.1",
    "wrpo@high": "4b. WRPO α 0→high",
    "crlft": "5. C-RLFT (class = source)",
    "explicit": "6. explicit fusion target (Gemma → SmolLM2)",
}


@dataclass
class TrainSpec:
    steps: int
    batch: int
    lr: float
    warmup: float = 0.1


@dataclass
class ImplicitConfig:
    name: str = "default"
    target: str = TARGET_MODEL
    source: str = SOURCE_MODEL
    # task
    salt: str = "implicit-quality-v1"
    task_seed: int = 0
    levels: Tuple[int, ...] = (1, 2)  # the untouched target: ~25 % greedy (probe: level 1 ~30 %, 2 ~15 %, 3 ~5 %)
    n_train: int = 72               # generated training problems (the recipes' SFT / preference prompts)
    n_heldout: int = 48             # generated held-out problems (unseen templates + unseen numbers)
    n_gsm8k_train: int = 8          # GSM8K items of ../shared/corpora (short questions first)
    n_gsm8k_heldout: int = 8
    # sampling (fusion-train sample): N per prompt per source
    n_samples: int = 4
    max_new_tokens: int = 40
    source_temperature: float = 0.8  # FuseChat-3.0's sampling temperature (Gemma, few-shot)
    target_temperature: float = 1.0  # the target as a source, hotter: more diverse, more correct/incorrect mixes
    n_target_samples: int = 4       # WRPO step 2: samples of the SFT'd target per preference prompt
    tiebreak: float = 0.1           # weight of the second score (format + brevity) added to correctness 0/1
    # training (top `train_layers` decoder layers + the final norm; 0 = every parameter)
    train_layers: int = 2
    sft: TrainSpec = field(default_factory=lambda: TrainSpec(steps=16, batch=8, lr=1e-4))
    pref: TrainSpec = field(default_factory=lambda: TrainSpec(steps=16, batch=4, lr=2e-5))
    beta_dpo: float = 0.1
    beta_ln_dpo: float = 10.0       # FuseChat-3.0's LN-DPO beta for Llama-architecture targets
    alpha_end: float = 0.1          # WRPO paper
    alpha_high: float = 0.5         # the larger alpha_end arm
    crlft_steps: int = 0            # 0: as many optimizer steps as SFT
    max_length: int = 192
    seeds: int = 3
    arms: Tuple[str, ...] = ARMS
    # held-out bits/byte on chat text: the explicit benchmark's held-out split (first n texts)
    n_chat: int = 32
    chat_seq_len: int = 160
    # arm 6: the best-map targets of this explicit real-model configuration (python -m benchmarks.fusion_quality)
    explicit_config: str = "real"
    dtype: str = "fp32"
    # run-time only (not part of any cache key)
    device: str = "cpu"
    threads: int = 2

    def to_dict(self) -> Dict[str, Any]:
        return config_to_dict(self)


def presets() -> Dict[str, ImplicitConfig]:
    """``default``: <= 90 min on 2 CPU cores (measured: 64.6 min with no stage cached, most of it beside other
    benchmarks; RESULTS.md); ``gpu``: full fine-tuning, more data, steps and seeds; ``reduced``: a smaller run
    that fitted a loaded shared machine (41 min there; RESULTS.md);
    ``quick``: smoke run (minutes; the numbers mean nothing)."""
    return {
        "default": ImplicitConfig(),
        "gpu": ImplicitConfig(name="gpu", n_train=2000, n_heldout=500, n_gsm8k_train=200, n_gsm8k_heldout=200,
                              n_samples=8, max_new_tokens=128, n_target_samples=8, train_layers=0,
                              sft=TrainSpec(steps=300, batch=32, lr=2e-5), pref=TrainSpec(steps=300, batch=32, lr=1e-6),
                              max_length=384, seeds=5, n_chat=400, explicit_config="real-gpu", device="cuda",
                              threads=8),
        "reduced": ImplicitConfig(name="reduced", n_train=30, n_heldout=24, n_gsm8k_train=2, n_gsm8k_heldout=2,
                                  n_samples=3, max_new_tokens=32, n_target_samples=3,
                                  sft=TrainSpec(steps=6, batch=4, lr=1e-4), pref=TrainSpec(steps=6, batch=4, lr=2e-5),
                                  n_chat=8, chat_seq_len=128, explicit_config="real-reduced"),
        "quick": ImplicitConfig(name="quick", levels=(1,), n_train=8, n_heldout=6, n_gsm8k_train=1,
                                n_gsm8k_heldout=1, n_samples=2, max_new_tokens=12, n_target_samples=2,
                                sft=TrainSpec(steps=1, batch=2, lr=1e-4), pref=TrainSpec(steps=1, batch=2, lr=1e-5),
                                max_length=160, seeds=1, n_chat=2, chat_seq_len=64),
    }


def json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, tuple):
        return list(obj)
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    return str(obj)


def config_hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=json_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
