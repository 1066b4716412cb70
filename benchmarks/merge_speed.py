"""Benchmark: ``fusion-train merge`` vs mergekit (``mergekit-yaml``) on the same three fp32 models.

Generates a Llama-shaped base and two fine-tuned copies (base + noise) of about ``--size`` MB each
under ``--cache`` (default benchmarks/.cache, git-ignored) if absent, then runs each method with
each tool in its own subprocess and records wall time and the peak RSS of that subprocess
(``os.wait4`` rusage, so runs do not mask each other). Both tools get the same YAML (ours adds
``variant: mergekit`` for SCE, so both compute the same thing), fp32 output, CPU.

Goal: our time <= 1/3 of mergekit's at no more peak memory. Also recorded: CPU seconds (user + sys)
of each subprocess, steadier than wall time on a shared machine, and the load average.

``--entry cli`` (default) runs ``python -m fusion_train.cli merge``, i.e. ``fusion-train merge``
(which loads only the merge subcommand; on CPU, methods with native kernels never import torch);
``--entry merge`` registers the merge subcommand directly (the same code path otherwise).

    python benchmarks/merge_speed.py                       # ~600 MB per model, sce ties dare_ties linear
    python benchmarks/merge_speed.py --size 150 --json     # smaller, machine-readable
    python benchmarks/merge_speed.py --methods ties dare_ties --entry merge
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO / "benchmarks" / ".cache"
METHODS = ("sce", "ties", "dare_ties", "linear")
# --entry merge: fusion_train.cli.main with only the merge subcommand registered
MERGE_ONLY = ("import argparse, sys; from fusion_train.merge import cli; "
              "p = argparse.ArgumentParser(prog='fusion-train'); cli.register(p.add_subparsers(dest='command')); "
              "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")


def llama_shape(size_mb: float) -> Dict[str, int]:
    """Llama hyper-parameters giving about ``size_mb`` MB of fp32 weights."""
    if size_mb >= 300:
        hidden, vocab = 1024, 32000
    elif size_mb >= 60:
        hidden, vocab = 512, 16000
    else:
        hidden, vocab = 256, 8000
    inter = (int(hidden * 2.75) + 63) // 64 * 64
    per_layer = 4 * hidden * hidden + 3 * hidden * inter + 2 * hidden
    fixed = 2 * vocab * hidden + hidden
    layers = max(1, round((size_mb * 1e6 / 4 - fixed) / per_layer))
    return {"hidden_size": hidden, "intermediate_size": inter, "vocab_size": vocab, "num_hidden_layers": layers,
            "num_attention_heads": hidden // 64, "num_key_value_heads": hidden // 64}


def make_models(cache: Path, size_mb: float) -> List[Path]:
    """Create (or reuse) base, ft1, ft2 under ``cache/llama-<size>mb``; returns their folders."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    root = cache / ("llama-%gmb" % size_mb)
    names = ["base", "ft1", "ft2"]
    dirs = [root / n for n in names]
    if all((d / "model.safetensors").is_file() for d in dirs):
        return dirs
    shape = llama_shape(size_mb)
    cfg = LlamaConfig(tie_word_embeddings=False, max_position_embeddings=2048, architectures=["LlamaForCausalLM"], **shape)
    h, i, v = shape["hidden_size"], shape["intermediate_size"], shape["vocab_size"]
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h)}
    for layer in range(shape["num_hidden_layers"]):
        p = "model.layers.%d." % layer
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[p + "self_attn.%s.weight" % proj] = (h, h)
        shapes[p + "mlp.gate_proj.weight"] = (i, h)
        shapes[p + "mlp.up_proj.weight"] = (i, h)
        shapes[p + "mlp.down_proj.weight"] = (h, i)
        shapes[p + "input_layernorm.weight"] = (h,)
        shapes[p + "post_attention_layernorm.weight"] = (h,)
    gen = torch.Generator().manual_seed(0)
    base = {k: (torch.ones(s) if len(s) == 1 else 0.02 * torch.randn(s, generator=gen)) for k, s in shapes.items()}
    for j, d in enumerate(dirs):
        d.mkdir(parents=True, exist_ok=True)
        if j == 0:
            state = base
        else:  # fine-tuned copy: different noise scale per model
            state = {k: t + (0.001 * (j + 1)) * torch.randn(t.shape, generator=gen) for k, t in base.items()}
        save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
        cfg.save_pretrained(d)
        del state
    return dirs


def yaml_for(method: str, dirs: List[Path], ours: bool) -> dict:
    base, t1, t2 = (str(d) for d in dirs)
    if method == "linear":
        return {"merge_method": "linear", "dtype": "float32",
                "models": [{"model": m, "parameters": {"weight": w}} for m, w in ((base, 0.4), (t1, 0.3), (t2, 0.3))]}
    conf: dict = {"merge_method": method, "base_model": base, "dtype": "float32"}
    if method == "sce":
        conf["parameters"] = {"select_topk": 0.1}
        if ours:
            conf["parameters"]["variant"] = "mergekit"
        conf["models"] = [{"model": t1}, {"model": t2}]
    else:
        conf["models"] = [{"model": m, "parameters": {"weight": 0.5, "density": 0.5}} for m in (t1, t2)]
    return conf


def measure(cmd: List[str], env: dict, log: Path) -> Dict[str, float]:
    """Run ``cmd``; wall seconds and the peak RSS (MB) of that child process (``os.wait4``)."""
    with open(log, "wb") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit("command failed (%d): %s\n%s" % (proc.returncode, " ".join(cmd), log.read_text()[-3000:]))
    return {"seconds": round(wall, 2), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=float, default=600, help="approximate MB per fp32 model (default 600)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where generated models live (git-ignored)")
    ap.add_argument("--device", default="cpu", help="our compute device (mergekit runs on CPU)")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads given to both tools (ours --threads, mergekit -j); default 1: on a shared, "
                         "oversubscribed machine OpenMP threads spin-wait and both tools slow down several-fold")
    ap.add_argument("--entry", choices=("cli", "merge"), default="cli",
                    help="cli: python -m fusion_train.cli merge (default); merge: only the merge subcommand registered")
    ap.add_argument("--json", action="store_true", help="print results as JSON")
    args = ap.parse_args(argv)

    dirs = make_models(args.cache, args.size)
    work = args.cache / "runs"
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    mergekit_yaml = shutil.which("mergekit-yaml")
    if mergekit_yaml is None:
        raise SystemExit("mergekit-yaml not found (pip install mergekit==0.1.5)")
    model_mb = sum(f.stat().st_size for f in dirs[0].glob("*.safetensors")) / 1e6
    results = []
    for method in args.methods:
        row = {"method": method}
        for tool in ("mergekit", "ours"):
            conf_path = work / ("%s-%s.yml" % (method, tool))
            conf_path.write_text(json.dumps(yaml_for(method, dirs, tool == "ours")))  # JSON is valid YAML
            out = work / ("%s-%s-out" % (method, tool))
            shutil.rmtree(out, ignore_errors=True)
            if tool == "ours":
                entry = ["-m", "fusion_train.cli"] if args.entry == "cli" else ["-c", MERGE_ONLY]
                cmd = [sys.executable] + entry + ["merge", "--config", str(conf_path), "--out", str(out),
                                                  "--no-progress", "--max-shard-size", "5GB", "--device", args.device,
                                                  "--json", "--threads", str(args.threads)]
            else:
                cmd = [mergekit_yaml, str(conf_path), str(out), "--no-copy-tokenizer", "--no-write-model-card",
                       "--no-lazy-unpickle", "--quiet", "-j", str(args.threads)]
            r = measure(cmd, env, work / ("%s-%s.log" % (method, tool)))
            row[tool] = r
            shutil.rmtree(out, ignore_errors=True)
        row["time_ratio"] = round(row["ours"]["seconds"] / row["mergekit"]["seconds"], 3)
        row["rss_ratio"] = round(row["ours"]["peak_rss_mb"] / row["mergekit"]["peak_rss_mb"], 3)
        row["cpu_ratio"] = round(row["ours"]["cpu_seconds"] / max(row["mergekit"]["cpu_seconds"], 1e-9), 3)
        row["load_avg_1m"] = round(os.getloadavg()[0], 2)
        results.append(row)
        if not args.json:
            print("%-10s mergekit %6.1fs (cpu %5.1fs) %6.0f MB | ours %6.1fs (cpu %5.1fs) %6.0f MB | time x%.2f  cpu x%.2f  "
                  "rss x%.2f  load %.1f"
                  % (method, row["mergekit"]["seconds"], row["mergekit"]["cpu_seconds"], row["mergekit"]["peak_rss_mb"],
                     row["ours"]["seconds"], row["ours"]["cpu_seconds"], row["ours"]["peak_rss_mb"], row["time_ratio"],
                     row["cpu_ratio"], row["rss_ratio"], row["load_avg_1m"]), flush=True)
    report = {"model_mb": round(model_mb, 1), "n_models": 3, "device": args.device, "cpus": os.cpu_count(),
              "threads": args.threads, "entry": args.entry, "load_avg_1m": round(os.getloadavg()[0], 2),
              "goal": "time_ratio <= 0.333 and rss_ratio <= 1", "results": results}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        ok = all(r["time_ratio"] <= 1 / 3 and r["rss_ratio"] <= 1 for r in results)
        print("models: 3 x %.0f MB fp32, %d thread(s) each, entry %s, load avg %.1f; goal (time <= 1/3, rss <= 1x) %s"
              % (model_mb, args.threads, args.entry, os.getloadavg()[0], "met" if ok else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
