"""Training the arms through ``fusion_train.preference``'s entry points (run_sft, run_preference, run_crlft) on
the target with its top ``train_layers`` decoder layers + the final norm trainable (the CPU budget; 0 = all).

A trained arm's folder keeps ``trainable.safetensors`` (the trained tensors), the run summary, the trainer's
log history (reward margins per step) and ``model/`` (the saved model + tokenizer; its weights are dropped
once the seed is evaluated and rebuilt from base + trainable when a resumed run needs them again)."""
from __future__ import annotations

import json
import sys
import time
from contextlib import redirect_stdout
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional

from .config import json_default
from .pipeline import Bench, threads

EMBED = "model.embed_tokens.weight"


def trainable_names(model, train_layers: int) -> List[str]:
    names = [n for n, _ in model.named_parameters()]
    if train_layers <= 0:
        return names
    n_layers = int(model.config.num_hidden_layers)
    top = tuple("model.layers.%d." % i for i in range(n_layers - train_layers, n_layers))
    return [n for n in names if n.startswith(top) or n.startswith("model.norm.")]


def base_tokenizer(bench: Bench, folder: Optional[Path] = None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder or bench.model_dirs["target"]), trust_remote_code=False)


def load_model(bench: Bench, trained: Optional[Path] = None):
    """The target (float32, CPU) with a trained arm's tensors put in (the embedding resized first where C-RLFT
    grew the vocabulary)."""
    from tokalign.models import load_causal_lm

    model, _ = load_causal_lm(str(bench.model_dirs["target"]), dtype=bench.cfg.dtype, device="cpu")
    if trained is not None:
        from safetensors.torch import load_file

        state = load_file(str(trained / "trainable.safetensors"))
        if EMBED in state and state[EMBED].shape[0] != model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(int(state[EMBED].shape[0]), mean_resizing=False)
        missing = set(state) - {n for n, _ in model.named_parameters()}
        if missing:
            raise RuntimeError("trained tensors not in the model: %s" % sorted(missing)[:3])
        model.load_state_dict(state, strict=False)
        if getattr(model.config, "tie_word_embeddings", False):
            model.tie_weights()
    return model


def model_dir(bench: Bench, trained: Optional[Path]) -> Path:
    """A loadable folder of the arm (the base target for None), rebuilt from base + trainable when dropped."""
    if trained is None:
        return bench.model_dirs["target"]
    folder = trained / "model"
    if not (folder / "model.safetensors").exists():
        model = load_model(bench, trained)
        model.save_pretrained(str(folder))
        if not (folder / "tokenizer.json").exists():
            base_tokenizer(bench).save_pretrained(str(folder))
    return folder


def drop_weights(trained: Path) -> None:
    for p in (trained / "model").glob("*.safetensors"):
        p.unlink()


def train_arm(bench: Bench, kind: str, seed: int, data: Path, start: Optional[Path], extra: Dict[str, Any]) -> Path:
    """``kind``: sft | dpo | ln_dpo | wrpo | crlft. ``start``: a trained folder to start from (None: the base
    target). ``extra``: the options of this arm (alpha, class weights, ...), part of the key."""
    c = bench.cfg
    spec = c.pref if kind in ("dpo", "ln_dpo", "wrpo") else c.sft
    key = {"target": bench.model_key("target"), "kind": kind, "seed": seed, "train": asdict(spec),
           "train_layers": c.train_layers, "max_length": c.max_length, "extra": extra,
           "data": json.loads((data.parent.parent / "key.json").read_text()) if (data.parent.parent / "key.json")
           .exists() else str(data),
           "start": json.loads((start / "key.json").read_text()) if start is not None else None}

    def build(out: Path) -> None:
        threads(c)
        import torch
        from safetensors.torch import save_file

        from fusion_train.preference import run as R
        from fusion_train.preference.config import CRLFTConfig, PreferenceConfig, SFTConfig

        tok = base_tokenizer(bench)
        model = load_model(bench, start)
        if kind == "crlft":
            from fusion_train.preference.crlft import ensure_end_of_turn

            # grown here, before the parameters are frozen: run_crlft then finds the token present
            extra_growth = ensure_end_of_turn(tok, model, "<|end_of_turn|>")
        names = set(trainable_names(model, c.train_layers))
        for n, p in model.named_parameters():
            p.requires_grad_(n in names)
        common = dict(output_dir=str(out / "model"), max_steps=spec.steps, per_device_train_batch_size=spec.batch,
                      learning_rate=spec.lr, warmup_steps=int(round(spec.warmup * spec.steps)),
                      lr_scheduler_type="cosine", weight_decay=0.0, max_grad_norm=1.0, seed=seed, data_seed=seed,
                      logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
                      dataloader_num_workers=0, use_cpu=c.device == "cpu", max_length=c.max_length)
        t0 = time.perf_counter()
        with redirect_stdout(sys.stderr):  # the Trainer's printer callback writes on stdout
            if kind == "sft":
                summary = R.run_sft(SFTConfig(**common), model, str(data), tokenizer=tok)
            elif kind == "crlft":
                summary = R.run_crlft(CRLFTConfig(class_weights=extra["class_weights"], placement="role", **common),
                                      model, str(data), tokenizer=tok)
                summary["vocabulary"] = extra_growth
            else:
                beta = {"dpo": c.beta_dpo, "ln_dpo": c.beta_ln_dpo, "wrpo": c.beta_dpo}[kind]
                cfg = PreferenceConfig(loss=kind, beta=beta, alpha=extra.get("alpha", 0.1), alpha_dynamic=True,
                                       per_device_eval_batch_size=8, **common)
                summary = R.run_preference(cfg, model, str(data), tokenizer=tok, ref_logps=str(out / "ref.json"))
        summary["seconds"] = time.perf_counter() - t0
        keep = set(names) | ({EMBED} if kind == "crlft" else set())
        state = {n: p.detach().to(torch.float32).contiguous() for n, p in model.named_parameters() if n in keep}
        save_file(state, str(out / "trainable.safetensors"))
        state_file = out / "model" / "trainer_state.json"
        history = json.loads(state_file.read_text())["log_history"] if state_file.exists() else []
        summary["log_history"] = history
        summary["trained_tokens"] = trained_tokens(data, spec, kind, base_tokenizer(bench))
        (out / "summary.json").write_text(json.dumps(summary, indent=1, default=json_default) + "\n")
        bench.log("  trained %s seed %d: loss %.4f, %d steps in %.0fs" % (
            kind + ("@%g" % extra["alpha"] if "alpha" in extra else ""), seed, summary["train_loss"],
            summary["global_step"], summary["seconds"]))

    label = kind + ("-a%g" % extra["alpha"] if "alpha" in extra else "")
    return bench.cached("train-%s-s%d" % (label, seed), key, build)


def trained_tokens(data: Path, spec, kind: str, tok) -> int:
    """Tokens the policy ran forward in training: steps x batch x (sequences per row x mean sequence length under
    the chat template; pairs 2, WRPO triples 3)."""
    lengths = []
    with open(data, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if "chosen" in row:
                prompt = row.get("prompt") or row.get("messages")
                seqs = [prompt + ([r] if isinstance(r, dict) else [{"role": "assistant", "content": r}]
                                  if isinstance(r, str) else list(r))
                        for r in list(row["chosen"]) + list(row["rejected"])]
            else:
                seqs = [row["messages"]]
            lengths.append(sum(_n_ids(tok.apply_chat_template(s, tokenize=True)) for s in seqs))
    return int(spec.steps * spec.batch * (sum(lengths) / max(1, len(lengths))))


def _n_ids(ids) -> int:
    if hasattr(ids, "keys"):  # transformers versions that return an encoding
        ids = ids["input_ids"]
    return len(ids)
