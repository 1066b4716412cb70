// Remapping a source model's top-k next-token distributions into the pivot vocabulary.
// Plain C++ (no pybind11): csrc/remap_kernel.cpp implements it, csrc/bind_remap.cpp binds it.
// Semantics (docs/remap.md): position t's distribution predicts token t + 1. For the pivot position
// that ends an alignment group, the target is the source distribution at the source position that
// ends the same group, pushed through the vocabulary map (CSR, source_vocab x pivot_vocab).
#pragma once
#include <cstdint>
#include <string>

namespace tokalign {
namespace remap {

// What fills pivot positions whose next pivot token lies inside the same group.
enum Inside : int { INSIDE_ONEHOT = 0, INSIDE_PIVOT = 1, INSIDE_MASK = 2 };
// Which source distribution(s) serve a group end whose group holds more than one source token.
enum OneToMany : int { OTM_LAST = 0, OTM_WEIGHTED = 1 };

// Per-position group kind codes (uint8), documented in docs/remap.md. 0 is never produced.
enum Kind : uint8_t {
    KIND_1_1 = 1,          // end of a group with 1 pivot and 1 source token
    KIND_1_N = 2,          // end of a group with 1 pivot and n > 1 source tokens
    KIND_N_1_INSIDE = 3,   // inside a group with n > 1 pivot and 1 source token (next pivot token in the group)
    KIND_N_1_END = 4,      // last pivot position of such a group
    KIND_N_M_INSIDE = 5,   // inside a group with n > 1 pivot and m > 1 source tokens
    KIND_N_M_END = 6,      // last pivot position of such a group
    KIND_PIVOT_ONLY = 7,   // group without source tokens (no source distribution; inside policy applies)
};

struct Inputs {
    // alignment: groups [n_groups, 4] (pivot_start, pivot_end, source_start, source_end), relative to the
    // sequence; group_offsets [n_seq + 1]
    const int64_t* groups = nullptr;
    const int64_t* group_offsets = nullptr;
    int64_t n_seq = 0, n_groups = 0;
    // source distributions: ids / logits [n_source, k_source], lse [n_source]; source_offsets [n_seq + 1]
    const int32_t* source_ids = nullptr;
    const float* source_logits = nullptr;
    const float* source_lse = nullptr;
    const int64_t* source_offsets = nullptr;
    int64_t n_source = 0, k_source = 0;
    // vocabulary map, CSR source_vocab x pivot_vocab (validated by the caller: finite, >= 0, indices in range)
    const int64_t* map_indptr = nullptr;
    const int32_t* map_indices = nullptr;
    const float* map_data = nullptr;
    int64_t source_vocab = 0, pivot_vocab = 0;
    // pivot tokens [n_pivot]; pivot_offsets [n_seq + 1]
    const int32_t* pivot_ids = nullptr;
    const int64_t* pivot_offsets = nullptr;
    int64_t n_pivot = 0;
    // optional pivot distributions [n_pivot, k_pivot] + lse [n_pivot] (inside policy "pivot"); k_pivot = 0 when absent
    const int32_t* pivot_topk_ids = nullptr;
    const float* pivot_topk_logits = nullptr;
    const float* pivot_lse = nullptr;
    int64_t k_pivot = 0;
};

struct Options {
    int64_t k_out = 10;
    int inside = INSIDE_ONEHOT;
    int one_to_many = OTM_LAST;
    int num_threads = 0;  // <= 0: OpenMP default
};

// Every array has n_pivot rows; ids / logits have k_out columns.
struct Outputs {
    int32_t* ids = nullptr;        // pivot ids sorted by probability (desc, ties: smaller id first); -1 = empty slot
    float* logits = nullptr;       // log-probabilities; -inf for empty slots
    uint8_t* kind = nullptr;       // Kind code
    float* retained = nullptr;     // sum of kept probabilities
    uint8_t* valid = nullptr;      // 1 = usable target; 0 = masked / non-finite input / nothing retained
    int32_t* source_pos = nullptr; // source position (relative) whose distribution was used; -1 = none
};

struct Counts {
    int64_t masked = 0;     // positions without a target by policy (mask, or onehot past the sequence end)
    int64_t nonfinite = 0;  // positions whose input distribution held NaN / +inf logits or a non-finite lse
    int64_t empty = 0;      // positions whose target kept no probability mass (e.g. all source tokens unmapped)
};

// Runs the remap; returns "" on success or a one-line error message (outputs then undefined).
// Thread-safe, no global state; call without holding the Python GIL.
std::string run(const Inputs& in, const Options& opt, Outputs& out, Counts& counts);

}  // namespace remap
}  // namespace tokalign
