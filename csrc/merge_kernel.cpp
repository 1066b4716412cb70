// Fused generalized-task-arithmetic merge kernel (TIES, DARE, task arithmetic) over fp32 buffers.
// Declarations and the semantics contract: csrc/include/tokalign/merge.h. Bound in csrc/bind_merge.cpp.
//
// Work is split into fixed blocks of BLOCK elements (OpenMP static schedule over blocks). Every
// per-element result depends only on the element's inputs, and every reduction is either an exact
// integer histogram or a per-block double sum added over blocks in order, so the output is the same
// for any number of threads.
// No FP trap is ever enabled here; telling GCC so lets it turn the float compare-and-select loops into
// SIMD code (the results are IEEE-identical either way).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "tokalign/merge.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tokalign {
namespace merge {
namespace {

constexpr int64_t BLOCK = 4096;  // elements per work unit; even, so an RNG pair never straddles blocks
constexpr uint64_t GAMMA = 0x9E3779B97F4A7C15ULL;
constexpr int HI_BINS = 1 << 15;  // top 16 bits of |x|'s pattern (sign bit is 0): 15 significant bits
constexpr int LO_BINS = 1 << 16;  // low 16 bits

inline uint64_t mix64(uint64_t z) {  // splitmix64's finaliser (Stafford variant 13)
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// Bit pattern of |d|: for non-negative floats (including +inf) the unsigned order equals the value order.
inline uint32_t abs_bits(float d) {
    uint32_t u;
    std::memcpy(&u, &d, sizeof u);
    return u & 0x7fffffffu;
}

inline float from_bits(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

int thread_count(int requested, int64_t n_blocks) {
#ifdef _OPENMP
    int64_t t = requested > 0 ? requested : omp_get_max_threads();
#else
    int64_t t = 1;
    (void)requested;
#endif
    return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(t, n_blocks)));
}

// 32-bit uniforms of elements [s, e) of stream `key` (s even): pair c = i / 2 gives 64 bits, low half
// for the even element, high half for the odd one.
void fill_uniforms(uint64_t key, int64_t s, int64_t e, uint32_t* u) {
    const int64_t len = e - s;
    const uint64_t c0 = static_cast<uint64_t>(s) / 2;
    const int64_t pairs = len / 2;
    for (int64_t p = 0; p < pairs; ++p) {
        const uint64_t bits = mix64(key + (c0 + static_cast<uint64_t>(p) + 1) * GAMMA);
        u[2 * p] = static_cast<uint32_t>(bits);
        u[2 * p + 1] = static_cast<uint32_t>(bits >> 32);
    }
    if (len & 1) u[len - 1] = static_cast<uint32_t>(mix64(key + (c0 + static_cast<uint64_t>(pairs) + 1) * GAMMA));
}

// d[0, e - s) = model's delta over [s, e) with its sparsification applied (before rescale / weight).
void sparse_delta(const float* base, const ModelInput& m, uint32_t threshold, int64_t s, int64_t e, float* d,
                  uint32_t* u) {
    const float* x = m.data + s;
    const float* b = base + s;
    const int64_t len = e - s;
    switch (m.sparsify) {
        case DROP_ALL:
            std::fill(d, d + len, 0.0f);
            break;
        case MAGNITUDE:
            for (int64_t i = 0; i < len; ++i) {
                const float v = x[i] - b[i];
                d[i] = abs_bits(v) >= threshold ? v : 0.0f;
            }
            break;
        case RANDOM: {
            fill_uniforms(m.key, s, e, u);
            const uint32_t below = m.keep_below;
            for (int64_t i = 0; i < len; ++i) {
                const float v = x[i] - b[i];
                d[i] = u[i] < below ? v : 0.0f;
            }
            break;
        }
        default:  // KEEP_ALL
            for (int64_t i = 0; i < len; ++i) d[i] = x[i] - b[i];
    }
}

// sum |d[i]| in double; LANES independent accumulators in a fixed order (deterministic, and the compiler
// can keep them in SIMD registers, which a single serial accumulator prevents without -ffast-math).
double abs_sum(const float* __restrict d, int64_t len) {
    constexpr int LANES = 8;
    double acc[LANES] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    int64_t i = 0;
    for (; i + LANES <= len; i += LANES)
        for (int l = 0; l < LANES; ++l) acc[l] += std::fabs(static_cast<double>(d[i + l]));
    for (; i < len; ++i) acc[0] += std::fabs(static_cast<double>(d[i]));
    double total = 0.0;
    for (int l = 0; l < LANES; ++l) total += acc[l];
    return total;
}

// The per-block loops of the final sweep, on non-aliasing buffers so that they vectorize.
void scale_by(float* __restrict d, float c, int64_t len) {
    for (int64_t i = 0; i < len; ++i) d[i] = d[i] * c;
}

void weight_and_sum(float* __restrict d, float w, float* __restrict sum, int64_t len) {
    for (int64_t i = 0; i < len; ++i) {
        d[i] = d[i] * w;
        sum[i] = sum[i] + d[i];
    }
}

// TIES disjoint merge: add d (and its weight) where d's sign equals the elected sign of sum (0 -> +).
void disjoint_add(const float* __restrict sum, const float* __restrict d, float w, float* __restrict mixed,
                  float* __restrict div, int64_t len) {
    for (int64_t i = 0; i < len; ++i) {
        const float elected = sum[i] >= 0.0f ? 1.0f : -1.0f;
        const bool keep = d[i] * elected > 0.0f;  // same sign as the elected one, and nonzero
        mixed[i] = mixed[i] + (keep ? d[i] : 0.0f);
        div[i] = div[i] + (keep ? w : 0.0f);
    }
}

void finish_consensus(const float* __restrict mixed, const float* __restrict div, const float* __restrict b,
                      float* __restrict o, int64_t len, bool normalize, bool apply_lambda, float lambda) {
    if (normalize && apply_lambda) {
        for (int64_t i = 0; i < len; ++i) o[i] = (mixed[i] / (div[i] == 0.0f ? 1.0f : div[i])) * lambda + b[i];
    } else if (normalize) {
        for (int64_t i = 0; i < len; ++i) o[i] = mixed[i] / (div[i] == 0.0f ? 1.0f : div[i]) + b[i];
    } else if (apply_lambda) {
        for (int64_t i = 0; i < len; ++i) o[i] = mixed[i] * lambda + b[i];
    } else {
        for (int64_t i = 0; i < len; ++i) o[i] = mixed[i] + b[i];
    }
}

void finish_plain(const float* __restrict sum, const float* __restrict b, float* __restrict o, int64_t len,
                  float divisor, bool normalize, bool apply_lambda, float lambda) {
    if (normalize && apply_lambda) {
        for (int64_t i = 0; i < len; ++i) o[i] = (sum[i] / divisor) * lambda + b[i];
    } else if (normalize) {
        for (int64_t i = 0; i < len; ++i) o[i] = sum[i] / divisor + b[i];
    } else if (apply_lambda) {
        for (int64_t i = 0; i < len; ++i) o[i] = sum[i] * lambda + b[i];
    } else {
        for (int64_t i = 0; i < len; ++i) o[i] = sum[i] + b[i];
    }
}

void add_into(float* __restrict acc, const float* __restrict d, int64_t len) {
    for (int64_t i = 0; i < len; ++i) acc[i] = acc[i] + d[i];
}

void divide_by(float* __restrict v, float c, int64_t len) {
    for (int64_t i = 0; i < len; ++i) v[i] = v[i] / c;
}

// a * b + c with a single rounding to float, as torch's AVX2/AVX-512 kernels compute addcmul_ / add_(alpha)
// (fused multiply-add). The product of two floats is exact in double; the double sum is then rounded
// to float (a second rounding can differ from a true fma only when the exact sum needs more than 53
// bits and lands on a float half-way point: vanishingly rare), and this vectorises without FMA hardware.
inline float fma_float(float a, float b, float c) {
    return static_cast<float>(static_cast<double>(a) * static_cast<double>(b) + static_cast<double>(c));
}

void weighted_add(float* __restrict acc, const float* __restrict x, float w, int64_t len) {
    for (int64_t i = 0; i < len; ++i) acc[i] = fma_float(x[i], w, acc[i]);  // torch: out.add_(x, alpha=w)
}

void add_squared_diff(float* __restrict v, const float* __restrict d, const float* __restrict mean, int64_t len) {
    for (int64_t i = 0; i < len; ++i) {
        const float diff = d[i] - mean[i];
        v[i] = fma_float(diff, diff, v[i]);  // torch: var.addcmul_(diff, diff)
    }
}

void apply_mask(float* __restrict d, const float* __restrict var, float threshold, int64_t len) {
    for (int64_t i = 0; i < len; ++i) d[i] = var[i] >= threshold ? d[i] : 0.0f;
}

double square_sum(const float* __restrict d, int64_t len) {
    constexpr int LANES = 8;
    double acc[LANES] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    int64_t i = 0;
    for (; i + LANES <= len; i += LANES)
        for (int l = 0; l < LANES; ++l) acc[l] += static_cast<double>(d[i + l]) * static_cast<double>(d[i + l]);
    for (; i < len; ++i) acc[0] += static_cast<double>(d[i]) * static_cast<double>(d[i]);
    double total = 0.0;
    for (int l = 0; l < LANES; ++l) total += acc[l];
    return total;
}

// SCE erase: add eta * d where d's sign equals the elected sign of sum (0 -> +), and eta to the divisor.
void erase_add(const float* __restrict sum, const float* __restrict d, float eta, float* __restrict num,
               float* __restrict den, int64_t len) {
    for (int64_t i = 0; i < len; ++i) {
        const float elected = sum[i] >= 0.0f ? 1.0f : -1.0f;
        const bool keep = d[i] * elected > 0.0f;
        num[i] = fma_float(keep ? d[i] : 0.0f, eta, num[i]);  // torch: num.add_(d * keep, alpha=eta)
        den[i] = den[i] + (keep ? eta : 0.0f);
    }
}

void finish_sce(const float* __restrict num, const float* __restrict den, const float* __restrict b,
                float* __restrict o, int64_t len, bool clamp) {
    if (clamp) {  // mergekit: divisor clamped to >= 1e-6
        for (int64_t i = 0; i < len; ++i) o[i] = num[i] / (den[i] < 1e-6f ? 1e-6f : den[i]) + b[i];
    } else {  // FuseChat: a zero divisor -> 1
        for (int64_t i = 0; i < len; ++i) o[i] = num[i] / (den[i] == 0.0f ? 1.0f : den[i]) + b[i];
    }
}

// Histograms of M sets of n elements, in blocks on T threads: count(m, s, e, h) adds the bins of elements
// [s, e) of set m to h (`bins` counters). Returns the M x bins totals.
template <class CountFn>
std::vector<uint64_t> block_histograms(int64_t n, size_t M, size_t bins, int T, CountFn count) {
    const int64_t nb = (n + BLOCK - 1) / BLOCK;
    std::vector<uint64_t> total(M * bins, 0);
#pragma omp parallel num_threads(T)
    {
        std::vector<uint32_t> h(M * bins, 0);
#pragma omp for schedule(static)
        for (int64_t blk = 0; blk < nb; ++blk) {
            const int64_t s = blk * BLOCK, e = std::min(n, s + BLOCK);
            for (size_t m = 0; m < M; ++m) count(m, s, e, h.data() + m * bins);
        }
#pragma omp critical(tokalign_merge_hist)
        for (size_t i = 0; i < h.size(); ++i) total[i] += h[i];
    }
    return total;
}

// The bin holding the k-th largest element of a histogram (counting from the top bin); *rank = k's rank
// inside that bin. Bin 0 with *rank = k when the histogram holds fewer than k elements.
inline uint32_t bin_of_kth_largest(const uint64_t* hist, int64_t bins, int64_t k, int64_t* rank) {
    int64_t cum = 0;
    *rank = k;
    for (int64_t b = bins - 1; b >= 0; --b) {
        const int64_t c = static_cast<int64_t>(hist[b]);
        if (cum + c >= k) {
            *rank = k - cum;
            return static_cast<uint32_t>(b);
        }
        cum += c;
    }
    return 0;
}

// Exact k-th largest key per set m = 0..M-1 (key(m, i): uint32 whose unsigned order is the value order),
// by two sweeps of radix histograms: the top 16 bits (hi_bins of them can occur), then the low 16 bits
// among the elements in the bin holding the k-th largest. Returns the keys (ks[m] in 1..n).
template <class KeyFn>
std::vector<uint32_t> radix_select(int64_t n, size_t M, const std::vector<int64_t>& ks, int requested_threads,
                                   int hi_bins, KeyFn key) {
    const int T = thread_count(requested_threads, (n + BLOCK - 1) / BLOCK);
    const size_t H = static_cast<size_t>(hi_bins);
    auto count_hi = [&](size_t m, int64_t s, int64_t e, uint32_t* hm) {
        for (int64_t i = s; i < e; ++i) ++hm[key(m, i) >> 16];
    };
    const std::vector<uint64_t> hi_total = block_histograms(n, M, H, T, count_hi);
    std::vector<uint32_t> bin(M, 0);  // bin holding the k-th largest, and its rank inside the bin
    std::vector<int64_t> rank(M, 0);
    for (size_t m = 0; m < M; ++m) bin[m] = bin_of_kth_largest(hi_total.data() + m * H, hi_bins, ks[m], &rank[m]);
    auto count_lo = [&](size_t m, int64_t s, int64_t e, uint32_t* hm) {  // inside the bin found above
        const uint32_t want = bin[m];
        for (int64_t i = s; i < e; ++i) {
            const uint32_t k = key(m, i);
            if ((k >> 16) == want) ++hm[k & 0xffffu];
        }
    };
    const std::vector<uint64_t> lo_total = block_histograms(n, M, LO_BINS, T, count_lo);
    std::vector<uint32_t> out(M);
    for (size_t m = 0; m < M; ++m) {
        int64_t unused;
        out[m] = (bin[m] << 16) | bin_of_kth_largest(lo_total.data() + m * LO_BINS, LO_BINS, rank[m], &unused);
    }
    return out;
}

// Exact k-th largest |x_m - base| for each model m: keys are |delta|'s bit patterns (sign bit 0).
std::vector<uint32_t> radix_thresholds(const float* base, int64_t n, const std::vector<const float*>& xs,
                                       const std::vector<int64_t>& ks, int requested_threads) {
    const float* const* x = xs.data();
    return radix_select(n, xs.size(), ks, requested_threads, HI_BINS,
                        [x, base](size_t m, int64_t i) { return abs_bits(x[m][i] - base[i]); });
}

// Order-preserving uint32 key of a float (NaN excluded by the caller); -0 and +0 share a key.
inline uint32_t ordered_bits(float v) {
    uint32_t u;
    std::memcpy(&u, &v, sizeof u);
    if (u == 0x80000000u) u = 0;
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

inline float from_ordered(uint32_t k) {
    const uint32_t u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    return from_bits(u);
}

}  // namespace

float topk_abs_threshold(const float* base, const float* model, int64_t n, int64_t k, int num_threads) {
    if (n <= 0 || k < 1) return std::numeric_limits<float>::infinity();
    k = std::min(k, n);
    return from_bits(radix_thresholds(base, n, {model}, {k}, num_threads)[0]);
}

float kth_largest(const float* values, int64_t n, int64_t k, int num_threads) {
    if (n <= 0 || k < 1) return std::numeric_limits<float>::infinity();
    k = std::min(k, n);
    const uint32_t key = radix_select(n, 1, {k}, num_threads, 1 << 16,
                                      [values](size_t, int64_t i) { return ordered_bits(values[i]); })[0];
    return from_ordered(key);
}

void random_keep_mask(uint64_t key, uint32_t keep_below, int64_t n, uint8_t* mask, int num_threads) {
    const int64_t nb = (n + BLOCK - 1) / BLOCK;
    const int T = thread_count(num_threads, nb);
#pragma omp parallel num_threads(T)
    {
        std::vector<uint32_t> u(BLOCK);
#pragma omp for schedule(static)
        for (int64_t blk = 0; blk < nb; ++blk) {
            const int64_t s = blk * BLOCK, e = std::min(n, s + BLOCK);
            fill_uniforms(key, s, e, u.data());
            for (int64_t i = s; i < e; ++i) mask[i] = u[i - s] < keep_below ? 1 : 0;
        }
    }
}

std::string gta_merge(const float* base, int64_t n, const std::vector<ModelInput>& models, const Options& opt,
                      float* out, std::vector<ModelStats>* stats) {
    const size_t M = models.size();
    if (M == 0) return "gta_merge: no models";
    if (n < 0) return "gta_merge: negative size";
    if (n > static_cast<int64_t>(std::numeric_limits<uint32_t>::max()))
        return "gta_merge: tensors of 2^32 or more elements are not supported";
    std::vector<ModelInput> ms(models);
    for (size_t m = 0; m < M; ++m) {
        ModelInput& mi = ms[m];
        if (mi.sparsify < KEEP_ALL || mi.sparsify > RANDOM) return "gta_merge: unknown sparsification mode";
        if (mi.sparsify == MAGNITUDE) {
            if (mi.k < 1) return "gta_merge: magnitude top-k needs k >= 1";
            if (mi.k >= n) mi.sparsify = KEEP_ALL;  // keeps every entry; the L1 rescale factor would be 1
        }
    }
    std::vector<ModelStats> st(M);
    if (n == 0) {
        if (stats) *stats = st;
        return "";
    }
    const int64_t nb = (n + BLOCK - 1) / BLOCK;
    const int T = thread_count(opt.num_threads, nb);

    // 1-2: TIES thresholds
    std::vector<uint32_t> thr(M, 0);
    {
        std::vector<const float*> xs;
        std::vector<int64_t> ks;
        std::vector<size_t> which;
        for (size_t m = 0; m < M; ++m)
            if (ms[m].sparsify == MAGNITUDE) {
                xs.push_back(ms[m].data);
                ks.push_back(ms[m].k);
                which.push_back(m);
            }
        if (!xs.empty()) {
            const std::vector<uint32_t> t = radix_thresholds(base, n, xs, ks, T);
            for (size_t w = 0; w < which.size(); ++w) {
                thr[which[w]] = t[w];
                st[which[w]].threshold = from_bits(t[w]);
            }
        }
    }

    // 3: L1 rescale factors (mergekit: only when both norms are >= 1e-7)
    std::vector<float> scale(M, 1.0f);
    std::vector<char> scaled(M, 0);
    bool any_rescale = false;
    for (size_t m = 0; m < M; ++m) {
        scaled[m] = opt.rescale && (ms[m].sparsify == MAGNITUDE || ms[m].sparsify == RANDOM);
        any_rescale = any_rescale || scaled[m];
    }
    if (any_rescale) {
        std::vector<double> part(static_cast<size_t>(nb) * M * 2, 0.0);
#pragma omp parallel num_threads(T)
        {
            std::vector<float> d(BLOCK);
            std::vector<uint32_t> u(BLOCK);
#pragma omp for schedule(static)
            for (int64_t blk = 0; blk < nb; ++blk) {
                const int64_t s = blk * BLOCK, e = std::min(n, s + BLOCK), len = e - s;
                for (size_t m = 0; m < M; ++m) {
                    if (!scaled[m]) continue;
                    ModelInput all = ms[m];
                    all.sparsify = KEEP_ALL;
                    sparse_delta(base, all, 0, s, e, d.data(), u.data());
                    part[(static_cast<size_t>(blk) * M + m) * 2] = abs_sum(d.data(), len);
                    sparse_delta(base, ms[m], thr[m], s, e, d.data(), u.data());
                    part[(static_cast<size_t>(blk) * M + m) * 2 + 1] = abs_sum(d.data(), len);
                }
            }
        }
        for (size_t m = 0; m < M; ++m) {
            if (!scaled[m]) continue;
            double before = 0.0, after = 0.0;
            for (int64_t blk = 0; blk < nb; ++blk) {
                before += part[(static_cast<size_t>(blk) * M + m) * 2];
                after += part[(static_cast<size_t>(blk) * M + m) * 2 + 1];
            }
            if (before >= 1e-7 && after >= 1e-7) {
                scale[m] = static_cast<float>(before / after);
            } else {
                scaled[m] = 0;
            }
            st[m].scale = scale[m];
        }
    }

    // 4: the merge itself, in the torch implementation's order of float operations
    const float lambda = opt.lambda, divisor = opt.divisor;
    const bool consensus = opt.consensus, normalize = opt.normalize, apply_lambda = opt.lambda != 1.0f;
#pragma omp parallel num_threads(T)
    {
        std::vector<float> buf(static_cast<size_t>(M + 3) * BLOCK);
        std::vector<uint32_t> u(BLOCK);
        float* sum = buf.data();
        float* mixed = sum + BLOCK;
        float* div = mixed + BLOCK;
        float* deltas = div + BLOCK;
#pragma omp for schedule(static)
        for (int64_t blk = 0; blk < nb; ++blk) {
            const int64_t s = blk * BLOCK, e = std::min(n, s + BLOCK), len = e - s;
            const float* b = base + s;
            float* o = out + s;
            std::fill(sum, sum + len, 0.0f);
            for (size_t m = 0; m < M; ++m) {
                float* d = deltas + m * BLOCK;
                sparse_delta(base, ms[m], thr[m], s, e, d, u.data());
                if (scaled[m]) {
                    scale_by(d, scale[m], len);
                }
                weight_and_sum(d, ms[m].weight, sum, len);
            }
            if (consensus) {
                std::fill(mixed, mixed + len, 0.0f);
                std::fill(div, div + len, 0.0f);
                for (size_t m = 0; m < M; ++m) disjoint_add(sum, deltas + m * BLOCK, ms[m].weight, mixed, div, len);
                finish_consensus(mixed, div, b, o, len, normalize, apply_lambda, lambda);
            } else {
                finish_plain(sum, b, o, len, normalize ? divisor : 1.0f, normalize, apply_lambda, lambda);
            }
        }
    }
    if (stats) *stats = st;
    return "";
}

void linear_merge(int64_t n, const std::vector<const float*>& xs, const std::vector<float>& weights, bool normalize,
                  float divisor, float* out, int num_threads) {
    const size_t M = xs.size();
    const int64_t nb = (n + BLOCK - 1) / BLOCK;
    const int T = thread_count(num_threads, nb);
#pragma omp parallel for num_threads(T) schedule(static)
    for (int64_t blk = 0; blk < nb; ++blk) {
        const int64_t s = blk * BLOCK, e = std::min(n, s + BLOCK), len = e - s;
        float* o = out + s;
        std::fill(o, o + len, 0.0f);
        for (size_t m = 0; m < M; ++m) weighted_add(o, xs[m] + s, weights[m], len);
        if (normalize) divide_by(o, divisor, len);
    }
}

void sce_variance(const float* base, int64_t n, const std::vector<const float*>& xs, float* var, int num_threads) {
    const size_t M = xs.size();
    const int64_t nb = (n + BLOCK - 1) / BLOCK;
    const int T = thread_count(num_threads, nb);
    const float count = static_cast<float>(M);
#pragma omp parallel num_threads(T)
    {
        std::vector<float> buf(static_cast<size_t>(M + 1) * BLOCK);
#pragma omp for schedule(static)
        for (int64_t blk = 0; blk < nb; ++blk) {
            const int64_t s = blk * BLOCK, e = std::min(n, s + BLOCK), len = e - s;
            float* mean = buf.data();
            std::fill(mean, mean + len, 0.0f);
            for (size_t m = 0; m < M; ++m) {
                float* d = buf.data() + (m + 1) * BLOCK;
                ModelInput all;
                all.data = xs[m];
                sparse_delta(base, all, 0, s, e, d, nullptr);
                add_into(mean, d, len);
            }
            divide_by(mean, count, len);
            float* v = var + s;
            std::fill(v, v + len, 0.0f);
            for (size_t m = 0; m < M; ++m) add_squared_diff(v, buf.data() + (m + 1) * BLOCK, mean, len);
            divide_by(v, count, len);
        }
    }
}

std::string sce_merge(const float* base, int64_t n, const std::vector<const float*>& xs, const float* var,
                      const SceOptions& opt, float* out, std::vector<double>* eta_out) {
    const size_t M = xs.size();
    if (M == 0) return "sce_merge: no models";
    if (opt.mask_mode < SCE_NO_MASK || opt.mask_mode > SCE_EMPTY_MASK) return "sce_merge: unknown mask mode";
    if (opt.mask_mode == SCE_MASK && var == nullptr) return "sce_merge: the variance mask needs the variances";
    const int64_t nb = (n + BLOCK - 1) / BLOCK;
    const int T = thread_count(opt.num_threads, nb);
    const int mode = opt.mask_mode;
    const float thr = opt.threshold;
    // d[0, len) = model m's delta over [s, e), masked (entries outside the selection -> 0)
    auto masked_delta = [&](size_t m, int64_t s, int64_t e, float* d) {
        ModelInput all;
        all.data = xs[m];
        sparse_delta(base, all, 0, s, e, d, nullptr);
        if (mode == SCE_EMPTY_MASK) {
            std::fill(d, d + (e - s), 0.0f);
        } else if (mode == SCE_MASK) {
            apply_mask(d, var + s, thr, e - s);
        }
    };
    // Calculate: eta_j from the (masked) energies, summed in double per block, blocks in order
    std::vector<double> part(static_cast<size_t>(std::max<int64_t>(nb, 0)) * M, 0.0);
#pragma omp parallel num_threads(T)
    {
        std::vector<float> d(BLOCK);
#pragma omp for schedule(static)
        for (int64_t blk = 0; blk < nb; ++blk) {
            const int64_t s = blk * BLOCK, e = std::min(n, s + BLOCK);
            for (size_t m = 0; m < M; ++m) {
                masked_delta(m, s, e, d.data());
                part[static_cast<size_t>(blk) * M + m] = square_sum(d.data(), e - s);
            }
        }
    }
    std::vector<double> eta(M);
    double total = 0.0;
    for (size_t m = 0; m < M; ++m) {
        double energy = 0.0;
        for (int64_t blk = 0; blk < nb; ++blk) energy += part[static_cast<size_t>(blk) * M + m];
        eta[m] = energy / static_cast<double>(std::max<int64_t>(n, 1));
        total += eta[m];
    }
    const bool uniform = opt.mergekit ? std::fabs(total) < 1e-6 : total == 0.0;
    for (size_t m = 0; m < M; ++m) eta[m] = uniform ? 1.0 / static_cast<double>(M) : eta[m] / total;
    if (eta_out) *eta_out = eta;
    // Erase + merge: the sign of the sum over models (0 -> +), entries agreeing with it, weighted by eta
    const bool merge_masked = opt.mergekit && mode != SCE_NO_MASK;
    const bool clamp = opt.mergekit;
#pragma omp parallel num_threads(T)
    {
        std::vector<float> buf(static_cast<size_t>(M + 3) * BLOCK);
        float* sum = buf.data();
        float* num = sum + BLOCK;
        float* den = num + BLOCK;
        float* deltas = den + BLOCK;
#pragma omp for schedule(static)
        for (int64_t blk = 0; blk < nb; ++blk) {
            const int64_t s = blk * BLOCK, e = std::min(n, s + BLOCK), len = e - s;
            std::fill(sum, sum + len, 0.0f);
            for (size_t m = 0; m < M; ++m) {
                float* d = deltas + m * BLOCK;
                if (merge_masked) {
                    masked_delta(m, s, e, d);
                } else {
                    ModelInput all;
                    all.data = xs[m];
                    sparse_delta(base, all, 0, s, e, d, nullptr);
                }
                add_into(sum, d, len);
            }
            std::fill(num, num + len, 0.0f);
            std::fill(den, den + len, 0.0f);
            for (size_t m = 0; m < M; ++m)
                erase_add(sum, deltas + m * BLOCK, static_cast<float>(eta[m]), num, den, len);
            finish_sce(num, den, base + s, out + s, len, clamp);
        }
    }
    return "";
}

}  // namespace merge
}  // namespace tokalign
