// Batch alignment of stored token-id sequences for the store-to-store remap (tokalign remap).
// Plain C++ (no pybind11): csrc/remap_align.cpp implements it, csrc/bind_remap.cpp binds it.
//
// Each pair is aligned exactly like tokalign.align.span(pivot_offsets, source_offsets, pivot_text=...,
// source_text=...) on the texts the two id sequences spell (concatenated canonical token bytes, one
// character per byte): equal texts -> span over byte offsets; different texts (the dummy-prefix space of
// SentencePiece, different chat templates, ...) -> Myers diff of the bytes (at most max_diff edits),
// offsets mapped into merged coordinates, span, and banded DTW (tie_break, band "auto") over the token
// texts of every stretch that touches a byte present in one text only.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tokalign/align.h"

namespace tokalign {
namespace remap {

// Canonical bytes of every token id of one vocabulary: token t is data[offsets[t] : offsets[t + 1]].
struct TokenBytes {
    const uint8_t* data = nullptr;
    const int64_t* offsets = nullptr;  // size + 1 entries
    int64_t size = 0;
};

// How a pair was aligned (per sequence).
enum AlignPath : uint8_t {
    ALIGN_SAME_TEXT = 0,   // texts equal: span over byte offsets
    ALIGN_DIFF = 1,        // texts differ, no token touches a differing byte
    ALIGN_DIFF_DTW = 2,    // texts differ, DTW re-aligned at least one stretch
    ALIGN_EMPTY = 3,       // one side empty: no groups
};

struct AlignBatchOutput {
    std::vector<OutVec<int64_t>> groups;       // per sequence: [G_k, 4] flattened, relative to the sequence
    std::vector<int64_t> group_offsets;        // [n_seq + 1]
    std::vector<uint8_t> path;                 // AlignPath per sequence

    // Copies the groups of every sequence, concatenated ([group_offsets[n_seq], 4]), to dst.
    void copy_groups(int64_t* dst) const;
};

// Aligns n_seq pairs (pivot ids pivot_ids[pivot_offsets[k] : pivot_offsets[k + 1]], same for source).
// Returns "" on success, else a one-line message naming the first failing sequence ("sequence k: ...").
// OpenMP over sequences (num_threads <= 0: all); thread-safe, no global state; call without the GIL.
std::string align_batch(const TokenBytes& pivot_bytes, const int32_t* pivot_ids, const int64_t* pivot_offsets,
                        const TokenBytes& source_bytes, const int32_t* source_ids, const int64_t* source_offsets,
                        int64_t n_seq, int64_t max_diff, int tie, int num_threads, AlignBatchOutput& out);

}  // namespace remap
}  // namespace tokalign
