// The per-candidate step of the GPU MinED search (mined.cu), written once as TA_HD functions so
// the host emulation in mined_host.cpp (`mined_search(..., emulate=True)`, run by the tests on
// every machine) executes exactly the code the kernel runs.
#pragma once

#include <cstdint>

#include "cuda_api.h"
#include "tokalign/common.h"
#include "tokalign/levenshtein.h"

namespace tokalign {
namespace cuda {

// Pattern equality masks by direct comparison: tokens are short, so comparing a text unit with
// each pattern unit is cheaper than any lookup structure.
struct ComparePeq {
    const uint32_t* p;
    int m;
    TA_HD uint64_t operator()(int block, uint32_t u) const {
        const uint32_t* q = p + block * 64;
        const int len = m - block * 64 < 64 ? m - block * 64 : 64;
        uint64_t mask = 0;
        for (int k = 0; k < len; ++k) mask |= uint64_t(q[k] == u) << k;
        return mask;
    }
};

TA_HD int ta_popcount64(uint64_t x) {
#if defined(__CUDA_ARCH__)
    return __popcll(x);
#else
    return __builtin_popcountll(x);
#endif
}

TA_HD uint64_t mined_pack_key(int dist, int delta, int ord) {
    return (uint64_t(uint32_t(dist)) << 48) | (uint64_t(uint32_t(delta)) << 32) | uint64_t(uint32_t(ord));
}

// Key of one candidate (length len, at length difference delta from the query of m units), or
// kEmptyKey when it cannot beat `worst` (the list's last key, kEmptyKey while the list is not
// full). *evaluated is set when the distance had to be computed. Pattern: the query when it has
// <= 64 units, else the candidate when it has <= 64 (Levenshtein is symmetric), else the query
// as a multi-word pattern with `scratch` (2 * ceil(m / 64) words).
TA_HD uint64_t mined_candidate_key(const uint32_t* query, int m, uint64_t qsig, const uint32_t* cand, int len,
                                   uint64_t csig, int ord, int delta, uint64_t worst, uint64_t* scratch,
                                   bool* evaluated) {
    int lim = 1 << 30;
    if (worst != kEmptyKey) {
        // (d, delta, ord) < worst  <=>  d < worst.d, or d == worst.d and (delta, ord) is smaller
        const int wd = int(worst >> 48);
        const uint64_t tail = (uint64_t(uint32_t(delta)) << 32) | uint32_t(ord);
        lim = tail < (worst & 0xffffffffffffull) ? wd : wd - 1;
    }
    // Units of one side missing from the other (signature bits) bound the distance from below,
    // as in the CPU index; the length difference adds to the side with more units.
    const int d_len = m - len;
    const int add_a = d_len < 0 ? -d_len : 0, add_b = d_len > 0 ? d_len : 0;
    const int miss_a = ta_popcount64(qsig & ~csig) + add_a, miss_b = ta_popcount64(csig & ~qsig) + add_b;
    const int lb = miss_a > miss_b ? miss_a : miss_b;
    *evaluated = false;
    if (lb > lim) return kEmptyKey;
    *evaluated = true;
    int d;
    if (m <= 64)
        d = lev::distance(ComparePeq{query, m}, m, cand, len, lim, nullptr);
    else if (len <= 64)
        d = lev::distance(ComparePeq{cand, len}, len, query, m, lim, nullptr);
    else
        d = lev::distance(ComparePeq{query, m}, m, cand, len, lim, scratch);
    return d <= lim ? mined_pack_key(d, delta, ord) : kEmptyKey;
}

// Inserts key into the sorted list top[0..top_n) (dropping the last), when it beats the last.
TA_HD void mined_insert(uint64_t* top, int top_n, uint64_t key) {
    if (key >= top[top_n - 1]) return;
    int pos = top_n - 1;
    while (pos > 0 && top[pos - 1] > key) {
        top[pos] = top[pos - 1];
        --pos;
    }
    top[pos] = key;
}

}  // namespace cuda
}  // namespace tokalign
