// Cell costs of one DTW problem (CPU side): cost(i, j) = Levenshtein of pivot token i and source
// token j under the FuseChat rule of dtw_token_cost() (stripped strings unless either is empty).
//
// Why a table: a text repeats its tokens (a 2048-token sequence has ~500-900 distinct ones), so
// the n x m cells need only (distinct pivot) x (distinct source) distances. Both sequences are
// mapped to dense local ids and the distances live in a uint8 table, filled up front when most
// entries will be used (full DTW) or lazily otherwise (band / pruned passes). Distances of 255 or
// more are not stored and are recomputed (tokens that long are rare).
#pragma once
#include <cstdint>
#include <vector>

#include "tokalign/align.h"
#include "tokalign/dtw.h"

namespace tokalign {

// Pattern (one pivot token) with a 128-entry ASCII match table: per source code point one table
// lookup plus one bit-parallel step (lev_small_step). Same distance as levenshtein_small.
struct DtwRowPattern {
    const uint32_t* s = nullptr;
    int len = 0;
    uint64_t ascii[128];

    void prepare(const uint32_t* str, int n);
    int distance(const uint32_t* t, int tlen, uint32_t* scratch) const;
};

class DtwPairCosts {
   public:
    static constexpr uint8_t kUnknown = 255;
    // Largest table (entries = distinct pivot x distinct source); above it costs are computed
    // per cell.
    static constexpr int64_t kMaxTableEntries = INT64_C(128) << 20;  // 128 MiB

    DtwPairCosts(const TokenTable& tp, const int32_t* ip, int64_t n, const TokenTable& ts, const int32_t* is,
                 int64_t m);

    // Computes every table entry now (when the caller will touch most of them).
    void fill_all();
    bool has_table() const { return !table_.empty(); }
    bool complete() const { return complete_; }
    // After fill_all(): rest[i] = sum over rows i' >= i of the smallest cost in row i' (over all
    // source tokens), rest[n] = 0. Any path from row i - 1 to the end costs at least rest[i].
    // Returns false (rest untouched) without a complete table.
    bool row_rest_bounds(std::vector<int64_t>& rest) const;
    int64_t entries() const { return p_distinct_ * s_distinct_; }

    // Selects pivot row i for cost(j).
    void begin_row(int64_t i) {
        row_ = i;
        row_ready_ = false;
        trow_ = table_.empty() ? nullptr : table_.data() + static_cast<int64_t>(p_local_[i]) * s_distinct_;
    }
    // Cost of cell (row, j).
    int cost(int64_t j) {
        if (trow_) {
            const uint8_t v = trow_[s_local_[j]];
            if (v != kUnknown) return v;
        }
        return compute(j);
    }

    // Costs of the current row's columns [lo, hi) into out[lo..hi).
    template <class V>
    void row_costs(int64_t lo, int64_t hi, V* out) {
        if (complete_) {
            const int32_t* sl = s_local_.data();
            const uint8_t* tr = trow_;
            int64_t j = lo;
            for (; j < hi; ++j) {
                const uint8_t v = tr[sl[j]];
                if (v == kUnknown) break;  // >= 255: computed below
                out[j] = static_cast<V>(v);
            }
            for (; j < hi; ++j) out[j] = static_cast<V>(cost(j));
            return;
        }
        for (int64_t j = lo; j < hi; ++j) out[j] = static_cast<V>(cost(j));
    }

   private:
    int compute(int64_t j);
    int distance(int64_t pivot_id, const DtwRowPattern& ps, const DtwRowPattern& pr, int64_t source_id);

    const TokenTable& tp_;
    const TokenTable& ts_;
    const int32_t* ip_;
    const int32_t* is_;
    std::vector<int32_t> p_local_, s_local_;  // dense local id of each position
    std::vector<int32_t> p_first_, s_first_;  // a position of each local id
    int64_t p_distinct_ = 0, s_distinct_ = 0;
    std::vector<uint8_t> table_;  // p_distinct x s_distinct, kUnknown = not computed
    std::vector<uint32_t> scratch_;
    bool complete_ = false;
    int64_t row_ = -1;
    bool row_ready_ = false;
    uint8_t* trow_ = nullptr;
    DtwRowPattern pat_str_, pat_raw_;
};

}  // namespace tokalign
