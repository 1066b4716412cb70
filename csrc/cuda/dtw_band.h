// The DTW band of the CPU path (csrc/align_dtw.cpp: weight_band / finish_band and the radius
// rule of dtw_align), restated for the GPU host code, plus its anti-diagonal layout.
//
// Keep in step with csrc/align_dtw.cpp: the GPU reproduces the CPU results only while both use
// the same band. tests/test_cuda.py compares the two on real pairs when a device is present, and
// test_band_layout_matches_cpu_rows checks this file against the CPU on every machine.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace tokalign {
namespace cuda {

constexpr int64_t kMaxFullCellsCpu = INT64_C(1) << 32;  // tokalign::kMaxFullCells

struct BandRows {
    std::vector<int64_t> lo, hi;  // per pivot row: source columns [lo, hi)
    int64_t band_cells = 0;
};

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

// Cumulative weights (source rescaled to the pivot's total) and the initial radius.
inline void band_inputs(const std::vector<int64_t>& wp, const std::vector<int32_t>& ip, const std::vector<int64_t>& ws,
                        const std::vector<int32_t>& is, int64_t band, std::vector<double>& pc, std::vector<double>& sc,
                        double& radius) {
    const int64_t n = int64_t(ip.size()), m = int64_t(is.size());
    pc.assign(size_t(n) + 1, 0.0);
    sc.assign(size_t(m) + 1, 0.0);
    for (int64_t i = 0; i < n; ++i) pc[i + 1] = pc[i] + static_cast<double>(wp[size_t(ip[i])]);
    for (int64_t j = 0; j < m; ++j) sc[j + 1] = sc[j] + static_cast<double>(ws[size_t(is[j])]);
    if (pc[n] <= 0 || sc[m] <= 0) {
        for (int64_t i = 0; i <= n; ++i) pc[i] = static_cast<double>(i);
        for (int64_t j = 0; j <= m; ++j) sc[j] = static_cast<double>(j);
    }
    const double scale = pc[n] / sc[m];
    for (auto& x : sc) x *= scale;
    const double per_token = pc[n] / static_cast<double>(n);
    radius = band > 0 ? static_cast<double>(band) : std::max(64.0, 8.0 * per_token);
}

// Appends the pivot range [lo, hi) of every anti-diagonal d = i + j (0 <= d < n + m - 1) and the
// offset of its first cell; returns the number of cells. Rows are monotone, so i + lo[i] and
// i + hi[i] increase strictly with i and each diagonal's cells are one contiguous range.
inline int64_t diagonal_ranges(const BandRows& b, int64_t n, int64_t m, std::vector<int32_t>& dlo,
                               std::vector<int32_t>& dhi, std::vector<int64_t>& dcell) {
    int64_t a = 0, c = 0, cells = 0;
    for (int64_t d = 0; d < n + m - 1; ++d) {
        while (a < n && a + b.hi[size_t(a)] <= d) ++a;
        while (c < n && c + b.lo[size_t(c)] <= d) ++c;
        const int64_t lo = a, hi = std::max(a, c);
        dlo.push_back(int32_t(lo));
        dhi.push_back(int32_t(hi));
        dcell.push_back(cells);
        cells += hi - lo;
    }
    return cells;
}

}  // namespace cuda
}  // namespace tokalign
