"""Library entry points of the preference and conditioned trainers; ``fusion-train sft|dpo|wrpo|crlft`` parse
flags into a config and call them.

* :func:`run_sft` -- SFT on the conversational SFT set, assistant tokens only (first stage of both recipes);
* :func:`run_preference` -- DPO / length-normalised DPO on pairs, WRPO on triples;
* :func:`run_crlft` -- OpenChat's class-conditioned, class-weighted SFT.

Each loads the model safely (:func:`tokalign.dump.load_causal_lm`: safetensors only, remote code only when
asked), trains with a ``transformers.Trainer`` subclass, saves model + tokenizer, and writes a summary
(``<command>_summary.json``) with every count of truncated or adjusted data.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple, Union

from tokalign.errors import TokalignError

if TYPE_CHECKING:
    from .config import CRLFTConfig, PreferenceConfig, SFTConfig

__all__ = ["run_sft", "run_preference", "run_crlft", "summary_line", "load_tokenizer", "load_model"]


def _check_output(config, overwrite_output_dir: bool) -> Optional[str]:
    from fusion_train.fuse.run import resolve_resume

    if not config.output_dir:
        raise TokalignError("--output-dir is required")
    output_dir = Path(config.output_dir)
    resume = resolve_resume(config.resume_from_checkpoint, output_dir)
    config.resume_from_checkpoint = resume
    if output_dir.is_dir() and any(output_dir.iterdir()) and not (overwrite_output_dir or resume):
        raise TokalignError("output directory %s is not empty: pass --overwrite-output-dir, "
                            "or --resume-from-checkpoint last to continue a run" % output_dir)
    return resume


def load_tokenizer(model: Any, tokenizer: Any = None, *, trust_remote_code: bool = False):
    """The tokenizer of ``model`` (a directory; a loaded model needs ``tokenizer``), loaded before the weights so
    that bad data fails in seconds."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if tokenizer is not None:
        return tokenizer
    if not isinstance(model, (str, os.PathLike)):
        raise TokalignError("a loaded model needs its tokenizer (tokenizer=...)")
    if not Path(model).is_dir():
        raise TokalignError("--model %s: no such model directory" % model)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise TokalignError("--model %s: no usable tokenizer (%s)" % (model, str(exc).splitlines()[0])) from None


def load_model(model: Any, *, model_dtype: str = "float32", trust_remote_code: bool = False,
               allow_pickle: bool = False):
    """A directory loaded with :func:`tokalign.models.load_causal_lm` (safetensors only unless ``allow_pickle``);
    a loaded model as is."""
    if isinstance(model, (str, os.PathLike)):
        from tokalign.models import load_causal_lm

        model, _ = load_causal_lm(str(model), dtype=model_dtype, device="cpu", trust_remote_code=trust_remote_code,
                                  allow_pickle=allow_pickle)
    return model


def _pad_id(model, tokenizer) -> int:
    for v in (tokenizer.pad_token_id, getattr(model.config, "pad_token_id", None), tokenizer.eos_token_id):
        if isinstance(v, int) and v >= 0:
            return v
    return 0  # padding is masked everywhere: any id does


def _finish(trainer, resume, output_dir: Path, name: str, extra: Dict[str, Any]) -> Dict[str, Any]:
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(output_dir))
    trainer.save_state()
    last = next((h for h in reversed(trainer.state.log_history) if "loss" in h), {})
    summary = {"command": name, "output_dir": str(output_dir), "global_step": trainer.state.global_step,
               "train_loss": result.training_loss, **extra, "last_log": last, "resumed_from": resume}
    if trainer.is_world_process_zero():
        tmp = output_dir / ("%s_summary.json.tmp" % name)
        tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
        os.replace(tmp, output_dir / ("%s_summary.json" % name))
    return summary


def run_preference(config: "PreferenceConfig", model: Any, data, *, tokenizer: Any = None, ref_model: Any = None,
                   ref_logps: Optional[str] = None, model_dtype: str = "float32", trust_remote_code: bool = False,
                   overwrite_output_dir: bool = False, allow_pickle: bool = False) -> Dict[str, Any]:
    """Train ``model`` on preference pairs (``loss`` dpo / ln_dpo) or WRPO triples (``loss`` wrpo) from ``data``
    (JSON Lines). ``reference="precomputed"`` reads / writes ``ref_logps`` (default ``<data>.ref-logps.json``);
    ``"live"`` keeps ``ref_model`` (default: a frozen copy of the starting model)."""
    from .data import ChatEncoder, PreferenceDataset, read_rows
    from .reference import default_path, load_or_compute
    from .trainer import PreferenceTrainer

    resume = _check_output(config, overwrite_output_dir)
    rows = read_rows(data, "wrpo" if config.loss == "wrpo" else "pairs")
    tokenizer = load_tokenizer(model, tokenizer, trust_remote_code=trust_remote_code)
    dataset = PreferenceDataset(rows, ChatEncoder(tokenizer), max_length=config.max_length,
                                max_prompt_length=config.max_prompt_length)
    if config.reference == "precomputed":  # a stale reference file is refused before the weights load
        from .reference import check_file

        check_file(ref_logps or default_path(data), dataset)
    model = load_model(model, model_dtype=model_dtype, trust_remote_code=trust_remote_code,
                       allow_pickle=allow_pickle)
    pad_id = _pad_id(model, tokenizer)
    reference: Dict[str, Any] = {"kind": config.reference}
    if config.reference == "precomputed":
        path = ref_logps or default_path(data)
        device = config.device  # initialises torch.distributed under torchrun
        model.to(device)
        reference.update(load_or_compute(model, dataset, path, batch_size=config.per_device_eval_batch_size,
                                         device=device, pad_token_id=pad_id, process_index=config.process_index,
                                         num_processes=config.world_size,
                                         fused_output_loss=config.fused_output_loss,
                                         fused_output_chunk_mb=config.fused_output_chunk_mb))
    from .data import PreferenceCollator

    trainer = PreferenceTrainer(model=model, args=config, train_dataset=dataset, ref_model=ref_model,
                                data_collator=PreferenceCollator(pad_id, config.pad_to_multiple_of),
                                processing_class=tokenizer)
    extra = {"loss": config.loss, "beta": config.beta, "data": str(data), "data_stats": dataset.stats,
             "reference": reference}
    if config.loss == "wrpo":
        extra.update(alpha_end=config.alpha, alpha_dynamic=config.alpha_dynamic)
    return _finish(trainer, resume, Path(config.output_dir), "wrpo" if config.loss == "wrpo" else "dpo", extra)


def _sft(config, get_model, rows, encoder, weights, *, tokenizer, resume, name, extra) -> Dict[str, Any]:
    from .data import SFTCollator, SFTDataset
    from .trainer import WeightedSFTTrainer

    dataset = SFTDataset(rows, encoder, max_length=config.max_length, weights=weights)
    model = get_model()  # after the data checks: bad data fails before the weights load
    trainer = WeightedSFTTrainer(model=model, args=config, train_dataset=dataset,
                                 data_collator=SFTCollator(_pad_id(model, tokenizer), config.pad_to_multiple_of),
                                 processing_class=tokenizer)
    return _finish(trainer, resume, Path(config.output_dir), name, {**extra, "data_stats": dataset.stats})


def run_sft(config: "SFTConfig", model: Any, data, *, tokenizer: Any = None, model_dtype: str = "float32",
            trust_remote_code: bool = False, overwrite_output_dir: bool = False,
            allow_pickle: bool = False) -> Dict[str, Any]:
    """SFT on the conversational SFT set (``data``), assistant tokens only, token mean over the whole
    accumulated batch."""
    from .data import ChatEncoder, read_rows

    resume = _check_output(config, overwrite_output_dir)
    rows = read_rows(data, "sft")
    tokenizer = load_tokenizer(model, tokenizer, trust_remote_code=trust_remote_code)
    encoder = ChatEncoder(tokenizer)
    return _sft(config, lambda: load_model(model, model_dtype=model_dtype, trust_remote_code=trust_remote_code,
                       allow_pickle=allow_pickle),
                rows, encoder, None, tokenizer=tokenizer, resume=resume, name="sft", extra={"data": str(data)})


def run_crlft(config: "CRLFTConfig", model: Any, data, *, tokenizer: Any = None, from_scored: bool = False,
              model_dtype: str = "float32", trust_remote_code: bool = False,
              overwrite_output_dir: bool = False, allow_pickle: bool = False) -> Dict[str, Any]:
    """C-RLFT on ``data``: an SFT set whose rows have a class (``class_key``, else ``model``), or with
    ``from_scored`` scored responses turned into records by :func:`~fusion_train.preference.crlft.records_from_scored`
    (class = source; weights from each source's mean score unless ``config.class_weights`` is given)."""
    from .crlft import (ConditionedTemplate, chat_template_jinja, check_weights, ensure_end_of_turn,
                        parse_class_weights, record_classes, records_from_scored)
    from .data import ChatEncoder, read_rows

    resume = _check_output(config, overwrite_output_dir)
    derived = None
    if from_scored:
        from fusion_train.implicit.jsonl import read_jsonl

        records, derived = records_from_scored(row for _, row in read_jsonl(data))
        rows = [("%s:record %d" % (data, i + 1), r) for i, r in enumerate(records)]
    else:
        rows = read_rows(data, "sft")
    weights_by_class = parse_class_weights(config.class_weights) if config.class_weights else derived
    if weights_by_class is None:
        raise TokalignError("--class-weights is required (CLASS=WEIGHT,...; paper: expert 1, sub-optimal 0.1)")
    classes = record_classes(rows, config.class_key)
    check_weights(classes, weights_by_class)
    tokenizer = load_tokenizer(model, tokenizer, trust_remote_code=trust_remote_code)
    model = load_model(model, model_dtype=model_dtype, trust_remote_code=trust_remote_code,
                       allow_pickle=allow_pickle)
    growth = ensure_end_of_turn(tokenizer, model, config.end_of_turn)
    present = sorted(set(classes))
    expert = max(present, key=lambda c: (weights_by_class[c], c))
    bos = tokenizer.bos_token or ""
    encoders = {c: ChatEncoder(tokenizer, ConditionedTemplate(c, placement=config.placement,
                                                              end_of_turn=config.end_of_turn, bos=bos))
                for c in present}
    by_row = {id(row): encoders[c] for (_, row), c in zip(rows, classes)}
    # inference uses the expert class's prompt: the saved tokenizer's chat template renders it
    tokenizer.chat_template = chat_template_jinja(expert, config.placement, config.end_of_turn)
    counts = {c: classes.count(c) for c in present}
    extra = {"data": str(data), "classes": counts, "class_weights": {c: weights_by_class[c] for c in present},
             "expert_class": expert, "placement": config.placement, "vocabulary": growth}
    return _sft(config, lambda: model, rows, lambda row: by_row[id(row)], [weights_by_class[c] for c in classes],
                tokenizer=tokenizer, resume=resume, name="crlft", extra=extra)


def summary_line(summary: Dict[str, Any]) -> str:
    """One line for people: command, rows, steps, loss, the last reward accuracy and the output folder."""
    log = summary.get("last_log") or {}
    stats = summary.get("data_stats") or {}
    cut = sum(v for k, v in stats.items() if k.startswith("truncated"))
    acc = log.get("rewards/accuracies")
    return "%s: %d rows (%d truncated), %d steps, train loss %.4f%s -> %s" % (
        summary["command"], stats.get("rows", 0), cut, summary["global_step"], summary["train_loss"],
        ", reward accuracy %.2f" % acc if acc is not None else "", summary["output_dir"])
