"""The library entry point of fusion training: :func:`run` trains the pivot model on SFT + MinCE fusion
against sparse teacher stores and returns a summary; ``fusion-train fuse`` parses flags into a
:class:`~fusion_train.fuse.config.FusionConfig` and calls it.

Importing this module imports no torch (the package face re-exports :func:`run`).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Union

from tokalign.errors import TokalignError

if TYPE_CHECKING:
    from .config import FusionConfig

__all__ = ["run", "open_reader", "resolve_resume", "summary_line", "MODEL_DTYPES"]

logger = logging.getLogger(__name__)

MODEL_DTYPES = ("float32", "bfloat16", "float16", "auto")
PIVOT_NAME = "pivot"


def open_reader(url: str):
    """Open a teacher store (``tokalign.store.open_store``); :func:`run` opens the stores given as URLs
    or paths with it (tests replace it with in-memory readers)."""
    from tokalign.store import open_store

    return open_store(url)


def resolve_resume(value: Optional[str], output_dir: Path) -> Optional[str]:
    """The checkpoint folder ``--resume-from-checkpoint`` names (``last``/``latest``/``true``/``auto``: the
    newest ``checkpoint-*`` in ``output_dir``); None for none."""
    if value is None or value == "":
        return None
    if str(value).lower() in ("last", "latest", "true", "auto"):
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
        if last is None:
            raise TokalignError("--resume-from-checkpoint %s: no checkpoint-* folder in %s" % (value, output_dir))
        return last
    if not Path(value).is_dir():
        raise TokalignError("--resume-from-checkpoint: %s is not a checkpoint directory" % value)
    return str(value)


def _model_fingerprint(model_dir: Optional[str]) -> Optional[str]:
    """Fingerprint of the model's tokenizer when the model directory holds tokenizer files."""
    path = Path(model_dir) if model_dir else None
    if path is None or not path.is_dir() or not any(
        (path / n).exists() for n in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
    ):
        return None
    from tokalign.tokenize import load_tokenizer

    return load_tokenizer(str(path)).fingerprint


def _load_processing_class(model_dir: Optional[str], trust_remote_code: bool):
    if not model_dir:
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    except Exception:  # noqa: BLE001 - a model directory without a tokenizer is fine for training
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _teacher_names(stores: Sequence[Any], names: Optional[Sequence[str]]) -> List[str]:
    if names is None:
        names = []
        for i, s in enumerate(stores):
            url = str(s) if isinstance(s, (str, os.PathLike)) else getattr(s, "url", None)
            names.append((Path(url.rstrip("/")).name or url) if url else "teacher%d" % i)
    names = list(names)
    if len(names) != len(stores):
        raise TokalignError("%d --teacher-name for %d --teacher-store" % (len(names), len(stores)))
    if PIVOT_NAME in names or len(set(names)) != len(names):
        raise TokalignError("teacher names must be unique and not 'pivot': %s" % ", ".join(names))
    return names


def _open(store: Any):
    return open_reader(str(store)) if isinstance(store, (str, os.PathLike)) else store


def run(
    config: "FusionConfig",
    model: Union[str, "os.PathLike[str]", Any],
    pivot_store: Any,
    teacher_stores: Sequence[Any] = (),
    *,
    teacher_names: Optional[Sequence[str]] = None,
    model_dtype: str = "float32",
    overwrite_output_dir: bool = False,
    processing_class: Any = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> Dict[str, Any]:
    """Train the pivot model on ``lambda_sft * SFT + (1 - lambda_sft) * fusion`` (docs/fuse.md).

    Args:
        config: the training and fusion options; ``config.output_dir`` is required and must be empty
            unless ``overwrite_output_dir`` or ``config.resume_from_checkpoint`` (a checkpoint folder or
            ``last``; resolved here and written back) is given.
        model: the pivot model: a directory (``AutoModelForCausalLM``, loaded in ``model_dtype``) or a
            loaded model (its ``name_or_path`` directory, if any, supplies the tokenizer checks).
        pivot_store, teacher_stores: store URLs / paths (opened with :func:`open_reader`) or opened readers
            (:class:`fusion_train.fuse.data.StoreReader`); the teachers are remapped to the pivot vocabulary.
        teacher_names: the teachers' names in logs (default: each store's file name).
        processing_class: saved with the model (default: the model directory's tokenizer, if any).
        trust_remote_code: run the model repository's own code (config/model/tokenizer); off by default, and a
            model that needs it is refused with one line instead of a prompt.
        allow_pickle: load a model folder with only pickled weights (``pytorch_model.bin``); safetensors only
            by default (:func:`tokalign.models.load_causal_lm`).

    Returns the summary also written to ``output_dir/fuse_summary.json`` (by the main process):
    output_dir, global_step, train_loss, samples, skipped_samples, teachers, last_log, resumed_from.
    Raises :class:`TokalignError` on bad input, before the weights are loaded where it can.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig

    from tokalign.models import load_causal_lm, refuse_remote_code

    from .data import FusionDataset
    from .trainer import FusionTrainer

    if not config.output_dir:
        raise TokalignError("--output-dir is required")
    if model_dtype not in MODEL_DTYPES:
        raise TokalignError("model_dtype must be one of %s, got %r" % (", ".join(MODEL_DTYPES), model_dtype))
    output_dir = Path(config.output_dir)
    resume = resolve_resume(config.resume_from_checkpoint, output_dir)
    config.resume_from_checkpoint = resume
    if output_dir.is_dir() and any(output_dir.iterdir()) and not (overwrite_output_dir or resume):
        raise TokalignError(
            "output directory %s is not empty: pass --overwrite-output-dir, "
            "or --resume-from-checkpoint last to continue a run" % output_dir
        )

    teacher_stores = list(teacher_stores)
    names = _teacher_names(teacher_stores, teacher_names)
    model_dir = str(model) if isinstance(model, (str, os.PathLike)) else None
    gguf_fingerprint = None
    if model_dir is not None:
        from tokalign.models.cache import converted_dir, lookup_model_alias
        from tokalign.models.gguf import is_gguf

        if not Path(model_dir).exists() and lookup_model_alias(model_dir) is not None:
            model_dir = str(converted_dir(model_dir))  # smollm2-135m-instruct / gemma3-270m: an HF folder, cached
        elif is_gguf(model_dir):  # de-quantised here (a GGUF file has no config.json for the checks below)
            from tokalign.tokenize.gguf import load_gguf_tokenizer

            gguf_tokenizer = load_gguf_tokenizer(Path(model_dir), name=model_dir)
            gguf_fingerprint = gguf_tokenizer.fingerprint
            if processing_class is None:
                processing_class = gguf_tokenizer.hf
            model, _ = load_causal_lm(model_dir, dtype=model_dtype, device="cpu")
            model_dir = None
    if model_dir is not None and not Path(model_dir).exists():
        raise TokalignError("--model %s: no such model directory" % model_dir)
    # a loaded model: its own directory, when it has one, stands for the model directory
    tokenizer_dir = model_dir or getattr(model, "name_or_path", None) or None

    pivot = _open(pivot_store)
    sources = [_open(s) for s in teacher_stores]

    # cheap checks (stores, vocabulary) before the weights are loaded
    if model_dir is not None:
        if not trust_remote_code:
            refuse_remote_code(Path(model_dir), model_dir)  # one line instead of transformers' [y/N] prompt
        try:
            model_config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise TokalignError("cannot load --model %s: %s" % (model_dir, _first_line(exc))) from exc
    else:
        model_config = model.config
    vocab_size = getattr(model_config.get_text_config(), "vocab_size", None)
    dataset = FusionDataset(
        pivot,
        sources,
        names=[PIVOT_NAME, *names],
        on_missing=config.on_missing,
        expected_fingerprint=gguf_fingerprint or _model_fingerprint(tokenizer_dir),
        vocab_size=vocab_size,
        max_length=config.max_length,
    )

    if model_dir is not None:
        # on the CPU: the Trainer places it (one device, DDP, DeepSpeed ...)
        model, _ = load_causal_lm(model_dir, dtype=model_dtype, device="cpu", trust_remote_code=trust_remote_code,
                                  allow_pickle=allow_pickle)
    trainer = FusionTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=(processing_class if processing_class is not None
                          else _load_processing_class(tokenizer_dir, trust_remote_code)),
    )
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(output_dir))
    trainer.save_state()

    last_train_log = next((h for h in reversed(trainer.state.log_history) if "sft_loss" in h), {})
    summary = {
        "output_dir": str(output_dir),
        "global_step": trainer.state.global_step,
        "train_loss": result.training_loss,
        "samples": len(dataset),
        "skipped_samples": dataset.skipped,
        "teachers": [PIVOT_NAME, *names],
        "last_log": last_train_log,
        "resumed_from": resume,
    }
    if trainer.is_world_process_zero():
        tmp = output_dir / "fuse_summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        os.replace(tmp, output_dir / "fuse_summary.json")
    return summary


def summary_line(summary: Dict[str, Any]) -> str:
    """One line for people: samples, steps, train loss, the MinCE choice rates and the output folder."""
    log = summary.get("last_log") or {}
    rates = ", ".join("%s %.0f%%" % (k.split("/", 1)[1], 100 * v) for k, v in log.items() if k.startswith("choice_rate/"))
    return "fused %d samples (%d skipped), %d steps, train loss %.4f%s -> %s" % (
        summary["samples"], summary["skipped_samples"], summary["global_step"], summary["train_loss"],
        (", MinCE choice " + rates) if rates else "", summary["output_dir"])
