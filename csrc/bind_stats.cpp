// Python binding of the mapping-statistics kernel (csrc/stats_count.cpp): checks shapes, counts with
// the GIL released and returns numpy arrays. Python side: tokalign/stats/matrix.py.
#include <algorithm>
#include <cstdint>
#include <stdexcept>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bindings.h"
#include "tokalign/stats.h"

namespace py = pybind11;

namespace tokalign {
namespace {

std::pair<py::array_t<uint64_t>, py::array_t<int64_t>> count_pairs(IdArray pivot_ids, OffArray pivot_offsets,
                                                                   IdArray source_ids, OffArray source_offsets,
                                                                   OffArray groups, OffArray group_offsets,
                                                                   int64_t pivot_vocab, int64_t source_vocab) {
    const int64_t S = static_cast<int64_t>(pivot_offsets.size()) - 1;
    if (S < 0 || source_offsets.size() != pivot_offsets.size() || group_offsets.size() != pivot_offsets.size())
        throw std::invalid_argument("count_pairs: offsets arrays must all have length S + 1");
    if (groups.ndim() != 2 || groups.shape(1) != 4)
        throw std::invalid_argument("count_pairs: groups must have shape [G, 4]");
    stats::PairCounts r;
    {
        py::gil_scoped_release release;
        r = stats::count_pairs(pivot_ids.data(), pivot_ids.size(), pivot_offsets.data(), source_ids.data(),
                               source_ids.size(), source_offsets.data(), groups.data(), groups.shape(0),
                               group_offsets.data(), S, pivot_vocab, source_vocab);
    }
    py::array_t<uint64_t> k_out(r.keys.size());
    py::array_t<int64_t> c_out(r.counts.size());
    std::copy(r.keys.begin(), r.keys.end(), k_out.mutable_data());
    std::copy(r.counts.begin(), r.counts.end(), c_out.mutable_data());
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
