"""The run context of one benchmark run (:class:`Bench`): configuration, tokenizers, the stage cache and the
timing log."""
from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict

from .config import CORPORA, BenchConfig, config_hash, json_default


class Bench:
    """One benchmark run: configuration, cache folder, tokenizers, timing log."""

    def __init__(self, cfg: BenchConfig, cache_dir: Path, log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.cache = Path(cache_dir)
        self.cache.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.timings: Dict[str, float] = {}
        self.tok_dir = _shared_tokenizers()
        self.corpora = _shared_corpora()
        import tokalign

        self.pivot_tok = tokalign.load_tokenizer(str(self.tok_dir / cfg.pivot))
        self.source_tok = tokalign.load_tokenizer(str(self.tok_dir / cfg.source))

    # -- caching ----------------------------------------------------------------------------------
    @contextmanager
    def stage(self, label: str):
        t0 = time.perf_counter()
        self.log("[fusion-quality] %s ..." % label)
        yield
        dt = time.perf_counter() - t0
        self.timings[label] = self.timings.get(label, 0.0) + dt
        self.log("[fusion-quality] %s done in %.1fs" % (label, dt))

    def cached(self, kind: str, key: Any, build: Callable[[Path], None]) -> Path:
        """``cache/<kind>-<hash(key)>``: built once into a temporary folder then renamed (atomic; an
        interrupted build leaves only a ``.tmp`` folder that the next run deletes)."""
        path = self.cache / ("%s-%s" % (kind, config_hash(key)))
        if (path / ".done").exists():
            return path
        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        if path.exists():
            shutil.rmtree(path)
        tmp.mkdir(parents=True)
        (tmp / "key.json").write_text(json.dumps(key, indent=1, sort_keys=True, default=json_default) + "\n")
        build(tmp)
        (tmp / ".done").write_text("ok\n")
        os.replace(tmp, path)
        return path

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
