"""3. pipeline: the tokalign stages through their library entry points -- ``tokalign.dump.dump_logits`` for both
models, ``tokalign.stats.build_stats`` and ``tokalign.vocab`` (em / mined / ms), ``tokalign.remap.run_stores``
under each map, then ``fusion_train.fuse.run`` of every target (each seed), all cached by :class:`Bench`."""
from __future__ import annotations

import json
import shutil
import sys
from contextlib import redirect_stdout
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import numpy as np

from .config import MAP_METHODS, BenchConfig
from .context import Bench
from .models import torch_setup


def dump_store(bench: Bench, role: str, model_dir: Path, data_dir: Path) -> Path:
    """``tokalign.dump.dump_logits`` of one model over the fusion split (plain text, no special tokens, so
    both tokenizations spell exactly the same text and align exactly)."""
    cfg = bench.cfg
    tok = bench.pivot_tok if role == "pivot" else bench.source_tok

    def build(out: Path) -> None:
        torch_setup(cfg)
        from tokalign.dump import DumpOptions, dump_logits

        options = DumpOptions(top_k=cfg.top_k, template="plain", mask_instruction=False, max_length=8 * cfg.seq_len,
                              batch_tokens=16 * cfg.seq_len, dtype="fp32", store_dtype="bfloat16",
                              special_tokens="none", device=_dump_device(cfg), progress=False)
        summary = dump_logits(str(model_dir), tok, str(data_dir / "fusion.jsonl"), str(out / "store.zarr"), options)
        bench.log("  " + summary.line())
        if summary.truncated or summary.samples == 0:
            raise RuntimeError("dump of %s truncated %d samples / wrote %d" % (role, summary.truncated, summary.samples))

    return bench.cached("store-%s" % role, bench.store_key(role), build) / "store.zarr"


def _dump_device(cfg: BenchConfig) -> str:
    return "cpu" if cfg.device == "cpu" else cfg.device


def build_maps(bench: Bench, data_dir: Path) -> Dict[str, Path]:
    """build-stats over the pretrain + fusion texts (span alignment), then vocab-map em / mined / ms."""
    from tokalign import vocab
    from tokalign.stats import BuildOptions, build_stats, summary_line

    key = {"data": bench.data_key(), "pivot": bench.pivot_tok.fingerprint, "source": bench.source_tok.fingerprint}

    def build_stats_dir(out: Path) -> None:
        stats = build_stats(bench.pivot_tok, bench.source_tok,
                            [str(data_dir / "pretrain.jsonl"), str(data_dir / "fusion.jsonl")],
                            BuildOptions(), progress=False)
        stats.save(out / "stats")
        bench.log("  " + summary_line(stats))

    stats_dir = bench.cached("stats", key, build_stats_dir) / "stats"
    maps = {}
    for method in MAP_METHODS:
        def build_map(out: Path, method=method) -> None:
            # ms reads the statistics folder itself (refusing statistics of other tokenizers)
            extra = {"stats": stats_dir} if method == "ms" else {}
            vm = vocab.build(method, bench.pivot_tok, bench.source_tok, **extra)
            vm.save(out / "map")
            bench.log("  vocab-map %s: %d/%d source tokens mapped" % (method, int(vm.mapped().sum()), vm.source_vocab))

        maps[method] = bench.cached("map-%s" % method, dict(key, method=method), build_map) / "map"
    return maps


def remap_store(bench: Bench, method: str, map_dir: Path, pivot_store: Path, source_store: Path) -> Path:
    """``tokalign.remap.run_stores`` of the source store onto the pivot with one map; its report is kept
    next to the store (``remap_report.json``)."""
    from tokalign.remap.ce import CE_DEFINITION

    # the CE definition is part of the key: stores remapped under an older one carry other token_ce / seq_ce
    key = {"pivot": bench.store_key("pivot"), "source": bench.store_key("source"), "map": str(map_dir.parent.name),
           "top_k": bench.cfg.top_k, "ce_definition": CE_DEFINITION}

    def build(out: Path) -> None:
        from tokalign.remap import RemapOptions, run_stores

        options = RemapOptions(top_k=bench.cfg.top_k, pivot_tokenizer=bench.pivot_tok,
                               source_tokenizer=bench.source_tok, threads=bench.cfg.threads, progress=False)
        report = run_stores(str(pivot_store), str(source_store), str(map_dir), str(out / "store.zarr"), options)
        (out / "remap_report.json").write_text(json.dumps(report, indent=1) + "\n")

    return bench.cached("remapped-%s" % method, key, build) / "store.zarr"


class SeqCEOverride:
    """A store reader whose samples carry another ``seq_ce`` (by sample id); everything else delegates."""

    def __init__(self, reader: Any, seq_ce: Mapping[str, float]) -> None:
        self._reader = reader
        self._seq_ce = dict(seq_ce)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)

    def __len__(self) -> int:
        return len(self._reader)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        sample = dict(self._reader[index])
        sample["seq_ce"] = np.float32(self._seq_ce[str(sample["sample_id"])])
        return sample


def source_teacher(bench: Bench, remapped_store: Path, source_store: Optional[Path]) -> Any:
    """The remapped source store as a fusion teacher. With ``minCE_metric="fusechat"`` it is read with the source
    store's own seq_ce (the source model's CE on its own tokens, FuseChat's ``metric_ce``, through
    :class:`SeqCEOverride`); with ``"store"`` (or no source store) as written, the remapped store's seq_ce."""
    if bench.cfg.minCE_metric != "fusechat" or source_store is None:
        return str(remapped_store)
    from tokalign.store import open_store

    src = open_store(str(source_store))
    ce = dict(zip((str(i) for i in src.sample_ids), (float(x) for x in src.seq_ce)))
    return SeqCEOverride(open_store(str(remapped_store)), ce)


def fuse(bench: Bench, variant: str, seed: int, pivot_model: Path, pivot_store: Path,
         remapped: Mapping[str, Path], source_store: Optional[Path] = None) -> Path:
    """``fusion_train.fuse.run`` of one target: the pivot model trained on the fusion split with
    lambda * SFT + (1 - lambda) * MinCE(pivot store, remapped source store), or SFT only."""
    cfg = bench.cfg
    f = cfg.fusion_train
    key = {"pivot_model": bench.model_key("pivot"), "pivot_store": bench.store_key("pivot"),
           "source_store": bench.store_key("source") if variant in MAP_METHODS else None,
           "variant": variant, "seed": seed, "train": asdict(f),
           "lambda": 1.0 if variant == "sft" else cfg.lambda_sft, "top_k": cfg.top_k,
           "minCE_metric": cfg.minCE_metric if variant in MAP_METHODS else None}

    def build(out: Path) -> None:
        torch_setup(cfg)
        from fusion_train.fuse import FusionConfig, run

        target = out / "model"
        config = FusionConfig(
            output_dir=str(target), lambda_sft=1.0 if variant == "sft" else cfg.lambda_sft, fusion="minCE",
            max_steps=f.steps, per_device_train_batch_size=f.batch, learning_rate=f.lr,
            warmup_steps=float(max(1, int(round(f.warmup * f.steps)))), lr_scheduler_type="cosine",
            weight_decay=0.0, max_grad_norm=1.0, seed=seed, data_seed=seed, logging_steps=float(f.steps),
            save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
            use_cpu=cfg.device == "cpu")
        teachers, names = [], []
        if variant in MAP_METHODS:
            teachers, names = [source_teacher(bench, remapped[variant], source_store)], ["source"]
        # Trainer's printer callback writes its log dicts on stdout: keep them out of the report printed there
        with redirect_stdout(sys.stderr):
            run(config, str(pivot_model), str(pivot_store), teachers, teacher_names=names)
        shutil.copyfile(target / "fuse_summary.json", out / "fuse_summary.json")

    return bench.cached("target-%s-s%d" % (variant, seed), key, build)


def mapped_fraction(map_dir: Path) -> float:
    """Share of source vocabulary rows the map carries into the pivot vocabulary."""
    from tokalign import vocab

    return float(vocab.load(map_dir).mapped().mean())
