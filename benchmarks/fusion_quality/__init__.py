"""A miniature FuseChat reproduction: does MS beat MinED beat EM for pairwise fusion? Measured.

FuseChat (Figure 6) fuses a source chat model (InternLM2-Chat) into a pivot (OpenChat-3.5) with
lambda = 0.9 SFT + 0.1 MinCE distillation, and reports MS > MinED > EM as vocabulary maps. This benchmark
makes that claim checkable on one machine with the REAL tokenizers and the REAL tokalign pipeline:

 1. data      alpacaeval_parallel + code_math from ../shared/corpora, split by prompt group into
              pretrain / fusion / eval (held out), each text cut to ~seq_len pivot tokens;
 2. models    two small Llama causal LMs trained from scratch on the pretrain split: the pivot with
              openchat-3.5's vocabulary, a clearly stronger source (wider, more steps) with
              internlm2's (or qwen2 / llama3) vocabulary;
 3. pipeline  tokalign.dump.dump_logits for both on the fusion split, build-stats, vocab-map
              em / mined / ms, ``tokalign.remap.run_stores``, then ``fusion_train.fuse.run`` (lambda 0.9,
              MinCE) of the pivot with the source under each map, plus an SFT-only baseline (lambda 1.0)
              on the same data, steps and seeds -- the library entry points the CLIs call;
 4. report    held-out cross-entropy / perplexity of every target on pivot tokens (mean +- std over
              seeds, paired differences to SFT), alignment diagnostics per map, a markdown table, a
              JSON file and a PNG figure in benchmarks/results/.

Every stage is cached under benchmarks/.cache/ by a hash of the configuration it depends on, so an
interrupted run resumes and a changed option recomputes only what it affects.

  python -m benchmarks.fusion_quality --quick            # ~10 min on 2 CPU cores (pipeline smoke run)
  python -m benchmarks.fusion_quality                    # default: <= 60 min on 2 CPU cores
  python -m benchmarks.fusion_quality --config gpu --device cuda --seeds 5
  python benchmarks/fusion_quality --source qwen2 --variants sft,em,mined,ms,self --json   # as a folder

The real-model configuration (the CLI default since issue 16; ``real``, ``real-reduced``, ``real-reduced-full``,
``real-gpu``) fuses
Gemma-3-270M into SmolLM2-135M-Instruct, both pretrained and fetched as GGUF files from PyPI, and reports
held-out bits per byte of chat responses: ``real`` (the data, dumps, maps and training) and ``real_run`` (the
stages in order, the report). ``compare`` says whether two runs order the variants alike (top layers vs full
fine-tuning). The tiny from-scratch configurations stay as ``--quick`` / ``--config default``.

Modules, one per stage: config (presets, cache hashing), context (run context and stage cache), data,
models, pipeline, evaluate, report, run (the stages in order), cli; real, real_run, compare.
"""
from .cli import build_parser, config_from_args, main
from .config import (CACHE_VERSION, CORPORA, DEFAULT_VARIANTS, KIND_LABELS, MAP_METHODS, PIVOT, SOURCE_FED_KINDS, SOURCES,
                     VARIANTS, BenchConfig, ModelSpec, TrainSpec, config_hash, config_presets, json_default,
                     results_stem)
from .context import Bench
from .data import prepare_data, read_texts, split_of
from .evaluate import diagnose_remapped, mean_std, ordering_verdict, remap_diagnostics, summarize_targets
from .models import lr_at, new_llama, pack_blocks, pretrain
from .pipeline import SeqCEOverride, build_maps, dump_store, fuse, remap_store, source_teacher
from .report import format_markdown, plot_results, reading_of, write_outputs
from .run import run_benchmark

__all__ = ["Bench", "BenchConfig", "CACHE_VERSION", "CORPORA", "DEFAULT_VARIANTS", "KIND_LABELS", "MAP_METHODS",
           "ModelSpec", "PIVOT", "SOURCES", "SOURCE_FED_KINDS", "SeqCEOverride", "TrainSpec", "VARIANTS",
           "build_maps", "build_parser", "config_from_args", "config_hash", "config_presets", "diagnose_remapped",
           "dump_store", "format_markdown", "fuse", "json_default", "lr_at", "main", "mean_std",
           "new_llama", "ordering_verdict", "pack_blocks", "plot_results", "prepare_data", "pretrain", "read_texts",
           "reading_of", "remap_diagnostics", "remap_store", "results_stem", "run_benchmark", "source_teacher",
           "split_of", "summarize_targets", "write_outputs"]
