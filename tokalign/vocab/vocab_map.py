"""``VocabMap``: a source -> pivot vocabulary map and its on-disk form.

A map is a scipy CSR float32 matrix of shape (source_vocab, pivot_vocab); row ``s`` holds the
weights of the pivot tokens source token ``s`` maps to and sums to 1, or is empty (unmapped).

On disk (``DIR/``):

* ``map.npz``: the matrix (``scipy.sparse.save_npz``; no pickles),
* ``arrays.npz``: ``distances`` int32 (source_vocab,) and ``origin`` int8 (source_vocab,),
* ``meta.json``: method, options, fingerprints, vocab sizes, coverage figures.

Every file is written to a temporary name and renamed; ``meta.json`` comes last, so a folder
without it is an interrupted write and is refused on load.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import scipy.sparse as sp

from .. import __version__
from ..errors import TokalignError

FORMAT = "tokalign.vocab_map"
FORMAT_VERSION = 1

# Why each source row holds what it holds (``VocabMap.origin``).
ORIGINS = {
    0: "unmapped",
    1: "special",  # special token matched by role (bos<->bos, ...) or identical literal content
    2: "exact",  # identical canonical text
    3: "mined",  # minimum edit distance
    4: "stats",  # mapping statistics (MS)
    5: "fallback_mined",  # MS: never seen in the corpus, MinED instead
    6: "fallback_em",  # MS: never seen, exact match instead
    7: "fallback_unk",  # MS: never seen, pivot unk token (as released FuseChat does)
}
ORIGIN_CODES = {name: code for code, name in ORIGINS.items()}


def _fingerprint_of(expected: Any) -> Optional[str]:
    if expected is None:
        return None
    if isinstance(expected, str):
        return expected
    fp = getattr(expected, "fingerprint", None)
    if not isinstance(fp, str):
        raise TypeError("expected a fingerprint string or a Tokenizer, got %r" % type(expected).__name__)
    return fp


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(".%s.tmp-%d" % (path.name, os.getpid()))
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@dataclass
class VocabMap:
    """A vocabulary map (see module docstring).

    Attributes:
        matrix: CSR float32 (source_vocab, pivot_vocab), rows sum to 1 or are empty.
        meta: method, options, ``pivot`` / ``source`` descriptions (name, fingerprint, vocab_size),
            ``coverage`` figures.
        distances: int32 (source_vocab,): edit distance between a source token's canonical text and
            that of its highest-weight pivot token; -1 for unmapped rows.
        origin: int8 (source_vocab,): codes of :data:`ORIGINS`.
    """

    matrix: sp.csr_matrix
    meta: Dict[str, Any] = field(default_factory=dict)
    distances: Optional[np.ndarray] = None
    origin: Optional[np.ndarray] = None

    @property
    def source_vocab(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def pivot_vocab(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def method(self) -> str:
        return str(self.meta.get("method", ""))

    def top1(self) -> np.ndarray:
        """int32 (source_vocab,): the highest-weight pivot token of each row (lowest id on ties), -1 if empty."""
        m = self.matrix
        out = np.full(m.shape[0], -1, dtype=np.int32)
        lengths = np.diff(m.indptr)
        rows = np.repeat(np.arange(m.shape[0]), lengths)
        if rows.size == 0:
            return out
        order = np.lexsort((m.indices, -m.data, rows))
        first = order[np.r_[0, np.flatnonzero(np.diff(rows[order])) + 1]]
        out[rows[first]] = m.indices[first]
        return out

    def mapped(self) -> np.ndarray:
        """bool (source_vocab,): rows that are not empty."""
        return np.diff(self.matrix.indptr) > 0

    # ---- persistence --------------------------------------------------------------------------

    def save(self, directory: Union[str, os.PathLike]) -> Path:
        """Write ``map.npz``, ``arrays.npz`` and ``meta.json`` into ``directory`` (created)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        meta_path = d / "meta.json"
        if meta_path.exists():  # the old map stays readable until the new one is complete
            meta_path.unlink()
        matrix = sp.csr_matrix(self.matrix, dtype=np.float32)
        matrix.sort_indices()
        _atomic_write(d / "map.npz", lambda f: sp.save_npz(f, matrix, compressed=True))
        n = matrix.shape[0]
        distances = self.distances if self.distances is not None else np.full(n, -1, dtype=np.int32)
        origin = self.origin if self.origin is not None else np.zeros(n, dtype=np.int8)
        _atomic_write(
            d / "arrays.npz",
            lambda f: np.savez_compressed(f, distances=np.asarray(distances, dtype=np.int32), origin=np.asarray(origin, dtype=np.int8)),
        )
        meta = dict(self.meta)
        meta.setdefault("format", FORMAT)
        meta.setdefault("format_version", FORMAT_VERSION)
        meta.setdefault("tokalign_version", __version__)
        meta["shape"] = [int(matrix.shape[0]), int(matrix.shape[1])]
        payload = (json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        _atomic_write(meta_path, lambda f: f.write(payload))
        return d

    @classmethod
    def load(
        cls,
        directory: Union[str, os.PathLike],
        expect_pivot: Any = None,
        expect_source: Any = None,
    ) -> "VocabMap":
        """Read a saved map; ``expect_pivot`` / ``expect_source`` (fingerprint or Tokenizer) must match.

        Raises:
            TokalignError: missing/corrupt files, or a fingerprint that does not match (both named).
        """
        d = Path(directory)
        meta_path = d / "meta.json"
        if not meta_path.is_file():
            raise TokalignError("%s: not a vocab map folder (no meta.json; an interrupted write?)" % d)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TokalignError("%s: cannot read: %s" % (meta_path, exc)) from exc
        if meta.get("format") != FORMAT:
            raise TokalignError("%s: field 'format' is %r, expected %r" % (meta_path, meta.get("format"), FORMAT))
        for side, expected in (("pivot", expect_pivot), ("source", expect_source)):
            want = _fingerprint_of(expected)
            have = (meta.get(side) or {}).get("fingerprint")
            if want is not None and have != want:
                raise TokalignError(
                    "%s: vocab map was built for %s tokenizer fingerprint %s, but the %s tokenizer given has fingerprint %s"
                    % (d, side, have, side, want)
                )
        try:
            matrix = sp.load_npz(d / "map.npz").tocsr()
        except (OSError, ValueError, KeyError) as exc:
            raise TokalignError("%s: cannot read: %s" % (d / "map.npz", exc)) from exc
        if list(matrix.shape) != list(meta.get("shape", [])):
            raise TokalignError("%s: matrix shape %s does not match meta.json field 'shape' %s" % (d, matrix.shape, meta.get("shape")))
        distances = origin = None
        arrays_path = d / "arrays.npz"
        if arrays_path.is_file():
            with np.load(arrays_path, allow_pickle=False) as z:
                distances = z["distances"].astype(np.int32)
                origin = z["origin"].astype(np.int8)
            if distances.shape != (matrix.shape[0],) or origin.shape != (matrix.shape[0],):
                raise TokalignError("%s: arrays do not have one entry per source token (%d)" % (arrays_path, matrix.shape[0]))
        vm = cls(matrix=matrix.astype(np.float32), meta=meta, distances=distances, origin=origin)
        sums = np.asarray(vm.matrix.sum(axis=1)).ravel()
        bad = vm.mapped() & (np.abs(sums - 1.0) > 1e-4)
        if bad.any():
            raise TokalignError("%s: row %d sums to %.6f, expected 1 or an empty row" % (d / "map.npz", int(np.flatnonzero(bad)[0]), sums[bad][0]))
        return vm


def load(directory: Union[str, os.PathLike], expect_pivot: Any = None, expect_source: Any = None) -> VocabMap:
    """Shorthand for :meth:`VocabMap.load`."""
    return VocabMap.load(directory, expect_pivot=expect_pivot, expect_source=expect_source)
