// All-pairs MinED on the GPU: for every source token (query) the top_n pivot tokens (candidates)
// by the key (distance, |L - m|, rank, id), exactly the order of the CPU MinEDIndex.
//
// One warp per query. Candidates are bucketed by length; buckets are scanned outward from the
// query length (|L - m| bounds the distance from below, so the scan stops once no candidate at
// that length difference can beat the worst kept key). Inside a bucket each lane takes one
// candidate: a character-signature lower bound, then the bit-parallel Levenshtein of
// tokalign/levenshtein.h with early exit at the largest distance that could still enter the
// list. After every round of 32 candidates the warp merges its lanes' keys into the per-warp
// top list (shared memory) with 64-bit warp minima, so all lanes always see the same bound.
//
// Pattern choice: the query (shared memory) when it has <= 64 units; otherwise the candidate when
// it has <= 64 units (Levenshtein is symmetric); when both are longer, the query as a multi-word
// pattern with the per-lane vp/vn words in shared memory.
#include "cuda_api.h"
#include "cuda_util.cuh"
#include "mined_scan.h"

namespace tokalign {
namespace cuda {
namespace {

constexpr int kWarpsPerBlock = 4;

__device__ __forceinline__ uint64_t warp_min64(uint64_t v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const uint64_t w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w < v ? w : v;
    }
    return v;
}

__device__ __forceinline__ unsigned long long warp_sum64(unsigned long long v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

struct MinedDev {
    const uint32_t* cand_units;
    const int32_t* cand_start;
    const int32_t* cand_ord;
    const uint64_t* cand_sig;
    const int32_t* bucket_start;
    int32_t max_len;
    const uint32_t* query_units;
    const int32_t* query_start;
    const int32_t* query_len;
    const uint64_t* query_sig;
    int32_t n_query;
    int32_t top_n;
    int32_t query_cap;     // units of query storage per warp in shared memory
    int32_t scratch_words;  // per lane, for multi-word patterns (0 when no query is longer than 64)
};

__global__ void __launch_bounds__(kWarpsPerBlock * 32) mined_kernel(MinedDev p, uint64_t* keys,
                                                                     unsigned long long* counters) {
    extern __shared__ uint64_t smem[];
    const int warp = int(threadIdx.x) >> 5, lane = int(threadIdx.x) & 31;
    const int per_warp_words = kMinedMaxTopN + 32 * p.scratch_words;
    uint64_t* top = smem + warp * per_warp_words;
    uint64_t* scratch = top + kMinedMaxTopN + lane * p.scratch_words;
    uint32_t* sq = reinterpret_cast<uint32_t*>(smem + kWarpsPerBlock * per_warp_words) + warp * p.query_cap;

    const int q = int(blockIdx.x) * kWarpsPerBlock + warp;
    if (q >= p.n_query) return;  // whole warp; no block-wide barrier below
    const int m = p.query_len[q];
    const uint32_t* qsrc = p.query_units + p.query_start[q];
    for (int k = lane; k < m; k += 32) sq[k] = qsrc[k];
    if (lane < kMinedMaxTopN) top[lane] = kEmptyKey;
    __syncwarp();
    const uint64_t qsig = p.query_sig[q];
    const int top_n = p.top_n;
    unsigned long long visited = 0, evaluated = 0;

    for (int delta = 0;; ++delta) {
        if (m - delta < 0 && m + delta > p.max_len) break;
        {
            const uint64_t worst = top[top_n - 1];
            // the best key any candidate at this length difference could have
            if (worst != kEmptyKey && mined_pack_key(delta, delta, 0) >= worst) break;
        }
        for (int side = 0; side < (delta == 0 ? 1 : 2); ++side) {
            const int len = side == 0 ? m - delta : m + delta;
            if (len < 0 || len > p.max_len) continue;
            const int b0 = p.bucket_start[len], b1 = p.bucket_start[len + 1];
            visited += unsigned(b1 - b0);
            for (int base = b0; base < b1; base += 32) {
                const int e = base + lane;
                uint64_t key = kEmptyKey;
                uint64_t worst = top[top_n - 1];
                if (e < b1) {
                    bool ev = false;
                    key = mined_candidate_key(sq, m, qsig, p.cand_units + p.cand_start[e], len, p.cand_sig[e],
                                              p.cand_ord[e], delta, worst, scratch, &ev);
                    evaluated += ev;
                }
                // Merge the lanes' keys into the top list; keys are unique (ord), so exactly one
                // lane owns each minimum.
                for (;;) {
                    const uint64_t kmin = warp_min64(key);
                    if (kmin >= worst) break;
                    __syncwarp();
                    if (lane == 0) mined_insert(top, top_n, kmin);
                    __syncwarp();
                    if (key == kmin) key = kEmptyKey;
                    worst = top[top_n - 1];
                }
                __syncwarp();
            }
        }
    }
    if (lane < top_n) keys[int64_t(q) * top_n + lane] = top[lane];
    visited = warp_sum64(lane == 0 ? visited : 0);
    evaluated = warp_sum64(evaluated);
    if (lane == 0) {
        atomicAdd(&counters[0], visited);
        atomicAdd(&counters[1], evaluated);
    }
}

}  // namespace

MinedTiming mined_search(const MinedProblem& p, uint64_t* keys, int device) {
    if (p.top_n < 1 || p.top_n > kMinedMaxTopN) throw std::invalid_argument("mined_search: top_n out of range");
    MinedTiming timing;
    const size_t n_keys = size_t(p.n_query) * size_t(p.top_n);
    for (size_t k = 0; k < n_keys; ++k) keys[k] = kEmptyKey;
    if (p.n_query == 0 || p.n_cand == 0) return timing;
    set_device(device);
    EventTimer total;
    total.start();
    int max_q = 0;
    for (int32_t k = 0; k < p.n_query; ++k) max_q = std::max(max_q, int(p.query_len[k]));
    if (max_q > kMinedMaxQueryUnits) throw std::invalid_argument("mined_search: query longer than the GPU limit");
    DeviceBuffer<uint32_t> cu, qu;
    DeviceBuffer<int32_t> cs, co, bs, qs, ql;
    DeviceBuffer<uint64_t> csig, qsig, out;
    DeviceBuffer<unsigned long long> counters(2);
    cu.upload(p.cand_units, size_t(p.cand_units_total) + 1);  // +1: never a zero-size buffer
    cs.upload(p.cand_start, size_t(p.n_cand));
    co.upload(p.cand_ord, size_t(p.n_cand));
    csig.upload(p.cand_sig, size_t(p.n_cand));
    bs.upload(p.bucket_start, size_t(p.max_len) + 2);
    qu.upload(p.query_units, size_t(p.query_units_total) + 1);
    qs.upload(p.query_start, size_t(p.n_query));
    ql.upload(p.query_len, size_t(p.n_query));
    qsig.upload(p.query_sig, size_t(p.n_query));
    out.allocate(n_keys);
    check(cudaMemset(counters.get(), 0, 2 * sizeof(unsigned long long)), "cudaMemset");

    MinedDev d{cu.get(), cs.get(), co.get(), csig.get(), bs.get(), p.max_len, qu.get(), qs.get(), ql.get(),
               qsig.get(), p.n_query, p.top_n, 0, 0};
    d.query_cap = (max_q + 1 + 3) & ~3;
    d.scratch_words = max_q > 64 ? 2 * ((max_q + 63) / 64) : 0;
    const size_t smem = size_t(kWarpsPerBlock) * (kMinedMaxTopN + 32 * size_t(d.scratch_words)) * sizeof(uint64_t) +
                        size_t(kWarpsPerBlock) * size_t(d.query_cap) * sizeof(uint32_t);
    check(cudaFuncSetAttribute(mined_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
          "cudaFuncSetAttribute(mined)");
    const int blocks = (p.n_query + kWarpsPerBlock - 1) / kWarpsPerBlock;
    EventTimer kernel;
    kernel.start();
    mined_kernel<<<blocks, kWarpsPerBlock * 32, smem>>>(d, out.get(), counters.get());
    check(cudaGetLastError(), "mined_kernel launch");
    timing.kernel_ms = kernel.stop_ms();
    check(cudaDeviceSynchronize(), "mined_kernel");
    out.download(keys, n_keys);
    unsigned long long c[2] = {0, 0};
    counters.download(c, 2);
    timing.filtered = int64_t(c[0]);
    timing.evaluated = int64_t(c[1]);
    timing.total_ms = total.stop_ms();
    return timing;
}

}  // namespace cuda
}  // namespace tokalign
