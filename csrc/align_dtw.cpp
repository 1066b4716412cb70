// FuseChat token DTW: full matrix, or an exact band.
//
// Banded mode: (1) DTW inside a band around the diagonal of cumulative text lengths; the band
// widens while the traced path has a predecessor outside it. That path is only a candidate (a
// cheaper path may leave and re-enter the band), but its cost U bounds the optimum. (2) A pruned
// forward pass (PrunedDTW, Silva & Batista 2016) computes the exact D of every cell with D <= U
// (row by row, only the columns reachable from the previous row's cells <= U) and checks, cell by
// cell along the candidate, that the full DTW's traceback takes the same move; this needs two rows
// of memory. (3) If a move differs, the same pruned pass runs again and keeps its moves (ragged
// rows, O(kept cells)) and the path is traced from them.
//
// Why the pruning is exact: costs are >= 0, so a cell on any path of cost <= U has D <= U, and
// the smallest predecessor of a cell with D <= U is <= U - cost. A cell with D > U therefore never
// is the argmin of, nor ties with the argmin of, a cell that matters; reading it as +inf keeps
// every move (FuseChat tie order included) of the cells with D <= U, which hold the full DTW's
// traceback. Ties with D == U are kept.
//
// Memory: two rows of D (int64) plus 2 bits of move per stored cell: band O(n * band), full
// n*m/4 bytes, exact pruned pass O(kept cells). Passes stop with an error above kMaxFullCells.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "tokalign/align.h"
#include "tokalign/dtw.h"
#include "tokalign/dtw_band.h"
#include "tokalign/dtw_costs.h"

namespace tokalign {
namespace {

// The shared band rows (tokalign/dtw_band.h) plus the layout of the 2-bit move array.
struct Band : BandRows {
    std::vector<int64_t> off;  // first move slot of each row
    int64_t cells = 0;         // move slots incl. row padding
};

Band with_moves(BandRows rows, int64_t n) {
    Band b;
    static_cast<BandRows&>(b) = std::move(rows);
    b.off.resize(n + 1);
    b.off[0] = 0;
    // Rows start on a byte of the 2-bit move array, so a row's moves are written 4 per store.
    for (int64_t i = 0; i < n; ++i) b.off[i + 1] = b.off[i] + ((b.hi[i] - b.lo[i] + 3) & ~int64_t(3));
    b.cells = b.off[n];
    return b;
}

// Per-pass scratch: two D rows stored shifted by one (index j + 1 holds column j; index 0 is
// column -1), the row's costs, and one byte of move per column before packing.
template <class V>
struct DtwRows {
    std::vector<V> a, b, rc;
    std::vector<uint8_t> mv;
    V* prev = nullptr;
    V* cur = nullptr;
    void init(int64_t m) {
        a.assign(static_cast<size_t>(m + 1), dtw_inf<V>());
        b.assign(static_cast<size_t>(m + 1), dtw_inf<V>());
        rc.assign(static_cast<size_t>(m), 0);
        mv.assign(static_cast<size_t>(m + 8), 0);
        prev = a.data() + 1;
        cur = b.data() + 1;
        prev[-1] = 0;  // D[-1][-1] = 0: row 0 starts from it, all other borders are inf
    }
    void swap() { std::swap(prev, cur); }
};

inline uint8_t packed_move(const std::vector<uint8_t>& moves, int64_t idx) {
    return (moves[static_cast<size_t>(idx >> 2)] >> ((idx & 3) * 2)) & 3;
}

// Packs mv[0..cnt) (values 0..2) four per byte into out; mv must hold 3 zero bytes past cnt.
inline void pack_moves(uint8_t* mv, int64_t cnt, uint8_t* out) {
    mv[cnt] = mv[cnt + 1] = mv[cnt + 2] = 0;
    for (int64_t k = 0; k < cnt; k += 4)
        out[k >> 2] = static_cast<uint8_t>(mv[k] | (mv[k + 1] << 2) | (mv[k + 2] << 4) | (mv[k + 3] << 6));
}

// D values of columns [lo, hi) of a row whose predecessors P[lo-1..hi) all exist (inf where not
// evaluated), the left neighbour of lo being inf. Written as dtw_cell() computes them, but in
// passes: min(diag, up) for the whole row (vectorised), then the left-to-right chain (one add and
// one min per cell).
template <class V>
void row_values(const V* rc, const V* P, V* C, int64_t lo, int64_t hi) {
    for (int64_t j = lo; j < hi; ++j) {
        const V d = P[j - 1], u = P[j];
        C[j] = rc[j] + (d < u ? d : u);
    }
    V left = dtw_inf<V>();
    for (int64_t j = lo; j < hi; ++j) {
        const V via_left = rc[j] + left;
        left = C[j] < via_left ? C[j] : via_left;
        C[j] = left;
    }
}

// Moves of columns [lo, hi) (after row_values) into mv[0..hi-lo).
template <class V, int kTie>
void row_moves(const V* P, const V* C, int64_t lo, int64_t hi, uint8_t* mv) {
    if (hi <= lo) return;
    mv[0] = dtw_choose<V>(P[lo - 1], P[lo], dtw_inf<V>(), kTie);
    for (int64_t j = lo + 1; j < hi; ++j) mv[j - lo] = dtw_choose<V>(P[j - 1], P[j], C[j - 1], kTie);
}

// ---------------------------------------------------------------------------------------------
// Band (and full matrix) pass
// ---------------------------------------------------------------------------------------------

struct Candidate {
    OutVec<int32_t> path_p, path_s;  // in order, from (0, 0)
    std::vector<uint8_t> moves;           // move taken at each path cell (unused at (0, 0))
    int64_t cost = 0;
};

inline bool in_band(const Band& b, int64_t i, int64_t j) { return i >= 0 && j >= b.lo[i] && j < b.hi[i]; }

// Fills D row by row inside the band, then traces back. Returns false when the band is not the
// full matrix and the path has a predecessor outside the band (the caller widens).
template <class V, int kTie>
bool run_band(DtwPairCosts& costs, int64_t n, int64_t m, const Band& b, bool is_full, Candidate& out) {
    DtwRows<V> rows;
    rows.init(m);
    std::vector<uint8_t> moves(static_cast<size_t>(b.cells / 4), 0);
    int64_t plo = 0, phi = 0;  // previous row's range (row -1: only column -1)
    for (int64_t i = 0; i < n; ++i) {
        const int64_t lo = b.lo[i], hi = b.hi[i];
        costs.begin_row(i);
        costs.row_costs(lo, hi, rows.rc.data());
        V* P = rows.prev;
        if (i > 0) {  // previous-row cells outside its band read as inf
            for (int64_t j = std::max(phi, lo); j < hi; ++j) P[j] = dtw_inf<V>();
            if (lo - 1 < plo) P[lo - 1] = dtw_inf<V>();
        }
        row_values<V>(rows.rc.data(), P, rows.cur, lo, hi);
        row_moves<V, kTie>(P, rows.cur, lo, hi, rows.mv.data());
        pack_moves(rows.mv.data(), hi - lo, moves.data() + b.off[i] / 4);
        rows.swap();
        if (i == 0) rows.cur[-1] = dtw_inf<V>();  // the D[-1][-1] = 0 seed must not leak into later rows
        plo = lo;
        phi = hi;
    }
    out.cost = static_cast<int64_t>(rows.prev[m - 1]);
    // Traceback from the end, exactly as FuseChat: record the cell, follow its move.
    out.path_p.clear();
    out.path_s.clear();
    out.moves.clear();
    int64_t i = n - 1, j = m - 1;
    while (i > 0 || j > 0) {
        if (!is_full && ((i > 0 && j > 0 && !in_band(b, i - 1, j - 1)) || (i > 0 && !in_band(b, i - 1, j)) ||
                         (j > 0 && !in_band(b, i, j - 1))))
            return false;  // a predecessor was not evaluated: the choice may be wrong
        const uint8_t mv = packed_move(moves, b.off[i] + (j - b.lo[i]));
        out.path_p.push_back(static_cast<int32_t>(i));
        out.path_s.push_back(static_cast<int32_t>(j));
        out.moves.push_back(mv);
        if (mv == kMoveDiag) { --i; --j; }
        else if (mv == kMovePivot) { --i; }
        else { --j; }
        if (i < 0 || j < 0 || !in_band(b, i, j)) throw std::logic_error("dtw: traceback left the band (internal error)");
    }
    out.path_p.push_back(0);
    out.path_s.push_back(0);
    out.moves.push_back(0);
    std::reverse(out.path_p.begin(), out.path_p.end());
    std::reverse(out.path_s.begin(), out.path_s.end());
    std::reverse(out.moves.begin(), out.moves.end());
    return true;
}

// ---------------------------------------------------------------------------------------------
// Pruned pass (exact for every cell on a path of cost <= U)
// ---------------------------------------------------------------------------------------------

struct PrunedRow {
    int64_t start, stop;  // evaluated columns [start, stop)
    int64_t first, end;   // columns with D <= limit lie in [first, end)
};

// One row of the pruned pass with threshold `limit` (U minus a lower bound of the rows below).
// [pf, ph) are the previous row's columns within its limit (row -1: [-1, 0), i.e. only
// D[-1][-1] = 0); everything else in P reads as inf. Writes C on [start, stop) and, with kStore,
// the moves of [start, stop) into rows.mv[0..).
template <class V, int kTie, bool kStore>
PrunedRow pruned_row(DtwPairCosts& costs, DtwRows<V>& rows, int64_t i, int64_t m, V limit, int64_t pf, int64_t ph) {
    V* P = rows.prev;
    V* C = rows.cur;
    V* rc = rows.rc.data();
    const V inf = dtw_inf<V>();
    costs.begin_row(i);
    const int64_t start = pf < 0 ? 0 : pf;
    if (pf >= 0) P[pf - 1] = inf;  // beyond the limit or never evaluated: inf is equivalent
    int64_t first = -1, last = -1;
    // Columns under the previous row's kept range: diagonal and vertical predecessors exist.
    if (ph > start) {
        costs.row_costs(start, ph, rc);
        row_values<V>(rc, P, C, start, ph);
        if (kStore) row_moves<V, kTie>(P, C, start, ph, rows.mv.data());
        for (int64_t j = start; j < ph; ++j)
            if (C[j] <= limit) { first = j; break; }
        if (first >= 0)
            for (int64_t j = ph - 1; j >= first; --j)
                if (C[j] <= limit) { last = j; break; }
    }
    // Past it: at j == ph only the diagonal, then only the left neighbour; stop above the limit
    // (D only grows along the row from here on).
    V left = ph > start ? C[ph - 1] : inf;
    int64_t j = ph;
    for (; j < m; ++j) {
        uint8_t move;
        const V v = dtw_cell<V>(static_cast<V>(costs.cost(j)), j == ph ? P[j - 1] : inf, inf, left, kTie, &move);
        if (v > limit) break;
        left = v;
        C[j] = v;
        if (kStore) rows.mv[j - start] = move;
        if (first < 0) first = j;
        last = j;
    }
    if (first < 0) throw std::logic_error("dtw: pruned pass lost every cell (internal error)");
    return {start, j, first, last + 1};
}

[[noreturn]] void too_many_cells(int64_t n, int64_t m, int64_t budget) {
    throw std::invalid_argument("dtw: the exact banded DTW of " + std::to_string(n) + " x " + std::to_string(m) +
                                " tokens needs more than " + std::to_string(budget) +
                                " cells (the sequences do not follow the band); use span alignment or shorter "
                                "inputs");
}

// True when the full DTW's traceback takes exactly the candidate's moves. O(m) memory.
template <class V, int kTie>
bool verify_candidate(DtwPairCosts& costs, int64_t n, int64_t m, const Candidate& cand,
                      const std::vector<int64_t>& rest, int64_t budget) {
    const int64_t U = cand.cost;
    DtwRows<V> rows;
    rows.init(m);
    int64_t pf = -1, ph = 0, k = 0, evaluated = 0;
    const int64_t L = static_cast<int64_t>(cand.path_p.size());
    const V inf = dtw_inf<V>();
    auto read = [inf](const V* row, int64_t j, int64_t lo, int64_t hi) { return j >= lo && j < hi ? row[j] : inf; };
    PrunedRow r{0, 0, 0, 0};
    for (int64_t i = 0; i < n; ++i) {
        r = pruned_row<V, kTie, false>(costs, rows, i, m, static_cast<V>(U - rest[i + 1]), pf, ph);
        evaluated += r.stop - r.start;
        if (evaluated > budget) too_many_cells(n, m, budget);
        const V* P = rows.prev;
        const V* C = rows.cur;
        for (; k < L && cand.path_p[k] == i; ++k) {
            const int64_t j = cand.path_s[k];
            if (k == 0) continue;  // (0, 0): no move
            const V diag = i > 0 ? read(P, j - 1, pf, ph) : inf;
            const V up = i > 0 ? read(P, j, pf, ph) : inf;
            const V left = read(C, j - 1, r.start, r.stop);
            if (dtw_choose<V>(diag, up, left, kTie) != cand.moves[k]) return false;
        }
        pf = r.first;
        ph = r.end;
        rows.swap();
    }
    // Same moves from the same end cell: the same path, so D[n-1][m-1] == U.
    return r.end == m && static_cast<int64_t>(rows.prev[m - 1]) == U;
}

// The exact DTW path from the pruned pass with stored moves (ragged rows).
template <class V, int kTie>
void exact_pruned(DtwPairCosts& costs, int64_t n, int64_t m, int64_t U, const std::vector<int64_t>& rest,
                  int64_t budget, AlignResult& out) {
    DtwRows<V> rows;
    rows.init(m);
    std::vector<int64_t> lo(n), hi(n), off(n + 1, 0);
    std::vector<uint8_t> moves;
    int64_t pf = -1, ph = 0, evaluated = 0;
    for (int64_t i = 0; i < n; ++i) {
        const PrunedRow r = pruned_row<V, kTie, true>(costs, rows, i, m, static_cast<V>(U - rest[i + 1]), pf, ph);
        evaluated += r.stop - r.start;
        if (evaluated > budget) too_many_cells(n, m, budget);
        // Keep the moves of [start, end): the traceback only visits cells within the limit.
        lo[i] = r.start;
        hi[i] = r.end;
        const int64_t cnt = r.end - r.start;
        off[i + 1] = off[i] + (cnt + 3) / 4;
        moves.resize(static_cast<size_t>(off[i + 1]));
        pack_moves(rows.mv.data(), cnt, moves.data() + off[i]);
        pf = r.first;
        ph = r.end;
        rows.swap();
    }
    out.cost = static_cast<int64_t>(rows.prev[m - 1]);
    if (ph != m || out.cost > U) throw std::logic_error("dtw: pruned pass lost the end cell (internal error)");
    out.path_p.clear();
    out.path_s.clear();
    int64_t i = n - 1, j = m - 1;
    while (i > 0 || j > 0) {
        out.path_p.push_back(static_cast<int32_t>(i));
        out.path_s.push_back(static_cast<int32_t>(j));
        const uint8_t move = packed_move(moves, off[i] * 4 + (j - lo[i]));
        if (move == kMoveDiag) { --i; --j; }
        else if (move == kMovePivot) { --i; }
        else { --j; }
        if (i < 0 || j < 0 || j < lo[i] || j >= hi[i])
            throw std::logic_error("dtw: traceback left the pruned cells (internal error)");
    }
    out.path_p.push_back(0);
    out.path_s.push_back(0);
    std::reverse(out.path_p.begin(), out.path_p.end());
    std::reverse(out.path_s.begin(), out.path_s.end());
}

// ---------------------------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------------------------

template <class V, int kTie>
void dtw_impl(DtwPairCosts& costs, const TokenTable& tp, const int32_t* ip, int64_t n, const TokenTable& ts,
              const int32_t* is, int64_t m, int64_t band, int64_t max_cells, AlignResult& out) {
    const double total = static_cast<double>(n) * static_cast<double>(m);
    if (band >= 0) {
        std::vector<double> pc, sc;
        double radius = band_inputs(
            n, m, [&](int64_t i) { return tp.weight(ip[i]); }, [&](int64_t j) { return ts.weight(is[j]); }, band, pc,
            sc);
        // The pruned pass touches most distinct token pairs: fill the cost table up front (SIMD)
        // unless it is large compared to the matrix.
        if (static_cast<double>(costs.entries()) <= 0.125 * total) costs.fill_all();
        Candidate cand;
        bool have = false;
        for (;;) {
            Band b = with_moves(weight_band(pc, sc, n, m, radius), n);
            if (static_cast<double>(b.band_cells) >= 0.5 * total) break;  // cheaper to do it all
            have = run_band<V, kTie>(costs, n, m, b, false, cand);
            if (have) break;
            radius *= 2.0;
        }
        if (have) {
            // Rows still to come cost at least their cheapest cell: a cell of row i can lie on a
            // path of cost <= U only if D <= U - rest[i + 1] (PrunedDTW with a lower bound).
            std::vector<int64_t> rest;
            if (!costs.row_rest_bounds(rest)) rest.assign(static_cast<size_t>(n + 1), 0);
            const bool same = verify_candidate<V, kTie>(costs, n, m, cand, rest, max_cells);
            if (same) {
                out.cost = cand.cost;
                out.path_p = std::move(cand.path_p);
                out.path_s = std::move(cand.path_s);
                out.band = static_cast<int64_t>(radius);
                return;
            }
            exact_pruned<V, kTie>(costs, n, m, cand.cost, rest, max_cells, out);
            out.band = -1;
            return;
        }
    }
    if (total > static_cast<double>(max_cells))
        throw std::invalid_argument("dtw: full matrix of " + std::to_string(n) + " x " + std::to_string(m) +
                                    " cells is too large; use band='auto' or span alignment");
    if (static_cast<double>(costs.entries()) <= 0.5 * total) costs.fill_all();
    Band b = with_moves(full_band(n, m), n);
    Candidate cand;
    run_band<V, kTie>(costs, n, m, b, true, cand);
    out.cost = cand.cost;
    out.path_p = std::move(cand.path_p);
    out.path_s = std::move(cand.path_s);
    out.band = -1;
}

}  // namespace

AlignResult dtw_align(const TokenTable& tp, const int32_t* ip, int64_t n, const TokenTable& ts, const int32_t* is,
                      int64_t m, int tie, int64_t band, int64_t max_cells) {
    if (tie != kTiePivotFirst && tie != kTieSourceFirst) throw std::invalid_argument("dtw: unknown tie-break code");
    if (max_cells < 1) throw std::invalid_argument("dtw: max_cells must be positive");
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
    DtwPairCosts costs(tp, ip, n, ts, is, m);
    // int32 D values (half the memory traffic) whenever no path sum can come near 2^29.
    const double max_cost = static_cast<double>(std::max(tp.max_len(), ts.max_len())) + 1.0;
    const bool narrow = static_cast<double>(n + m + 2) * max_cost < static_cast<double>(INT64_C(1) << 29);
    if (narrow && tie == kTiePivotFirst)
        dtw_impl<int32_t, kTiePivotFirst>(costs, tp, ip, n, ts, is, m, band, max_cells, out);
    else if (narrow)
        dtw_impl<int32_t, kTieSourceFirst>(costs, tp, ip, n, ts, is, m, band, max_cells, out);
    else if (tie == kTiePivotFirst)
        dtw_impl<int64_t, kTiePivotFirst>(costs, tp, ip, n, ts, is, m, band, max_cells, out);
    else
        dtw_impl<int64_t, kTieSourceFirst>(costs, tp, ip, n, ts, is, m, band, max_cells, out);
    finish_result(out);
    return out;
}

}  // namespace tokalign
