"""The real-model configuration: does fusing Gemma-3-270M into SmolLM2-135M-Instruct help, and which map is best?

Pivot / target SmolLM2-135M-Instruct, source Gemma-3-270M (base), both fetched from PyPI as GGUF files and
converted once (:mod:`tokalign.models.cache`). Data: chat responses from ``../shared/corpora``
(alpacaeval_parallel + code_math), split by prompt group into a fusion split and a held-out evaluation split
(an evaluation prompt is never trained on, not even with another model's response). Every text is the prompt
and the response joined by a blank line (the corpus reader's ``plain`` rendering: Gemma-3-270M is a base model
with no chat template, and the same characters for both models make every alignment exact); the loss and the
metric cover the response only.

Pipeline (library entry points, every stage cached by a hash of what it depends on, so a run resumes):
dump_logits of both models (response tokens in the loss mask) -> build_stats -> vocab em / mined / ms ->
remap.run_stores -> fusion_train.fuse.run of the pivot with its top ``train_layers`` decoder layers and the
final norm trainable (CPU budget; ``train_layers=0`` = full fine-tuning, the ``real-gpu`` preset).

Variants (each ``seeds`` times, paired by seed = same data order): the pivot untouched; SFT only (lambda 1);
fused with EM / MinED / MS at FuseChat's lambda 0.9; the best of those maps also at lambda 0.5;
self-distillation (lambda 0.9, the pivot's own store as the only teacher).
Metric: held-out bits per UTF-8 byte of the responses (tokenizer-independent: pivot and source on one scale)
and cross-entropy per pivot token of the responses.
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import time
from contextlib import redirect_stdout
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from benchmarks._stages import config_to_dict

from .config import TrainSpec, json_default
from .context import Bench, _file_sig, _shared_corpora
from .data import split_of

REAL_CORPORA = ("alpacaeval_parallel.jsonl", "code_math.jsonl")
PIVOT_MODEL = "smollm2-135m-instruct"
SOURCE_MODEL = "gemma3-270m"


@dataclass
class RealConfig:
    """A real-model run: everything here but the run-time knobs is part of the cache keys."""

    name: str = "real"
    pivot: str = PIVOT_MODEL
    source: str = SOURCE_MODEL
    seq_len: int = 128          # pivot tokens per text at most (prompt + response, cut inside the response)
    n_fusion: int = 64          # fusion texts (dumped, remapped, trained on)
    n_eval: int = 32            # held-out texts (prompts unseen)
    n_stats: int = 1500         # extra texts (outside eval) whose alignments build-stats counts
    split_salt: str = "fusion-quality-real-v1"
    train_layers: int = 2       # top decoder layers trained (+ the final norm); 0 = every parameter
    fusion_train: TrainSpec = field(default_factory=lambda: TrainSpec(steps=16, batch=4, lr=2e-4, warmup=0.1))
    lambda_sft: float = 0.9
    lambda_low: float = 0.5     # the best map is also run at this lambda
    minCE_metric: str = "fusechat"
    top_k: int = 10
    seeds: int = 3
    variants: Tuple[str, ...] = ("sft", "em", "mined", "ms", "best@low", "self")
    dtype: str = "fp32"
    # run-time only (not part of any cache key)
    device: str = "cpu"
    threads: int = 2

    def to_dict(self) -> Dict[str, Any]:
        return config_to_dict(self)


def real_presets() -> Dict[str, RealConfig]:
    """``real`` (the CLI default: <= 90 min on 2 CPU cores), ``real-gpu`` (full fine-tuning, more data and
    steps), ``real-reduced`` (what was run here on a shared, loaded 2-core machine; see RESULTS.md)."""
    reduced = RealConfig(name="real-reduced", seq_len=96, n_fusion=24, n_eval=12, n_stats=800,
                         fusion_train=TrainSpec(steps=6, batch=4, lr=2e-4, warmup=0.1))
    return {
        "real": RealConfig(),
        "real-gpu": RealConfig(name="real-gpu", seq_len=384, n_fusion=2000, n_eval=400, n_stats=4000,
                               train_layers=0, fusion_train=TrainSpec(steps=500, batch=16, lr=2e-5, warmup=0.05),
                               seeds=5, device="cuda", threads=8),
        "real-reduced": reduced,
        # the same data, stores and maps with every parameter trained (lr 4x lower for 19x more parameters): does
        # training only the top layers order the variants as full fine-tuning does? (python -m
        # benchmarks.fusion_quality.compare results/fusion_quality-real-reduced{,-full}.json)
        "real-reduced-full": replace(reduced, name="real-reduced-full", train_layers=0,
                                     fusion_train=TrainSpec(steps=6, batch=4, lr=5e-5, warmup=0.1)),
    }


VARIANT_LABELS = {"pivot": "pivot untouched", "sft": "SFT only (λ=1)", "em": "fused, EM map (λ=0.9)",
                  "mined": "fused, MinED map (λ=0.9)", "ms": "fused, MS map (λ=0.9)",
                  "self": "self-distil (pivot store only, λ=0.9)"}


class RealBench(Bench):
    """The run context with the real models: tokenizers from the model cache, keys from the GGUF files' sha256."""

    def __init__(self, cfg: RealConfig, cache_dir: Path, log: Callable[[str], None] = print) -> None:
        from tokalign import load_tokenizer
        from tokalign.models.cache import converted_dir, lookup_model_alias

        self.cfg = cfg
        self._init_cache(cache_dir, log)
        self.corpora = _shared_corpora()
        self.model_dirs = {"pivot": converted_dir(cfg.pivot), "source": converted_dir(cfg.source)}
        self.pivot_tok = load_tokenizer(cfg.pivot)
        self.source_tok = load_tokenizer(cfg.source)
        self._sha = {r: lookup_model_alias(n).sha256 for r, n in (("pivot", cfg.pivot), ("source", cfg.source))}

    def data_key(self) -> Dict[str, Any]:
        c = self.cfg
        return {"corpora": [_file_sig(self.corpora / n) for n in REAL_CORPORA], "pivot": self.pivot_tok.fingerprint,
                "seq_len": c.seq_len, "n": [c.n_stats, c.n_fusion, c.n_eval], "salt": c.split_salt, "kind": "real"}

    def model_key(self, role: str) -> Dict[str, Any]:
        return {"gguf_sha256": self._sha[role], "dtype": self.cfg.dtype}

    def store_key(self, role: str) -> Dict[str, Any]:
        return {"model": self.model_key(role), "data": self.data_key(), "top_k": self.cfg.top_k, "split": "fusion",
                "mask": "response", "special_tokens": "auto"}


# ------------------------------------------------------------------------------------------------ data
def prepare_real_data(bench: RealBench) -> Path:
    """fusion.jsonl / eval.jsonl / pretrain.jsonl (the build-stats extra texts) of ``{"id", "messages"}`` (one user
    turn, one response), split by prompt group; each text cut inside its response at a pivot token boundary to at
    most ``seq_len`` pivot tokens."""
    cfg = bench.cfg

    def build(out: Path) -> None:
        groups: Dict[str, List[dict]] = {}
        for name in REAL_CORPORA:
            with open(bench.corpora / name, encoding="utf-8") as f:
                for line in f:
                    obj = json.loads(line)
                    msgs = obj.get("messages") or []
                    if (len(msgs) == 2 and msgs[0].get("role") == "user" and msgs[1].get("role") == "assistant"
                            and msgs[0]["content"].strip() and msgs[1]["content"].strip()):
                        groups.setdefault(obj.get("group") or obj["id"], []).append(obj)
        order = sorted(groups, key=lambda g: (split_of(g, cfg.split_salt), g))
        rng = np.random.default_rng(int(split_of("rng", cfg.split_salt)))
        want = {"eval": cfg.n_eval, "fusion": cfg.n_fusion, "pretrain": cfg.n_stats}
        splits: Dict[str, List[dict]] = {k: [] for k in want}
        for g in order:
            target = next((s for s in ("eval", "fusion", "pretrain") if len(splits[s]) < want[s]), None)
            if target is None:
                break
            obj = groups[g][int(rng.integers(len(groups[g])))]  # one response per prompt: more distinct prompts
            prompt, response = obj["messages"][0]["content"], obj["messages"][1]["content"]
            text = prompt + "\n\n" + response
            enc = bench.pivot_tok.encode(text)
            if len(enc.ids) > cfg.seq_len:
                cut = int(enc.offsets[cfg.seq_len - 1][1])
                if cut < len(prompt) + 2 + 16:  # the prompt alone fills the budget: skip the group
                    continue
                response = text[len(prompt) + 2:cut]
            splits[target].append({"id": obj["id"], "messages": [{"role": "user", "content": prompt},
                                                                 {"role": "assistant", "content": response}]})
        for split, items in splits.items():
            with open(out / ("%s.jsonl" % split), "w", encoding="utf-8") as f:
                for it in items:
                    f.write(json.dumps(it, ensure_ascii=False) + "\n")
        (out / "counts.json").write_text(json.dumps({k: len(v) for k, v in splits.items()}) + "\n")

    return bench.cached("real-data", bench.data_key(), build)


# -------------------------------------------------------------------------------------------- pipeline
def dump_real(bench: RealBench, role: str, data_dir: Path) -> Path:
    """dump_logits of one model over the fusion split: plain rendering, BOS as the model expects, loss mask on
    the response."""
    cfg = bench.cfg
    tok = bench.pivot_tok if role == "pivot" else bench.source_tok

    def build(out: Path) -> None:
        _torch_threads(cfg)
        from tokalign.dump import DumpOptions, dump_logits

        options = DumpOptions(top_k=cfg.top_k, template="plain", mask_instruction=True, max_length=4 * cfg.seq_len,
                              batch_tokens=8 * cfg.seq_len, dtype=cfg.dtype, store_dtype="float32",
                              special_tokens="auto", device="cpu" if cfg.device == "cpu" else cfg.device,
                              progress=False)
        summary = dump_logits(str(bench.model_dirs[role]), tok, str(data_dir / "fusion.jsonl"),
                              str(out / "store.zarr"), options)
        bench.log("  " + summary.line())

    return bench.cached("real-store-%s" % role, bench.store_key(role), build) / "store.zarr"


def _torch_threads(cfg) -> None:
    import torch

    torch.set_num_threads(max(1, cfg.threads))


def trainable_names(model, train_layers: int) -> List[str]:
    """Parameters trained: the top ``train_layers`` decoder layers and the final norm (all when 0)."""
    names = [n for n, _ in model.named_parameters()]
    if train_layers <= 0:
        return names
    n_layers = int(model.config.num_hidden_layers)
    top = {"model.layers.%d." % i for i in range(n_layers - train_layers, n_layers)}
    return [n for n in names if any(n.startswith(t) for t in top) or n.startswith("model.norm.")]


def load_pivot(bench: RealBench, trainable: Mapping[str, Any] = None):
    """The pivot model (float32, CPU), with a trained target's parameters put in when given."""
    from tokalign.models import load_causal_lm

    model, _ = load_causal_lm(str(bench.model_dirs["pivot"]), dtype=bench.cfg.dtype, device="cpu")
    if trainable:
        missing = set(trainable) - {n for n, _ in model.named_parameters()}
        if missing:
            raise RuntimeError("trained parameters not in the model: %s" % sorted(missing)[:3])
        model.load_state_dict(dict(trainable), strict=False)
    return model


def fuse_real(bench: RealBench, variant: str, lam: float, seed: int, pivot_store: Path,
              teacher: Any, teacher_key: Any) -> Path:
    """fusion_train.fuse.run of one target; keeps only the trained parameters (trainable.safetensors)."""
    cfg = bench.cfg
    f = cfg.fusion_train
    key = {"pivot": bench.model_key("pivot"), "pivot_store": bench.store_key("pivot"), "teacher": teacher_key,
           "variant": variant, "lambda": lam, "seed": seed, "train": asdict(f), "train_layers": cfg.train_layers,
           "top_k": cfg.top_k, "minCE_metric": cfg.minCE_metric}

    def build(out: Path) -> None:
        _torch_threads(cfg)
        import torch
        from safetensors.torch import save_file

        from fusion_train.fuse import FusionConfig, run

        model = load_pivot(bench)
        names = set(trainable_names(model, cfg.train_layers))
        for n, p in model.named_parameters():
            p.requires_grad_(n in names)
        config = FusionConfig(
            output_dir=str(out / "model"), lambda_sft=lam, fusion="minCE", max_steps=f.steps,
            per_device_train_batch_size=f.batch, learning_rate=f.lr,
            warmup_steps=float(max(1, int(round(f.warmup * f.steps)))), lr_scheduler_type="cosine", weight_decay=0.0,
            max_grad_norm=1.0, seed=seed, data_seed=seed, logging_steps=float(f.steps), save_strategy="no",
            report_to="none", disable_tqdm=True, dataloader_num_workers=0, use_cpu=cfg.device == "cpu")
        teachers, tnames = ([teacher], ["source"]) if teacher is not None else ([], [])
        t0 = time.perf_counter()
        with redirect_stdout(sys.stderr):  # the Trainer's printer callback writes on stdout
            summary = run(config, model, str(pivot_store), teachers, teacher_names=tnames)
        state = {n: p.detach().to(torch.float32).contiguous() for n, p in model.named_parameters() if n in names}
        save_file(state, str(out / "trainable.safetensors"))
        summary["seconds"] = time.perf_counter() - t0
        (out / "fuse_summary.json").write_text(json.dumps(summary, indent=1, default=json_default) + "\n")
        shutil.rmtree(out / "model", ignore_errors=True)  # the full model (540 MB) is the base + trainable
        bench.log("  fused %s seed %d (lambda %.2f): train loss %.4f in %.0fs" % (
            variant, seed, lam, summary["train_loss"], summary["seconds"]))

    return bench.cached("real-target-%s-s%d" % (variant, seed), key, build)


# ------------------------------------------------------------------------------------------ evaluation
def response_bits(model, hf_tok, items: Sequence[Mapping[str, Any]], batch_tokens: int = 2048) -> Dict[str, float]:
    """Bits per UTF-8 byte of the responses and CE per response token: the prompt + blank line + response text,
    tokenized as the model expects (BOS included where its tokenizer adds one); a token counts as the response's
    when it starts inside the response."""
    import torch

    rows = []
    for it in items:
        prompt, response = it["messages"][0]["content"], it["messages"][1]["content"]
        text = prompt + "\n\n" + response
        start = len(prompt) + 2
        enc = hf_tok(text, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        in_resp = [i > 0 and a >= start and b > a for i, (a, b) in enumerate(enc["offset_mapping"])]
        rows.append((ids, in_resp, len(response.encode("utf-8"))))
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    nll = 0.0
    count = 0
    i = 0
    with torch.inference_mode():
        while i < len(order):
            longest = len(rows[order[i]][0])
            j = i + max(1, batch_tokens // max(1, longest))
            chunk = [rows[k] for k in order[i:j]]
            i = j
            x = torch.zeros((len(chunk), longest), dtype=torch.long)
            attn = torch.zeros_like(x)
            mask = torch.zeros((len(chunk), longest), dtype=torch.bool)
            for b, (ids, in_resp, _) in enumerate(chunk):
                x[b, :len(ids)] = torch.tensor(ids)
                attn[b, :len(ids)] = 1
                mask[b, :len(ids)] = torch.tensor(in_resp)
            logits = model(input_ids=x, attention_mask=attn).logits.float()
            lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, x[:, 1:, None]).squeeze(-1)
            m = mask[:, 1:]
            nll -= float(lp[m].sum())
            count += int(m.sum())
    nbytes = sum(r[2] for r in rows)
    return {"bpb": nll / max(1, nbytes) / math.log(2), "ce": nll / max(1, count), "tokens": count, "bytes": nbytes}


def evaluate_real(bench: RealBench, label: str, key: Any, make_model: Callable[[], Any], tok,
                  items: Sequence[Mapping[str, Any]]) -> Dict[str, float]:
    def build(out: Path) -> None:
        _torch_threads(bench.cfg)
        t0 = time.perf_counter()
        res = response_bits(make_model(), tok.hf, items, batch_tokens=8 * bench.cfg.seq_len)
        res["seconds"] = time.perf_counter() - t0
        (out / "eval.json").write_text(json.dumps(res) + "\n")
        bench.log("  eval %s: %.4f bits/byte, %.4f nats/token (%.0fs)" % (label, res["bpb"], res["ce"], res["seconds"]))

    return json.loads((bench.cached("real-eval", key, build) / "eval.json").read_text())
