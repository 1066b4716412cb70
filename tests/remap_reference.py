"""Slow, obviously-correct Python implementation of the remap semantics (docs/remap.md), plus the
helpers the remap tests and benchmark share: random inputs, a char-offset span alignment, an
exact-match vocabulary map from two real tokenizers, and a tolerant row-by-row comparison.

Nothing here is fast on purpose: one dict per target position, one loop per top-k entry.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import scipy.sparse as sp

INSIDE = ("onehot", "pivot", "mask")
ONE_TO_MANY = ("last", "weighted")


class _NonFinite(Exception):
    pass


def _mapped(j, ids, logits, lse, indptr, indices, data):
    """Distribution of source row j pushed through the map: ({pivot id: prob}, mapped mass)."""
    lse_j = float(lse[j])
    if not math.isfinite(lse_j):
        raise _NonFinite
    out: dict = {}
    mass = 0.0
    for k in range(ids.shape[1]):
        i = int(ids[j, k])
        if i < 0:
            continue
        x = float(logits[j, k])
        if math.isnan(x) or x == math.inf:
            raise _NonFinite
        if x == -math.inf:
            continue
        p = math.exp(x - lse_j)
        for e in range(int(indptr[i]), int(indptr[i + 1])):
            w = float(data[e])
            if w <= 0:
                continue
            v = int(indices[e])
            out[v] = out.get(v, 0.0) + p * w
            mass += p * w
    return out, mass


def reference_remap_sequence(groups, src_ids, src_logits, src_lse, vocab_map, pivot_ids, pivot_topk=None,
                             k_out=10, inside="onehot", one_to_many="last") -> dict:
    """Remap one sequence position by position; returns the same arrays as RemapResult.sequence()."""
    m = sp.csr_matrix(vocab_map, dtype=np.float32)
    indptr, indices, data = m.indptr, m.indices, m.data
    lp = len(pivot_ids)
    out_ids = np.full((lp, k_out), -1, np.int32)
    out_lg = np.full((lp, k_out), -np.inf, np.float32)
    kind = np.zeros(lp, np.uint8)
    kept = np.zeros(lp, np.float32)
    valid = np.zeros(lp, bool)
    src_pos = np.full(lp, -1, np.int32)
    for p0, p1, s0, s1 in np.asarray(groups, dtype=np.int64).reshape(-1, 4).tolist():
        n_p, n_s = p1 - p0, s1 - s0
        for t in range(p0, p1):
            end = t == p1 - 1
            if n_s == 0:
                kind[t] = 7
            elif not end:
                kind[t] = 3 if n_s == 1 else 5
            elif n_p == 1:
                kind[t] = 1 if n_s == 1 else 2
            else:
                kind[t] = 4 if n_s == 1 else 6
            target: Optional[dict] = None
            try:
                if end and n_s > 0:
                    src_pos[t] = s1 - 1
                    if n_s > 1 and one_to_many == "weighted":
                        parts = [_mapped(j, src_ids, src_logits, src_lse, indptr, indices, data) for j in range(s0, s1)]
                        total = sum(mass for _, mass in parts)
                        target = {}
                        if total > 0:
                            for d, mass in parts:
                                for v, q in d.items():
                                    target[v] = target.get(v, 0.0) + (mass / total) * q
                    else:
                        target = _mapped(s1 - 1, src_ids, src_logits, src_lse, indptr, indices, data)[0]
                elif inside == "onehot":
                    target = {int(pivot_ids[t + 1]): 1.0} if t + 1 < lp else None
                elif inside == "pivot":
                    pid, plg, plse = pivot_topk
                    if not math.isfinite(float(plse[t])):
                        raise _NonFinite
                    target = {}
                    for k in range(pid.shape[1]):
                        v, x = int(pid[t, k]), float(plg[t, k])
                        if v < 0:
                            continue
                        if math.isnan(x) or x == math.inf:
                            raise _NonFinite
                        if x > -math.inf:
                            target[v] = target.get(v, 0.0) + math.exp(x - float(plse[t]))
            except _NonFinite:
                continue  # invalid, nothing kept
            if target is None:
                continue  # masked
            items = sorted(((q, v) for v, q in target.items() if q > 0), key=lambda a: (-a[0], a[1]))[:k_out]
            for slot, (q, v) in enumerate(items):
                out_ids[t, slot] = v
                out_lg[t, slot] = math.log(q)
            kept[t] = sum(q for q, _ in items)
            valid[t] = kept[t] > 0
    return {"topk_ids": out_ids, "topk_logits": out_lg, "group_kind": kind, "retained_mass": kept, "valid": valid,
            "source_position": src_pos, "logsumexp": np.zeros(lp, np.float32)}


# ---- comparison -------------------------------------------------------------------------------------

def assert_rows_match(a: dict, b: dict, rtol: float = 1e-5, atol: float = 1e-7, where: str = "") -> None:
    """Same kinds / validity / provenance; same kept distributions up to float noise.

    Ids may differ only where two candidates tie (within tolerance) at the last kept slot.
    """
    a = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for k, v in a.items()}
    b = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for k, v in b.items()}
    np.testing.assert_array_equal(a["group_kind"], b["group_kind"], err_msg=where + " group_kind")
    np.testing.assert_array_equal(a["valid"].astype(bool), b["valid"].astype(bool), err_msg=where + " valid")
    np.testing.assert_array_equal(a["source_position"], b["source_position"], err_msg=where + " source_position")
    np.testing.assert_allclose(a["retained_mass"], b["retained_mass"], rtol=rtol, atol=atol, err_msg=where + " mass")
    assert a["topk_ids"].shape == b["topk_ids"].shape, where
    pa, pb = np.exp(a["topk_logits"].astype(np.float64)), np.exp(b["topk_logits"].astype(np.float64))
    np.testing.assert_allclose(pa, pb, rtol=rtol, atol=atol, err_msg=where + " sorted probabilities")
    for r in range(a["topk_ids"].shape[0]):
        ia, ib = a["topk_ids"][r], b["topk_ids"][r]
        if np.array_equal(ia, ib):
            continue
        # allowed: permutations among (near-)equal probabilities, and swaps at the cut-off
        last = pa[r][ia >= 0].min() if (ia >= 0).any() else 0.0
        da = {int(i): float(p) for i, p in zip(ia, pa[r]) if i >= 0}
        db = {int(i): float(p) for i, p in zip(ib, pb[r]) if i >= 0}
        for i in set(da) | set(db):
            if i in da and i in db:
                assert abs(da[i] - db[i]) <= atol + rtol * db[i], (where, r, i, da[i], db[i])
            else:
                p = da.get(i, db.get(i))
                assert abs(p - last) <= atol + 1e-4 * last, (where, r, "id differs away from a tie", i, p, last)
        for s in range(len(ia)):
            if ia[s] != ib[s]:
                assert abs(pa[r][s] - pb[r][s]) <= atol + rtol * pb[r][s], (where, r, s)


# ---- random inputs ----------------------------------------------------------------------------------

def random_groups(rng: np.random.Generator, lp: int, ls: int, allow_empty_side: bool = True) -> np.ndarray:
    """Random contiguous groups covering [0, lp) x [0, ls): mixes 1:1, 1:n, n:1, n:m (and 0-sided ones)."""
    groups = []
    p = s = 0
    while p < lp or s < ls:
        r = rng.random()
        if p >= lp:
            dp, ds = 0, ls - s
        elif s >= ls:
            dp, ds = lp - p, 0
        elif r < 0.5:
            dp, ds = 1, 1
        elif r < 0.65:
            dp, ds = 1, int(rng.integers(2, 4))
        elif r < 0.8:
            dp, ds = int(rng.integers(2, 4)), 1
        elif r < 0.92:
            dp, ds = int(rng.integers(2, 4)), int(rng.integers(2, 4))
        elif allow_empty_side and r < 0.96:
            dp, ds = 1, 0
        elif allow_empty_side:
            dp, ds = 0, 1
        else:
            dp, ds = 1, 1
        dp, ds = min(dp, lp - p), min(ds, ls - s)
        if dp == 0 and ds == 0:
            continue
        groups.append((p, p + dp, s, s + ds))
        p, s = p + dp, s + ds
    return np.asarray(groups, np.int64).reshape(-1, 4)


def random_map(rng: np.random.Generator, vs: int, vp: int, unmapped: float = 0.2, max_row: int = 3) -> sp.csr_matrix:
    """Rows with 1..max_row pivot ids summing to 1 (some with equal weights: exact ties), some empty."""
    rows, cols, vals = [], [], []
    for i in range(vs):
        if rng.random() < unmapped:
            continue
        n = int(rng.integers(1, max_row + 1))
        c = rng.choice(vp, size=n, replace=False)
        w = np.full(n, 1.0 / n) if rng.random() < 0.5 else rng.dirichlet(np.ones(n))
        rows += [i] * n
        cols += c.tolist()
        vals += w.tolist()
    return sp.csr_matrix((np.asarray(vals, np.float32), (rows, cols)), shape=(vs, vp))


def random_topk(rng: np.random.Generator, n: int, k: int, vocab: int, empty_slots: float = 0.05):
    """Top-k ids (unique per row, some -1), float32 logits (desc) and an lse above their logsumexp."""
    ids = np.stack([rng.choice(vocab, size=k, replace=False) for _ in range(n)]).astype(np.int32) if n else \
        np.zeros((0, k), np.int32)
    logits = np.sort(rng.normal(0, 3, size=(n, k)).astype(np.float32), axis=1)[:, ::-1].copy()
    if n and empty_slots:
        drop = rng.random((n, k)) < empty_slots
        ids[drop] = -1
        logits[drop] = -np.inf
    with np.errstate(divide="ignore"):
        lse = (np.logaddexp.reduce(logits.astype(np.float64), axis=1) + rng.exponential(0.3, size=n)).astype(np.float32)
    lse[~np.isfinite(lse)] = 0.0
    return ids, logits, lse


# ---- real tokenizer pairs -----------------------------------------------------------------------------

def _bytes_to_unicode() -> dict:
    """printable stand-in char -> byte: one independent copy of GPT-2's byte table for the tests
    (the code under test has its own)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_bytes(tokenizer_json: Path) -> list:
    """Byte string each token id contributes to the text (ByteLevel or SentencePiece-style vocab)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    spec = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    dec = spec.get("decoder") or {}
    byte_level = dec.get("type") == "ByteLevel"
    inv = _bytes_to_unicode()
    out = [b""] * tok.get_vocab_size()
    for s, i in tok.get_vocab().items():
        if byte_level:
            try:
                out[i] = bytes(inv[c] for c in s)
            except KeyError:
                out[i] = s.encode("utf-8")
        elif len(s) == 6 and s.startswith("<0x") and s.endswith(">"):
            out[i] = bytes([int(s[3:5], 16)])
        else:
            out[i] = s.replace("\u2581", " ").encode("utf-8")
    return out


def exact_match_map(source_bytes: Sequence[bytes], pivot_bytes: Sequence[bytes]) -> sp.csr_matrix:
    """EM vocabulary map: source token -> the pivot token with the same bytes (one-hot rows), else unmapped."""
    index = {}
    for i, b in enumerate(pivot_bytes):  # later ids win: SentencePiece lists <0xNN> byte pieces first
        if b:
            index[b] = i
    rows, cols = [], []
    for i, b in enumerate(source_bytes):
        j = index.get(b)
        if j is not None:
            rows.append(i)
            cols.append(j)
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(source_bytes), len(pivot_bytes)))


def span_groups(pivot_ends: Sequence[int], source_ends: Sequence[int]) -> np.ndarray:
    """Char-offset span alignment: a group closes where both tokenizations end a token at the same char.

    Tokens ending at or before a closed group's end (e.g. byte-fallback pieces sharing one character)
    join that group; when one side runs out the other side's remaining tokens form a last group.
    """
    n, m = len(pivot_ends), len(source_ends)
    i = j = 0
    groups = []
    while i < n or j < m:
        i0, j0 = i, j
        if i >= n or j >= m:
            groups.append((i0, n, j0, m))
            break
        a, b = pivot_ends[i], source_ends[j]
        i, j = i + 1, j + 1
        while a != b:
            if a < b:
                if i >= n:
                    j = m
                    break
                a = pivot_ends[i]
                i += 1
            else:
                if j >= m:
                    i = n
                    break
                b = source_ends[j]
                j += 1
        while i < n and pivot_ends[i] <= a:
            i += 1
        while j < m and source_ends[j] <= b:
            j += 1
        groups.append((i0, i, j0, j))
    return np.asarray(groups, np.int64).reshape(-1, 4)


def load_texts(corpora_dir: Path, n: int, max_chars: int = 1200) -> list:
    """n message texts, taken in turn from the three shared corpora (code/math, Chinese chat, English
    chat), each truncated to max_chars."""
    per_file = []
    for name in ("code_math.jsonl", "chat_multiturn_zh.jsonl", "alpacaeval_parallel.jsonl"):
        got = []
        with open(corpora_dir / name, encoding="utf-8") as f:
            for line in f:
                for msg in json.loads(line).get("messages", []):
                    if msg.get("content"):
                        got.append(msg["content"][:max_chars])
                if len(got) >= n:
                    break
        per_file.append(got)
    texts = [t for trio in zip(*per_file) for t in trio]
    return texts[:n]


def realistic_source(rng: np.random.Generator, source_ids: np.ndarray, k: int, vocab: int, popular: np.ndarray):
    """Top-k rows for a real source sequence: the gold next token usually on top, others from a
    popular-token pool (so the map density seen is realistic), unique ids per row."""
    n = len(source_ids)
    ids = np.empty((n, k), np.int32)
    for j in range(n):
        row = []
        if j + 1 < n and rng.random() < 0.8:
            row.append(int(source_ids[j + 1]))
        while len(row) < k:
            c = int(popular[rng.integers(len(popular))]) if rng.random() < 0.7 else int(rng.integers(vocab))
            if c not in row:
                row.append(c)
        ids[j] = row
    logits = np.sort(rng.normal(0, 2.5, size=(n, k)).astype(np.float32), axis=1)[:, ::-1].copy()
    lse = (np.logaddexp.reduce(logits.astype(np.float64), axis=1) + rng.exponential(0.2, size=n)).astype(np.float32)
    return ids, logits, lse
