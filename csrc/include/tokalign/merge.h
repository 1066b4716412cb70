// Element-wise kernels for parameter-space merging over fp32 buffers (CPU, OpenMP).
// Plain C++ (no pybind11): csrc/merge_kernel.cpp implements them, csrc/bind_merge.cpp binds them.
// Python wrapper and semantics: fusion_train/merge/native.py, docs/merge.md.
//
// gta_merge fuses mergekit's generalized task arithmetic (task arithmetic, TIES, DARE-TIES,
// DARE-linear) into at most four sweeps over the inputs instead of ~10 tensor passes per model:
//   1-2. TIES only: exact k-th largest |delta_j| per model by a two-level radix select (16 + 16 bits
//        of the float's bit pattern, which orders non-negative floats), the same value torch.kthvalue
//        returns; entries tying at the cut-off are all kept (|delta| >= threshold);
//   3.   rescale only: L1 norms of delta_j before / after sparsification, summed in double per fixed
//        block of elements and then over blocks in order (the result does not depend on threads);
//   4.   per element: sparsify, weight, elect the sign of the sum, disjoint (or plain) sum, normalise,
//        lambda, add the base; the float operations run in the order of the torch implementation.
//
// DARE's drop mask comes from a counter-based generator: the 64-bit word for element pair c = i / 2 is
// splitmix64's finaliser of key + (c + 1) * 0x9E3779B97F4A7C15; element i uses its low (even i) or high
// (odd i) 32 bits u and is kept when u < keep_below (= floor(density * 2^32)). So the mask depends
// only on (key, i): deterministic for a seed whatever the number of threads or the device.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace tokalign {
namespace merge {

// How one model's delta is sparsified before weighting.
enum Sparsify : int {
    KEEP_ALL = 0,   // density >= 1
    DROP_ALL = 1,   // density <= 0 (the delta is all zeros)
    MAGNITUDE = 2,  // TIES: keep the k largest |delta| (and every entry tying with the k-th)
    RANDOM = 3,     // DARE: keep each entry when its uniform u < keep_below
};

struct ModelInput {
    const float* data = nullptr;  // n fp32 values, same layout as the base
    float weight = 1.0f;
    int sparsify = KEEP_ALL;
    int64_t k = 0;                // MAGNITUDE: 1 <= k <= n
    uint32_t keep_below = 0;      // RANDOM
    uint64_t key = 0;             // RANDOM: stream key
};

struct Options {
    bool consensus = false;  // TIES sign election + disjoint mean
    bool normalize = false;  // divide by the (kept) weights
    bool rescale = false;    // L1-rescale sparsified deltas (MAGNITUDE / RANDOM models)
    float lambda = 1.0f;
    float divisor = 1.0f;    // normaliser without consensus (sum of weights, or 1), computed by the caller
    int num_threads = 0;     // <= 0: OpenMP's default
};

// What the kernel found, per model (for tests and diagnostics).
struct ModelStats {
    float threshold = 0.0f;  // MAGNITUDE: the k-th largest |delta|
    float scale = 1.0f;      // rescale factor applied (1 when none)
};

// out[i] for i < n (out may not alias the inputs). Returns an error message, empty on success.
std::string gta_merge(const float* base, int64_t n, const std::vector<ModelInput>& models, const Options& opt,
                      float* out, std::vector<ModelStats>* stats);

// The k-th largest |model[i] - base[i]| (1 <= k <= n); base may be null (then |model[i]|).
float topk_abs_threshold(const float* base, const float* model, int64_t n, int64_t k, int num_threads);

// The k-th largest of n floats (1 <= k <= n; no NaN), exactly: what torch.kthvalue(values, n - k + 1)
// returns (SCE's variance top-k threshold). -0 and +0 count as equal (the result is then +0).
float kth_largest(const float* values, int64_t n, int64_t k, int num_threads);

// DARE keep mask (1 = kept) of n elements for one stream key.
void random_keep_mask(uint64_t key, uint32_t keep_below, int64_t n, uint8_t* mask, int num_threads);

// Linear merge: out = sum_j weights[j] * xs[j] (fused multiply-add per model, as torch's add_(alpha)),
// divided by divisor when normalize.
void linear_merge(int64_t n, const std::vector<const float*>& xs, const std::vector<float>& weights, bool normalize,
                  float divisor, float* out, int num_threads);

// SCE (FuseChat-2, fusion_train/merge/sce.py): var[i] = population variance over models of
// delta_j[i] = x_j[i] - base[i], in the torch code's float order (mean = sum / M; sum of squared diffs / M).
void sce_variance(const float* base, int64_t n, const std::vector<const float*>& xs, float* var, int num_threads);

enum SceMask : int {
    SCE_NO_MASK = 0,     // tau >= 1: no selection
    SCE_MASK = 1,        // select var[i] >= threshold
    SCE_EMPTY_MASK = 2,  // tau <= 0, or k = 0: nothing selected
};

struct SceOptions {
    int mask_mode = SCE_NO_MASK;
    float threshold = 0.0f;
    bool mergekit = false;  // variant: mergekit (masked deltas merged, uniform eta below 1e-6, divisor >= 1e-6)
                            // or fusechat (mask shapes eta only, uniform eta iff energies are 0, divisor 0 -> 1)
    int num_threads = 0;
};

// SCE merge into out (calculate eta from the masked energies, summed in double; erase; merge; + base).
// eta_out (optional) receives the coefficients.
std::string sce_merge(const float* base, int64_t n, const std::vector<const float*>& xs, const float* var,
                      const SceOptions& opt, float* out, std::vector<double>* eta_out);

}  // namespace merge
}  // namespace tokalign
