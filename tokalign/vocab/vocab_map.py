"""``VocabMap``: a source -> pivot vocabulary map and its on-disk form.

A map is a scipy CSR float32 matrix of shape (source_vocab, pivot_vocab); row ``s`` holds the
weights of the pivot tokens source token ``s`` maps to and sums to 1, or is empty (unmapped).

On disk (``DIR/``):

* ``map.npz``: the matrix (scipy's sparse ``.npz`` layout, no pickles),
* ``arrays.npz``: ``distances`` int32 (source_vocab,) and ``origin`` int8 (source_vocab,),
* ``meta.json``: method, options, fingerprints, vocab sizes, coverage figures.

Written like every tokalign artifact (:mod:`tokalign.artifacts`): the same map gives the same bytes,
and the folder appears in one rename once complete, so an interrupted save leaves no folder that
looks like a map (only a hidden ``.NAME.tmp-*`` one). ``meta.json`` is still required on load.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Union

import numpy as np
import scipy.sparse as sp

from .. import __version__
from ..artifacts import (atomic_dir, load_npz_arrays, load_sparse_npz, save_npz_arrays, save_sparse_npz,
                         write_json_atomic)
from ..errors import TokalignError

FORMAT = "tokalign.vocab_map"
FORMAT_VERSION = 1

MAP_FILE, ARRAYS_FILE, META_FILE = "map.npz", "arrays.npz", "meta.json"
MAP_FILES = (MAP_FILE, ARRAYS_FILE, META_FILE)  # everything a saved map folder holds

# Why each source row holds what it holds (``VocabMap.origin``, int8). Codes are part of the on-disk
# format: once used, a code keeps its meaning. The codes any method may write are listed here; a method
# declares the codes only it writes on its registry class (``MapMethod.origins``: mined 3, ms 4-7), so a
# new method never edits this file.
SHARED_ORIGINS = {
    0: "unmapped",
    1: "special",  # special token matched by role (bos<->bos, ...) or identical literal content
    2: "exact",  # identical canonical text
}


class OriginTable(Mapping[int, str]):
    """code -> origin name: :data:`SHARED_ORIGINS` plus the codes registered methods declare.

    Reading it imports the built-in methods first, so the names of every built-in code are known
    (a saved map is readable without importing its method by hand).
    """

    def __init__(self, shared: Mapping[int, str]):
        self._names: Dict[int, str] = dict(shared)
        self._owners: Dict[int, str] = {code: "" for code in shared}
        self._state = "lazy"  # -> "loading" -> "loaded"

    def add(self, codes: Mapping[int, str], owner: str) -> None:
        """Record ``owner``'s codes; a code or a name already taken with another meaning is refused."""
        codes = {int(c): str(n) for c, n in codes.items()}
        by_name = {n: c for c, n in self._names.items()}
        for code, name in codes.items():
            if not 0 <= code <= 127:
                raise ValueError("origin code %d of %r is outside int8 0..127" % (code, owner))
            if self._names.get(code, name) != name or by_name.get(name, code) != code:
                raise ValueError("origin %d=%r of %r clashes with %d=%r" % (
                    code, name, owner, by_name.get(name, code), self._names.get(code, name)))
        for code, name in codes.items():
            self._names[code] = name
            self._owners.setdefault(code, owner)

    def owner(self, code: int) -> str:
        """The method that declared ``code`` (``""`` for the shared codes)."""
        self._load()
        return self._owners[code]

    def _load(self) -> None:
        if self._state == "lazy":
            self._state = "loading"  # registering the built-ins reads nothing back
            from .registry import load_builtin

            try:
                load_builtin()
            finally:
                self._state = "loaded"

    def __getitem__(self, code: int) -> str:
        self._load()
        return self._names[code]

    def __iter__(self) -> Iterator[int]:
        self._load()
        return iter(dict(self._names))

    def __len__(self) -> int:
        self._load()
        return len(self._names)

    def __repr__(self) -> str:
        return "OriginTable(%r)" % dict(self.items())


class _OriginCodes(Mapping[str, int]):
    """name -> code view of an :class:`OriginTable`."""

    def __init__(self, table: OriginTable):
        self._table = table

    def __getitem__(self, name: str) -> int:
        for code, n in self._table.items():
            if n == name:
                return code
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter([n for n in self._table.values()])

    def __len__(self) -> int:
        return len(self._table)


ORIGINS = OriginTable(SHARED_ORIGINS)
ORIGIN_CODES: Mapping[str, int] = _OriginCodes(ORIGINS)


def _fingerprint_of(expected: Any) -> Optional[str]:
    if expected is None:
        return None
    if isinstance(expected, str):
        return expected
    fp = getattr(expected, "fingerprint", None)
    if not isinstance(fp, str):
        raise TypeError("expected a fingerprint string or a Tokenizer, got %r" % type(expected).__name__)
    return fp


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

    def save(self, directory: Union[str, os.PathLike], overwrite: bool = False) -> Path:
        """Write ``map.npz``, ``arrays.npz`` and ``meta.json`` as the folder ``directory``, atomically.

        A folder holding an earlier vocab map (only map files) is replaced; any other non-empty
        folder is refused unless ``overwrite``.
        """
        d = Path(directory)
        if d.is_dir() and not overwrite:
            overwrite = all(p.name in MAP_FILES for p in d.iterdir())
        matrix = sp.csr_matrix(self.matrix, dtype=np.float32)
        n = matrix.shape[0]
        distances = self.distances if self.distances is not None else np.full(n, -1, dtype=np.int32)
        origin = self.origin if self.origin is not None else np.zeros(n, dtype=np.int8)
        meta = dict(self.meta)
        meta.setdefault("format", FORMAT)
        meta.setdefault("format_version", FORMAT_VERSION)
        meta.setdefault("tokalign_version", __version__)
        meta["shape"] = [int(matrix.shape[0]), int(matrix.shape[1])]
        with atomic_dir(d, overwrite=overwrite) as tmp:
            save_sparse_npz(tmp / MAP_FILE, matrix)
            save_npz_arrays(tmp / ARRAYS_FILE, {"distances": np.asarray(distances, dtype=np.int32),
                                                "origin": np.asarray(origin, dtype=np.int8)})
            write_json_atomic(tmp / META_FILE, meta)
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
        meta_path = d / META_FILE
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
                other = "source" if side == "pivot" else "pivot"
                swapped = want == (meta.get(other) or {}).get("fingerprint")
                raise TokalignError(
                    "%s: vocab map was built for %s tokenizer %s (fingerprint %s), but the %s tokenizer given has "
                    "fingerprint %s%s" % (d, side, (meta.get(side) or {}).get("name") or "?", have, side,
                                          want, "; that is the map's %s tokenizer: pivot and source are "
                                          "swapped" % other if swapped else ""))
        matrix = load_sparse_npz(d / MAP_FILE)
        if list(matrix.shape) != list(meta.get("shape", [])):
            raise TokalignError("%s: matrix shape %s does not match meta.json field 'shape' %s" % (d, matrix.shape, meta.get("shape")))
        # ids past the tokenizers' vocabularies would index out of range in every later stage
        for axis, side in ((0, "source"), (1, "pivot")):
            size = (meta.get(side) or {}).get("vocab_size")
            if size is not None and int(size) != matrix.shape[axis]:
                raise TokalignError("%s: the map has %d %s ids but meta.json says the %s tokenizer has %s"
                                    % (d / MAP_FILE, matrix.shape[axis], side, side, size))
        distances = origin = None
        arrays_path = d / ARRAYS_FILE
        if arrays_path.is_file():
            z = load_npz_arrays(arrays_path)
            distances, origin = z["distances"].astype(np.int32), z["origin"].astype(np.int8)
            if distances.shape != (matrix.shape[0],) or origin.shape != (matrix.shape[0],):
                raise TokalignError("%s: arrays do not have one entry per source token (%d)" % (arrays_path, matrix.shape[0]))
        vm = cls(matrix=matrix.astype(np.float32), meta=meta, distances=distances, origin=origin)
        sums = np.asarray(vm.matrix.sum(axis=1)).ravel()
        bad = vm.mapped() & (np.abs(sums - 1.0) > 1e-4)
        if bad.any():
            raise TokalignError("%s: row %d sums to %.6f, expected 1 or an empty row" % (d / MAP_FILE, int(np.flatnonzero(bad)[0]), sums[bad][0]))
        return vm


def load(directory: Union[str, os.PathLike], expect_pivot: Any = None, expect_source: Any = None) -> VocabMap:
    """Shorthand for :meth:`VocabMap.load`."""
    return VocabMap.load(directory, expect_pivot=expect_pivot, expect_source=expect_source)
