// Host side of the GPU DTW (tokalign._cuda.DtwTable / dtw_batch): plain C++, no Python types.
// Builds each pair's band exactly as the CPU core does (csrc/align_dtw.cpp, through
// tokalign/dtw_band.h), lays it out by anti-diagonal (dtw_diagonals.h), launches the kernel in
// chunks through cuda_api.h (or runs its per-cell code on the host), and widens bands the path
// touched, as the CPU does.
#pragma once

#include <cstdint>
#include <vector>

#include "cuda_api.h"
#include "dtw_wavefront.h"

namespace tokalign {
namespace cuda {

// A vocabulary's code-point strings (raw and marker-stripped) and band weights, with a device
// copy made on first use and kept until the object is destroyed.
class DtwTable {
  public:
    // raw: every token's code points concatenated; raw_off: [size + 1] offsets into raw. weights:
    // one per token, or nullptr for the CPU TokenTable's default (band_weight of the raw text).
    // Throws std::invalid_argument on a wrong number of weights or a negative one.
    DtwTable(std::vector<uint32_t> raw, std::vector<int64_t> raw_off, const std::vector<int64_t>* weights);
    ~DtwTable();
    DtwTable(const DtwTable&) = delete;
    DtwTable& operator=(const DtwTable&) = delete;

    int64_t size() const { return int64_t(weight_.size()); }
    int64_t max_len() const { return max_len_; }
    const std::vector<int64_t>& weights() const { return weight_; }
    TableView host_view() const { return TableView{raw_.data(), raw_off_.data(), str_.data(), str_off_.data()}; }
    const void* on_device(int device);

  private:
    std::vector<uint32_t> raw_, str_;
    std::vector<int64_t> raw_off_, str_off_, weight_;
    int64_t max_len_ = 0;
    void* device_ = nullptr;
    int device_index_ = -1;
};

struct PairState {
    std::vector<double> pc, sc;  // cumulative weights, source rescaled (the CPU's band inputs)
    double radius = 0;
    bool full = false;
    int status = -1;  // -1 pending, 0 done, 2 cpu
    std::vector<int32_t> path_p, path_s;
    int64_t cost = -1, band = -1;
};

struct DtwStats {
    double kernel_ms = 0;
    int64_t rounds = 0, launches = 0, cells = 0, cpu_pairs = 0, widened = 0;
};

// DTW of every pair (P[k], S[k]) (ids into tp / ts). band: -1 full matrix, 0 auto, > 0 initial
// radius (as tokalign._core). Pairs the GPU does not take come back with status 2 (the caller runs
// them on the CPU). emulate: the kernel's code on the host (tests; no device needed). Throws
// std::invalid_argument on ids outside the tables and std::runtime_error on CUDA failures.
std::vector<PairState> dtw_batch(DtwTable& tp, const std::vector<std::vector<int32_t>>& P, DtwTable& ts,
                                 const std::vector<std::vector<int32_t>>& S, int tie, int64_t band, int device,
                                 int64_t max_cells, bool emulate, DtwStats& stats);

}  // namespace cuda
}  // namespace tokalign
