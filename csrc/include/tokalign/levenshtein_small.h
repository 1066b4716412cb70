// Levenshtein distance between two short code-point strings (tokens).
//
// Used for the FuseChat DTW cell cost. Everything here is TA_HD so that a CUDA build runs
// exactly this arithmetic. The distance is over Unicode code points (what Python's
// `editdistance.eval(str, str)` computes), never over UTF-8 bytes.
//
// Method: Hyyro's formulation of Myers' bit-parallel algorithm when the shorter string has at
// most 64 code points (one 64-bit word, one step per code point of the longer string);
// otherwise a classic two-row dynamic programme in caller-provided scratch memory
// (GPU code cannot allocate, so the caller owns the buffer).
//
// Not to be confused with tokalign/levenshtein.h (vocabulary-scale bit-parallel MinED).
#pragma once
#include <cstdint>

#include "tokalign/common.h"

namespace tokalign {

// Bit k set when pattern[k] == c (k < len <= 64).
TA_HD uint64_t lev_small_eq_mask(const uint32_t* pattern, int len, uint32_t c) {
    uint64_t mask = 0;
    for (int k = 0; k < len; ++k) mask |= static_cast<uint64_t>(pattern[k] == c) << k;
    return mask;
}

// One text character of the bit-parallel algorithm. `vp`/`vn` are the vertical +1/-1 delta
// vectors of the current DP column, `last` the bit of the pattern's last position; returns the
// updated distance of the full pattern against the text prefix.
TA_HD int lev_small_step(uint64_t eq, uint64_t& vp, uint64_t& vn, uint64_t last, int dist) {
    const uint64_t d0 = (((eq & vp) + vp) ^ vp) | eq | vn;
    uint64_t hp = vn | ~(d0 | vp);
    uint64_t hn = d0 & vp;
    dist += (hp & last) != 0;
    dist -= (hn & last) != 0;
    hp = (hp << 1) | 1u;  // top DP row grows by 1 per text character (global distance)
    hn = hn << 1;
    vp = hn | ~(d0 | hp);
    vn = hp & d0;
    return dist;
}

// The same step without the running distance (only the vertical deltas of the column); the
// distance of the whole pattern against t text characters is then
// t + popcount(vp & mask) - popcount(vn & mask), mask = the pattern's bits.
TA_HD void lev_small_delta_step(uint64_t eq, uint64_t& vp, uint64_t& vn) {
    const uint64_t d0 = (((eq & vp) + vp) ^ vp) | eq | vn;
    uint64_t hp = vn | ~(d0 | vp);
    uint64_t hn = d0 & vp;
    hp = (hp << 1) | 1u;
    hn = hn << 1;
    vp = hn | ~(d0 | hp);
    vn = hp & d0;
}

TA_HD int lev_popcount(uint64_t x) {
#if defined(__CUDA_ARCH__)
    return __popcll(x);
#else
    return __builtin_popcountll(x);
#endif
}

// Distance when len(pattern) is 1..64; text may be any length.
TA_HD int lev_small_myers(const uint32_t* pattern, int plen, const uint32_t* text, int tlen) {
    uint64_t vp = ~static_cast<uint64_t>(0), vn = 0;
    const uint64_t last = static_cast<uint64_t>(1) << (plen - 1);
    int dist = plen;
    for (int t = 0; t < tlen; ++t)
        dist = lev_small_step(lev_small_eq_mask(pattern, plen, text[t]), vp, vn, last, dist);
    return dist;
}

// Two-row DP; scratch must hold min(la, lb) + 1 entries.
TA_HD int lev_small_dp(const uint32_t* a, int la, const uint32_t* b, int lb, uint32_t* scratch) {
    if (la > lb) {
        const uint32_t* ts = a; a = b; b = ts;
        int tl = la; la = lb; lb = tl;
    }
    for (int k = 0; k <= la; ++k) scratch[k] = static_cast<uint32_t>(k);
    for (int t = 1; t <= lb; ++t) {
        uint32_t diag = scratch[0];
        scratch[0] = static_cast<uint32_t>(t);
        for (int k = 1; k <= la; ++k) {
            const uint32_t up = scratch[k];
            uint32_t best = diag + (a[k - 1] != b[t - 1] ? 1u : 0u);
            if (up + 1 < best) best = up + 1;
            if (scratch[k - 1] + 1 < best) best = scratch[k - 1] + 1;
            diag = up;
            scratch[k] = best;
        }
    }
    return static_cast<int>(scratch[la]);
}

// Levenshtein distance over code points. `scratch` (min(la, lb) + 1 entries) is only touched
// when both strings are longer than 64 code points.
TA_HD int levenshtein_small(const uint32_t* a, int la, const uint32_t* b, int lb, uint32_t* scratch) {
    if (la > lb) {
        const uint32_t* ts = a; a = b; b = ts;
        int tl = la; la = lb; lb = tl;
    }
    if (la == 0) return lb;
    if (la <= 64) return lev_small_myers(a, la, b, lb);
    return lev_small_dp(a, la, b, lb, scratch);
}

}  // namespace tokalign
