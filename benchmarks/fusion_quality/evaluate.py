"""4. evaluation: held-out cross-entropy of each model, alignment diagnostics of each remapped store, and the
statistics over seeds (paired differences, the ordering verdict)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from .config import KIND_LABELS, SOURCE_FED_KINDS
from .context import Bench
from .models import torch_setup


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for one value)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def summarize_targets(per_seed: Mapping[str, Mapping[int, float]], baseline: str = "sft") -> Dict[str, Dict[str, Any]]:
    """Per target: CE mean/std over seeds, perplexity mean/std, and the paired difference to ``baseline``
    (same seed = same data order) as mean/std, plus the seeds used."""
    out: Dict[str, Dict[str, Any]] = {}
    base = per_seed.get(baseline, {})
    for name, by_seed in per_seed.items():
        seeds = sorted(by_seed)
        ce = [by_seed[s] for s in seeds]
        m, sd = mean_std(ce)
        pm, psd = mean_std([math.exp(c) for c in ce])
        row: Dict[str, Any] = {"ce_mean": m, "ce_std": sd, "ppl_mean": pm, "ppl_std": psd, "seeds": seeds, "ce": ce}
        common = [s for s in seeds if s in base]
        if name != baseline and common:
            d = [by_seed[s] - base[s] for s in common]
            row["delta_mean"], row["delta_std"] = mean_std(d)
            row["delta"] = d
        out[name] = row
    return out


def ordering_verdict(summary: Mapping[str, Mapping[str, Any]], order: Sequence[str] = ("ms", "mined", "em"),
                     z: float = 2.0, min_effect: float = 1e-3) -> Dict[str, Any]:
    """Does the held-out CE follow ``order`` (best first)? Pairwise, on per-seed differences (same seed =
    same data order): ``resolved`` when the mean gain exceeds ``z`` standard errors and ``min_effect`` nats
    (smaller gains are called negligible however consistent), ``reversed`` likewise in the other direction.
    Returns the observed order (by mean CE), whether it equals ``order``, and the pairs."""
    present = [m for m in order if m in summary]
    observed = sorted(present, key=lambda m: summary[m]["ce_mean"])
    pairs = []
    for better, worse in zip(present, present[1:]):
        a, b = summary[better]["ce"], summary[worse]["ce"]
        n = min(len(a), len(b))
        d = np.asarray(b[:n]) - np.asarray(a[:n])  # > 0: `better` really is better
        mean = float(d.mean()) if n else float("nan")
        se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        pairs.append({"better": better, "worse": worse, "ce_gain": mean, "se": se,
                      "resolved": bool(n > 1 and mean > z * se and mean > min_effect),
                      "reversed": bool(n > 1 and -mean > z * se and -mean > min_effect)})
    return {"claimed": list(present), "observed": observed, "same_order": observed == list(present),
            "pairs": pairs, "all_resolved": bool(pairs) and all(p["resolved"] for p in pairs)}


def evaluate(bench: Bench, model_dir: Path, tok, texts: Sequence[str], key: Any) -> Dict[str, float]:
    """Mean cross-entropy (nats per own token, predicted tokens = all but the first of each text) and bits per
    UTF-8 byte of the held-out texts; cached as JSON."""
    cfg = bench.cfg

    def build(out: Path) -> None:
        import torch
        from transformers import LlamaForCausalLM

        device = torch_setup(cfg)
        model = LlamaForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, use_safetensors=True,
                                             trust_remote_code=False).to(device).eval()
        encs = [np.asarray(e.ids, dtype=np.int64) for e in tok.encode_batch(list(texts), add_special_tokens=False)]
        order = sorted(range(len(encs)), key=lambda i: -len(encs[i]))
        total, count = 0.0, 0
        budget = 16 * cfg.seq_len
        i = 0
        with torch.inference_mode():
            while i < len(order):
                longest = len(encs[order[i]])
                j = i + max(1, budget // max(1, longest))
                batch = [encs[k] for k in order[i:j]]
                i = j
                x = torch.zeros((len(batch), longest), dtype=torch.long)
                attn = torch.zeros_like(x)
                for b, ids in enumerate(batch):
                    x[b, :len(ids)] = torch.from_numpy(ids)
                    attn[b, :len(ids)] = 1
                x, attn = x.to(device), attn.to(device)
                logits = model(input_ids=x, attention_mask=attn).logits.float()
                lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, x[:, 1:, None]).squeeze(-1)
                m = attn[:, 1:].bool()
                total -= float(lp[m].sum())
                count += int(m.sum())
        nbytes = sum(len(t.encode("utf-8")) for t in texts)
        res = {"ce": total / max(1, count), "tokens": count, "bytes": nbytes,
               "bpb": total / max(1, nbytes) / math.log(2)}
        (out / "eval.json").write_text(json.dumps(res) + "\n")

    path = bench.cached("eval", key, build)
    return json.loads((path / "eval.json").read_text())


def diagnose_remapped(store_path: Path, source_store: Path) -> Dict[str, Any]:
    """Alignment diagnostics of one remapped store (see :func:`remap_diagnostics`)."""
    from tokalign.store import open_store

    r = open_store(str(store_path))
    s = open_store(str(source_store))
    samples = list(r)
    return remap_diagnostics(samples, source_samples=list(s))


def remap_diagnostics(samples: Sequence[Mapping[str, Any]],
                      source_samples: Optional[Sequence[Mapping[str, Any]]] = None) -> Dict[str, Any]:
    """Per remapped store: fraction of positions by group kind (all positions, and among valid = fused
    ones), share of valid positions, share of source-fed positions (group ends: kinds 1, 2, 4, 6), mean
    retained probability mass there, and how often the remapped top-1 equals the gold next pivot token
    there (invalid positions count as misses). With the source store, the source model's own top-1
    accuracy on its own tokens, the ceiling a perfect map could carry over."""
    kinds_all: Dict[int, int] = {}
    kinds_valid: Dict[int, int] = {}
    n = n_valid = fed = fed_hits = 0
    fed_mass = 0.0
    for smp in samples:
        kind = np.asarray(smp["group_kind"], np.int64)
        valid = np.asarray(smp["remap_valid"], bool)
        mass = np.asarray(smp["retained_mass"], np.float64)
        top1 = np.asarray(smp["topk_ids"])[:, 0].astype(np.int64)
        ids = np.asarray(smp["input_ids"], np.int64)
        L = len(ids)
        n += L
        n_valid += int(valid.sum())
        for k, c in zip(*np.unique(kind, return_counts=True)):
            kinds_all[int(k)] = kinds_all.get(int(k), 0) + int(c)
        for k, c in zip(*np.unique(kind[valid], return_counts=True)):
            kinds_valid[int(k)] = kinds_valid.get(int(k), 0) + int(c)
        is_fed = np.isin(kind, SOURCE_FED_KINDS)
        is_fed[L - 1:] = False  # the last position has no gold next token
        fed += int(is_fed.sum())
        fed_mass += float(np.where(valid, mass, 0.0)[is_fed].sum())
        if L > 1:
            hit = np.zeros(L, bool)
            hit[:-1] = (top1[:-1] == ids[1:]) & valid[:-1]
            fed_hits += int((hit & is_fed).sum())
    own = float("nan")
    if source_samples is not None:
        hits = tot = 0
        for smp in source_samples:
            ids = np.asarray(smp["input_ids"], np.int64)
            if len(ids) > 1:
                hits += int((np.asarray(smp["topk_ids"])[:-1, 0] == ids[1:]).sum())
                tot += len(ids) - 1
        own = hits / max(1, tot)
    return {
        "positions": n,
        "valid_fraction": n_valid / max(1, n),
        "source_fed_fraction": fed / max(1, n),
        "kind_fraction_all": {KIND_LABELS[k]: c / max(1, n) for k, c in sorted(kinds_all.items())},
        "kind_fraction": {KIND_LABELS[k]: c / max(1, n_valid) for k, c in sorted(kinds_valid.items())},
        "retained_mass_source_fed": fed_mass / max(1, fed),
        "top1_agreement_source_fed": fed_hits / max(1, fed),
        "source_own_top1": own,
    }
