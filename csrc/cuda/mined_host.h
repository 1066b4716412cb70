// Host side of the GPU MinED search (tokalign._cuda.mined_search): plain C++, no Python types.
// Prepares the flat candidate / query arrays exactly as the CPU MinEDIndex orders things (length
// buckets, (rank, id) tie-break order, character signatures), answers exact matches on the host,
// runs the kernel through cuda_api.h (or its scan on the host) and maps keys back to token ids.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cuda_api.h"

namespace tokalign {
namespace cuda {

struct MinedResult {
    std::vector<int32_t> ids, dists;
    std::vector<uint8_t> cpu_rows;  // queries the GPU does not take (longer than kMinedMaxQueryUnits)
    MinedTiming timing;
    int64_t exact = 0, candidates = 0, gpu_queries = 0;
};

// All-pairs MinED of the queried source texts against the candidate pivot texts, top_n per row
// (ids / dists [n_source * top_n], -1 where empty). emulate: run the kernel's scan on the host
// (tests; no device needed). Throws std::invalid_argument on inputs the GPU index cannot hold and
// std::runtime_error on CUDA failures.
MinedResult mined(const std::vector<std::string>& pivot, const std::vector<uint8_t>& candidate,
                  const std::vector<int64_t>& rank, const std::vector<std::string>& source,
                  const std::vector<uint8_t>& query, int top_n, int device, bool emulate);

}  // namespace cuda
}  // namespace tokalign
