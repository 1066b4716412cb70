"""What the staged quality benchmarks (``benchmarks.fusion_quality``, ``benchmarks.implicit_quality``) share: a
stage cache with a timing log, and the atomic writers of their reports (JSON, markdown, PNG)."""
from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional


class StageCache:
    """A run's cache folder of stages, each ``cache/<kind>-<hash(key)>``, and the time spent per stage label.

    Subclasses set ``log_prefix`` and give :meth:`key_hash` / :meth:`json_default` (each benchmark keeps its own
    hashing, so that existing caches stay valid).
    """

    log_prefix = "benchmark"

    def _init_cache(self, cache_dir: Path, log: Callable[[str], None]) -> None:
        self.cache = Path(cache_dir)
        self.cache.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.timings: Dict[str, float] = {}

    @staticmethod
    def key_hash(key: Any) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    @staticmethod
    def json_default(obj: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    @contextmanager
    def stage(self, label: str):
        t0 = time.perf_counter()
        self.log("[%s] %s ..." % (self.log_prefix, label))
        yield
        dt = time.perf_counter() - t0
        self.timings[label] = self.timings.get(label, 0.0) + dt
        self.log("[%s] %s done in %.1fs" % (self.log_prefix, label, dt))

    def folder(self, kind: str, key: Any) -> Path:
        return self.cache / ("%s-%s" % (kind, self.key_hash(key)))

    def _write_key(self, folder: Path, key: Any) -> None:
        (folder / "key.json").write_text(json.dumps(key, indent=1, sort_keys=True, default=self.json_default) + "\n")

    def cached(self, kind: str, key: Any, build: Callable[[Path], None]) -> Path:
        """``cache/<kind>-<hash(key)>``: built once into a temporary folder then renamed (atomic; an interrupted
        build leaves only a ``.tmp`` folder that the next run deletes)."""
        path = self.folder(kind, key)
        if (path / ".done").exists():
            return path
        tmp = path.with_name(path.name + ".tmp")
        for p in (tmp, path):
            if p.exists():
                shutil.rmtree(p)
        tmp.mkdir(parents=True)
        self._write_key(tmp, key)
        build(tmp)
        (tmp / ".done").write_text("ok\n")
        os.replace(tmp, path)
        return path

    def resumable(self, kind: str, key: Any, build: Callable[[Path], None]) -> Path:
        """Like :meth:`cached`, but the folder is kept when a build is killed: the build resumes in it
        (``fusion-train sample`` resumes inside its output file)."""
        path = self.folder(kind, key)
        if (path / ".done").exists():
            return path
        path.mkdir(parents=True, exist_ok=True)
        self._write_key(path, key)
        build(path)
        (path / ".done").write_text("ok\n")
        return path


def config_to_dict(cfg: Any) -> Dict[str, Any]:
    """A configuration dataclass as a JSON-ready dict (its tuple fields as lists), for the results files."""
    from dataclasses import asdict

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def seed_bars(ax, means, stds, per_seed, color: str = "#8fb3d9"):
    """One bar per item (mean ± std) with its per-seed values as dots; returns the x positions."""
    import numpy as np

    x = np.arange(len(means))
    ax.bar(x, means, yerr=stds, color=color, capsize=4)
    for i, values in enumerate(per_seed):
        ax.plot([i] * len(values), values, "k.", ms=4)
    return x


def save_figure(fig, path: Path) -> None:
    """``fig`` as a PNG at ``path``, written to a temporary file then renamed; the figure is closed."""
    import matplotlib.pyplot as plt

    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def write_reports(results: Mapping[str, Any], results_dir: Path, stem: str, markdown: Callable[[Any], str],
                  json_default: Callable[[Any], Any], plot: Optional[Callable[[Any, Path], None]] = None
                  ) -> Dict[str, str]:
    """``<stem>.json``, ``<stem>.md`` and (with ``plot``) ``<stem>.png`` in ``results_dir``, each written to a
    temporary file then renamed; returns their paths."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": results_dir / (stem + ".json"), "md": results_dir / (stem + ".md")}
    for kind, text in (("json", json.dumps(results, indent=2, default=json_default) + "\n"),
                       ("md", markdown(results) + "\n")):
        tmp = paths[kind].with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, paths[kind])
    if plot is not None:
        paths["png"] = results_dir / (stem + ".png")
        plot(results, paths["png"])
    return {k: str(v) for k, v in paths.items()}
