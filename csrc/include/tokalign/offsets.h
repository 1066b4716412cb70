// Exact character offsets of tokens from their canonical byte texts (see tokalign/tokenize/canonical.py).
// Pure C++ (no Python): the binding glue lives in bind_tokenize.cpp.
#pragma once
#include <cstdint>
#include <vector>

namespace tokalign {

// Dummy-prefix mode of a vocabulary (Family.prepend): which tokens may carry a phantom leading space.
enum class Prepend : int { kNever = 0, kAlways = 1, kFirst = 2 };

// Canonical bytes of every id, concatenated, plus the per-id masks the phantom logic needs.
// space_first is derived from the bytes (text starts with b" "), exactly as build_tables() does.
struct CanonicalTable {
    std::vector<uint8_t> bytes;    // all canonical texts concatenated
    std::vector<int64_t> begin;    // (V + 1): id i spans bytes[begin[i], begin[i+1])
    std::vector<uint8_t> added;    // (V,): matched before the model (splits text segments)
    std::vector<uint8_t> space_first;  // (V,)
    Prepend prepend = Prepend::kNever;

    int64_t size() const { return static_cast<int64_t>(added.size()); }
    void add(const uint8_t* p, int64_t len, bool is_added);
};

// One item: UTF-8 text, token ids (all in [0, V)), optional inserted mask (BOS/EOS from the post-processor).
struct OffsetItem {
    const uint8_t* text = nullptr;
    int64_t text_len = 0;
    const int32_t* ids = nullptr;
    int64_t n = 0;
    const uint8_t* inserted = nullptr;  // nullptr: none inserted
    int64_t* out = nullptr;             // (n, 2) int64, written when the offsets add up
};

// Offsets of one item into it.out; false (out partly written) when the canonical texts do not add up
// to the text. `scratch` is reused between calls. Same result as canonical.exact_offsets_reference().
bool exact_offsets_one(const CanonicalTable& table, const OffsetItem& it, std::vector<uint8_t>& scratch);

// All items; ok[k] = 1 when item k adds up. OpenMP over items when the batch is large enough to pay.
void exact_offsets_batch(const CanonicalTable& table, const std::vector<OffsetItem>& items, uint8_t* ok);

}  // namespace tokalign
