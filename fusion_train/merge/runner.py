"""Run a merge: validate inputs, plan the output, stream tensors through a method, publish atomically.

Flow (one direction): open readers (headers only) -> check architectures, tensor names, shapes ->
plan output shards -> optional statistics pass (VaRM model/layer) -> for each output shard, for
each tensor: read it from every input (memory-mapped), fp32 on the device, NaN/Inf check, merge,
cast, append to the shard file -> index + side files -> rename the temp folder to ``out``.

Two tensor paths with the same results: :class:`ArrayPath` (CPU, methods with a native kernel,
kernels on; numpy arrays read in place from the memory maps, torch is never imported) and
:class:`TorchPath` (``--device cuda``, methods without a kernel, ``TOKALIGN_MERGE_NATIVE=0``).

The work happens in ``<out parent>/.<out name>.merge-tmp``; each finished shard is renamed from
``.part``. Re-running the same merge after an interruption resumes: finished shards are kept when
the plan fingerprint (config, options, input file sizes and mtimes) is unchanged.

Embedding / lm_head size policy (``vocab_policy``): tensors whose names contain ``embed`` or
``lm_head`` (or ``wte``/``embed_out``) may differ between models only in their first (vocabulary)
dimension. ``refuse`` (default) stops with an error; ``truncate`` uses the first ``V_base`` rows of
every model that has more rows (what FuseChat's code does) and still refuses models with fewer.
Any other shape difference is always an error.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from fusion_train.merge import native
from fusion_train.merge.config import MergeConfig
from fusion_train.merge.dtypes import DType, from_float32, parse_dtype, to_float32
from fusion_train.merge.io import CheckpointReader, ShardWriter, copy_side_files, plan_shards, write_index
from fusion_train.merge.registry import MergeMethod, TensorTask, layer_of
from tokalign.artifacts import refuse_output_over_inputs
from tokalign.errors import TokalignError

VOCAB_POLICIES = ("refuse", "truncate")
_VOCAB_TENSOR = re.compile(r"(embed|lm_head|(^|\.)wte\.|embed_out)")
PLAN_FILE = "merge-plan.json"
CONFIG_FILE = "fusion_merge.json"


@dataclass
class MergeOptions:
    """Execution options (none of them changes the math except ``seed`` for DARE)."""

    device: str = "cpu"
    threads: int = 0  # CPU threads of the kernels and torch; 0 = their default
    max_shard_bytes: int = 2_000_000_000
    overwrite: bool = False
    vocab_policy: str = "refuse"
    seed: int = 0
    progress: bool = True


@dataclass
class MergeSummary:
    """What a merge did; ``line()`` is the one-line CLI summary."""

    method: str
    out: str
    n_models: int
    n_tensors: int
    n_merged: int
    n_params: int
    n_shards: int
    bytes_written: int
    seconds: float
    device: str
    resumed_shards: int = 0
    truncated: List[str] = field(default_factory=list)

    def line(self) -> str:
        extra = ", resumed %d shard(s)" % self.resumed_shards if self.resumed_shards else ""
        return ("merged %d models with %s: %d tensors (%d merged, %.1fM params) -> %s (%d shard(s), %.1f MB) "
                "in %.1fs on %s%s" % (self.n_models, self.method, self.n_tensors, self.n_merged, self.n_params / 1e6,
                                      self.out, self.n_shards, self.bytes_written / 1e6, self.seconds, self.device, extra))

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _arch(reader: CheckpointReader) -> Tuple[Any, Any]:
    cfg = reader.config or {}
    return (tuple(cfg.get("architectures") or ()), cfg.get("model_type"))


def _check_inputs(ref: CheckpointReader, ref_label: str, others: List[Tuple[str, CheckpointReader]],
                  policy: str) -> Dict[Tuple[int, str], int]:
    """Architecture, tensor-name and shape checks. Returns {(model index, name): rows to keep}
    for vocabulary tensors truncated under the ``truncate`` policy."""
    truncate: Dict[Tuple[int, str], int] = {}
    ref_arch = _arch(ref)
    for j, (label, reader) in enumerate(others):
        arch = _arch(reader)
        if ref.config is not None and reader.config is not None and arch != ref_arch:
            raise TokalignError("%s: architecture %s/%s differs from %s (%s/%s); only models of one architecture merge"
                                % (label, list(arch[0]), arch[1], ref_label, list(ref_arch[0]), ref_arch[1]))
        missing = [n for n in ref.infos if n not in reader.infos]
        if missing:
            raise TokalignError("%s: lacks tensor %r present in %s (%d missing)" % (label, missing[0], ref_label, len(missing)))
        extra = [n for n in reader.infos if n not in ref.infos]
        if extra:
            raise TokalignError("%s: has tensor %r absent from %s (%d extra)" % (label, extra[0], ref_label, len(extra)))
        for name, info in ref.infos.items():
            shape = reader.infos[name].shape
            if shape == info.shape:
                continue
            vocab_like = (_VOCAB_TENSOR.search(name) is not None and len(shape) == len(info.shape)
                          and len(shape) >= 1 and shape[1:] == info.shape[1:])
            if not vocab_like:
                raise TokalignError("%s: tensor %r has shape %s but %s has %s (models of different sizes cannot merge)"
                                    % (label, name, list(shape), ref_label, list(info.shape)))
            if policy == "refuse":
                raise TokalignError("%s: vocabulary tensor %r has %d rows but %s has %d; resize the vocabularies to match, "
                                    "or pass --vocab-policy truncate to keep the first %d rows"
                                    % (label, name, shape[0], ref_label, info.shape[0], info.shape[0]))
            if shape[0] < info.shape[0]:
                raise TokalignError("%s: vocabulary tensor %r has %d rows, fewer than %s's %d (cannot truncate up)"
                                    % (label, name, shape[0], ref_label, info.shape[0]))
            truncate[(j, name)] = info.shape[0]
    return truncate


def _nonfinite(label: str, name: str) -> TokalignError:
    return TokalignError("%s: tensor %r contains NaN or Inf values" % (label, name))


class ArrayPath:
    """CPU without torch: fp32 numpy arrays (F32 inputs are the memory maps themselves), merged by
    :meth:`MergeMethod.merge_array` (native kernels) into one reused output buffer (sized for the
    largest tensor: no fresh pages to fault in per tensor; each result is written out before the
    next merge)."""

    device = "cpu"

    def __init__(self, max_numel: int):
        self._out = np.empty(max_numel, dtype=np.float32)

    def out_buffer(self, shape: Tuple[int, ...]) -> np.ndarray:
        return self._out[:math.prod(shape)].reshape(shape)

    def load(self, reader: CheckpointReader, label: str, name: str, rows: Optional[int]) -> np.ndarray:
        a = reader.get_array(name)
        if rows is not None:
            a = a[:rows]
        a = np.ascontiguousarray(to_float32(a, reader.infos[name].dtype))
        # a NaN/Inf makes the sum non-finite: one fast reduction, the exact check only then
        if not np.isfinite(a.sum()) and not np.isfinite(a).all():
            raise _nonfinite(label, name)
        return a

    def merge(self, method: MergeMethod, task: TensorTask) -> np.ndarray:
        out = method.merge_array(task)
        if out is None:  # the kernels cannot take it (e.g. >= 2^32 elements): the torch code, same arrays
            import torch

            views = task.with_tensors(None if task.base is None else torch.from_numpy(task.base),
                                      [torch.from_numpy(m) for m in task.models])
            out = method.merge(views).numpy()
        return out

    def store(self, merged: np.ndarray, dtype: DType) -> np.ndarray:
        return from_float32(merged, dtype)

    def raw(self, reader: CheckpointReader, name: str) -> np.ndarray:
        return reader.get_array(name)


class TorchPath:
    """fp32 torch tensors on ``device``, merged by :meth:`MergeMethod.merge`."""

    def __init__(self, device: str, threads: int):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise TokalignError("--device %s: CUDA is not available in this torch build / machine" % device)
        if threads:
            torch.set_num_threads(threads)

    def load(self, reader: CheckpointReader, label: str, name: str, rows: Optional[int]) -> Any:
        t = reader.get(name)
        if rows is not None:
            t = t[:rows]
        t = t.to(device=self.device, dtype=self.torch.float32)
        if not bool(self.torch.isfinite(t.sum())) and not bool(self.torch.isfinite(t).all()):
            raise _nonfinite(label, name)
        return t

    def out_buffer(self, shape: Tuple[int, ...]) -> None:
        return None

    def merge(self, method: MergeMethod, task: TensorTask) -> Any:
        return method.merge(task)

    def store(self, merged: Any, dtype: DType) -> Any:
        return merged.to(dtype.torch)

    def raw(self, reader: CheckpointReader, name: str) -> Any:
        return reader.get(name)


def _fingerprint(cfg: MergeConfig, opts: MergeOptions, readers: List[CheckpointReader], plan_files: List[str]) -> str:
    files = []
    for r in readers:
        for f in sorted({i.file for i in r.infos.values()}):
            st = f.stat()
            files.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps({"config": cfg.to_dict(), "seed": opts.seed, "policy": opts.vocab_policy,
                       "shard_bytes": opts.max_shard_bytes, "files": files, "shards": plan_files}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise TokalignError("%s: exists and is not a folder" % out)
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise TokalignError("%s: output folder is not empty (pass --overwrite to replace it)" % out)
        # --overwrite replaces a previous merge output only, recognised by the file this command writes
        if not (out / CONFIG_FILE).is_file():
            raise TokalignError("%s: not empty and not a previous `fusion-train merge` output (no %s); --overwrite "
                                "only replaces a merge output: choose a new or empty folder" % (out, CONFIG_FILE))


def run_merge(cfg: MergeConfig, out: Path | str, opts: Optional[MergeOptions] = None) -> MergeSummary:
    """Merge the models of ``cfg`` into ``out`` (sharded safetensors + base's config/tokenizer)."""
    opts = opts or MergeOptions()
    if opts.vocab_policy not in VOCAB_POLICIES:
        raise TokalignError("--vocab-policy: must be one of %s, got %r" % (", ".join(VOCAB_POLICIES), opts.vocab_policy))
    # resolved: "." or "x/.." have no usable name for the temp folder beside them
    out = refuse_output_over_inputs(out, [("base_model", cfg.base)] +
                                    [("models[%d]" % j, m.path) for j, m in enumerate(cfg.models)])
    _prepare_out(out, opts.overwrite)
    t0 = time.perf_counter()
    method_cls = cfg.method_class()
    native.set_num_threads(opts.threads)
    use_arrays = opts.device == "cpu" and method_cls.has_native() and not method_cls.needs_statistics and native.enabled()
    method: MergeMethod = method_cls(cfg.shared_values("", 0.0))
    base_reader = CheckpointReader(cfg.base) if cfg.base is not None else None
    model_readers = [CheckpointReader(m.path) for m in cfg.models]
    ref = base_reader if base_reader is not None else model_readers[0]
    ref_label = "base_model %s" % cfg.base if base_reader is not None else "models[0] %s" % cfg.models[0].path
    truncate = _check_inputs(ref, ref_label, [("models[%d] %s" % (j, m.path), r) for j, (m, r) in
                                              enumerate(zip(cfg.models, model_readers))], opts.vocab_policy)
    out_dtype = parse_dtype(cfg.out_dtype, "dtype") if cfg.out_dtype else None

    def target_dtype(dt: DType) -> DType:
        return out_dtype if (out_dtype is not None and dt.is_floating_point) else dt

    entries = [(name, info.shape, target_dtype(info.dtype)) for name, info in ref.infos.items()]
    path = (ArrayPath(max([math.prod(i.shape) for i in ref.infos.values() if i.dtype.is_floating_point], default=0))
            if use_arrays else TorchPath(opts.device, opts.threads))
    shards = plan_shards(entries, opts.max_shard_bytes)
    n_layers = int((ref.config or {}).get("num_hidden_layers") or 0) or (
        max([layer_of(n) for n in ref.infos if layer_of(n) is not None], default=-1) + 1)

    # temp folder next to out; resume if the plan is unchanged
    tmp = out.parent / (".%s.merge-tmp" % out.name)
    all_readers = ([base_reader] if base_reader else []) + model_readers
    fp = _fingerprint(cfg, opts, all_readers, [s.file_name for s in shards])
    plan_path = tmp / PLAN_FILE
    resumed = 0
    if tmp.is_dir():
        try:
            same = json.loads(plan_path.read_text()).get("fingerprint") == fp
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(json.dumps({"fingerprint": fp, "config": cfg.to_dict()}, default=str))

    def depth(name: str) -> float:
        layer = layer_of(name)
        return layer / (n_layers - 1) if (layer is not None and n_layers > 1) else 0.0

    def make_task(name: str) -> TensorTask:
        t = depth(name)
        base_t = (path.load(base_reader, "base_model %s" % cfg.base, name, None)
                  if (base_reader is not None and method_cls.uses_base) else None)
        models = [path.load(r, "models[%d] %s" % (j, cfg.models[j].path), name, truncate.get((j, name)))
                  for j, r in enumerate(model_readers)]
        task = TensorTask(name=name, base=base_t, models=models,
                          model_params=[cfg.model_values(j, name, t) for j in range(len(models))],
                          params=cfg.shared_values(name, t), seed=opts.seed, layer=layer_of(name),
                          out=path.out_buffer(ref.infos[name].shape))
        return task

    from tqdm.auto import tqdm

    float_names = [n for n, info in ref.infos.items() if info.dtype.is_floating_point]
    if getattr(method, "needs_statistics", False):
        for name in tqdm(float_names, desc="merge: statistics", unit="tensor", disable=not opts.progress):
            method.observe(make_task(name))

    n_merged = n_params = written = 0
    bar = tqdm(total=len(entries), desc="merge: %s" % cfg.method, unit="tensor", disable=not opts.progress)
    try:
        for shard in shards:
            if (tmp / shard.file_name).is_file():
                resumed += 1
                bar.update(len(shard.entries))
                written += shard.nbytes
                n_params += sum(math.prod(s) for _, s, _ in shard.entries)
                n_merged += sum(1 for n, _, _ in shard.entries if ref.infos[n].dtype.is_floating_point)
                continue
            with ShardWriter(tmp, shard) as writer:
                for name, shape, dtype in shard.entries:
                    if ref.infos[name].dtype.is_floating_point:
                        merged = path.store(path.merge(method, make_task(name)), dtype)
                        n_merged += 1
                    else:  # integer buffers are not merged: copied from the reference
                        merged = path.raw(ref, name)
                    writer.add(name, merged)
                    n_params += math.prod(shape)
                    bar.update(1)
                    del merged
            written += shard.nbytes
    finally:
        bar.close()
        for r in all_readers:
            r.close()

    write_index(tmp, shards)
    copy_side_files(ref.path, tmp, out_dtype)
    seconds = time.perf_counter() - t0
    summary = MergeSummary(method=cfg.method, out=str(out), n_models=len(cfg.models), n_tensors=len(entries),
                           n_merged=n_merged, n_params=n_params, n_shards=len(shards), bytes_written=written,
                           seconds=round(seconds, 3), device=str(path.device), resumed_shards=resumed,
                           truncated=sorted({n for _, n in truncate}))
    (tmp / CONFIG_FILE).write_text(json.dumps({"config": cfg.to_dict(), "options": asdict(opts),
                                               "summary": summary.to_dict()}, indent=2, default=str) + "\n")
    plan_path.unlink()
    _publish(tmp, out)
    return summary


def _publish(tmp: Path, out: Path) -> None:
    """Replace ``out`` by ``tmp`` (the old folder, if any, is removed only after the rename)."""
    old = None
    if out.exists():
        old = out.parent / (".%s.merge-old" % out.name)
        if old.exists():
            shutil.rmtree(old)
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
