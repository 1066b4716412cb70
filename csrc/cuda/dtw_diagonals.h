// The DTW band of the CPU path (tokalign/dtw_band.h, the same code) laid out by anti-diagonal
// for the GPU kernel. tests/test_cuda.py compares GPU and CPU on real pairs when a device is
// present, and its host-emulation tests check the layout against the CPU wherever tokalign._cuda is built.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "tokalign/dtw_band.h"

namespace tokalign {
namespace cuda {

constexpr int64_t kMaxFullCellsCpu = INT64_C(1) << 32;  // tokalign::kMaxFullCells

// The band itself is tokalign/dtw_band.h, shared with the CPU core.
using tokalign::BandRows;
using tokalign::full_band;
using tokalign::weight_band;

// Cumulative weights and the initial radius from per-token weight tables (the CPU core's rule).
inline void band_inputs(const std::vector<int64_t>& wp, const std::vector<int32_t>& ip, const std::vector<int64_t>& ws,
                        const std::vector<int32_t>& is, int64_t band, std::vector<double>& pc, std::vector<double>& sc,
                        double& radius) {
    radius = tokalign::band_inputs(
        int64_t(ip.size()), int64_t(is.size()), [&](int64_t i) { return wp[size_t(ip[size_t(i)])]; },
        [&](int64_t j) { return ws[size_t(is[size_t(j)])]; }, band, pc, sc);
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
