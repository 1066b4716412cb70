// Vocabulary-map kernels: unit decoding of whole vocabularies, all-pairs MinED with pruning,
// and batched pairwise Levenshtein. Plain C++ (no Python types): bind_vocab.cpp wraps them.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace tokalign {
namespace vocab {

// A list of texts as unit sequences (see levenshtein.h for the unit rule), stored CSR-style.
struct UnitTexts {
    std::vector<uint32_t> units;
    std::vector<int64_t> offsets{0};  // text i = units[offsets[i] .. offsets[i+1])
    int64_t size() const { return int64_t(offsets.size()) - 1; }
    int length(int64_t i) const { return int(offsets[i + 1] - offsets[i]); }
    const uint32_t* data(int64_t i) const { return units.data() + offsets[i]; }
};

UnitTexts decode_texts(const std::vector<std::string>& texts);

// Levenshtein distance between two unit sequences (exact).
int levenshtein(const uint32_t* a, int m, const uint32_t* b, int n);

// For index pairs (ia[k], ib[k]): distance and whether either text is a substring of the other.
// Threads: <= 0 means all OpenMP threads.
void levenshtein_pairs(const UnitTexts& a, const UnitTexts& b, const int64_t* ia, const int64_t* ib, int64_t count,
                       int threads, int32_t* dist, uint8_t* contains);

struct MinEDStats {
    int64_t exact = 0;       // queries answered by the exact-match table
    int64_t filtered = 0;    // candidate pairs tested with the length + signature lower bound
    int64_t evaluated = 0;   // candidate pairs whose distance was computed (bit-parallel)
};

// All-pairs minimum edit distance against a fixed pivot vocabulary.
//
// Candidate pivot tokens are bucketed by length in units. For one source token of length m a few
// seed candidates (its neighbours in the prefix and suffix orders of the pivot texts) give an
// initial top_n; then the buckets are scanned outward (|L - m| = 0, 1, 2, ...): |L - m| is a lower
// bound on the distance, so the scan stops once it exceeds what the worst kept result allows.
// Inside a bucket a 64-bit character signature gives a second lower bound (units of one side
// missing from the other, plus the length difference) before the bit-parallel distance, which
// itself stops early past the current limit.
//
// Result order (also the tie-break) is the key (distance, |L - m|, rank, pivot id): smaller is
// better; `rank` is supplied by the caller. An exact text match short-circuits to one result.
class MinEDIndex {
  public:
    MinEDIndex(const std::vector<std::string>& pivot_texts, const std::vector<uint8_t>& candidate,
               const std::vector<int64_t>& rank);

    // ids/dists: (count x top_n) row-major, -1 where there is no result (query[i] == 0,
    // fewer candidates than top_n, or the rest of a row after an exact match).
    MinEDStats query(const std::vector<std::string>& source_texts, const uint8_t* query_mask, int top_n, int threads,
                     int32_t* ids, int32_t* dists) const;

    int64_t candidates() const { return n_candidates_; }
    int alphabet_size() const { return int(alphabet_.size()); }

  private:
    struct Bucket {
        std::vector<uint64_t> sig;
        std::vector<int64_t> start;  // into units_
        std::vector<int32_t> id;
        std::vector<int64_t> rank;
    };
    uint32_t dense(uint32_t unit) const;
    uint64_t signature_bit(uint32_t dense_unit) const;

    std::unordered_map<uint32_t, uint32_t> alphabet_;  // unit -> dense id >= 1 (0: not in pivot)
    std::vector<uint64_t> sig_bit_;                     // dense id -> signature bit
    std::vector<uint32_t> units_;                       // dense units of all candidates
    std::vector<Bucket> buckets_;                       // by length in units
    std::unordered_map<std::string, int32_t> exact_;    // canonical bytes -> best-ranked candidate
    // All candidates (for seeding): start in units_, length, id, rank; and two orders of them,
    // by their units and by their reversed units, to find pivot tokens sharing a long prefix or
    // suffix with a query (usually close to the best, so the bounds are tight from the start).
    std::vector<int64_t> cand_start_;
    std::vector<int32_t> cand_len_, cand_id_;
    std::vector<int64_t> cand_rank_;
    std::vector<int32_t> prefix_order_, suffix_order_;
    int64_t n_candidates_ = 0;
};

}  // namespace vocab
}  // namespace tokalign
