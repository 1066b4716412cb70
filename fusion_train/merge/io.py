"""Streaming safetensors IO for merging: read one tensor at a time, write shards without buffering them.

Reading: :class:`CheckpointReader` parses the safetensors headers of a model folder
(``model.safetensors`` or ``model.safetensors.index.json`` + shards) and memory-maps one
tensor's bytes at a time (zero copy), so a tensor is only paged in when it is used: as a numpy
array (:meth:`CheckpointReader.get_array`, torch-free) or a torch tensor viewing it (``get``).
Dtypes are :class:`fusion_train.merge.dtypes.DType`; torch is imported only for torch tensors.

Writing: the output layout (which tensor goes to which shard, at which byte offset) is fully
determined by names, shapes and the output dtype, so :func:`plan_shards` fixes it before any math
runs and :class:`ShardWriter` writes each shard's header first and then streams tensor bytes in
order. Peak memory is therefore a few tensors, never a whole shard; each shard is written to
``<name>.part`` and renamed when complete, so a finished shard on disk is always whole.
"""
from __future__ import annotations

import json
import mmap
import os
import re
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from fusion_train.merge.dtypes import BY_CODE, DTYPE_NAMES, DType, as_dtype, parse_dtype  # noqa: F401 (re-exported)
from tokalign.errors import TokalignError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

# Files that carry weights in another format; never copied from the base.
_WEIGHT_FILE = re.compile(r"(\.safetensors|\.bin|\.pt|\.pth|\.ckpt|\.h5|\.msgpack|\.gguf)$|safetensors\.index\.json$|bin\.index\.json$")


def parse_size(text) -> int:
    """``"2GB"`` / ``"500MB"`` / ``"1.5GiB"`` / ``1000`` -> bytes."""
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(i?)[bB]?\s*", str(text))
    if not m:
        raise TokalignError("--max-shard-size: cannot parse %r (examples: 2GB, 500MB, 1000000)" % (text,))
    base = 1024 if m.group(3) else 1000
    power = " KMGT".index(m.group(2).upper() or " ")
    return int(float(m.group(1)) * base**power)


@dataclass
class TensorInfo:
    """Shape and dtype of one stored tensor, read from a safetensors header (no data)."""

    name: str
    shape: Tuple[int, ...]
    dtype: DType
    file: Path
    start: int = 0  # absolute byte offset of the data in ``file``
    nbytes: int = 0


class CheckpointReader:
    """Read-only view of a Hugging Face model folder stored as safetensors.

    ``reader.infos`` lists tensors in storage order (index order, then header order);
    ``reader.get(name)`` returns one tensor (memory-mapped read, materialised on demand).
    """

    def __init__(self, path: os.PathLike | str):
        self.path = Path(path)
        if not self.path.is_dir():
            raise TokalignError("%s: model folder not found" % self.path)
        files = self._shard_files()
        self._fds: Dict[Path, int] = {}
        self.infos: Dict[str, TensorInfo] = {}
        for file in files:
            for info in _read_header(file):
                if info.name in self.infos:
                    raise TokalignError("%s: tensor %r stored twice (also in %s)" % (file, info.name, self.infos[info.name].file))
                self.infos[info.name] = info
        if not self.infos:
            raise TokalignError("%s: no tensors found in the safetensors files" % self.path)
        self.config = self._read_config()

    def _shard_files(self) -> List[Path]:
        index = self.path / INDEX_NAME
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError, TypeError) as exc:
                raise TokalignError("%s: not a valid safetensors index (%s)" % (index, exc)) from None
            files = []
            for name in dict.fromkeys(weight_map.values()):
                f = self.path / name
                if not f.is_file():
                    raise TokalignError("%s: shard %s listed in the index is missing" % (index, name))
                files.append(f)
            return files
        single = self.path / SINGLE_NAME
        if single.is_file():
            return [single]
        found = sorted(self.path.glob("*.safetensors"))
        if found:
            return found
        if any(self.path.glob("*.bin")) or any(self.path.glob("*.pt")):
            raise TokalignError("%s: only pickle checkpoints (*.bin/*.pt) found; convert them to safetensors "
                                "(they are never unpickled here)" % self.path)
        raise TokalignError("%s: no *.safetensors files found" % self.path)

    def _read_config(self) -> Optional[dict]:
        cfg = self.path / "config.json"
        if not cfg.is_file():
            return None
        try:
            return json.loads(cfg.read_text())
        except ValueError as exc:
            raise TokalignError("%s: invalid JSON (%s)" % (cfg, exc)) from None

    @property
    def names(self) -> List[str]:
        return list(self.infos)

    def get_array(self, name: str) -> np.ndarray:
        """Tensor ``name`` as a numpy array in its stored layout (BF16: uint16 bits), zero-copy: a
        private (copy-on-write) memory map of just its bytes, unmapped when the array is freed; so
        reading costs page faults on first touch, no allocation or copy, and resident memory stays
        bounded by live arrays."""
        info = self.infos[name]
        dtype = info.dtype.storage
        if info.nbytes == 0:
            return np.empty(info.shape, dtype=dtype)
        fd = self._fds.get(info.file)
        if fd is None:
            fd = self._fds[info.file] = os.open(info.file, os.O_RDONLY)
        lead = info.start % mmap.ALLOCATIONGRANULARITY
        mm = mmap.mmap(fd, info.nbytes + lead, access=mmap.ACCESS_COPY, offset=info.start - lead)
        if info.start % info.dtype.itemsize:  # misaligned data (not written by safetensors): copy
            return np.frombuffer(bytearray(mm[lead:]), dtype=dtype).reshape(info.shape)
        return np.frombuffer(mm, dtype=dtype, count=info.nbytes // info.dtype.itemsize, offset=lead).reshape(info.shape)

    def get(self, name: str) -> Any:
        """Tensor ``name`` as a CPU torch tensor of its stored dtype (a zero-copy view of
        :meth:`get_array`; imports torch)."""
        import torch

        return torch.from_numpy(self.get_array(name)).view(self.infos[name].dtype.torch)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _read_header(file: Path) -> List[TensorInfo]:
    """Parse a safetensors header without touching tensor data."""
    try:
        with open(file, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > 100_000_000:
                raise ValueError("header length %d is implausible" % n)
            header = json.loads(fh.read(n))
    except (OSError, ValueError, struct.error) as exc:
        raise TokalignError("%s: not a readable safetensors file (%s)" % (file, exc)) from None
    infos = []
    items = [(k, v) for k, v in header.items() if k != "__metadata__"]
    items.sort(key=lambda kv: kv[1]["data_offsets"][0])
    size = file.stat().st_size
    for name, meta in items:
        dt = BY_CODE.get(meta.get("dtype"))
        if dt is None:
            raise TokalignError("%s: tensor %r has unsupported dtype %r" % (file, name, meta.get("dtype")))
        shape = tuple(int(s) for s in meta["shape"])
        begin, end = (int(x) for x in meta["data_offsets"])
        start = 8 + n + begin
        if end - begin != _nbytes(shape, dt) or start + (end - begin) > size:
            raise TokalignError("%s: tensor %r: data offsets do not match its shape/dtype or the file size" % (file, name))
        infos.append(TensorInfo(name, shape, dt, file, start, end - begin))
    return infos


# ----------------------------------------------------------------------------------------------
# writing


@dataclass
class ShardPlan:
    """One output shard: file name and the ordered (name, shape, dtype) entries it will hold."""

    file_name: str
    entries: List[Tuple[str, Tuple[int, ...], DType]] = field(default_factory=list)
    nbytes: int = 0


def _nbytes(shape: Sequence[int], dtype: DType) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n * dtype.itemsize


def plan_shards(entries: Iterable[Tuple[str, Tuple[int, ...], Any]], max_shard_bytes: int) -> List[ShardPlan]:
    """Split tensors (in write order) into shards of at most ``max_shard_bytes`` each (a single
    tensor larger than the limit gets a shard of its own), named like transformers does. Dtypes:
    anything :func:`fusion_train.merge.dtypes.as_dtype` takes (DType, torch dtype, ``"BF16"``)."""
    shards: List[ShardPlan] = []
    current = ShardPlan("")
    for name, shape, dtype in entries:
        dtype = as_dtype(dtype)
        size = _nbytes(shape, dtype)
        if current.entries and current.nbytes + size > max_shard_bytes:
            shards.append(current)
            current = ShardPlan("")
        current.entries.append((name, tuple(shape), dtype))
        current.nbytes += size
    if current.entries:
        shards.append(current)
    if len(shards) == 1:
        shards[0].file_name = SINGLE_NAME
    else:
        for i, shard in enumerate(shards):
            shard.file_name = "model-%05d-of-%05d.safetensors" % (i + 1, len(shards))
    return shards


def write_index(out_dir: Path, shards: Sequence[ShardPlan]) -> None:
    """Write ``model.safetensors.index.json`` (only for multi-shard outputs, as transformers does)."""
    if len(shards) <= 1:
        return
    weight_map = {name: shard.file_name for shard in shards for name, _, _ in shard.entries}
    index = {"metadata": {"total_size": sum(s.nbytes for s in shards)}, "weight_map": weight_map}
    tmp = out_dir / (INDEX_NAME + ".part")
    tmp.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out_dir / INDEX_NAME)


class ShardWriter:
    """Write one planned shard incrementally: header first, then each tensor's bytes in plan order.

    Use as a context manager; :meth:`add` must be called with the planned tensors in order.
    The file appears under its final name only after the last tensor (``.part`` before).
    """

    def __init__(self, out_dir: Path, plan: ShardPlan):
        self.plan = plan
        self.final = Path(out_dir) / plan.file_name
        self.part = Path(out_dir) / (plan.file_name + ".part")
        self._next = 0
        header: Dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, shape, dtype in plan.entries:
            size = _nbytes(shape, dtype)
            header[name] = {"dtype": dtype.code, "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
        blob += b" " * ((8 - len(blob) % 8) % 8)  # data starts 8-byte aligned, as safetensors writes it
        self._fh = open(self.part, "wb")
        self._fh.write(struct.pack("<Q", len(blob)))
        self._fh.write(blob)

    def add(self, name: str, tensor: Any) -> None:
        """Append the next planned tensor: a numpy array in the planned dtype's stored layout
        (:class:`fusion_train.merge.dtypes.DType`, BF16 as uint16 bits) or a torch tensor of that dtype."""
        exp_name, exp_shape, exp_dtype = self.plan.entries[self._next]
        if isinstance(tensor, np.ndarray):
            ok_dtype = tensor.dtype == exp_dtype.storage
            data = np.ascontiguousarray(tensor)
        else:  # a torch tensor: its bytes, viewed as uint8 (numpy has no bfloat16)
            import torch

            ok_dtype = tensor.dtype == exp_dtype.torch
            data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
        if name != exp_name or tuple(tensor.shape) != exp_shape or not ok_dtype:
            raise RuntimeError("shard writer: expected %s %s %s, got %s %s %s"
                               % (exp_name, exp_shape, exp_dtype, name, tuple(tensor.shape), tensor.dtype))
        if data.size:
            self._fh.write(memoryview(data.reshape(-1).view(np.uint8)))
        self._next += 1

    def close(self, complete: bool = True) -> None:
        self._fh.close()
        if complete:
            if self._next != len(self.plan.entries):
                raise RuntimeError("shard writer: %s closed after %d of %d tensors"
                                   % (self.final.name, self._next, len(self.plan.entries)))
            os.replace(self.part, self.final)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(complete=exc_type is None)


def copy_side_files(base_dir: Path, out_dir: Path, out_dtype: Optional[DType]) -> List[str]:
    """Copy config, tokenizer, generation config and other non-weight files from the base model.

    ``config.json``'s dtype field is rewritten to the output dtype (so loaders pick the right one).
    Returns the copied file names.
    """
    copied = []
    for src in sorted(Path(base_dir).iterdir()):
        if not src.is_file() or _WEIGHT_FILE.search(src.name) or src.name.startswith("."):
            continue
        dst = Path(out_dir) / src.name
        if src.name == "config.json" and out_dtype is not None:
            cfg = json.loads(src.read_text())
            name = as_dtype(out_dtype).name
            for key in ("torch_dtype", "dtype"):
                if key in cfg:
                    cfg[key] = name
            if "torch_dtype" not in cfg and "dtype" not in cfg:
                cfg["torch_dtype"] = name
            dst.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        else:
            shutil.copy2(src, dst)
        copied.append(src.name)
    return copied
