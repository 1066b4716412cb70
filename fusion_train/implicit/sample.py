"""``fusion-train sample``: N responses per prompt from every source model (FuseChat-3.0's sampling stage).

Library entry point :func:`sample` (options in :class:`SampleOptions`). Output: one JSON line per response,
the prompt's fields plus ``model``, ``sample``, ``seed``, ``text``, ``finish_reason``, ``new_tokens``.

Resumable: rows already in ``out`` (prompt x model x sample) are not generated again. Work is cut into
batches the same way on every run (per model, prompts in input order, ``n`` samples each, ``batch_size``
units a batch, seed ``stable_seed(seed, model, batch index)``); a batch with any row missing is generated
whole and only its missing rows are written, so a run killed at any point and resumed writes the same file,
byte for byte, as one that was never interrupted. Under ``torchrun`` (``RANK``/``WORLD_SIZE``), rank r takes
the prompts whose index i has ``i % world == r`` and writes ``OUT`` with ``.rank{r}-of-{w}`` before its
suffix (``score --in`` takes all the rank files).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from tokalign.errors import TokalignError

from .engines import ENGINES, ModelSpec, open_engine, stable_seed, unit
from .formats import prompt_fields, read_prompts
from .jsonl import Appender, write_json_atomic

__all__ = ["SampleOptions", "sample", "resolve_models", "PAPER_SAMPLING", "summary_line", "rank_path"]

#: FuseChat-3.0's sampling parameters for most sources (Qwen-family models: 0.7 / 0.8 / 1.05, which their
#: generation_config.json holds: ``sampling_defaults="generation_config"`` picks those up)
PAPER_SAMPLING = {"temperature": 0.8, "top_p": 0.95, "top_k": 0, "repetition_penalty": 1.0}
SAMPLING_DEFAULTS = ("paper", "generation_config")
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "repetition_penalty")


@dataclass
class SampleOptions:
    """Options of :func:`sample`. ``models``: model folders or :class:`ModelSpec`; ``model_config``: a YAML/JSON
    file ``{models: [{path, name?, temperature?, top_p?, top_k?, repetition_penalty?, chat_template?,
    max_new_tokens?}]}`` whose entries are added after ``models``. A sampling parameter comes from, last wins:
    the defaults (``paper``: 0.8 / 0.95 / top-k off / 1.0; ``generation_config``: the model's
    generation_config.json where it sets one), the global options here, the model's own entry."""

    prompts: Union[str, Path]
    out: Union[str, Path]
    models: Sequence[Union[str, ModelSpec]] = ()
    model_config: Optional[Union[str, Path]] = None
    n: int = 5
    max_new_tokens: int = 1024
    batch_size: int = 8
    seed: int = 0
    sampling_defaults: str = "paper"
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    repetition_penalty: Optional[float] = None
    engine: str = "transformers"
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False
    allow_pickle: bool = False      # load model folders whose only weights are pickled (*.bin): trusted files only
    overwrite: bool = False
    rank: Optional[int] = None
    world_size: Optional[int] = None
    progress: bool = True
    durable: bool = False


def rank_path(out: Path, rank: int, world: int) -> Path:
    return out if world <= 1 else out.with_name("%s.rank%d-of-%d%s" % (out.stem, rank, world, out.suffix))


def _load_model_config(path: Union[str, Path]) -> List[ModelSpec]:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TokalignError("--model-config %s: %s" % (path, str(exc).splitlines()[0])) from None
    entries = data.get("models") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise TokalignError("--model-config %s: expected {models: [{path: ..., ...}, ...]}" % path)
    names = {f.name for f in dataclasses.fields(ModelSpec)}
    specs = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "path" not in e:
            raise TokalignError("--model-config %s: models[%d] needs a path" % (path, i))
        unknown = set(e) - names
        if unknown:
            raise TokalignError("--model-config %s: models[%d]: unknown keys %s (known: %s)"
                                % (path, i, ", ".join(sorted(unknown)), ", ".join(sorted(names))))
        specs.append(ModelSpec(**e))
    return specs


def _generation_config_defaults(path: str) -> Dict[str, Any]:
    try:
        cfg = json.loads((Path(path) / "generation_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: cfg[k] for k in SAMPLING_KEYS if isinstance(cfg.get(k), (int, float))}


def resolve_models(options: SampleOptions) -> List[ModelSpec]:
    """The models with every sampling parameter filled in (see :class:`SampleOptions`)."""
    if options.sampling_defaults not in SAMPLING_DEFAULTS:
        raise TokalignError("sampling_defaults must be one of %s" % ", ".join(SAMPLING_DEFAULTS))
    specs = [m if isinstance(m, ModelSpec) else ModelSpec(path=m) for m in options.models]
    if options.model_config:
        specs += _load_model_config(options.model_config)
    if not specs:
        raise TokalignError("no models: give --models and/or --model-config")
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TokalignError("model names must be unique (%s repeats; set name: in --model-config)" % ", ".join(dupes))
    resolved = []
    for s in specs:
        if options.engine != "llama.cpp" and not Path(s.path).is_dir():
            raise TokalignError("model %s: %s is not a model folder" % (s.name, s.path))
        values = dict(PAPER_SAMPLING)
        if options.sampling_defaults == "generation_config":
            values.update(_generation_config_defaults(s.path))
        values.update({k: getattr(options, k) for k in SAMPLING_KEYS if getattr(options, k) is not None})
        values.update({k: getattr(s, k) for k in SAMPLING_KEYS if getattr(s, k) is not None})
        values["max_new_tokens"] = s.max_new_tokens or options.max_new_tokens
        resolved.append(dataclasses.replace(s, **values))
    return resolved


def _meta(options: SampleOptions, specs: Sequence[ModelSpec], world: int) -> Dict[str, Any]:
    """What a resumed run must share with the run that wrote the file (else the rows would mix)."""
    return {"n": options.n, "seed": options.seed, "batch_size": options.batch_size, "engine": options.engine,
            "world_size": world, "models": [dataclasses.asdict(s) for s in specs]}


def _rank_world(options: SampleOptions):
    rank = options.rank if options.rank is not None else int(os.environ.get("RANK", "0"))
    world = options.world_size if options.world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    if world < 1 or not 0 <= rank < world:
        raise TokalignError("rank %d of world size %d" % (rank, world))
    return rank, world


def sample(options: SampleOptions) -> Dict[str, Any]:
    """Sample ``options.n`` responses per prompt from every model into ``options.out`` (resuming it).

    Returns a report: out, prompts, models, rows written / skipped (already there), new tokens, seconds,
    tokens per second (per model too). Raises TokalignError on bad input before any model loads."""
    if options.n < 1 or options.batch_size < 1 or options.max_new_tokens < 1:
        raise TokalignError("--n, --batch-size and --max-new-tokens must be at least 1")
    if options.engine not in ENGINES:
        raise TokalignError("--engine must be one of %s" % ", ".join(ENGINES))
    prompts = read_prompts(options.prompts)
    specs = resolve_models(options)
    rank, world = _rank_world(options)
    mine = [p for i, p in enumerate(prompts) if i % world == rank]
    out = rank_path(Path(options.out), rank, world)
    meta_path = out.with_name(out.name + ".meta.json")
    meta = _meta(options, specs, world)
    if options.overwrite:
        for p in (out, meta_path):
            if p.exists():
                p.unlink()
    if out.exists() and meta_path.exists():
        old = json.loads(meta_path.read_text(encoding="utf-8"))
        if old != meta:
            changed = sorted(k for k in meta if old.get(k) != meta[k])
            raise TokalignError("%s was written with other options (%s differ): choose another --out, or pass "
                                "--overwrite to start over" % (out, ", ".join(changed)))
    elif out.exists() and out.stat().st_size > 0:
        raise TokalignError("%s exists without %s: choose another --out, or pass --overwrite" % (out, meta_path.name))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(meta_path, meta)

    known = {p["prompt_id"] for p in mine}
    names = {s.name for s in specs}
    report: Dict[str, Any] = {"out": str(out), "prompts": len(mine), "models": {}, "written": 0, "skipped": 0,
                              "new_tokens": 0, "seconds": 0.0, "engine": options.engine}
    with Appender(out, durable=options.durable) as sink:
        done = set()
        for row in sink.existing:
            key = (str(row.get("prompt_id")), row.get("model"), row.get("sample"))
            if key[0] not in known or key[1] not in names or not isinstance(key[2], int) or key[2] >= options.n:
                raise TokalignError("%s holds a row (%s, %s, #%s) this run would not write: choose another --out, "
                                    "or pass --overwrite" % (out, key[0], key[1], key[2]))
            done.add(key)
        total_units = len(mine) * options.n * len(specs)
        bar = _progress(total_units, options.progress)
        bar.update(len(done))
        start_all = time.monotonic()
        for spec in specs:
            units = [(p, s) for p in mine for s in range(options.n)]
            batches = [units[i:i + options.batch_size] for i in range(0, len(units), options.batch_size)]
            todo = [(i, b) for i, b in enumerate(batches)
                    if any((p["prompt_id"], spec.name, s) not in done for p, s in b)]
            stats = {"written": 0, "new_tokens": 0, "seconds": 0.0, "sampling": spec.sampling()}
            report["models"][spec.name] = stats
            report["skipped"] += sum(1 for p, s in units if (p["prompt_id"], spec.name, s) in done)
            if not todo:
                continue
            engine = open_engine(options.engine, spec, dtype=options.dtype, device=options.device,
                                 trust_remote_code=options.trust_remote_code, allow_pickle=options.allow_pickle)
            try:
                for index, batch in todo:
                    batch_seed = stable_seed(options.seed, spec.name, index)
                    work = [unit(p, s, stable_seed(options.seed, spec.name, p["prompt_id"], s)) for p, s in batch]
                    t0 = time.monotonic()
                    gens = engine.generate(work, batch_seed, spec.max_new_tokens or options.max_new_tokens)
                    stats["seconds"] += time.monotonic() - t0
                    rows = []
                    for u, g in zip(work, gens):
                        if (u.prompt["prompt_id"], spec.name, u.sample) in done:
                            continue
                        rows.append(dict(prompt_fields(u.prompt), model=spec.name, sample=u.sample,
                                         seed=u.seed if options.engine != "transformers" else batch_seed,
                                         text=g.text, finish_reason=g.finish_reason, new_tokens=g.new_tokens))
                        stats["new_tokens"] += g.new_tokens
                    stats["written"] += sink.write(rows)
                    bar.update(len(rows))
                    tps = stats["new_tokens"] / stats["seconds"] if stats["seconds"] else 0.0
                    bar.set_postfix_str("%s %.0f tok/s" % (spec.name, tps))
            finally:
                engine.close()
        bar.close()
    report["seconds"] = time.monotonic() - start_all
    for stats in report["models"].values():
        stats["tokens_per_second"] = stats["new_tokens"] / stats["seconds"] if stats["seconds"] else None
        report["written"] += stats["written"]
        report["new_tokens"] += stats["new_tokens"]
    gen_seconds = sum(s["seconds"] for s in report["models"].values())
    report["tokens_per_second"] = report["new_tokens"] / gen_seconds if gen_seconds else None
    return report


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="resp", disable=not enabled, dynamic_ncols=True, leave=False)


def summary_line(report: Dict[str, Any]) -> str:
    tps = report.get("tokens_per_second")
    return "sampled %d responses (%d already there) from %d models over %d prompts, %d new tokens%s -> %s" % (
        report["written"], report["skipped"], len(report["models"]), report["prompts"], report["new_tokens"],
        (", %.0f tok/s" % tps) if tps else "", report["out"])
