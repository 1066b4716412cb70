"""``_core.text_blocks`` (the byte diff of the store-to-store remap's alignment) against a plain Python
transcription of the Myers diff it implements, without its shortcuts: the edit-count lower bound that skips
diffs that cannot finish within ``max_d`` edits, and the 32-bit trace. Truncated samples (long texts whose
tails differ by hundreds of bytes) are the case the shortcuts are for."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tokalign import _core


def reference_blocks(a: np.ndarray, b: np.ndarray, max_d: int) -> list:
    """Myers O(ND) greedy diff after trimming the common prefix / suffix (as csrc/align_span.cpp documents)."""
    a, b = a.tolist(), b.tolist()
    na, nb = len(a), len(b)
    pre = 0
    while pre < na and pre < nb and a[pre] == b[pre]:
        pre += 1
    suf = 0
    while suf < na - pre and suf < nb - pre and a[na - 1 - suf] == b[nb - 1 - suf]:
        suf += 1
    blocks = [[0, 0, pre]] if pre else []
    A, B = a[pre:na - suf], b[pre:nb - suf]
    N, M = len(A), len(B)
    mid = []
    if N and M:
        cap = min(N + M, max(max_d, 0))
        V = {1: 0}
        trace = []
        D = -1
        for d in range(cap + 1):
            for k in range(-d, d + 1, 2):
                x = V.get(k + 1, 0) if (k == -d or (k != d and V.get(k - 1, 0) < V.get(k + 1, 0))) else V.get(k - 1, 0) + 1
                y = x - k
                while x < N and y < M and A[x] == B[y]:
                    x, y = x + 1, y + 1
                V[k] = x
                if x >= N and y >= M:
                    D = d
            trace.append(dict(V))
            if D >= 0:
                break
        if D >= 0:
            x, y = N, M
            for d in range(D, -1, -1):
                k = x - y
                mx = my = px = py = 0
                if d > 0:
                    Vp = trace[d - 1]
                    down = k == -d or (k != d and Vp.get(k - 1, 0) < Vp.get(k + 1, 0))
                    pk = k + 1 if down else k - 1
                    px = Vp.get(pk, 0)
                    py = px - pk
                    mx, my = (px, py + 1) if down else (px + 1, py)
                ln = min(x - mx, y - my)
                if ln > 0:
                    mid.append([x - ln, y - ln, ln])
                x, y = px, py
    for x, y, ln in reversed(mid):
        x, y = x + pre, y + pre
        if blocks and blocks[-1][0] + blocks[-1][2] == x and blocks[-1][1] + blocks[-1][2] == y:
            blocks[-1][2] += ln
        else:
            blocks.append([x, y, ln])
    if suf:
        x, y = na - suf, nb - suf
        if blocks and blocks[-1][0] + blocks[-1][2] == x and blocks[-1][1] + blocks[-1][2] == y:
            blocks[-1][2] += suf
        else:
            blocks.append([x, y, suf])
    return blocks


def _check(a, b, max_d):
    a = np.asarray(a, np.uint32)
    b = np.asarray(b, np.uint32)
    got = np.asarray(_core.text_blocks(a, b, max_d)).reshape(-1, 3).tolist()
    assert got == reference_blocks(a, b, max_d)
    return got


texts = st.lists(st.integers(0, 3), max_size=120)


@settings(max_examples=300, deadline=None)
@given(texts, texts, st.integers(0, 40))
def test_text_blocks_equal_myers(a, b, max_d):
    _check(a, b, max_d)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2000), min_size=64, max_size=200), st.integers(0, 150), st.integers(0, 2000),
       st.integers(1, 60))
def test_text_blocks_far_apart(a, cut, shift, max_d):
    """Long texts with many distinct characters (and code points above 1023, which share histogram buckets):
    the lower bound decides most of these without the diff."""
    b = [(c + shift) % 2001 for c in a[cut:]] + a[:cut]
    _check(a, b, max_d)


def test_truncated_like_pair():
    """A dummy-prefix space at the front and a long extra tail (two tokenizers truncated at different text
    positions), on repetitive text: a long diff that finishes within max_d, and the same pair with a cap
    too small for it."""
    rng = np.random.default_rng(0)
    body = np.frombuffer(b"".join(b"Episode %d: The Rings of Power. " % i for i in range(60)), np.uint8)
    a = np.concatenate([[60, 115, 62, 32], body[:1200]])  # "<s> " + text
    b = np.concatenate([[60, 115, 62], body[:1500]])  # "<s>" + longer text
    blocks = _check(a, b, 2048)
    assert len(blocks) == 2 and blocks[1][2] == 1200  # prefix, then the whole shared body
    assert len(_check(a, b, 250)) == 1  # 301 edits needed: the bound alone says no
    c = b.copy()
    c[rng.integers(3, len(c), 40)] = 33
    _check(a, c, 2048)
