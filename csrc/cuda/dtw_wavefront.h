// The per-cell and traceback steps of the GPU DTW (dtw.cu), written once as TA_HD functions so
// that the host emulation in dtw_host.cpp (`dtw_batch(..., emulate=True)`, run by the tests on
// every machine) executes exactly the code the kernel runs, on the same anti-diagonal layout.
#pragma once

#include <cstdint>

#include "cuda_api.h"
#include "tokalign/common.h"
#include "tokalign/dtw.h"

namespace tokalign {
namespace cuda {

struct TableView {
    const uint32_t* raw;
    const int64_t* raw_off;
    const uint32_t* str;
    const int64_t* str_off;
};

// The CPU cost rule (dtw_token_cost): marker-stripped strings unless either is empty, then the
// raw strings. -1 when both strings exceed 64 code points (the CPU uses a scratch DP there; such
// pairs go back to the CPU rather than giving every GPU thread scratch memory).
TA_HD int wave_token_cost(const TableView& tp, int a, const TableView& ts, int b) {
    const int64_t as = tp.str_off[a], bs = ts.str_off[b];
    int la = int(tp.str_off[a + 1] - as), lb = int(ts.str_off[b + 1] - bs);
    const uint32_t* x;
    const uint32_t* y;
    if (la > 0 && lb > 0) {
        x = tp.str + as;
        y = ts.str + bs;
    } else {
        const int64_t ar = tp.raw_off[a], br = ts.raw_off[b];
        la = int(tp.raw_off[a + 1] - ar);
        lb = int(ts.raw_off[b + 1] - br);
        x = tp.raw + ar;
        y = ts.raw + br;
    }
    if (la > lb) {
        const uint32_t* t = x;
        x = y;
        y = t;
        const int tl = la;
        la = lb;
        lb = tl;
    }
    if (la == 0) return lb;
    if (la > 64) return -1;
    return lev_small_myers(x, la, y, lb);
}

// The three diagonals of D values the wavefront keeps (d, d-1, d-2; indexed by pivot position) and
// the pivot ranges of d-1 / d-2. advance() makes diagonal d (range [lo, hi)) the previous one and
// recycles the oldest buffer for the next; the kernel and its host emulation share it.
struct WaveRing {
    int32_t* cur;
    int32_t* p1;
    int32_t* p2;
    int lo1, hi1, lo2, hi2;
    TA_HD WaveRing(int32_t* d0, int32_t* d1, int32_t* d2) : cur(d0), p1(d1), p2(d2), lo1(0), hi1(0), lo2(0), hi2(0) {}
    TA_HD void advance(int lo, int hi) {
        int32_t* t = p2;
        p2 = p1;
        p1 = cur;
        cur = t;
        lo2 = lo1;
        hi2 = hi1;
        lo1 = lo;
        hi1 = hi;
    }
};

// Cell (i, d - i) of anti-diagonal d. p1 / p2 hold the D values of diagonals d-1 / d-2 (indexed
// by pivot position, valid on [lo1, hi1) / [lo2, hi2)); writes D into cur[i] and the move into
// mrow[i]. Returns false when the cell needs the CPU (cost -1).
TA_HD bool wave_cell(int i, int d, int lo1, int hi1, int lo2, int hi2, const int32_t* p1, const int32_t* p2,
                     const TableView& tp, const int32_t* pid, const TableView& ts, const int32_t* sid, int tie,
                     int32_t* cur, uint8_t* mrow) {
    const int j = d - i;
    int32_t diag = kDtwInf32, up = kDtwInf32, left = kDtwInf32;
    if (i > 0 && j > 0) {
        if (i - 1 >= lo2 && i - 1 < hi2) diag = p2[i - 1];
    } else if (i == 0 && j == 0) {
        diag = 0;  // D[-1][-1]
    }
    if (i > 0 && i - 1 >= lo1 && i - 1 < hi1) up = p1[i - 1];
    if (j > 0 && i >= lo1 && i < hi1) left = p1[i];
    int c = wave_token_cost(tp, pid[i], ts, sid[j]);
    const bool ok = c >= 0;
    if (!ok) c = 0;
    const uint8_t move = dtw_choose(diag, up, left, tie);
    const int32_t best = move == kMoveDiag ? diag : (move == kMovePivot ? up : left);
    cur[i] = best >= kDtwInf32 ? kDtwInf32 : best + c;  // int32: the host only sends pairs whose costs fit
    mrow[i] = move;
    return ok;
}

// Traceback from (n-1, m-1) as the CPU does it: record the cell, then (for a band that is not the
// whole matrix) stop with kDtwTouched if an existing predecessor lies outside the band, else follow
// the stored move. Writes (i, j) pairs from the end backwards; returns the status, *len the cells.
TA_HD int32_t wave_traceback(int n, int m, const int32_t* dlo, const int32_t* dhi, const int64_t* dcell,
                             const uint8_t* mv, bool full, int32_t* out, int32_t* len) {
    int i = n - 1, j = m - 1, k = 0;
    while (i > 0 || j > 0) {
        out[2 * k] = i;
        out[2 * k + 1] = j;
        ++k;
        if (!full) {
            const bool diag_in = !(i > 0 && j > 0) || (i - 1 >= dlo[i + j - 2] && i - 1 < dhi[i + j - 2]);
            const bool up_in = !(i > 0) || (i - 1 >= dlo[i + j - 1] && i - 1 < dhi[i + j - 1]);
            const bool left_in = !(j > 0) || (i >= dlo[i + j - 1] && i < dhi[i + j - 1]);
            if (!(diag_in && up_in && left_in)) {
                *len = k;
                return kDtwTouched;
            }
        }
        const int e = i + j;
        const uint8_t move = mv[dcell[e] + (i - dlo[e])];
        if (move == kMoveDiag) {
            --i;
            --j;
        } else if (move == kMovePivot) {
            --i;
        } else {
            --j;
        }
    }
    out[2 * k] = 0;
    out[2 * k + 1] = 0;
    *len = k + 1;
    return kDtwOk;
}

}  // namespace cuda
}  // namespace tokalign
