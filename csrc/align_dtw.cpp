// FuseChat token DTW: full matrix or a band that widens until the path keeps off its edges.
//
// Memory: two rows of D values (int64) plus 2 bits of move per evaluated cell, so the banded
// form is O(n * band) and the full form n*m/4 bytes.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "tokalign/align.h"
#include "tokalign/dtw.h"

namespace tokalign {
namespace {

// Row pattern (pivot token) with a 128-entry ASCII match table, so the per-cell cost is one
// table lookup plus one bit-parallel step per source code point. Same distance as
// levenshtein_small (Levenshtein is a function; only the way Peq is found differs).
struct RowPattern {
    const uint32_t* s = nullptr;
    int len = 0;
    uint64_t ascii[128];

    void prepare(const uint32_t* str, int n) {
        s = str;
        len = n;
        if (len < 1 || len > 64) return;
        std::memset(ascii, 0, sizeof(ascii));
        for (int k = 0; k < len; ++k)
            if (s[k] < 128) ascii[s[k]] |= uint64_t(1) << k;
    }

    int distance(const uint32_t* t, int tlen, uint32_t* scratch) const {
        if (len == 0) return tlen;
        if (tlen == 0) return len;
        if (len > 64) return levenshtein_small(s, len, t, tlen, scratch);
        uint64_t vp = ~uint64_t(0), vn = 0;
        const uint64_t last = uint64_t(1) << (len - 1);
        int dist = len;
        for (int k = 0; k < tlen; ++k) {
            const uint32_t c = t[k];
            const uint64_t eq = c < 128 ? ascii[c] : lev_small_eq_mask(s, len, c);
            dist = lev_small_step(eq, vp, vn, last, dist);
        }
        return dist;
    }
};

struct Band {
    std::vector<int64_t> lo, hi, off;  // per row [lo, hi), off = first cell index of the row
    int64_t cells = 0;       // move slots incl. row padding
    int64_t band_cells = 0;  // cells inside the band
};

void finish_band(Band& b, int64_t n, int64_t m) {
    b.lo[0] = 0;
    b.hi[n - 1] = m;
    for (int64_t i = 0; i < n; ++i) {
        if (b.lo[i] > m - 1) b.lo[i] = m - 1;
        if (i > 0) {
            b.lo[i] = std::max(b.lo[i], b.lo[i - 1]);
            b.hi[i] = std::max(b.hi[i], b.hi[i - 1]);
            b.lo[i] = std::min(b.lo[i], b.hi[i - 1]);  // rows touch: every band cell is reachable
        }
        if (b.hi[i] <= b.lo[i]) b.hi[i] = b.lo[i] + 1;
    }
    b.off.resize(n + 1);
    b.off[0] = 0;
    // Rows start on a byte of the 2-bit move array, so a row's moves are written 4 per store.
    for (int64_t i = 0; i < n; ++i) b.off[i + 1] = b.off[i] + ((b.hi[i] - b.lo[i] + 3) & ~int64_t(3));
    b.cells = b.off[n];
    b.band_cells = 0;
    for (int64_t i = 0; i < n; ++i) b.band_cells += b.hi[i] - b.lo[i];
}

Band full_band(int64_t n, int64_t m) {
    Band b;
    b.lo.assign(n, 0);
    b.hi.assign(n, m);
    finish_band(b, n, m);
    return b;
}

// Row i keeps the source tokens whose (rescaled) cumulative-weight interval overlaps the pivot
// token's interval widened by `radius` on both sides.
Band weight_band(const std::vector<double>& pc, const std::vector<double>& sc, int64_t n, int64_t m, double radius) {
    Band b;
    b.lo.resize(n);
    b.hi.resize(n);
    int64_t lo = 0, hi = 0;
    for (int64_t i = 0; i < n; ++i) {
        const double a = pc[i] - radius, z = pc[i + 1] + radius;
        while (lo < m && sc[lo + 1] <= a) ++lo;
        if (hi < lo) hi = lo;
        while (hi < m && sc[hi] < z) ++hi;
        b.lo[i] = lo;
        b.hi[i] = hi;
    }
    finish_band(b, n, m);
    return b;
}

struct DtwWork {
    std::vector<int64_t> prev, cur;
    std::vector<uint8_t> moves;
    std::vector<uint32_t> scratch;
    std::vector<int32_t> rowcost;
    // Costs depend only on the two token ids, and a text repeats its tokens: cells are looked
    // up in a lazily filled (distinct pivot x distinct source) matrix when that is small enough.
    std::vector<int32_t> p_local, s_local;  // dense index of each position's id
    std::vector<int32_t> cache;             // -1 = not computed yet
    int64_t s_distinct = 0, p_distinct = 0;
};

constexpr int64_t kMaxCacheEntries = INT64_C(8) << 20;  // 32 MiB of int32

std::vector<int32_t> dense_ids(const int32_t* ids, int64_t n, int64_t* distinct) {
    std::vector<int32_t> uniq(ids, ids + n);
    std::sort(uniq.begin(), uniq.end());
    uniq.erase(std::unique(uniq.begin(), uniq.end()), uniq.end());
    std::vector<int32_t> local(n);
    for (int64_t k = 0; k < n; ++k)
        local[k] = static_cast<int32_t>(std::lower_bound(uniq.begin(), uniq.end(), ids[k]) - uniq.begin());
    *distinct = static_cast<int64_t>(uniq.size());
    return local;
}

inline bool in_band(const Band& b, int64_t i, int64_t j) { return i >= 0 && j >= b.lo[i] && j < b.hi[i]; }

// Fills D row by row inside the band, then traces back. Returns false when the band is not
// the full matrix and the path has a predecessor outside the band (the caller widens).
bool run_band(const TokenTable& tp, const int32_t* ip, int64_t n, const TokenTable& ts, const int32_t* is, int64_t m,
              int tie, const Band& b, bool is_full, DtwWork& w, AlignResult& out) {
    // D rows are stored shifted by one (index j + 1 holds column j; index 0 is column -1).
    w.prev.assign(m + 1, kDtwInf);
    w.cur.assign(m + 1, kDtwInf);
    w.prev[0] = 0;  // D[-1][-1] = 0: row 0 starts from it, all other borders are inf
    w.moves.assign(static_cast<size_t>(b.cells / 4), 0);
    w.rowcost.resize(m);
    const int64_t entries = w.p_distinct * w.s_distinct;
    if (w.cache.empty() && entries <= kMaxCacheEntries && entries <= b.band_cells / 2)
        w.cache.assign(static_cast<size_t>(entries), -1);  // pays off only when cells repeat
    RowPattern pat_str, pat_raw;
    uint32_t* scratch = w.scratch.data();
    int32_t* rowcost = w.rowcost.data();
    int64_t plo = 0, phi = 0;  // previous row's range (row -1: only column -1)
    for (int64_t i = 0; i < n; ++i) {
        const int64_t a = ip[i];
        const int64_t lo = b.lo[i], hi = b.hi[i];
        // 1. Costs of the row's band cells.
        pat_str.prepare(tp.stripped(a), tp.stripped_len(a));
        pat_raw.prepare(tp.raw(a), tp.raw_len(a));
        const bool a_has_str = tp.stripped_len(a) > 0;
        int32_t* crow = w.cache.empty() ? nullptr : w.cache.data() + static_cast<int64_t>(w.p_local[i]) * w.s_distinct;
        for (int64_t j = lo; j < hi; ++j) {
            int cost = crow ? crow[w.s_local[j]] : -1;
            if (cost < 0) {
                const int64_t bt = is[j];
                const int sl = ts.stripped_len(bt);
                // Same rule as dtw_token_cost(): stripped strings unless either is empty.
                cost = (a_has_str && sl > 0) ? pat_str.distance(ts.stripped(bt), sl, scratch)
                                             : pat_raw.distance(ts.raw(bt), ts.raw_len(bt), scratch);
                if (crow) crow[w.s_local[j]] = cost;
            }
            rowcost[j] = cost;
        }
        // 2. Previous-row cells outside its band read as inf.
        int64_t* P = w.prev.data() + 1;  // P[j] = D[i-1][j], P[-1] valid
        int64_t* C = w.cur.data() + 1;
        if (i > 0) {
            for (int64_t j = std::max(phi, lo); j < hi; ++j) P[j] = kDtwInf;
            if (lo - 1 < plo) P[lo - 1] = kDtwInf;
        }
        // 3. D values and moves, 4 moves per byte.
        uint8_t* mv_row = w.moves.data() + b.off[i] / 4;
        int64_t left = kDtwInf;
        uint8_t pack = 0;
        for (int64_t j = lo; j < hi; ++j) {
            uint8_t mv;
            left = dtw_cell(rowcost[j], P[j - 1], P[j], left, tie, &mv);
            C[j] = left;
            const int64_t k = j - lo;
            pack |= static_cast<uint8_t>(mv << ((k & 3) * 2));
            if ((k & 3) == 3) { mv_row[k >> 2] = pack; pack = 0; }
        }
        if (((hi - lo) & 3) != 0) mv_row[(hi - lo - 1) >> 2] = pack;
        std::swap(w.prev, w.cur);
        if (i == 0) w.cur[0] = kDtwInf;  // the D[-1][-1] = 0 seed must not leak into later rows
        plo = lo;
        phi = hi;
    }
    out.cost = w.prev[m];
    // Traceback from the end, exactly as FuseChat: record the cell, follow its move.
    out.path_p.clear();
    out.path_s.clear();
    int64_t i = n - 1, j = m - 1;
    bool touched = false;
    while (i > 0 || j > 0) {
        out.path_p.push_back(static_cast<int32_t>(i));
        out.path_s.push_back(static_cast<int32_t>(j));
        if (!is_full) {
            // Every existing predecessor must have been evaluated, or the choice may differ.
            if ((i > 0 && j > 0 && !in_band(b, i - 1, j - 1)) || (i > 0 && !in_band(b, i - 1, j)) ||
                (j > 0 && !in_band(b, i, j - 1))) {
                touched = true;
                break;
            }
        }
        const int64_t idx = b.off[i] + (j - b.lo[i]);
        const uint8_t mv = (w.moves[idx >> 2] >> ((idx & 3) * 2)) & 3;
        if (mv == kMoveDiag) { --i; --j; }
        else if (mv == kMovePivot) { --i; }
        else { --j; }
        if (i < 0 || j < 0 || !in_band(b, i, j)) throw std::logic_error("dtw: traceback left the band (internal error)");
    }
    if (touched) return false;
    out.path_p.push_back(0);
    out.path_s.push_back(0);
    std::reverse(out.path_p.begin(), out.path_p.end());
    std::reverse(out.path_s.begin(), out.path_s.end());
    return true;
}

}  // namespace

AlignResult dtw_align(const TokenTable& tp, const int32_t* ip, int64_t n, const TokenTable& ts, const int32_t* is,
                      int64_t m, int tie, int64_t band) {
    if (tie != kTiePivotFirst && tie != kTieSourceFirst) throw std::invalid_argument("dtw: unknown tie-break code");
    for (int64_t i = 0; i < n; ++i)
        if (ip[i] < 0 || ip[i] >= tp.size())
            throw std::invalid_argument("dtw: pivot id " + std::to_string(ip[i]) + " at position " + std::to_string(i) +
                                        " outside the pivot table (size " + std::to_string(tp.size()) + ")");
    for (int64_t j = 0; j < m; ++j)
        if (is[j] < 0 || is[j] >= ts.size())
            throw std::invalid_argument("dtw: source id " + std::to_string(is[j]) + " at position " + std::to_string(j) +
                                        " outside the source table (size " + std::to_string(ts.size()) + ")");
    AlignResult out;
    out.n = n;
    out.m = m;
    if (n == 0 || m == 0) {
        finish_result(out);
        return out;
    }
    if (n > INT32_MAX || m > INT32_MAX) throw std::invalid_argument("dtw: sequences longer than 2^31 tokens");
    DtwWork w;
    w.scratch.assign(static_cast<size_t>(std::max(tp.max_len(), ts.max_len())) + 2, 0);
    {
        int64_t pd = 0;
        w.p_local = dense_ids(ip, n, &pd);
        w.s_local = dense_ids(is, m, &w.s_distinct);
        w.p_distinct = pd;
    }
    const double total = static_cast<double>(n) * static_cast<double>(m);
    if (band >= 0) {
        // Cumulative weights, source rescaled to the pivot's total.
        std::vector<double> pc(n + 1, 0.0), sc(m + 1, 0.0);
        for (int64_t i = 0; i < n; ++i) pc[i + 1] = pc[i] + static_cast<double>(tp.weight(ip[i]));
        for (int64_t j = 0; j < m; ++j) sc[j + 1] = sc[j] + static_cast<double>(ts.weight(is[j]));
        if (pc[n] <= 0 || sc[m] <= 0) {  // nothing to go by: token positions
            for (int64_t i = 0; i <= n; ++i) pc[i] = static_cast<double>(i);
            for (int64_t j = 0; j <= m; ++j) sc[j] = static_cast<double>(j);
        }
        const double scale = pc[n] / sc[m];
        for (auto& x : sc) x *= scale;
        const double per_token = pc[n] / static_cast<double>(n);
        // Auto: 64 weight units (~ bytes of text), at least 8 pivot tokens' worth.
        double radius = band > 0 ? static_cast<double>(band) : std::max(64.0, 8.0 * per_token);
        for (;;) {
            Band b = weight_band(pc, sc, n, m, radius);
            if (static_cast<double>(b.band_cells) >= 0.5 * total) break;  // cheaper to do it all
            if (run_band(tp, ip, n, ts, is, m, tie, b, false, w, out)) {
                out.band = static_cast<int64_t>(radius);
                finish_result(out);
                return out;
            }
            radius *= 2.0;
        }
    }
    if (total > static_cast<double>(kMaxFullCells))
        throw std::invalid_argument("dtw: full matrix of " + std::to_string(n) + " x " + std::to_string(m) +
                                    " cells is too large; use band='auto' or span alignment");
    Band b = full_band(n, m);
    run_band(tp, ip, n, ts, is, m, tie, b, true, w, out);
    out.band = -1;
    finish_result(out);
    return out;
}

}  // namespace tokalign
