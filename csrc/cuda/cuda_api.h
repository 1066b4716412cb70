// Host-side interface of the CUDA kernels (tokalign._cuda).
//
// Plain C++: no CUDA types, so the host code (*_host.cpp) and the bindings (bind_cuda.cpp) are
// compiled by the ordinary C++ compiler and only the .cu files go through nvcc. Every function
// here manages its own device memory (cudaMalloc / cudaFree, no managed memory), takes and fills
// host arrays, and reports CUDA failures by throwing std::runtime_error with the CUDA error string.
#pragma once

#include <cstdint>
#include <string>

namespace tokalign {
namespace cuda {

struct DeviceInfo {
    int count = 0;            // visible devices (0 when none or when the driver is missing)
    std::string error;        // why count is 0 ("" when fine)
    std::string name;         // device 0
    int cc_major = 0, cc_minor = 0;
    int64_t total_memory = 0;
    int driver_version = 0, runtime_version = 0;
};

// Never throws; a missing driver or device is reported in `error`.
DeviceInfo device_info();

// ---- MinED ----------------------------------------------------------------------------------
//
// Candidates are sorted by (length, rank, id) on the host, so each length bucket is a contiguous
// range; `ord` is the candidate's position in (rank, id) order, which makes the CPU tie-break key
// (distance, |length difference|, rank, id) one 64-bit integer:
//   key = distance << 48 | |L - m| << 32 | ord      (kEmptyKey = no result)
constexpr uint64_t kEmptyKey = ~uint64_t(0);
constexpr int kMinedMaxTopN = 16;
constexpr int kMinedMaxQueryUnits = 1024;  // longer queries run on the CPU

struct MinedProblem {
    // candidates (pivot tokens), by bucket
    const uint32_t* cand_units = nullptr;  // code points, concatenated
    int64_t cand_units_total = 0;
    const int32_t* cand_start = nullptr;   // [n_cand] start in cand_units
    const int32_t* cand_ord = nullptr;     // [n_cand]
    const uint64_t* cand_sig = nullptr;    // [n_cand] character signature
    int32_t n_cand = 0;
    const int32_t* bucket_start = nullptr;  // [max_len + 2]: candidates of length L are [bs[L], bs[L+1])
    int32_t max_len = 0;
    // queries (source tokens)
    const uint32_t* query_units = nullptr;
    int64_t query_units_total = 0;
    const int32_t* query_start = nullptr;  // [n_query]
    const int32_t* query_len = nullptr;    // [n_query], each <= kMinedMaxQueryUnits
    const uint64_t* query_sig = nullptr;   // [n_query]
    int32_t n_query = 0;
    int32_t top_n = 1;                     // <= kMinedMaxTopN
};

struct MinedTiming {
    float kernel_ms = 0;    // cudaEvent time of the search kernel
    float total_ms = 0;     // uploads + kernel + download
    int64_t evaluated = 0;  // pairs whose distance was computed
    int64_t filtered = 0;   // pairs visited (length buckets scanned)
};

// keys: [n_query * top_n], sorted best first, kEmptyKey where empty.
MinedTiming mined_search(const MinedProblem& p, uint64_t* keys, int device);

// ---- DTW ------------------------------------------------------------------------------------
//
// One token table per side: raw and marker-stripped code-point strings per token id.
struct DtwTableHost {
    const uint32_t* raw = nullptr;
    const int64_t* raw_off = nullptr;  // [size + 1]
    const uint32_t* str = nullptr;
    const int64_t* str_off = nullptr;  // [size + 1]
    int64_t size = 0, raw_total = 0, str_total = 0;
};

// A device copy of one table; freed by dtw_table_free (or leaked harmlessly at process exit).
void* dtw_table_upload(const DtwTableHost& t, int device);
void dtw_table_free(void* handle);

// One launch: pairs whose band cells are laid out by anti-diagonal. For pair k, diagonal d
// (0 <= d < n+m-1) holds the pivot positions i in [diag_lo[d], diag_hi[d]) (j = d - i); its cells
// are moves[cell_base + diag_cell[d] + (i - diag_lo[d])].
struct DtwLaunch {
    int32_t count = 0;
    const int32_t* pivot_ids = nullptr;   // concatenated
    const int32_t* source_ids = nullptr;  // concatenated
    const int64_t* pivot_off = nullptr;   // [count]
    const int64_t* source_off = nullptr;  // [count]
    const int32_t* n = nullptr;           // [count]
    const int32_t* m = nullptr;           // [count]
    const int32_t* diag_lo = nullptr;     // concatenated, n+m-1 per pair
    const int32_t* diag_hi = nullptr;
    const int64_t* diag_cell = nullptr;
    const int64_t* diag_off = nullptr;    // [count] start of the pair's diagonals
    const int64_t* cell_base = nullptr;   // [count]
    const uint8_t* full = nullptr;        // [count] 1: the band is the whole matrix (no edge check)
    const int64_t* path_off = nullptr;    // [count] capacity n+m-1 per pair
    int64_t ids_total_p = 0, ids_total_s = 0, diag_total = 0, cells_total = 0, path_total = 0;
    int32_t max_n = 0;
    int32_t max_width = 0;  // most cells on one diagonal: sets the block size (32..128 threads)
    int tie = 0;
};

enum DtwStatus : int32_t {
    kDtwOk = 0,
    kDtwTouched = 1,   // a path cell had a predecessor outside the band: widen and rerun
    kDtwNeedsCpu = 2,  // a cell compares two tokens both longer than 64 code points
};

struct DtwOutput {
    int32_t* status = nullptr;    // [count]
    int32_t* cost = nullptr;      // [count] D[n-1][m-1]
    int32_t* path_len = nullptr;  // [count]
    int32_t* path = nullptr;      // [path_total * 2]: (i, j) from the END of the path backwards
};

// Returns the cudaEvent time of the kernel in milliseconds.
float dtw_run(const void* pivot_table, const void* source_table, const DtwLaunch& in, DtwOutput& out, int device);

constexpr int kDtwMaxPivot = 16384;  // D buffers of three diagonals live in shared memory
constexpr int32_t kDtwInf32 = 0x3fffffff;

}  // namespace cuda
}  // namespace tokalign
