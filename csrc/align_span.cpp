// Span alignment from character offsets, and the text diff used when two texts differ.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "tokalign/align.h"

namespace tokalign {
namespace {

void check_offsets(const int64_t* o, int64_t n, const char* side) {
    for (int64_t i = 0; i < n; ++i) {
        const int64_t s = o[2 * i], e = o[2 * i + 1];
        if (s < 0 || e < s)
            throw std::invalid_argument(std::string("span: ") + side + " offsets[" + std::to_string(i) + "] = (" +
                                        std::to_string(s) + ", " + std::to_string(e) + ") is not a valid [start, end)");
        if (i > 0 && s < o[2 * (i - 1)])
            throw std::invalid_argument(std::string("span: ") + side + " offsets[" + std::to_string(i) +
                                        "] starts before the previous token (starts must not decrease)");
    }
}

}  // namespace

AlignResult span_align(const int64_t* po, int64_t n, const int64_t* so, int64_t m, const uint8_t* pdirty,
                       const uint8_t* sdirty, std::vector<int64_t>* stretches) {
    check_offsets(po, n, "pivot");
    check_offsets(so, m, "source");
    AlignResult out;
    out.n = n;
    out.m = m;
    if (n == 0 || m == 0) {
        finish_result(out);
        return out;
    }
    if (n > INT32_MAX || m > INT32_MAX) throw std::invalid_argument("span: sequences longer than 2^31 tokens");
    // 1. Groups: take the next token of each side, then absorb every token (either side) that
    //    starts before the running end, until nothing starts before it. The group closes at a
    //    position where no token of either side is cut. Zero-width tokens at a boundary start the
    //    following group; tokens after the other side ran out join the last group.
    std::vector<int64_t> g;  // i0, i1, j0, j1
    g.reserve(4 * static_cast<size_t>(std::min(n, m)));
    int64_t i = 0, j = 0;
    while (i < n && j < m) {
        const int64_t i0 = i, j0 = j;
        int64_t end = std::max(po[2 * i + 1], so[2 * j + 1]);
        ++i;
        ++j;
        for (;;) {
            bool grew = false;
            while (i < n && po[2 * i] < end) { end = std::max(end, po[2 * i + 1]); ++i; grew = true; }
            while (j < m && so[2 * j] < end) { end = std::max(end, so[2 * j + 1]); ++j; grew = true; }
            if (!grew) break;
        }
        g.push_back(i0);
        g.push_back(i);
        g.push_back(j0);
        g.push_back(j);
    }
    g[g.size() - 3] = n;
    g[g.size() - 1] = m;
    // 2. Path inside each group: advance the side whose current token ends first (pivot on
    //    equal ends), so the cells are the overlapping pairs and the group stays connected. A
    //    group of a pivot and b source tokens has a + b - 1 cells: the path has n + m - G.
    const int64_t G = static_cast<int64_t>(g.size()) / 4;
    const int64_t L = n + m - G;
    out.path_p.resize(static_cast<size_t>(L));
    out.path_s.resize(static_cast<size_t>(L));
    int32_t* PP = out.path_p.data();
    int32_t* PS = out.path_s.data();
    int64_t k = 0;
    for (int64_t q = 0; q < G; ++q) {
        const int64_t i0 = g[4 * q], i1 = g[4 * q + 1], j0 = g[4 * q + 2], j1 = g[4 * q + 3];
        int64_t a = i0, b = j0;
        PP[k] = static_cast<int32_t>(a);
        PS[k] = static_cast<int32_t>(b);
        ++k;
        while (a < i1 - 1 || b < j1 - 1) {
            if (a == i1 - 1) ++b;
            else if (b == j1 - 1) ++a;
            else if (po[2 * a + 1] <= so[2 * b + 1]) ++a;
            else ++b;
            PP[k] = static_cast<int32_t>(a);
            PS[k] = static_cast<int32_t>(b);
            ++k;
        }
    }
    if (k != L) throw std::logic_error("span: path length mismatch (internal error)");
    // 3. Stretches of consecutive groups that contain a token outside the shared text.
    if (stretches && (pdirty || sdirty)) {
        bool open = false;
        for (int64_t q = 0; q < G; ++q) {
            const int64_t i0 = g[4 * q], i1 = g[4 * q + 1], j0 = g[4 * q + 2], j1 = g[4 * q + 3];
            bool dirty = false;
            for (int64_t a = i0; pdirty && a < i1 && !dirty; ++a) dirty = pdirty[a] != 0;
            for (int64_t b = j0; sdirty && b < j1 && !dirty; ++b) dirty = sdirty[b] != 0;
            if (dirty && open) {
                (*stretches)[stretches->size() - 3] = i1;
                (*stretches)[stretches->size() - 1] = j1;
            } else if (dirty) {
                stretches->insert(stretches->end(), {i0, i1, j0, j1});
            }
            open = dirty;
        }
    }
    finish_result(out);
    return out;
}

namespace {

// A lower bound on the insert/delete edit distance of two texts: every insertion or deletion changes
// one character count by one, so D >= sum_c |count_a(c) - count_b(c)|. Characters are hashed into
// 1024 buckets (merging counts never increases the sum, so the bound stays valid for any code point).
int64_t edit_lower_bound(const uint32_t* a, int64_t na, const uint32_t* b, int64_t nb) {
    if (na + nb < 64) return std::abs(na - nb);  // too short to pay for the histogram
    std::vector<int64_t> diff(1024, 0);
    for (int64_t i = 0; i < na; ++i) ++diff[a[i] & 1023u];
    for (int64_t i = 0; i < nb; ++i) --diff[b[i] & 1023u];
    int64_t bound = 0;
    for (const int64_t d : diff) bound += d < 0 ? -d : d;
    return bound;
}

// Myers O(ND) diff of the middles A [N] and B [M] with at most cap edits; appends the matching blocks
// (x, y, len), last first, to `mid` (nothing when more than cap edits are needed). T holds trace entries.
template <typename T>
void myers_middle(const uint32_t* A, int64_t N, const uint32_t* B, int64_t M, int64_t cap, std::vector<int64_t>& mid) {
    const int64_t off = cap + 1;
    std::vector<int64_t> V(static_cast<size_t>(2 * cap + 3), 0);
    std::vector<T> trace;             // V[-d..d] after step d, concatenated
    std::vector<int64_t> trace_off;   // start of step d in trace
    // D >= |N - M|: reserve the trace of that many steps at once instead of growing it by copies
    const int64_t d_min = std::min<int64_t>(cap, std::abs(N - M));
    trace.reserve(static_cast<size_t>((d_min + 1) * (d_min + 1) + 64));
    trace_off.reserve(static_cast<size_t>(d_min + 2));
    int64_t D = -1;
    for (int64_t d = 0; d <= cap && D < 0; ++d) {
        for (int64_t k = -d; k <= d; k += 2) {
            int64_t x = (k == -d || (k != d && V[off + k - 1] < V[off + k + 1])) ? V[off + k + 1] : V[off + k - 1] + 1;
            int64_t y = x - k;
            while (x < N && y < M && A[x] == B[y]) { ++x; ++y; }
            V[off + k] = x;
            if (x >= N && y >= M) D = d;
        }
        trace_off.push_back(static_cast<int64_t>(trace.size()));
        trace.insert(trace.end(), V.begin() + (off - d), V.begin() + (off + d + 1));
    }
    if (D < 0) return;
    int64_t x = N, y = M;
    for (int64_t d = D; d >= 0; --d) {
        const int64_t k = x - y;
        int64_t mx = 0, my = 0, px = 0, py = 0;
        if (d > 0) {
            const T* Vp = trace.data() + trace_off[d - 1] + (d - 1);  // Vp[k] for k in [-(d-1), d-1]
            const bool down = k == -d || (k != d && Vp[k - 1] < Vp[k + 1]);
            const int64_t pk = down ? k + 1 : k - 1;
            px = Vp[pk];
            py = px - pk;
            mx = down ? px : px + 1;
            my = down ? py + 1 : py;
        }
        const int64_t len = std::min(x - mx, y - my);
        if (len > 0) mid.insert(mid.end(), {x - len, y - len, len});
        x = px;
        y = py;
    }
}

}  // namespace

std::vector<int64_t> text_blocks(const uint32_t* a, int64_t na, const uint32_t* b, int64_t nb, int64_t max_d) {
    std::vector<int64_t> blocks;
    int64_t pre = 0;
    while (pre < na && pre < nb && a[pre] == b[pre]) ++pre;
    int64_t suf = 0;
    while (suf < na - pre && suf < nb - pre && a[na - 1 - suf] == b[nb - 1 - suf]) ++suf;
    if (pre > 0) blocks.insert(blocks.end(), {0, 0, pre});
    const uint32_t* A = a + pre;
    const uint32_t* B = b + pre;
    const int64_t N = na - pre - suf, M = nb - pre - suf;
    std::vector<int64_t> mid;  // reversed (x, y, len) in middle coordinates
    const int64_t cap0 = std::min<int64_t>(N + M, std::max<int64_t>(max_d, 0));
    if (N > 0 && M > 0 && edit_lower_bound(A, N, B, M) > cap0) {
        // the diff below would run all cap0 + 1 steps without reaching the end (O(cap0^2) time and
        // trace memory) and report no middle blocks: the same result, at once
    } else if (N > 0 && M > 0) {
        // trace entries are positions in A: 32 bits halve the O(D^2) trace memory of long diffs
        if (N < INT32_MAX && M < INT32_MAX)
            myers_middle<int32_t>(A, N, B, M, cap0, mid);
        else
            myers_middle<int64_t>(A, N, B, M, cap0, mid);
    }
    for (int64_t q = static_cast<int64_t>(mid.size()) / 3 - 1; q >= 0; --q) {
        const int64_t x = mid[3 * q] + pre, y = mid[3 * q + 1] + pre, len = mid[3 * q + 2];
        const size_t L = blocks.size();
        if (L >= 3 && blocks[L - 3] + blocks[L - 1] == x && blocks[L - 2] + blocks[L - 1] == y) blocks[L - 1] += len;
        else blocks.insert(blocks.end(), {x, y, len});
    }
    if (suf > 0) {
        const int64_t x = na - suf, y = nb - suf;
        const size_t L = blocks.size();
        if (L >= 3 && blocks[L - 3] + blocks[L - 1] == x && blocks[L - 2] + blocks[L - 1] == y) blocks[L - 1] += suf;
        else blocks.insert(blocks.end(), {x, y, suf});
    }
    return blocks;
}

}  // namespace tokalign
