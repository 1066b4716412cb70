// The two CE fields of a remapped store (tokalign/remap/ce.py, tokalign/remap/stores.py), per pivot
// position of a batch of aligned sequences. Plain C++ (no pybind11): csrc/remap_ce.cpp implements
// them, csrc/bind_remap.cpp binds them (and checks shapes and offsets first).
#pragma once
#include <cstdint>

namespace tokalign {
namespace remap {

// token_ce of remapped positions: each alignment group's source NLL (source_ce at the positions
// predicting the group's source tokens; NaN when one of them, or its logsumexp, is not finite) spread
// evenly over the pivot positions predicting the group's pivot tokens; 0 elsewhere. S sequences with
// offsets so / po / go (S + 1 entries, starting at 0, not decreasing), groups g [*, 4]; lse may be
// nullptr; out [po[S]]. Throws std::invalid_argument when a sequence's groups do not tile it.
void source_nll_by_group(const float* source_ce, const float* source_lse, const int64_t* so, const int64_t* g,
                         const int64_t* go, const int64_t* po, int64_t S, int threads, float* out);

// The remap_ce diagnostic per position t of a sequence (offsets off, S + 1 entries from 0 to N):
// -log q(input_ids[t + 1]) under the stored top-k (ids / logits [N, K]) when that token is kept, else
// -log(max(1 - retained_mass[t], 1e-6)); 0 at each sequence's last position and where !valid[t].
void remapped_token_ce(const int32_t* topk_ids, const float* topk_logits, const float* retained_mass,
                       const uint8_t* valid, const int32_t* input_ids, const int64_t* off, int64_t S, int64_t K,
                       int threads, float* out);

}  // namespace remap
}  // namespace tokalign
