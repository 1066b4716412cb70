// Bit-parallel Levenshtein distance (Myers 1999, in Hyyro's 2003 formulation for the global
// edit distance) over 64-bit words, plus the text-unit rule every vocabulary method shares.
//
// Text units: a token's canonical bytes are decoded as UTF-8; each well-formed sequence becomes
// its code point and every byte that is not part of a well-formed sequence becomes one unit
// U+DC00 + byte. This is exactly Python's `bytes.decode("utf-8", "surrogateescape")`, so the
// Python reference and rapidfuzz see the same unit sequences as this code.
//
// The step functions are TA_HD (common.h): the CPU build and a CUDA kernel share them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "tokalign/common.h"

namespace tokalign {
namespace lev {

// ---- text units -----------------------------------------------------------------------------

// Decodes one unit starting at s[i] (i < n) and returns the number of bytes consumed.
// Well-formedness follows Unicode Table 3-7 (no overlongs, no surrogates, <= U+10FFFF),
// the same table CPython's decoder enforces.
TA_HD int decode_unit(const uint8_t* s, size_t n, size_t i, uint32_t* unit) {
    const uint32_t b0 = s[i];
    if (b0 < 0x80) {
        *unit = b0;
        return 1;
    }
    int len = 0;
    uint32_t lo = 0x80, hi = 0xBF, cp = 0;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        len = 2;
        cp = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        len = 3;
        cp = b0 & 0x0F;
        if (b0 == 0xE0) lo = 0xA0;
        if (b0 == 0xED) hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        len = 4;
        cp = b0 & 0x07;
        if (b0 == 0xF0) lo = 0x90;
        if (b0 == 0xF4) hi = 0x8F;
    }
    if (len == 0 || i + len > n) {
        *unit = 0xDC00u + b0;
        return 1;
    }
    for (int k = 1; k < len; ++k) {
        const uint32_t b = s[i + k];
        const uint32_t l = (k == 1) ? lo : 0x80u, h = (k == 1) ? hi : 0xBFu;
        if (b < l || b > h) {
            *unit = 0xDC00u + b0;
            return 1;
        }
        cp = (cp << 6) | (b & 0x3F);
    }
    *unit = cp;
    return len;
}

// Appends the units of s[0..n) to out; returns how many were appended.
inline size_t decode_units(const uint8_t* s, size_t n, std::vector<uint32_t>& out) {
    size_t count = 0;
    for (size_t i = 0; i < n;) {
        uint32_t u;
        i += decode_unit(s, n, i, &u);
        out.push_back(u);
        ++count;
    }
    return count;
}

// ---- bit-parallel steps -----------------------------------------------------------------------

// One column of the DP for a pattern of at most 64 units (one word), global distance.
// eq: pattern positions equal to the text unit; vp/vn: vertical +1/-1 deltas (updated);
// last: bit of the pattern's last row. Returns the change of D[m][j] (-1, 0 or +1).
TA_HD int step_word(uint64_t eq, uint64_t& vp, uint64_t& vn, uint64_t last) {
    const uint64_t xv = eq | vn;
    const uint64_t xh = (((eq & vp) + vp) ^ vp) | eq;
    uint64_t hp = vn | ~(xh | vp);
    uint64_t hn = vp & xh;
    const int delta = ((hp & last) ? 1 : 0) - ((hn & last) ? 1 : 0);
    hp = (hp << 1) | 1u;  // row 0 of the global DP grows by one per column: carry-in +1
    hn = hn << 1;
    vp = hn | ~(xv | hp);
    vn = hp & xv;
    return delta;
}

// One column of one 64-row block (Myers' advance_block). hin is the horizontal delta entering
// the block from the row above (+1 for the first block: global distance), the return value the
// delta leaving it at row `high` (bit 63, or the pattern's last row in the last block).
TA_HD int step_block(uint64_t eq, uint64_t& vp, uint64_t& vn, int hin, uint64_t high) {
    const uint64_t xv = eq | vn;
    if (hin < 0) eq |= 1u;  // a negative carry into the block acts like a match in row 0
    const uint64_t xh = (((eq & vp) + vp) ^ vp) | eq;
    uint64_t hp = vn | ~(xh | vp);
    uint64_t hn = vp & xh;
    const int hout = (hp & high) ? 1 : ((hn & high) ? -1 : 0);
    hp <<= 1;
    hn <<= 1;
    if (hin < 0)
        hn |= 1u;
    else if (hin > 0)
        hp |= 1u;
    vp = hn | ~(xv | hp);
    vn = hp & xv;
    return hout;
}

// Pattern equality masks: peq(block, unit) -> uint64_t bits of the pattern rows (block*64 ..)
// equal to `unit`. Callers supply whatever lookup suits them (dense table, hash, GPU smem).

// Distance between a pattern of m units (blocks = ceil(m/64)) and text[0..n), with early exit:
// returns max_dist + 1 as soon as the distance provably exceeds max_dist (pass a large max_dist
// for the exact value). Text units are looked up through `peq`. Patterns over 64 units need
// `scratch` with room for 2 * ceil(m/64) words (no allocation here, so kernels can call it).
template <class Peq>
TA_HD int distance(const Peq& peq, int m, const uint32_t* text, int n, int max_dist, uint64_t* scratch) {
    if (m == 0) return n;
    if (n == 0) return m;
    int score = m;
    if (m <= 64) {
        uint64_t vp = ~uint64_t(0), vn = 0;
        const uint64_t last = uint64_t(1) << (m - 1);
        for (int j = 0; j < n; ++j) {
            score += step_word(peq(0, text[j]), vp, vn, last);
            // D[m][n] >= D[m][j] - (columns left): one column lowers the last row by at most one
            if (score - (n - j - 1) > max_dist) return max_dist + 1;
        }
        return score;
    }
    const int blocks = (m + 63) / 64;
    uint64_t* vp = scratch;
    uint64_t* vn = scratch + blocks;
    for (int b = 0; b < blocks; ++b) {
        vp[b] = ~uint64_t(0);
        vn[b] = 0;
    }
    const uint64_t last_high = uint64_t(1) << ((m - 1) % 64);
    const uint64_t high = uint64_t(1) << 63;
    for (int j = 0; j < n; ++j) {
        int carry = 1;
        for (int b = 0; b < blocks; ++b)
            carry = step_block(peq(b, text[j]), vp[b], vn[b], carry, b + 1 == blocks ? last_high : high);
        score += carry;
        if (score - (n - j - 1) > max_dist) return max_dist + 1;
    }
    return score;
}

}  // namespace lev
}  // namespace tokalign
