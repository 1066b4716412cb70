"""GGUF files (llama.cpp's single-file checkpoints): checking them, loading them de-quantised, converting them.

transformers reads a GGUF file with ``from_pretrained(folder, gguf_file=name)`` (needs the ``gguf`` package, the
``[gguf]`` extra) and de-quantises every tensor to float. Its own errors on a bad file are a numpy reshape error
deep in a loop (truncated file) or a bare ``ValueError`` (unknown architecture), and its reader parses every
tokenizer string of the file (5-20 s), so :func:`inspect_gguf` reads the header itself first (magic, metadata
keys, tensor table; well under a second) and refuses a bad file with one line naming it.

A model loaded this way carries a GGUF "quantizer" that makes ``save_pretrained`` refuse ("quantized with gguf
and is not serializable") and the Trainer treat it as quantised; its weights are plain floats, so
:func:`drop_gguf_quantizer` removes it, and :func:`convert_gguf` writes an ordinary HF folder from it.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from ..errors import TokalignError

PathLike = Union[str, "os.PathLike[str]"]
MAGIC = b"GGUF"

# GGUF metadata value types -> struct format of one scalar (8: string, 9: array are read separately)
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# keys whose values are kept (the rest are skipped without building Python objects: 262k token strings)
_KEPT = ("general.architecture", "general.name", "general.alignment", "tokenizer.ggml.model", "tokenizer.chat_template")


@dataclass
class GGUFInfo:
    """What the header of a GGUF file says."""

    path: Path
    version: int
    architecture: Optional[str]
    name: Optional[str]
    tokenizer_model: Optional[str]  # tokenizer.ggml.model ("gpt2", "llama", ...); None: no embedded tokenizer
    has_chat_template: bool
    n_tensors: int
    data_end: int  # the byte where the last tensor's data ends (the file must be at least this long)
    keys: List[str] = field(default_factory=list)


def is_gguf(path: PathLike) -> bool:
    """True for an existing file named ``*.gguf`` or starting with the GGUF magic."""
    p = Path(os.fspath(path)).expanduser()
    if not p.is_file():
        return False
    if p.suffix.lower() == ".gguf":
        return True
    try:
        with open(p, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


class _Header:
    """Sequential little-endian reads from a GGUF header; running off the end is a truncated file."""

    def __init__(self, f, size: int):
        self.f, self.size = f, size

    def read(self, n: int) -> bytes:
        b = self.f.read(n)
        if len(b) != n:
            raise EOFError
        return b

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> bytes:
        n = self.unpack("<Q")
        if n > self.size:
            raise EOFError
        return self.read(n)

    def skip(self, n: int) -> None:
        if self.f.tell() + n > self.size:
            raise EOFError
        self.f.seek(n, os.SEEK_CUR)

    def value(self, vtype: int, keep: bool) -> Any:
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])
        if vtype == _STRING:
            s = self.string()
            return s.decode("utf-8", "replace") if keep else None
        if vtype == _ARRAY:
            etype, count = self.unpack("<I"), self.unpack("<Q")
            if etype in _SCALAR:
                self.skip(count * struct.calcsize(_SCALAR[etype]))
            else:
                for _ in range(count):
                    self.value(etype, False)
            return None
        raise ValueError("unknown metadata value type %d" % vtype)


def _tensor_bytes(dims: List[int], ggml_type: int) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    n = 1
    for d in dims:
        n *= int(d)
    return n // block * type_size


def inspect_gguf(path: PathLike) -> GGUFInfo:
    """Read and check a GGUF file's header and tensor table (not the tensor data).

    Raises :class:`TokalignError` (one line, naming the file) for a missing file, a file that is not GGUF, and
    a truncated one (header cut off, or tensor data ending past the end of the file)."""
    p = Path(os.fspath(path)).expanduser()
    if not p.is_file():
        raise TokalignError("%s: no such GGUF file" % p)
    size = p.stat().st_size
    try:
        with open(p, "rb") as f:
            h = _Header(f, size)
            if h.read(4) != MAGIC:
                raise TokalignError("%s: not a GGUF file (no GGUF magic at its start)" % p)
            version = h.unpack("<I")
            if version < 2:
                raise TokalignError("%s: GGUF version %d is too old (transformers reads version 2 and later; "
                                    "convert it again with a current llama.cpp)" % (p, version))
            n_tensors, n_kv = h.unpack("<Q"), h.unpack("<Q")
            kept: Dict[str, Any] = {}
            keys: List[str] = []
            for _ in range(n_kv):
                key = h.string().decode("utf-8", "replace")
                keys.append(key)
                kept_key = key in _KEPT
                v = h.value(h.unpack("<I"), kept_key)
                if kept_key:
                    kept[key] = v
            tensors: List[Tuple[List[int], int, int]] = []
            for _ in range(n_tensors):
                h.string()
                dims = [h.unpack("<Q") for _ in range(h.unpack("<I"))]
                tensors.append((dims, h.unpack("<I"), h.unpack("<Q")))
            align = int(kept.get("general.alignment") or 32)
            start = f.tell()
            data_start = start + (-start) % align
    except EOFError:
        raise TokalignError("%s: truncated GGUF file (%d bytes; its header is cut off): download or copy it again"
                            % (p, size)) from None
    except (ValueError, struct.error) as exc:
        raise TokalignError("%s: corrupt GGUF header (%s)" % (p, exc)) from None
    try:
        data_end = max((data_start + off + _tensor_bytes(dims, t) for dims, t, off in tensors), default=data_start)
    except (KeyError, ValueError) as exc:
        raise TokalignError("%s: a tensor has a type this gguf package does not know (%s)" % (p, exc)) from None
    if data_end > size:
        raise TokalignError("%s: truncated GGUF file (%d bytes, its tensors need %d): download or copy it again"
                            % (p, size, data_end))
    return GGUFInfo(path=p, version=version, architecture=kept.get("general.architecture"),
                    name=kept.get("general.name"), tokenizer_model=kept.get("tokenizer.ggml.model"),
                    has_chat_template=bool(kept.get("tokenizer.chat_template")), n_tensors=n_tensors,
                    data_end=data_end, keys=keys)


def _require_gguf_package(what: str) -> None:
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise TokalignError("%s needs the 'gguf' package: pip install 'tokalign[gguf]' (gguf, accelerate)"
                            % what) from None


def check_loadable(path: PathLike, *, need_tokenizer: bool = False, need_model: bool = False) -> GGUFInfo:
    """:func:`inspect_gguf` plus: transformers can build this architecture / there is a tokenizer in it."""
    _require_gguf_package(str(path))
    info = inspect_gguf(path)
    if need_tokenizer and not info.tokenizer_model:
        raise TokalignError("%s: this GGUF file has no embedded tokenizer (no tokenizer.ggml.* metadata): pass the "
                            "model's tokenizer separately (--tokenizer / --pivot DIR)" % info.path)
    if need_model:
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

        arch = info.architecture
        supported = [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer")]
        if arch is None or arch not in supported:
            import transformers

            raise TokalignError("%s: architecture %r cannot be loaded from GGUF by transformers %s (it reads %s); "
                                "use the model's original safetensors checkpoint instead"
                                % (info.path, arch, transformers.__version__, ", ".join(supported)))
    return info


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_gguf_hf_tokenizer(path: PathLike):
    """The transformers tokenizer embedded in a GGUF file (chat template from its metadata, where present)."""
    info = check_loadable(path, need_tokenizer=True)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(info.path.parent), gguf_file=info.path.name,
                                             trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds; keep one line
        raise TokalignError("%s: transformers cannot read its tokenizer (%s, tokenizer.ggml.model %r): %s"
                            % (info.path, info.architecture, info.tokenizer_model, _first_line(exc))) from None


def drop_gguf_quantizer(model) -> None:
    """Make a model loaded from GGUF an ordinary float model (its tensors are de-quantised already): without this
    ``save_pretrained`` refuses and the Trainer treats it as a quantised model."""
    model.hf_quantizer = None
    for obj in (model, getattr(model, "config", None)):
        if obj is not None and hasattr(obj, "quantization_config"):
            try:
                delattr(obj, "quantization_config")
            except AttributeError:
                pass
    for attr, value in (("is_quantized", False), ("quantization_method", None)):
        try:
            setattr(model, attr, value)
        except (AttributeError, TypeError):
            pass  # a read-only property derived from hf_quantizer


def load_gguf_model(path: PathLike, torch_dtype: Any):
    """A causal LM from a GGUF file, de-quantised to ``torch_dtype`` (a torch dtype or "auto"), quantizer dropped."""
    info = check_loadable(path, need_model=True)
    import transformers
    from transformers import AutoModelForCausalLM

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    dtype_kw = {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": torch_dtype}
    try:
        # use_safetensors does not apply: with gguf_file the weights are the GGUF file's tensors (never a pickle)
        model = AutoModelForCausalLM.from_pretrained(str(info.path.parent), gguf_file=info.path.name,
                                                     use_safetensors=None, trust_remote_code=False, **dtype_kw)
    except Exception as exc:  # noqa: BLE001
        raise TokalignError("%s: transformers cannot load this GGUF model (architecture %r): %s"
                            % (info.path, info.architecture, _first_line(exc))) from None
    drop_gguf_quantizer(model)
    return model


def convert_gguf(path: PathLike, out: PathLike, *, dtype: str = "fp32", overwrite: bool = False) -> Dict[str, Any]:
    """Write a GGUF model as an ordinary HF folder (config.json, model.safetensors, tokenizer files with the chat
    template, generation_config.json) that ``from_pretrained``, ``fusion-train merge`` and mergekit read.

    ``dtype`` is what the de-quantised weights are stored as (fp32 keeps them exactly). Written through a
    temporary folder, so an interrupted conversion leaves nothing half-written."""
    from ..artifacts import atomic_dir
    from .loading import torch_dtype

    info = check_loadable(path, need_tokenizer=True, need_model=True)
    tokenizer = load_gguf_hf_tokenizer(info.path)
    model = load_gguf_model(info.path, torch_dtype(dtype))
    if tokenizer.pad_token_id is not None and getattr(model.generation_config, "pad_token_id", None) is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    with atomic_dir(os.fspath(out), overwrite=overwrite) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        files = sorted(p.name for p in Path(tmp).iterdir())
    return {"gguf": str(info.path), "out": os.fspath(out), "architecture": info.architecture,
            "model_type": model.config.model_type, "parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": int(model.config.vocab_size), "chat_template": bool(tokenizer.chat_template),
            "files": files}
