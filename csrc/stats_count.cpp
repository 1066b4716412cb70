// Mapping-statistics accumulation: C[p, s] += 1 for every (pivot token, source token) pair that
// lies in one alignment group. Works on a batch of aligned sequences at once, one OpenMP task per
// sequence, each thread with its own hash map; the maps are merged into sorted (key, count)
// arrays so that Python can keep a compact running total with a sorted merge.
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <unordered_map>
#include <utility>
#include <vector>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bindings.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

namespace tokalign {
namespace {

using Map = std::unordered_map<uint64_t, int64_t>;

template <typename T>
const T* data_of(const py::array_t<T, py::array::c_style | py::array::forcecast>& a) {
    return a.data();
}

// Inputs are concatenated ragged arrays with offsets (length S + 1):
//   pivot ids / source ids per sequence, and groups [G, 4] (pivot_start, pivot_end, source_start, source_end)
//   relative to the sequence. Returns sorted unique keys (p * source_vocab + s) and their counts.
std::pair<py::array_t<uint64_t>, py::array_t<int64_t>> count_pairs(
    py::array_t<int32_t, py::array::c_style | py::array::forcecast> pivot_ids,
    py::array_t<int64_t, py::array::c_style | py::array::forcecast> pivot_offsets,
    py::array_t<int32_t, py::array::c_style | py::array::forcecast> source_ids,
    py::array_t<int64_t, py::array::c_style | py::array::forcecast> source_offsets,
    py::array_t<int64_t, py::array::c_style | py::array::forcecast> groups,
    py::array_t<int64_t, py::array::c_style | py::array::forcecast> group_offsets,
    int64_t pivot_vocab, int64_t source_vocab) {
    const int64_t S = static_cast<int64_t>(pivot_offsets.size()) - 1;
    if (S < 0 || source_offsets.size() != pivot_offsets.size() || group_offsets.size() != pivot_offsets.size())
        throw std::invalid_argument("count_pairs: offsets arrays must all have length S + 1");
    if (groups.ndim() != 2 || groups.shape(1) != 4)
        throw std::invalid_argument("count_pairs: groups must have shape [G, 4]");
    if (pivot_vocab <= 0 || source_vocab <= 0)
        throw std::invalid_argument("count_pairs: vocabulary sizes must be positive");
    const int32_t* pid = data_of(pivot_ids);
    const int32_t* sid = data_of(source_ids);
    const int64_t* po = data_of(pivot_offsets);
    const int64_t* so = data_of(source_offsets);
    const int64_t* g = data_of(groups);
    const int64_t* go = data_of(group_offsets);
    const int64_t n_pivot = pivot_ids.size(), n_source = source_ids.size(), n_groups = groups.shape(0);

    std::vector<uint64_t> keys;
    std::vector<int64_t> counts;
    std::string error;
    {
        py::gil_scoped_release release;
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
        if (error.empty()) {
            Map& total = maps[0];
            for (int t = 1; t < n_threads; ++t)
                for (const auto& kv : maps[t]) total[kv.first] += kv.second;
            std::vector<std::pair<uint64_t, int64_t>> items(total.begin(), total.end());
            std::sort(items.begin(), items.end());
            keys.resize(items.size());
            counts.resize(items.size());
            for (size_t i = 0; i < items.size(); ++i) {
                keys[i] = items[i].first;
                counts[i] = items[i].second;
            }
        }
    }
    if (!error.empty()) throw std::invalid_argument(error);
    py::array_t<uint64_t> k_out(keys.size());
    py::array_t<int64_t> c_out(counts.size());
    std::copy(keys.begin(), keys.end(), k_out.mutable_data());
    std::copy(counts.begin(), counts.end(), c_out.mutable_data());
    return {k_out, c_out};
}

}  // namespace

void bind_stats(py::module_& m) {
    m.def("count_pairs", &count_pairs, py::arg("pivot_ids"), py::arg("pivot_offsets"), py::arg("source_ids"),
          py::arg("source_offsets"), py::arg("groups"), py::arg("group_offsets"), py::arg("pivot_vocab"),
          py::arg("source_vocab"),
          "Count co-aligned (pivot, source) token pairs over a batch of aligned sequences.\n"
          "Returns (keys, counts): sorted unique keys p * source_vocab + s and their int64 counts.");
}

}  // namespace tokalign
