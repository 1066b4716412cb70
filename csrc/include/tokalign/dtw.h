// Per-cell arithmetic of the FuseChat token DTW, shared by the CPU core and a later CUDA build.
//
//   D[i][j] = cost(i, j) + min(D[i-1][j-1], D[i-1][j], D[i][j-1]),  D[-1][-1] = 0, other borders = inf
//
// i indexes the pivot sequence, j the source sequence. The move stored per cell is the
// predecessor the traceback takes. FuseChat's traceback calls np.argmin([diag, up, left]) on the
// three predecessors, i.e. on equal values the diagonal wins, then the step that decrements the
// first sequence (pivot, "up"), then the second (source, "left"). Choosing that move already in the
// forward pass is equivalent because the traceback compares exactly these three values.
#pragma once
#include <cstdint>

#include "tokalign/common.h"
#include "tokalign/levenshtein_small.h"

namespace tokalign {

constexpr int64_t kDtwInf = INT64_C(0x1fffffffffffffff);  // + any cost stays < INT64_MAX

enum DtwMove : uint8_t {
    kMoveDiag = 0,    // (i-1, j-1)
    kMovePivot = 1,   // (i-1, j): pivot index decrements
    kMoveSource = 2,  // (i, j-1): source index decrements
};

enum DtwTieBreak : int {
    kTiePivotFirst = 0,   // diag, pivot, source: FuseChat's dtw(pivot_tokens, source_tokens)
    kTieSourceFirst = 1,  // diag, source, pivot: FuseChat's dtw(source_tokens, pivot_tokens)
};

// "Infinity" of a D value type: out-of-grid / out-of-band / pruned cells. Adding costs to it
// stays far from overflow (int32 is used only when (n + m) * max cost < 2^29).
template <class V>
TA_HD V dtw_inf();
template <>
TA_HD int64_t dtw_inf<int64_t>() { return kDtwInf; }
template <>
TA_HD int32_t dtw_inf<int32_t>() { return INT32_C(0x40000000); }

// The move with the smallest predecessor value, ties broken by `tie`. Branch-free (the
// comparisons are data dependent and would mispredict).
template <class V>
TA_HD uint8_t dtw_choose(V diag, V up, V left, int tie) {
    const int diag_wins = (diag <= up) & (diag <= left);
    const int other = tie == kTieSourceFirst ? 2 - static_cast<int>(left > up) : 1 + static_cast<int>(up > left);
    return static_cast<uint8_t>(diag_wins ? 0 : other);
}

// Smallest of the three predecessor values (the move does not matter for the value).
template <class V>
TA_HD V dtw_min3(V diag, V up, V left) {
    const V du = diag < up ? diag : up;
    return du < left ? du : left;
}

// D value of a cell; writes its move. Out-of-grid / out-of-band / pruned predecessors are
// dtw_inf<V>(). The value does not wait for the move, so a row's dependency chain is one min and
// one add per cell: D = min(cost + min(diag, up), cost + left).
template <class V>
TA_HD V dtw_cell(V cost, V diag, V up, V left, int tie, uint8_t* move) {
    *move = dtw_choose(diag, up, left, tie);
    return cost + dtw_min3(diag, up, left);
}

// Code-point strings are compared with the word-boundary markers U+2581 and U+0120 removed;
// when either stripped string is empty the raw strings are compared instead.
TA_HD int dtw_token_cost(const uint32_t* a_stripped, int la_stripped, const uint32_t* a_raw, int la_raw,
                         const uint32_t* b_stripped, int lb_stripped, const uint32_t* b_raw, int lb_raw,
                         uint32_t* scratch) {
    if (la_stripped > 0 && lb_stripped > 0)
        return levenshtein_small(a_stripped, la_stripped, b_stripped, lb_stripped, scratch);
    return levenshtein_small(a_raw, la_raw, b_raw, lb_raw, scratch);
}

}  // namespace tokalign
