"""The run context of one benchmark run (:class:`Bench`): configuration, tokenizers, the stage cache and the
timing log."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict

from benchmarks._stages import StageCache

from .config import CORPORA, BenchConfig, config_hash, json_default


class Bench(StageCache):
    """One benchmark run: configuration, cache folder (:class:`~benchmarks._stages.StageCache`: ``stage``,
    ``cached``), tokenizers, timing log."""

    log_prefix = "fusion-quality"
    key_hash = staticmethod(config_hash)
    json_default = staticmethod(json_default)

    def __init__(self, cfg: BenchConfig, cache_dir: Path, log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self._init_cache(cache_dir, log)
        self.tok_dir = _shared_tokenizers()
        self.corpora = _shared_corpora()
        import tokalign

        self.pivot_tok = tokalign.load_tokenizer(str(self.tok_dir / cfg.pivot))
        self.source_tok = tokalign.load_tokenizer(str(self.tok_dir / cfg.source))

    # -- keys -------------------------------------------------------------------------------------
    def data_key(self) -> Dict[str, Any]:
        c = self.cfg
        return {"corpora": [_file_sig(self.corpora / n) for n in CORPORA], "pivot": self.pivot_tok.fingerprint,
                "seq_len": c.seq_len, "n": [c.n_pretrain, c.n_fusion, c.n_eval], "salt": c.split_salt}

    def model_key(self, role: str) -> Dict[str, Any]:
        c = self.cfg
        tok = self.pivot_tok if role == "pivot" else self.source_tok
        return {"data": self.data_key(), "role": role, "tokenizer": tok.fingerprint,
                "model": asdict(c.pivot_model if role == "pivot" else c.source_model),
                "train": asdict(c.pivot_train if role == "pivot" else c.source_train), "seed": c.pretrain_seed}

    def store_key(self, role: str) -> Dict[str, Any]:
        return {"model": self.model_key(role), "top_k": self.cfg.top_k, "split": "fusion"}


def _file_sig(path: Path) -> Dict[str, Any]:
    st = path.stat()
    return {"name": path.name, "bytes": st.st_size}


def _shared_tokenizers() -> Path:
    from tokalign.paths import shared_tokenizers

    return shared_tokenizers()


def _shared_corpora() -> Path:
    from tokalign.paths import shared_corpora

    return shared_corpora()
