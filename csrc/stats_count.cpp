// Mapping-statistics accumulation: C[p, s] += 1 for every (pivot token, source token) pair that
// lies in one alignment group. Works on a batch of aligned sequences at once, one OpenMP task per
// sequence, each thread with its own hash map; the maps are merged into sorted (key, count)
// arrays so that Python can keep a compact running total with a sorted merge.
// Python binding: bind_stats.cpp.
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tokalign/stats.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tokalign {
namespace stats {
namespace {
using Map = std::unordered_map<uint64_t, int64_t>;
}  // namespace

PairCounts count_pairs(const int32_t* pid, int64_t n_pivot, const int64_t* po, const int32_t* sid, int64_t n_source,
                       const int64_t* so, const int64_t* g, int64_t n_groups, const int64_t* go, int64_t S,
                       int64_t pivot_vocab, int64_t source_vocab) {
    if (pivot_vocab <= 0 || source_vocab <= 0)
        throw std::invalid_argument("count_pairs: vocabulary sizes must be positive");
    PairCounts out;
    std::string error;
    int n_threads = 1;
#ifdef _OPENMP
    n_threads = omp_get_max_threads();
#endif
    std::vector<Map> maps(n_threads);
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t seq = 0; seq < S; ++seq) {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        Map& m = maps[t];
        const int64_t p0 = po[seq], p1 = po[seq + 1], s0 = so[seq], s1 = so[seq + 1];
        const int64_t g0 = go[seq], g1 = go[seq + 1];
        if (p0 < 0 || p1 < p0 || p1 > n_pivot || s0 < 0 || s1 < s0 || s1 > n_source || g0 < 0 || g1 < g0 ||
            g1 > n_groups) {
#pragma omp critical
            error = "count_pairs: offsets out of range at sequence " + std::to_string(seq);
            continue;
        }
        for (int64_t k = g0; k < g1; ++k) {
            const int64_t* r = g + 4 * k;
            if (r[0] < 0 || r[1] > p1 - p0 || r[0] > r[1] || r[2] < 0 || r[3] > s1 - s0 || r[2] > r[3]) {
#pragma omp critical
                error = "count_pairs: group out of range in sequence " + std::to_string(seq);
                break;
            }
            for (int64_t i = r[0]; i < r[1]; ++i) {
                const int64_t p = pid[p0 + i];
                for (int64_t j = r[2]; j < r[3]; ++j) {
                    const int64_t s = sid[s0 + j];
                    if (p < 0 || p >= pivot_vocab || s < 0 || s >= source_vocab) {
#pragma omp critical
                        error = "count_pairs: token id outside the vocabulary in sequence " + std::to_string(seq);
                        continue;
                    }
                    ++m[static_cast<uint64_t>(p) * static_cast<uint64_t>(source_vocab) + static_cast<uint64_t>(s)];
                }
            }
        }
    }
    if (!error.empty()) throw std::invalid_argument(error);
    Map& total = maps[0];
    for (int t = 1; t < n_threads; ++t)
        for (const auto& kv : maps[t]) total[kv.first] += kv.second;
    std::vector<std::pair<uint64_t, int64_t>> items(total.begin(), total.end());
    std::sort(items.begin(), items.end());
    out.keys.resize(items.size());
    out.counts.resize(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
        out.keys[i] = items[i].first;
        out.counts[i] = items[i].second;
    }
    return out;
}

}  // namespace stats
}  // namespace tokalign
