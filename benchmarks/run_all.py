"""Run every speed / storage benchmark and write one table to benchmarks/RESULTS.md.

Each benchmark runs in its own subprocess with ``--json``; every ratio is against a baseline
measured in the same run of that benchmark. ``--quick`` uses smaller inputs (minutes in total on
2 cores); the default uses each benchmark's own full-size defaults.

    python benchmarks/run_all.py --quick            # writes benchmarks/RESULTS.md
    python benchmarks/run_all.py --only align,vocab --out /tmp/results.md
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (script, quick args, full args, extractor)
def _align(r):
    rows = []
    for x in r["results"]:
        rows += [
            (f"align: full DTW {x['pair']} ({x['pivot_tokens']}x{x['source_tokens']} tokens, 1 thread)",
             f"{x['cpp_full_s'] * 1e3:.1f} ms", f"{x['speedup_full']:.0f}x vs Python DTW", "≥ 100x", x["goal_full_100x"]),
            (f"align: banded DTW {x['pair']}", f"{x['cpp_banded_s'] * 1e3:.2f} ms",
             f"{x['speedup_banded']:.0f}x vs Python DTW", "≥ 1000x", x["goal_banded_1000x"]),
            (f"align: span {x['pair']}", f"{x['span_tokens_per_s_core'] / 1e6:.1f} M tok/s (long input), "
             f"{x['span_tokens_per_s_api'] / 1e6:.1f} M tok/s (per call)", "—", "≥ 10 M tok/s/core", x["goal_span_10M"]),
        ]
    return rows


def _vocab(r):
    return [("vocab: MinED mistral-tekken -> openchat-3.5 (all rows, %s threads)" % r.get("threads", "all"),
             f"{r['tokalign_s']:.2f} s",
             f"{r['speedup_vs_rapidfuzz']:.1f}x vs rapidfuzz cdist ({r['rapidfuzz_rows_mode']}); "
             f"{r['speedup_vs_fusellm_loop']:.0f}x vs FuseLLM-style loop", "≤ 10 s", r["tokalign_s"] <= 10)]


def _stats(r):
    return [(f"stats: build-stats {r['pair']} ({r['pivot_tokens']} pivot tokens, tokenization included)",
             f"{r['end_to_end_pivot_tok_per_s'] / 1e6:.2f} M tok/s",
             f"{r['speedup_vs_fusechat_style']:.0f}x vs FuseChat-style Python; tokenizers alone "
             f"{r['pivot_tokens'] / r['phase_tokenizers_engine_s'] / 1e6:.2f} M tok/s", "≥ 1 M tok/s (or the bound)",
             r["goal_1M_tok_per_s"])]


def _store(r):
    o = r["layouts"]["tokalign"]
    return [(f"store: {r['tokens']} tokens, K={r['k']}", f"{o['bytes_per_token']:.1f} B/token, "
             f"{o['read_tokens_per_s'] / 1e6:.2f} M tok/s read",
             f"{o['size_vs_fusechat']:.2f}x smaller, {o['read_speed_vs_fusechat']:.1f}x faster read than FuseChat Arrow",
             "≥ 3x smaller, ≥ 10x faster", r["goals"]["smaller_3x"] and r["goals"]["read_10x"])]


def _remap(r):
    rows = []
    a = r.get("array")
    if a:
        rows.append((f"remap: array kernel, {a['positions']} positions, K={a['k']}->{a['k_out']}",
                     f"{a['kernel_positions_per_s'] / 1e6:.2f} M pos/s",
                     f"{a['speedup_vs_reference']:.0f}x vs Python reference", "—", True))
    s = r.get("store")
    if s:
        rows.append((f"remap: store to store (`tokalign remap`), {s['pivot_positions']} positions",
                     f"{s['cli_positions_per_s'] / 1e6:.2f} M pos/s (engine {s['cli_engine_positions_per_s'] / 1e6:.2f}; "
                     f"2-core CPU bound {s['engine_bound_2_cores_positions_per_s'] / 1e6:.1f}"
                     + ("; the store I/O alone bounds it at %.1f" % (
                         s["store_io_floor_cpu_us_per_position"]["bound_2_cores_store_io_only_as_written_positions_per_s"] / 1e6)
                        if "store_io_floor_cpu_us_per_position" in s else "") + ")",
                     f"{s['speedup_cli_vs_baseline']:.0f}x vs the per-sample path", "≥ 5 M pos/s",
                     s["cli_positions_per_s"] >= 5e6))
    return rows


def _collate(r):
    return [("fuse: collate + sparse loss, B=4 L=2048 V=32k", f"{r['ours']['total_s']:.2f} s, "
             f"{r['ours']['peak_extra_mb']:.0f} MB", f"{r['speedup_total']:.1f}x faster, {r['memory_ratio']:.1f}x less "
             "memory than FuseChat-style dense", "faster, less memory",
             r["speedup_total"] > 1 and r["memory_ratio"] > 1)]


def _merge(r):
    return [(f"merge: {x['method']} ({r['n_models']} x {r['model_mb']:.0f} MB fp32, {r['entry']} entry, {r['threads']} thread)", f"{x['ours']['seconds']:.1f} s, "
             f"{x['ours']['peak_rss_mb']:.0f} MB", f"{x['time_ratio']:.2f}x time, {x['rss_ratio']:.2f}x RSS of mergekit",
             "≤ 0.33x time, ≤ 1x RSS", x["time_ratio"] <= 1 / 3 and x["rss_ratio"] <= 1) for x in r["results"]]


BENCHMARKS = {
    "align": ("align_speed.py", ["--span-tokens", "500000"], [], _align),
    "vocab": ("vocab_speed.py", [], ["--rf-full"], _vocab),
    "stats": ("stats_speed.py", ["--quick", "--baseline-items", "5"], [], _stats),
    "store": ("store_io.py", ["--tokens", "500000"], ["--tokens", "1000000"], _store),
    "remap": ("remap_speed.py", ["--sequences", "1024"], [], _remap),
    "collate": ("collate_loss.py", [], [], _collate),
    "merge": ("merge_speed.py", [], [], _merge),  # the issue's ~600 MB models even in --quick (~2.5 min)
}


def _command(name: str, quick: bool) -> str:
    script, quick_args, full_args, _ = BENCHMARKS[name]
    return "python benchmarks/%s %s" % (script, " ".join([*(quick_args if quick else full_args), "--json"]))


def _machine() -> str:
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} cores ({model}), {platform.system()} {platform.release()}, load {load:.1f} at start"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller inputs")
    ap.add_argument("--only", help="comma-separated subset of: " + ", ".join(BENCHMARKS))
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"), help="markdown file to write (default RESULTS.md)")
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        ap.error("unknown benchmark(s): %s" % ", ".join(unknown))
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    raw, failures = {}, []
    json_path = Path(args.out).with_suffix(".json")
    if args.only and json_path.is_file():  # refresh some rows, keep the others from the last run
        previous = json.loads(json_path.read_text(encoding="utf-8"))
        raw = {k: v for k, v in previous.items() if k in BENCHMARKS}
    machine = _machine()
    for name in names:
        script, quick, full, extract = BENCHMARKS[name]
        cmd = [sys.executable, str(HERE / script), *(quick if args.quick else full), "--json"]
        print("== %s: %s" % (name, _command(name, args.quick)), flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE.parent)
        took = time.perf_counter() - t0
        out = proc.stdout
        try:
            report = json.loads(out[out.index("{"):out.rindex("}") + 1])
        except ValueError:
            report = None
        if proc.returncode != 0 or report is None:
            failures.append(name)
            print("   FAILED (exit %d): %s" % (proc.returncode, (proc.stderr or out).strip().splitlines()[-1:]))
            continue
        raw[name] = report
        for row in extract(report):
            print("   %s: %s; %s [%s]" % (row[0], row[1], row[2], "met" if row[4] else "NOT met"))
        print("   (%.0f s)" % took)
    rows = [row for name in BENCHMARKS if name in raw for row in BENCHMARKS[name][3](raw[name])]
    commands = {name: _command(name, args.quick) for name in BENCHMARKS if name in raw}
    lines = [
        "# Benchmark results",
        "",
        "Generated by `python benchmarks/run_all.py%s` on %s, %s UTC." % (
            " --quick" if args.quick else "", machine, datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M")),
        "Every ratio is against a baseline measured in the same run of the same script.",
        "",
        "| benchmark | ours | vs baseline | goal | met |",
        "|---|---|---|---|---|",
    ]
    lines += ["| %s | %s | %s | %s | %s |" % (a, b, c, d, "yes" if e else "**no**") for a, b, c, d, e in rows]
    lines += ["", "Commands:", ""] + ["- %s: `%s`" % (n, c) for n, c in commands.items()]
    if failures:
        lines += ["", "Failed to run: " + ", ".join(failures)]
    quality = HERE / "results" / "fusion_quality.md"
    if quality.is_file():  # a 35-minute run, not repeated here: linked with its own command and figures
        lines += ["", "## Fusion quality (EM vs MinED vs MS)", "",
                  "`python -m benchmarks.fusion_quality` (default configuration, ~35 min on 2 cores; `--quick` ~7 min):",
                  "full table, diagnostics and an honest reading in [results/fusion_quality.md](results/fusion_quality.md)."]
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    json_path.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    print("wrote %s" % args.out)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
