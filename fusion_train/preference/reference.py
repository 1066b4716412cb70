"""Reference log-probabilities computed once, in one no-grad pass of the starting model, and stored beside the
data: training then holds one model (the policy) instead of two.

The file (JSON, ``<data>.ref-logps.json`` by default) records the tokenised data's fingerprint and the model's,
so a file computed for other data, another tokenizer / ``max_length``, or another starting model is refused
instead of silently giving wrong rewards. Under torchrun each process computes a strided slice and the slices
are gathered, so the pass costs ``1 / world_size`` of the data per process.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, List, Optional

import torch

from tokalign.errors import TokalignError

from ..fused_output.options import DEFAULT_CHUNK_MB
from .data import PreferenceCollator, PreferenceDataset

__all__ = ["FORMAT", "default_path", "model_fingerprint", "compute_reference_logps", "check_file", "load_or_compute"]

FORMAT = "fusion-train-ref-logps/1"


def default_path(data_path) -> Path:
    return Path(str(data_path) + ".ref-logps.json")


@torch.no_grad()
def model_fingerprint(model) -> str:
    """sha256 of every parameter's name, shape and sum (float64): cheap, and different for another model."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(("%s%s%.10e" % (name, tuple(p.shape), float(p.detach().double().sum()))).encode())
    return h.hexdigest()


@torch.no_grad()
def compute_reference_logps(model, dataset: PreferenceDataset, *, batch_size: int = 8, device: Any = None,
                            pad_token_id: int = 0, indices: Optional[List[int]] = None, fused_output_loss: bool = True,
                            fused_output_chunk_mb: float = DEFAULT_CHUNK_MB) -> List[List[float]]:
    """``[[ℓ_ref(response r) for r] for each example]`` (summed response log-probs, float32) in one no-grad pass,
    computed the way the trainer computes the policy's (fused output loss unless ``fused_output_loss=False``), so
    a precomputed reference equals a live one."""
    from ..fused_output import FusedOutput
    from .trainer import policy_forward

    fused = FusedOutput(fused_output_loss, fused_output_chunk_mb)

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    collate = PreferenceCollator(pad_token_id=pad_token_id)
    idx = list(range(len(dataset))) if indices is None else list(indices)
    out: List[List[float]] = []
    try:
        for start in range(0, len(idx), batch_size):
            examples = [dataset[i] for i in idx[start:start + batch_size]]
            batch = collate(examples)
            args = (batch["input_ids"].to(device), batch["attention_mask"].to(device), batch["response_mask"].to(device))
            got = fused.response_log_probs(model, *args)
            tok, _ = got if got is not None else policy_forward(model, *args)
            n = len(examples[0]["responses"])
            out.extend(tok.sum(-1).view(n, len(examples)).t().float().cpu().tolist())
    finally:
        model.train(was_training)
    return out


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise TokalignError("%s: not a reference log-prob file (%s)" % (path, str(exc).splitlines()[0])) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise TokalignError("%s: not a reference log-prob file (format %r, expected %s)"
                            % (path, data.get("format") if isinstance(data, dict) else None, FORMAT))
    return data


def check_file(path, dataset: PreferenceDataset) -> None:
    """Refuse an existing reference file computed for other data (one line); nothing when it is absent."""
    path = Path(path)
    if not path.exists():
        return
    data = _read(path)
    fingerprint = dataset.fingerprint()
    if data.get("data_fingerprint") != fingerprint or len(data.get("logps", [])) != len(dataset):
        raise TokalignError(
            "%s was computed for other data (%s rows, fingerprint %s…; this data: %d rows, %s…; another file, "
            "tokenizer or max_length): delete it or pass another --ref-logps" % (
                path, data.get("rows"), str(data.get("data_fingerprint"))[:12], len(dataset), fingerprint[:12]))


def load_or_compute(model, dataset: PreferenceDataset, path, *, batch_size: int = 8, device: Any = None,
                    pad_token_id: int = 0, process_index: int = 0, num_processes: int = 1,
                    fused_output_loss: bool = True, fused_output_chunk_mb: float = DEFAULT_CHUNK_MB) -> dict:
    """Attach reference log-probs to ``dataset``: read ``path`` if it exists (refused when computed for other
    data or another model), else compute them with ``model`` (sliced over processes) and write ``path``
    (main process). Returns ``{"path", "computed", "seconds"}``."""
    import time

    path = Path(path)
    fingerprint = dataset.fingerprint()
    mfp = model_fingerprint(model)
    if path.exists():
        check_file(path, dataset)
        data = _read(path)
        if data.get("model_fingerprint") != mfp:
            raise TokalignError("%s was computed with another starting model (%s): delete it or pass another "
                                "--ref-logps" % (path, data.get("model")))
        dataset.attach_reference(data["logps"])
        return {"path": str(path), "computed": False, "seconds": 0.0}
    t0 = time.perf_counter()
    mine = list(range(process_index, len(dataset), num_processes))
    logps = compute_reference_logps(model, dataset, batch_size=batch_size, device=device,
                                    pad_token_id=pad_token_id, indices=mine, fused_output_loss=fused_output_loss,
                                    fused_output_chunk_mb=fused_output_chunk_mb)
    if num_processes > 1:
        import torch.distributed as dist

        parts: List[Any] = [None] * num_processes
        dist.all_gather_object(parts, (mine, logps))
        full: List[Any] = [None] * len(dataset)
        for idx, rows in parts:
            for i, row in zip(idx, rows):
                full[i] = row
        logps = full
    dataset.attach_reference(logps)
    if process_index == 0:
        record = {"format": FORMAT, "rows": len(dataset), "n_responses": dataset.n_responses,
                  "data_fingerprint": fingerprint, "model_fingerprint": mfp,
                  "model": str(getattr(model, "name_or_path", "") or ""), "logps": logps}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    return {"path": str(path), "computed": True, "seconds": round(time.perf_counter() - t0, 3)}
