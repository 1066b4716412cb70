"""What every vocabulary method shares: tokenizer access, tie-break order, special tokens by role,
assembling a :class:`VocabMap` with coverage figures.

Conventions (documented once, used by em / mined / ms):

* Texts compared are the canonical token texts (``tok.token_texts()``, bytes). Edit distances count
  *text units*: the code points of ``text.decode("utf-8", "surrogateescape")``, i.e. code points
  where the bytes are well-formed UTF-8 and one unit per stray byte of a partial sequence
  (U+DC00 + byte). C++ (``tokalign._core``) and Python references use the same rule.
* Ties between pivot tokens are broken by the pivot *preference order*: ordinary tokens before
  SentencePiece byte-fallback pieces (``<0xNN>``, which duplicate the text of ordinary tokens such
  as ``▁`` = ``<0x20>``), then lower id.
* Special tokens are never compared as text with ordinary tokens: a source special token maps to
  the pivot special token of the same role (bos, eos, pad, unk, chat roles present in both), else
  to a pivot special token with identical literal content, else stays unmapped.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import scipy.sparse as sp

from ..errors import TokalignError
from .registry import BUILTIN
from .vocab_map import ORIGIN_CODES, ORIGINS, VocabMap

BUILTIN_OWNERS = ("",) + tuple(BUILTIN)  # "": the shared origin codes

_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
ROLE_ORDER = ("bos", "eos", "pad", "unk")


def check_tokenizer(tok: Any, what: str) -> None:
    for attr in ("token_texts", "special_mask", "special_ids", "fingerprint", "vocab_size"):
        if not hasattr(tok, attr):
            raise TokalignError("%s tokenizer %r lacks %r (see docs/architecture.md)" % (what, getattr(tok, "name", tok), attr))


def texts(tok: Any) -> List[bytes]:
    t = list(tok.token_texts())
    if len(t) != int(tok.vocab_size):
        raise TokalignError("tokenizer %r: token_texts() has %d entries, vocab_size is %d" % (tok.name, len(t), tok.vocab_size))
    return t


def special_mask(tok: Any) -> np.ndarray:
    m = np.asarray(tok.special_mask, dtype=bool)
    if m.shape != (int(tok.vocab_size),):
        raise TokalignError("tokenizer %r: special_mask has shape %s, expected (%d,)" % (tok.name, m.shape, tok.vocab_size))
    return m


def preference_rank(tok: Any) -> np.ndarray:
    """int64 (vocab,): 1 for SentencePiece byte-fallback pieces, 0 otherwise (ties: rank, then id)."""
    raw = tok.raw_tokens() if hasattr(tok, "raw_tokens") else None
    rank = np.zeros(int(tok.vocab_size), dtype=np.int64)
    if raw is not None:
        for i, piece in enumerate(raw):
            if piece and len(piece) == 6 and _BYTE_PIECE.match(piece):
                rank[i] = 1
    return rank


def special_pairs(pivot: Any, source: Any) -> Dict[int, int]:
    """source special id -> pivot special id: same role first, then identical literal content."""
    out: Dict[int, int] = {}
    p_roles: Dict[str, int] = dict(pivot.special_ids or {})
    s_roles: Dict[str, int] = dict(source.special_ids or {})
    roles = [r for r in ROLE_ORDER if r in s_roles] + sorted(r for r in s_roles if r not in ROLE_ORDER)
    for role in roles:
        sid, pid = s_roles[role], p_roles.get(role)
        if pid is not None and sid not in out:
            out[int(sid)] = int(pid)
    p_mask, s_mask = special_mask(pivot), special_mask(source)
    p_texts = texts(pivot)
    by_content: Dict[bytes, int] = {}
    for pid in np.flatnonzero(p_mask):
        by_content.setdefault(p_texts[pid], int(pid))
    s_texts = texts(source)
    for sid in np.flatnonzero(s_mask):
        if int(sid) not in out and s_texts[sid] in by_content:
            out[int(sid)] = by_content[s_texts[sid]]
    return out


def describe(tok: Any) -> Dict[str, Any]:
    return {"name": str(getattr(tok, "name", "")), "fingerprint": str(tok.fingerprint), "vocab_size": int(tok.vocab_size)}


class MapBuilder:
    """Collects rows (source id -> pivot ids + weights + origin) and assembles the VocabMap."""

    def __init__(self, pivot: Any, source: Any):
        self.pivot, self.source = pivot, source
        self.n_source, self.n_pivot = int(source.vocab_size), int(pivot.vocab_size)
        self.origin = np.zeros(self.n_source, dtype=np.int8)
        self._rows: List[np.ndarray] = []
        self._cols: List[np.ndarray] = []
        self._vals: List[np.ndarray] = []

    def set_one_hot(self, source_ids: np.ndarray, pivot_ids: np.ndarray, origin: str) -> None:
        """Rows ``source_ids`` map to one pivot token each (replaces earlier rows)."""
        source_ids = np.asarray(source_ids, dtype=np.int64)
        self.set_weighted(source_ids, source_ids, np.asarray(pivot_ids, dtype=np.int64), np.ones(source_ids.size, np.float64), origin)

    def set_weighted(self, source_ids: np.ndarray, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, origin: str) -> None:
        """Rows ``source_ids`` get entries (rows, cols, vals); weights are normalised per row at the end."""
        source_ids = np.asarray(source_ids, dtype=np.int64)
        if source_ids.size == 0:
            return
        self._drop(source_ids)
        self.origin[source_ids] = ORIGIN_CODES[origin]
        self._rows.append(np.asarray(rows, dtype=np.int64))
        self._cols.append(np.asarray(cols, dtype=np.int64))
        self._vals.append(np.asarray(vals, dtype=np.float64))

    def _drop(self, source_ids: np.ndarray) -> None:
        kill = np.zeros(self.n_source, dtype=bool)
        kill[source_ids] = True
        for k in range(len(self._rows)):
            keep = ~kill[self._rows[k]]
            if not keep.all():
                self._rows[k], self._cols[k], self._vals[k] = self._rows[k][keep], self._cols[k][keep], self._vals[k][keep]

    def build(self, method: str, options: Dict[str, Any], extra_meta: Optional[Dict[str, Any]] = None) -> VocabMap:
        rows = np.concatenate(self._rows) if self._rows else np.zeros(0, np.int64)
        cols = np.concatenate(self._cols) if self._cols else np.zeros(0, np.int64)
        vals = np.concatenate(self._vals) if self._vals else np.zeros(0, np.float64)
        m = sp.csr_matrix((vals, (rows, cols)), shape=(self.n_source, self.n_pivot), dtype=np.float64)
        m.sum_duplicates()
        m.eliminate_zeros()
        sums = np.asarray(m.sum(axis=1)).ravel()
        scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
        m = sp.csr_matrix(sp.diags(scale) @ m, dtype=np.float32)
        m.sort_indices()
        vm = VocabMap(matrix=m, meta={}, origin=self.origin.copy())
        empty = ~vm.mapped()
        vm.origin[empty] = ORIGIN_CODES["unmapped"]
        vm.distances = top1_distances(vm, texts(self.pivot), texts(self.source))
        vm.meta = {
            "method": method,
            "options": options,
            "pivot": describe(self.pivot),
            "source": describe(self.source),
            "pivot_fingerprint": str(self.pivot.fingerprint),
            "source_fingerprint": str(self.source.fingerprint),
            "coverage": coverage(vm, special_mask(self.source)),
        }
        if extra_meta:
            vm.meta.update(extra_meta)
        return vm


def top1_distances(vm: VocabMap, pivot_texts: Sequence[bytes], source_texts: Sequence[bytes]) -> np.ndarray:
    """Edit distance from each source text to its highest-weight pivot token's text; -1 if unmapped."""
    top = vm.top1()
    out = np.full(vm.source_vocab, -1, dtype=np.int32)
    rows = np.flatnonzero(top >= 0)
    if rows.size:
        from .._native import _core

        d, _ = _core.levenshtein_pairs(list(source_texts), list(pivot_texts), rows, top[rows].astype(np.int64))
        out[rows] = d
    return out


def coverage(vm: VocabMap, source_special: np.ndarray) -> Dict[str, Any]:
    """Counts per origin and the fraction of ordinary (non-special) source tokens mapped."""
    mapped = vm.mapped()
    ordinary = ~source_special
    n_ord = int(ordinary.sum())
    # every shared and built-in origin is listed (zero or not); another method's only where present,
    # so registering a method never changes the bytes of the maps the built-in methods save
    counts = {code: int((vm.origin == code).sum()) for code in ORIGINS}
    by_origin = {ORIGINS[code]: n for code, n in counts.items() if n or ORIGINS.owner(code) in BUILTIN_OWNERS}
    d = vm.distances if vm.distances is not None else np.full(vm.source_vocab, -1)
    sel = mapped & ordinary & (d >= 0)
    return {
        "source_tokens": int(vm.source_vocab),
        "mapped": int(mapped.sum()),
        "mapped_fraction": float(mapped.mean()) if vm.source_vocab else 0.0,
        "ordinary_mapped": int((mapped & ordinary).sum()),
        "ordinary_fraction": float((mapped & ordinary).sum() / n_ord) if n_ord else 0.0,
        "special_mapped": int((mapped & source_special).sum()),
        "special_tokens": int(source_special.sum()),
        "by_origin": by_origin,
        "exact_text_top1": int((sel & (d == 0)).sum()),
        "mean_distance_top1": float(d[sel].mean()) if sel.any() else 0.0,
        "nnz": int(vm.matrix.nnz),
    }
