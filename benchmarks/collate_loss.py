"""Collate + fusion loss: our sparse path vs a FuseChat-style dense path, same run.

Both variants get the same synthetic batch (pivot store + one remapped source, FuseChat's
pairwise setting: B samples up to L tokens, top-K of a V vocabulary) and the same student logits
``[B, L, V]`` (requires_grad), and run: collate the features into targets, MinCE per sequence,
cross-entropy against the renormalised top-k over the attention mask, backward to the logits.

- ours: :class:`fusion_train.fuse.data.FusionCollator` + :func:`fusion_train.fuse.losses.fusion_loss`
  (sparse ``[B, L, K]`` targets, gather).
- dense: re-implementation of FuseChat's collator / DistillTrainer algorithm: per position in a
  Python loop, ``softmax(top-k logits)`` in bf16 scattered into a zero ``[B, L, V]`` bf16 target
  per teacher (empty source positions copy the pivot's row, padding gets a one-hot on the pad id),
  stacked ``[B, L, V, T]``, the MinCE teacher gathered, then ``cross_entropy(logits, target)`` with
  soft targets. Its per-position rows are numpy arrays (cheaper than the Python lists a
  ``datasets`` row holds).

With ``--hidden H`` every variant starts one step earlier, from the final hidden states ``[B, L, H]`` and
the output layer's weight ``[V, H]`` (both requiring grad, their gradients unset as after Trainer's
``zero_grad``), and a third variant runs:

- fused: the same collator + :func:`fusion_train.fused_output.fused_fusion_loss` (output layer and loss
  in chunks of positions, no ``[B, L, V]`` logits); ours and dense first compute the logits ``hidden @ W.T``.

Then the extra memory includes what each path needs for the logits and their gradient (the point of the
fused loss) and the weight's gradient ``[V, H]`` that every path makes. ``--scaled VARIANT=BxL`` runs a
variant that would not fit in memory on a smaller batch and scales its time and extra memory linearly by
the number of positions (reported as ``scaled_from``): every ``[B, L, V]`` tensor of ours and dense is linear
in B*L. The weight gradient does not grow with the batch, but it is not part of the dense path's peak (checked at
H=4096, V=128k: 6,535 MB at B=1, 13,047 MB at B=2, intercept 23 MB), so the whole peak scales.

Each variant runs in a fresh subprocess. Peak memory is the resident-set high-water mark
(Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` right after the shared setup) minus the
RSS at the reset: the extra memory the collate + loss + backward needed on top of the logits.
Time: best of ``--repeat`` runs.

    python benchmarks/collate_loss.py                 # B=4 L=2048 V=32000 K=10
    python benchmarks/collate_loss.py --json
    python benchmarks/collate_loss.py --length 512    # quicker
    python benchmarks/collate_loss.py --hidden 256 --vocab 128256 --scaled dense=1x2048   # + fused
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PAD_ID = 0
EPILOG = """examples:
  python benchmarks/collate_loss.py
  python benchmarks/collate_loss.py --batch 4 --length 2048 --vocab 32000 --k 10 --json
  python benchmarks/collate_loss.py --hidden 256 --vocab 262144 --scaled dense=1x512 --scaled ours=1x2048 --repeat 1
"""


# ---- synthetic data ------------------------------------------------------------------------------


def make_features(batch: int, length: int, vocab: int, k: int, seed: int = 0):
    """Our dataset items: pivot (raw logits + lse) and a remapped source (log-probs, lse 0, holes)."""
    rng = np.random.default_rng(seed)
    lengths = [max(2, length - i * (length // 8)) for i in range(batch)]  # padding in the batch
    items = []
    for n in lengths:
        input_ids = rng.integers(0, vocab, n).astype(np.int32)
        loss_mask = np.zeros(n, dtype=bool)
        loss_mask[n // 4 :] = True
        teachers = []
        for t in range(2):
            base = rng.integers(0, vocab, (n, 1))
            ids = ((base + np.arange(k) * 3187) % vocab).astype(np.int32)  # distinct ids per row
            logits = np.sort(rng.standard_normal((n, k)).astype(np.float32) * 2, axis=-1)[:, ::-1].copy()
            lse = (logits[:, 0] + 1.5).astype(np.float32)
            if t == 1:  # remapped: log-probs, lse 0, 10% unmapped positions
                logits, lse = logits - lse[:, None], np.zeros_like(lse)
                holes = rng.random(n) < 0.1
                ids[holes] = -1
            teachers.append(
                {
                    "topk_ids": ids,
                    "topk_logits": logits,
                    "logsumexp": lse,
                    "token_ce": rng.random(n).astype(np.float32) * 3,
                    "seq_ce": np.float32(rng.random() * 3),
                }
            )
        items.append({"input_ids": input_ids, "loss_mask": loss_mask, "teachers": teachers})
    return items


def to_fusechat_features(items):
    """The same data in FuseChat's feature layout (per-position rows; empty rows where unmapped)."""
    out = []
    for it in items:
        pivot, src = it["teachers"]
        valid = src["topk_ids"] >= 0
        out.append(
            {
                "input_ids": it["input_ids"],
                "per_step_logits": pivot["topk_logits"],
                "per_step_indices": pivot["topk_ids"].astype(np.int64),
                "metric_ce": float(pivot["seq_ce"]),
                "per_step_aligned_logits_0": [row[m] for row, m in zip(src["topk_logits"], valid)],
                "per_step_aligned_indices_0": [row[m].astype(np.int64) for row, m in zip(src["topk_ids"], valid)],
                "metric_ce_aligned_0": float(src["seq_ce"]),
            }
        )
    return out


# ---- the two variants -------------------------------------------------------------------------


def dense_collate(features, vocab: int, max_length: int, temperature: float = 1.0):
    """FuseChat-style: dense bf16 [B, L, V] target per teacher, filled position by position."""
    import torch

    batch = len(features)
    attention = torch.zeros(batch, max_length, dtype=torch.long)
    base = torch.zeros(batch, max_length, vocab, dtype=torch.bfloat16)
    aligned = torch.zeros(batch, max_length, vocab, dtype=torch.bfloat16)
    for i, f in enumerate(features):
        n = len(f["per_step_logits"])
        attention[i, :n] = 1
        for j in range(max_length):
            if j < n:
                p = torch.softmax(torch.tensor(f["per_step_logits"][j], dtype=torch.bfloat16) / temperature, -1)
                base[i][j] = base[i][j].scatter_(-1, torch.tensor(f["per_step_indices"][j]), p)
                if len(f["per_step_aligned_indices_0"][j]) > 0:
                    q = torch.softmax(
                        torch.tensor(f["per_step_aligned_logits_0"][j], dtype=torch.bfloat16) / temperature, -1
                    )
                    aligned[i][j] = aligned[i][j].scatter_(-1, torch.tensor(f["per_step_aligned_indices_0"][j]), q)
                else:  # unmapped position: reuse the pivot's distribution
                    aligned[i][j] = base[i][j]
            else:  # padding
                base[i][j][PAD_ID] = 1.0
                aligned[i][j][PAD_ID] = 1.0
    return {
        "attention_mask": attention,
        "base_target_dist": base,
        "metric_ce": torch.tensor([f["metric_ce"] for f in features]),
        "aligned_target_dist_0": aligned,
        "metric_ce_aligned_0": torch.tensor([f["metric_ce_aligned_0"] for f in features]),
    }


def dense_loss(logits, batch):
    """FuseChat-style MinCE per sequence + soft-target cross-entropy over the attention mask."""
    import torch
    import torch.nn.functional as F

    bsz, length, vocab = logits.shape
    rewards = torch.stack(
        [1 / torch.exp(batch["metric_ce"].to(torch.bfloat16)), 1 / torch.exp(batch["metric_ce_aligned_0"].to(torch.bfloat16))],
        -1,
    )  # [B, 2]
    dists = torch.stack([batch["base_target_dist"], batch["aligned_target_dist_0"]], -1)  # [B, L, V, 2]
    index = rewards.argmax(-1).view(bsz, 1, 1, 1).expand(bsz, length, vocab, 1)
    target = torch.gather(dists, -1, index).squeeze(-1)
    ce = F.cross_entropy(logits.view(-1, vocab), target.view(-1, vocab).to(logits.dtype), reduction="none")
    mask = batch["attention_mask"]
    return (ce.view(bsz, -1) * mask).sum() / mask.sum()


def ours_collate(items):
    from fusion_train.fuse.data import FusionCollator

    return FusionCollator(pad_token_id=PAD_ID)(items)


def ours_loss(logits, batch):
    from fusion_train.fuse.losses import TeacherTargets, fusion_loss

    teachers = [TeacherTargets.from_dict(t) for t in batch["teachers"]]
    return fusion_loss(logits, teachers, mask=batch["fusion_mask"], granularity="sequence", kind="ce").loss


def fused_loss(hidden, weight, batch, chunk_mb: float):
    from fusion_train.fuse.losses import TeacherTargets
    from fusion_train.fused_output import OutputHead, fused_fusion_loss

    teachers = [TeacherTargets.from_dict(t) for t in batch["teachers"]]
    return fused_fusion_loss(hidden, OutputHead(weight), teachers, mask=batch["fusion_mask"], granularity="sequence",
                             kind="ce", chunk_mb=chunk_mb).loss


def _loss(variant, inputs, batch, args):
    """The variant's loss; from hidden states (``inputs = (hidden, weight)``) or from logits."""
    if variant == "fused":
        return fused_loss(*inputs, batch, args.chunk_mb)
    if isinstance(inputs, tuple):
        import torch.nn.functional as F

        logits = F.linear(*inputs)  # the output layer, [B, L, V]
    else:
        logits = inputs
    return dense_loss(logits, batch) if variant == "dense" else ours_loss(logits, batch)


# ---- measurement ----------------------------------------------------------------------------


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError("no %s in /proc/self/status" % field)


def _reset_peak() -> str:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
        return "VmHWM"
    except OSError:
        return "ru_maxrss"


def worker(args) -> dict:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    items = make_features(args.batch, args.length, args.vocab, args.k)
    features = to_fusechat_features(items) if args.worker == "dense" else items
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    if args.hidden:
        # the model's last step: final hidden states and the output layer (gradients unset, as after zero_grad)
        hidden = (torch.randn(args.batch, args.length, args.hidden) * 0.5).to(dtype).requires_grad_(True)
        weight = (torch.randn(args.vocab, args.hidden) * 4.0 / args.hidden ** 0.5).to(dtype).requires_grad_(True)
        inputs = (hidden, weight)
        leaves = [hidden, weight]
    else:
        inputs = (torch.randn(args.batch, args.length, args.vocab) * 2).to(dtype).requires_grad_(True)
        # the gradient buffer is part of both runs; allocate it before the baseline is taken
        inputs.grad = torch.zeros_like(inputs)
        leaves = []
    times_collate, times_loss, cpu, loss_value = [], [], [], None
    method = _reset_peak()
    base_kb = _rss_kb("VmRSS") if method == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(args.repeat):
        for leaf in leaves:
            leaf.grad = None
        c0, t0 = time.process_time(), time.perf_counter()
        batch = dense_collate(features, args.vocab, args.length) if args.worker == "dense" else ours_collate(features)
        t1 = time.perf_counter()
        loss = _loss(args.worker, inputs, batch, args)
        loss.backward()
        t2, c2 = time.perf_counter(), time.process_time()
        times_collate.append(t1 - t0)
        times_loss.append(t2 - t1)
        cpu.append(c2 - c0)
        loss_value = float(loss)
        del batch, loss
    peak_kb = _rss_kb("VmHWM") if method == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "variant": args.worker,
        "collate_s": min(times_collate),
        "loss_fwd_bwd_s": min(times_loss),
        "total_s": min(c + l for c, l in zip(times_collate, times_loss)),
        "total_s_all": [c + l for c, l in zip(times_collate, times_loss)],
        # CPU seconds of the process (all threads): less sensitive than wall time to other load on the machine
        "cpu_s": min(cpu),
        "peak_extra_mb": (peak_kb - base_kb) / 1024.0,
        # the weight's gradient [V, H]: every path makes it, its size does not depend on the batch
        "weight_grad_mb": (args.vocab * args.hidden * (2 if args.dtype == "bfloat16" else 4) / 2**20
                           if args.hidden else 0.0),
        "memory_method": method,
        "loss": loss_value,
    }


def _parse_scaled(values):
    out = {}
    for v in values or []:
        try:
            name, shape = v.split("=")
            b, length = (int(x) for x in shape.lower().split("x"))
        except ValueError:
            raise SystemExit("collate_loss: --scaled takes VARIANT=BxL, got %r" % v)
        if name not in ("dense", "ours", "fused"):
            raise SystemExit("collate_loss: --scaled variant must be dense, ours or fused, got %r" % name)
        out[name] = (b, length)
    return out


def _run_variant(variant, args, argv, scaled):
    passed = [a for a in argv if a != "--json"]
    cmd = [sys.executable, __file__, "--worker", variant] + passed
    factor = 1.0
    if variant in scaled:
        b, length = scaled[variant]
        cmd += ["--batch", str(b), "--length", str(length)]  # the last flag wins
        factor = (args.batch * args.length) / float(b * length)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        print("collate_loss: %s worker failed (exit %d)" % (variant, proc.returncode), file=sys.stderr)
        return None
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    if variant in scaled:
        r["scaled_from"] = "%dx%d" % scaled[variant]
        r["scale"] = factor
        for key in ("collate_s", "loss_fwd_bwd_s", "total_s", "cpu_s", "peak_extra_mb"):
            r["measured_" + key] = r[key]
            r[key] = r[key] * factor
        r["total_s_all"] = [t * factor for t in r["total_s_all"]]
        r.pop("loss")  # another batch: not comparable
    return r


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2, help="runs per variant; best time reported")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in each worker")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="student logits dtype")
    parser.add_argument("--hidden", type=int, default=0,
                        help="start from hidden states [B, L, H] and a [V, H] output layer and add the fused "
                        "variant (0: from the logits, dense and ours only)")
    parser.add_argument("--chunk-mb", type=float, default=256.0, help="fused: memory budget of one chunk")
    parser.add_argument("--scaled", action="append", metavar="VARIANT=BxL",
                        help="run VARIANT on a B x L batch and scale its time and memory to the full batch")
    parser.add_argument("--variants", default=None,
                        help="comma-separated subset of dense,ours,fused to run (default: all that apply)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--worker", choices=("ours", "dense", "fused"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        if args.worker == "fused" and not args.hidden:
            raise SystemExit("collate_loss: the fused variant needs --hidden")
        print(json.dumps(worker(args)))
        return 0

    argv = list(argv if argv is not None else sys.argv[1:])
    scaled = _parse_scaled(args.scaled)
    variants = ("dense", "ours", "fused") if args.hidden else ("dense", "ours")
    if args.variants:
        wanted = args.variants.split(",")
        unknown = [v for v in wanted if v not in variants]
        if unknown or "ours" not in wanted:
            raise SystemExit("collate_loss: --variants takes ours plus dense and/or %s, got %r"
                             % ("fused (with --hidden)" if args.hidden else "nothing else", args.variants))
        variants = tuple(v for v in variants if v in wanted)
    results = {}
    passed = []
    skip = False
    for a in argv:  # the workers get every flag but --scaled / --variants and their values
        if skip:
            skip = False
        elif a in ("--scaled", "--variants"):
            skip = True
        elif not a.startswith(("--scaled=", "--variants=")):
            passed.append(a)
    for variant in variants:
        results[variant] = _run_variant(variant, args, passed, scaled)
        if results[variant] is None:
            return 1
    d, o = results.get("dense"), results["ours"]
    report = {
        "config": {k: getattr(args, k) for k in ("batch", "length", "vocab", "k", "repeat", "threads", "dtype",
                                                 "hidden", "chunk_mb")},
        "input": "hidden states + output layer" if args.hidden else "logits",
        "ours": o,
    }
    if d is not None:
        report.update({
            "dense": d,
            "speedup_collate": d["collate_s"] / o["collate_s"],
            "speedup_loss": d["loss_fwd_bwd_s"] / o["loss_fwd_bwd_s"],
            "speedup_total": d["total_s"] / o["total_s"],
            "memory_ratio": d["peak_extra_mb"] / max(o["peak_extra_mb"], 1e-3),
        })
        if "loss" in d and "loss" in o:
            report["loss_rel_diff"] = abs(d["loss"] - o["loss"]) / abs(d["loss"])
    if "fused" in results:
        f = results["fused"]
        report["fused"] = f
        report["fused_time_vs_ours"] = f["total_s"] / o["total_s"]
        report["fused_cpu_vs_ours"] = f["cpu_s"] / o["cpu_s"]
        if d is not None:
            report["fused_memory_pct_of_dense"] = 100.0 * f["peak_extra_mb"] / d["peak_extra_mb"]
            # the same without the weight gradient that every path makes alike (large at H=4096: 2.1 GB at 128k)
            wg = f.get("weight_grad_mb", 0.0)
            if wg:
                report["fused_memory_pct_of_dense_without_weight_grad"] = (
                    100.0 * max(f["peak_extra_mb"] - wg, 0.0) / max(d["peak_extra_mb"] - wg, 1e-3))
        report["fused_memory_pct_of_ours"] = 100.0 * f["peak_extra_mb"] / o["peak_extra_mb"]
        if "loss" in f and "loss" in o:
            report["fused_loss_rel_diff_vs_ours"] = abs(f["loss"] - o["loss"]) / abs(o["loss"])
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        c = report["config"]
        print("collate + MinCE fusion loss (fwd+bwd), B=%d L=%d V=%d K=%d, 2 teachers, %s %s, %d threads"
              % (c["batch"], c["length"], c["vocab"], c["k"], c["dtype"],
                 ("from hidden states H=%d" % c["hidden"]) if c["hidden"] else "logits", c["threads"]))
        print("%-6s %10s %12s %10s %8s %14s %10s  %s" % ("", "collate s", "loss f+b s", "total s", "CPU s",
                                                         "peak extra MB", "loss", ""))
        for name in variants:
            r = results[name]
            print("%-6s %10.3f %12.3f %10.3f %8.1f %14.1f %10s  %s"
                  % (name, r["collate_s"], r["loss_fwd_bwd_s"], r["total_s"], r["cpu_s"], r["peak_extra_mb"],
                     "%.5f" % r["loss"] if "loss" in r else "-",
                     ("scaled x%.1f from %s" % (r["scale"], r["scaled_from"])) if "scaled_from" in r else ""))
        if d is not None:
            print("ours vs dense: collate %.1fx faster, loss %.1fx faster, total %.1fx faster, %.1fx less peak "
                  "memory (%s)" % (report["speedup_collate"], report["speedup_loss"], report["speedup_total"],
                                   report["memory_ratio"], d["memory_method"]))
        if "loss_rel_diff" in report:
            print("loss values differ by %.2e relative (dense uses bf16 targets and rewards)" % report["loss_rel_diff"])
        if "fused" in results:
            print("fused: %.2fx the time (%.2fx the CPU time) of ours; extra memory %s%.1f %% of ours"
                  % (report["fused_time_vs_ours"], report["fused_cpu_vs_ours"],
                     "%.1f %% of the dense path's, " % report["fused_memory_pct_of_dense"]
                     if "fused_memory_pct_of_dense" in report else "", report["fused_memory_pct_of_ours"]))
            if "fused_memory_pct_of_dense_without_weight_grad" in report:
                print("without the weight gradient [V, H] every path makes (%.0f MB): %.1f %% of the dense path's"
                      % (f["weight_grad_mb"], report["fused_memory_pct_of_dense_without_weight_grad"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
