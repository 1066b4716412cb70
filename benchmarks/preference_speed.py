"""Step time and peak memory of ``fusion-train dpo`` (live and precomputed reference) against TRL's DPOTrainer
(the pinned dev-extra version) on the same model, data, batch and sequence length, in one run on this machine.

The model is a random Llama over a real tokenizer from ../shared (``--tokenizer``, default llama3: a 128k
vocabulary) with ``--hidden`` / ``--layers``; each trainer runs in a fresh subprocess (peak RSS is per process).

    python benchmarks/preference_speed.py --steps 6 --batch 4 --hidden 256 --layers 4
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def _rows(n: int, words: int):
    import random

    rng = random.Random(0)
    vocab = "the of river stone cloud green music light paper alpha beta gamma delta".split()
    out = []
    for i in range(n):
        text = lambda k: " ".join(rng.choice(vocab) for _ in range(k))  # noqa: E731
        out.append({"prompt_id": "p%d" % i, "prompt": [{"role": "user", "content": text(words)}],
                    "chosen": [{"role": "assistant", "content": text(words)}],
                    "rejected": [{"role": "assistant", "content": text(words // 2 + 1)}]})
    return out


def _worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer

    from tokalign.dump import load_causal_lm

    model, _ = load_causal_lm(args.model, dtype="float32", device="cpu")
    tok = AutoTokenizer.from_pretrained(args.model, trust_remote_code=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    common = dict(output_dir=args.out, per_device_train_batch_size=args.batch, max_steps=args.steps,
                  learning_rate=1e-6, report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True,
                  logging_steps=1000, max_length=args.max_length)
    times = []

    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

    if args.which == "trl":
        import datasets
        import trl

        cfg = trl.DPOConfig(beta=0.1, loss_type=["sigmoid"], **common)
        ref, _ = load_causal_lm(args.model, dtype="float32", device="cpu")
        trainer = trl.DPOTrainer(model=model, ref_model=ref, args=cfg, processing_class=tok,
                                 train_dataset=datasets.Dataset.from_list(json.loads(Path(args.data).read_text())),
                                 callbacks=[Timer()])
    else:
        from fusion_train.preference.config import PreferenceConfig
        from fusion_train.preference.data import ChatEncoder, PreferenceDataset, read_rows
        from fusion_train.preference.reference import load_or_compute
        from fusion_train.preference.trainer import PreferenceTrainer

        jl = Path(args.out) / "pairs.jsonl"
        jl.write_text("".join(json.dumps(r) + "\n" for r in json.loads(Path(args.data).read_text())))
        ds = PreferenceDataset(read_rows(jl, "pairs"), ChatEncoder(tok), max_length=args.max_length)
        reference = "live" if args.which == "ours-live" else "precomputed"
        if reference == "precomputed":
            load_or_compute(model, ds, Path(args.out) / "ref.json", batch_size=args.batch)
        cfg = PreferenceConfig(beta=0.1, loss="dpo", reference=reference, **common)
        trainer = PreferenceTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[Timer()])
    trainer.train()
    steady = times[1:] if len(times) > 1 else times
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"which": args.which, "step_s": sum(steady) / len(steady), "peak_rss_mb": peak_mb}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", default="llama3")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--rows", type=int, default=32)
    p.add_argument("--words", type=int, default=60)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--which", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--data", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return _worker(args)
    import torch

    from tokalign.testing import tiny_llama, tokenizer_size, TOKENIZER_FILES
    import shutil

    tokdir = SHARED / "tokenizers" / args.tokenizer
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        vocab = tokenizer_size(tokdir)
        model = tiny_llama(vocab, hidden=args.hidden, layers=args.layers, intermediate_size=4 * args.hidden,
                           max_positions=1024, pad_token_id=None, bos_token_id=None, eos_token_id=None)
        model.save_pretrained(tmp / "m")
        for name in TOKENIZER_FILES:
            if (tokdir / name).is_file():
                shutil.copyfile(tokdir / name, tmp / "m" / name)
        (tmp / "data.json").write_text(json.dumps(_rows(args.rows, args.words)))
        params = sum(p.numel() for p in model.parameters())
        print("model: random Llama, vocab %d (%s tokenizer), hidden %d, %d layers, %.1fM params; batch %d pairs, "
              "max_length %d, %d steps, torch %s, %d threads" % (vocab, args.tokenizer, args.hidden, args.layers,
                                                                 params / 1e6, args.batch, args.max_length,
                                                                 args.steps, torch.__version__, args.threads))
        for which in ("trl", "ours-live", "ours-precomputed"):
            out = tmp / which
            out.mkdir()
            cmd = [sys.executable, __file__, "--worker", "1", "--which", which, "--model", str(tmp / "m"),
                   "--data", str(tmp / "data.json"), "--out", str(out)] + sys.argv[1:]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
            if proc.returncode:
                print(which, "failed:", proc.stderr[-2000:])
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print("%-18s step %.3f s   peak RSS %.0f MB" % (which, r["step_s"], r["peak_rss_mb"]))


if __name__ == "__main__":
    main()
