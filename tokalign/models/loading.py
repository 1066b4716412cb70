"""Loading models safely, for every command that runs one (dump-logits, fusion-train's trainers, scorers).

transformers' defaults are not safe for a tool: without ``trust_remote_code`` it *prompts* on a terminal for a
repository with ``auto_map`` (answering "y" runs the repository's Python), and without ``use_safetensors`` it
falls back to ``pytorch_model.bin`` (a pickle). Here remote code runs only with ``trust_remote_code=True`` and
pickled weights load only with ``allow_pickle=True``; the model source is a path, an alias or a hub id."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from ..errors import TokalignError

#: ``--dtype`` names -> torch dtype attribute names ("auto": the checkpoint's own dtype)
MODEL_DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
                "fp32": "float32", "float32": "float32", "auto": "auto"}


def torch_device(spec: str = "auto", local_rank: Optional[int] = None):
    """The ``torch.device`` a model runs on: ``auto`` -> CUDA when present (device ``LOCAL_RANK`` under
    torchrun), else CPU. (:func:`tokalign.device.resolve_device` is another thing: which native backend runs.)"""
    import torch

    if spec not in ("auto", "cpu", "cuda") and not spec.startswith("cuda:"):
        raise TokalignError("device must be auto, cpu, cuda or cuda:N, not %r" % spec)
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TokalignError("device %s requested but CUDA is not available (torch %s)" % (spec, torch.__version__))
    if spec.startswith("cuda:"):
        return torch.device(spec)
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def torch_dtype(name: str):
    import torch

    if name not in MODEL_DTYPES:
        raise TokalignError("dtype must be one of %s, not %r" % (", ".join(sorted(MODEL_DTYPES)), name))
    resolved = MODEL_DTYPES[name]
    return "auto" if resolved == "auto" else getattr(torch, resolved)


def resolve_model_source(spec: Union[str, "os.PathLike[str]"]) -> Tuple[str, str]:
    """(what from_pretrained gets, the name recorded in the store): a path (absolute), a model alias' converted
    folder in the model cache (:mod:`tokalign.models.cache`: fetched and converted on first use), a tokenizer
    alias' hub id, a hub id."""
    s = os.fspath(spec)
    p = Path(s).expanduser()
    if p.exists():
        return str(p), str(p.resolve())
    from .cache import converted_dir, lookup_model_alias

    if lookup_model_alias(s) is not None:
        return str(converted_dir(s)), s
    from ..tokenize import lookup_alias

    alias = lookup_alias(s)
    if alias is not None and alias.hub_id:
        return alias.hub_id, s
    return s, s


def refuse_remote_code(path: Path, spec: Any) -> None:
    """A checkpoint whose architecture exists only as code in its repository (``auto_map``) is refused with a
    clear message; transformers' own error names neither the cause nor the flag."""
    import json

    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # transformers reports a missing/broken config itself
    if not isinstance(config, dict) or not config.get("auto_map"):
        return
    from transformers import CONFIG_MAPPING

    if config.get("model_type") not in CONFIG_MAPPING:
        raise TokalignError("model %s needs custom code from its repository (config.json auto_map, model_type %r); "
                            "refusing to run it (pass --trust-remote-code only if you trust that code)"
                            % (spec, config.get("model_type")))


def load_causal_lm(spec: Union[str, "os.PathLike[str]"], *, dtype: str = "bf16", device: Any = "auto",
                   trust_remote_code: bool = False, allow_pickle: bool = False):
    """Load a transformers causal LM from a directory, a GGUF file (de-quantised to ``dtype``), a model alias
    (``smollm2-135m-instruct``, ``gemma3-270m``: :mod:`tokalign.models.cache`), a hub id (local cache) or a
    tokenizer alias.

    Only ``*.safetensors`` weights are read (``use_safetensors=True``: no pickle) unless ``allow_pickle`` (then a
    folder with only ``pytorch_model.bin`` loads too); custom model code runs only with ``trust_remote_code=True``.
    Returns ``(model, name)`` with the model in eval mode on ``device``.
    """
    import torch  # noqa: F401  (clear ImportError before transformers)
    from transformers import AutoModelForCausalLM
    import transformers

    source, name = resolve_model_source(spec)
    path = Path(source)
    from .gguf import is_gguf

    if is_gguf(path):  # weights de-quantised from the file itself: no pickle, no repository code
        from .gguf import load_gguf_model

        model = load_gguf_model(path, torch_dtype(dtype))
        model.to(device if not isinstance(device, str) else torch_device(device))
        model.eval()
        return model, name
    has_safetensors = path.is_dir() and any(path.glob("*.safetensors"))
    if path.is_dir() and not has_safetensors and not allow_pickle:
        raise TokalignError("%s: no *.safetensors weights (tokalign loads safetensors only, never pickled "
                            "checkpoints: convert them first, or pass --allow-pickle if you trust the files)" % source)
    if path.exists() and not path.is_dir():
        raise TokalignError("%s: --model must be a model directory, GGUF file, hub id or alias, not another kind of "
                            "file" % source)
    if path.is_dir() and not trust_remote_code:
        refuse_remote_code(path, spec)
    dev = device if not isinstance(device, str) else torch_device(device)
    use_safetensors = bool(has_safetensors or not allow_pickle)
    major = int(transformers.__version__.split(".")[0])
    minor = int(transformers.__version__.split(".")[1])
    dtype_kw = {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": torch_dtype(dtype)}
    try:
        model = AutoModelForCausalLM.from_pretrained(source, use_safetensors=use_safetensors,
                                                     trust_remote_code=bool(trust_remote_code), **dtype_kw)
    except TokalignError:
        raise
    except Exception as exc:  # transformers raises ValueError/OSError/EnvironmentError/...; keep one line
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "trust_remote_code" in str(exc) and not trust_remote_code:
            raise TokalignError("model %s needs custom code from its repository; refusing to run it (pass "
                                "--trust-remote-code only if you trust that code)" % spec) from None
        raise TokalignError("cannot load model %s: %s" % (spec, msg)) from None
    model.to(dev)
    model.eval()
    return model, name


def model_output_size(model) -> int:
    """Size of the logit dimension (the output embedding's rows; padded embeddings included)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if weight is not None:
        return int(weight.shape[0])
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    if size is None:
        raise TokalignError("cannot tell the model's vocabulary size (no output embedding, no config.vocab_size)")
    return int(size)


def learned_position_limit(model) -> Optional[int]:
    """The number of positions a model with *learned* absolute position embeddings (GPT-2, OPT, ...) can take,
    or None for models whose positions are computed (RoPE, ALiBi), which run past their nominal length."""
    import torch

    config = getattr(model, "config", None)
    limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or limit <= 0:
        return None
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1].lower()
        if isinstance(module, torch.nn.Embedding) and ("position" in leaf or leaf == "wpe"):
            return limit
    return None
