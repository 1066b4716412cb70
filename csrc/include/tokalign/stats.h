// Mapping-statistics accumulation (tokalign/stats): plain C++ (no Python types); bind_stats.cpp wraps it.
#pragma once

#include <cstdint>
#include <vector>

namespace tokalign {
namespace stats {

// Sorted unique keys p * source_vocab + s and how often each (pivot, source) pair was co-aligned.
struct PairCounts {
    std::vector<uint64_t> keys;
    std::vector<int64_t> counts;
};

// Counts C[p, s] += 1 for every (pivot token, source token) pair inside one alignment group, over a
// batch of S aligned sequences given as concatenated ragged arrays with offsets (S + 1 entries each):
// pivot / source ids per sequence, and groups [n_groups, 4] (pivot_start, pivot_end, source_start,
// source_end) relative to the sequence. OpenMP over sequences. Throws std::invalid_argument on a
// non-positive vocabulary size, offsets or groups out of range, or ids outside the vocabularies.
PairCounts count_pairs(const int32_t* pivot_ids, int64_t n_pivot, const int64_t* pivot_offsets,
                       const int32_t* source_ids, int64_t n_source, const int64_t* source_offsets,
                       const int64_t* groups, int64_t n_groups, const int64_t* group_offsets, int64_t S,
                       int64_t pivot_vocab, int64_t source_vocab);

}  // namespace stats
}  // namespace tokalign
