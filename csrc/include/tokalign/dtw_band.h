// The DTW band: which source columns each pivot row evaluates, and the token weights it is built
// from. One definition for the CPU core (csrc/align_dtw.cpp, csrc/align_tokens.cpp) and the GPU
// host code (csrc/cuda/), so the two paths cannot drift apart.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace tokalign {

constexpr uint32_t kSpMarker = 0x2581;   // '▁' SentencePiece word boundary
constexpr uint32_t kBpeMarker = 0x0120;  // 'Ġ' byte-level BPE space

inline bool is_hex_digit(uint32_t c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// Approximate UTF-8 byte length of the text a token stands for, so that cumulative weights of
// two tokenizations of one text advance alike: SentencePiece byte tokens <0xNN> are one byte,
// markers and the byte-level BPE alphabet (<= U+0143) one byte per code point, other code
// points their UTF-8 length.
inline int64_t band_weight(const uint32_t* c, int64_t len) {
    if (len == 6 && c[0] == '<' && c[1] == '0' && c[2] == 'x' && is_hex_digit(c[3]) && is_hex_digit(c[4]) &&
        c[5] == '>')
        return 1;
    int64_t w = 0;
    for (int64_t k = 0; k < len; ++k) {
        const uint32_t x = c[k];
        if (x == kSpMarker || x < 0x144) w += 1;
        else if (x < 0x800) w += 2;
        else if (x < 0x10000) w += 3;
        else w += 4;
    }
    return w;
}

struct BandRows {
    std::vector<int64_t> lo, hi;  // per pivot row: source columns [lo, hi)
    int64_t band_cells = 0;
};

// Makes rows monotone and touching (every band cell is reachable), pins the corners.
inline void finish_band(BandRows& b, int64_t n, int64_t m) {
    b.lo[0] = 0;
    b.hi[n - 1] = m;
    for (int64_t i = 0; i < n; ++i) {
        if (b.lo[i] > m - 1) b.lo[i] = m - 1;
        if (i > 0) {
            b.lo[i] = std::max(b.lo[i], b.lo[i - 1]);
            b.hi[i] = std::max(b.hi[i], b.hi[i - 1]);
            b.lo[i] = std::min(b.lo[i], b.hi[i - 1]);
        }
        if (b.hi[i] <= b.lo[i]) b.hi[i] = b.lo[i] + 1;
    }
    b.band_cells = 0;
    for (int64_t i = 0; i < n; ++i) b.band_cells += b.hi[i] - b.lo[i];
}

inline BandRows full_band(int64_t n, int64_t m) {
    BandRows b;
    b.lo.assign(size_t(n), 0);
    b.hi.assign(size_t(n), m);
    finish_band(b, n, m);
    return b;
}

// Row i keeps the source tokens whose (rescaled) cumulative-weight interval overlaps the pivot
// token's interval widened by `radius` on both sides.
inline BandRows weight_band(const std::vector<double>& pc, const std::vector<double>& sc, int64_t n, int64_t m,
                            double radius) {
    BandRows b;
    b.lo.resize(size_t(n));
    b.hi.resize(size_t(n));
    int64_t lo = 0, hi = 0;
    for (int64_t i = 0; i < n; ++i) {
        const double a = pc[i] - radius, z = pc[i + 1] + radius;
        while (lo < m && sc[lo + 1] <= a) ++lo;
        if (hi < lo) hi = lo;
        while (hi < m && sc[hi] < z) ++hi;
        b.lo[i] = lo;
        b.hi[i] = hi;
    }
    finish_band(b, n, m);
    return b;
}

// Cumulative weights pc (n + 1) and sc (m + 1), the source rescaled to the pivot's total (token
// positions when either side weighs nothing), and the initial radius: `band` when positive, else
// auto = 64 weight units (~ bytes of text), at least 8 pivot tokens' worth.
// pivot_weight(i) / source_weight(j) give the weight of the token at that position.
template <class PivotWeight, class SourceWeight>
double band_inputs(int64_t n, int64_t m, PivotWeight pivot_weight, SourceWeight source_weight, int64_t band,
                   std::vector<double>& pc, std::vector<double>& sc) {
    pc.assign(size_t(n) + 1, 0.0);
    sc.assign(size_t(m) + 1, 0.0);
    for (int64_t i = 0; i < n; ++i) pc[i + 1] = pc[i] + static_cast<double>(pivot_weight(i));
    for (int64_t j = 0; j < m; ++j) sc[j + 1] = sc[j] + static_cast<double>(source_weight(j));
    if (pc[n] <= 0 || sc[m] <= 0) {
        for (int64_t i = 0; i <= n; ++i) pc[i] = static_cast<double>(i);
        for (int64_t j = 0; j <= m; ++j) sc[j] = static_cast<double>(j);
    }
    const double scale = pc[n] / sc[m];
    for (auto& x : sc) x *= scale;
    const double per_token = pc[n] / static_cast<double>(n);
    return band > 0 ? static_cast<double>(band) : std::max(64.0, 8.0 * per_token);
}

}  // namespace tokalign
