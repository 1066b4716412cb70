// tokalign._cuda: Python bindings of the CUDA kernels. Converts host data (lists of bytes / str,
// numpy arrays) into the plain C++ inputs of the host code (mined_host.cpp, dtw_host.cpp: the
// preparation in the CPU core's order, the launches through cuda_api.h) and its results into numpy
// arrays and dicts. Nothing here links against torch. Every heavy part runs with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings.h"
#include "cuda_api.h"
#include "dtw_host.h"
#include "mined_host.h"

namespace py = pybind11;

namespace tokalign {
namespace cuda {
namespace {

// A mask of n entries from None (all set) or a bool array with one entry per text.
std::vector<uint8_t> to_mask(const py::object& obj, size_t n, const char* what) {
    std::vector<uint8_t> out(n, 1);
    if (obj.is_none()) return out;
    auto a = Arr<bool>::ensure(obj);
    if (!a || a.ndim() != 1 || size_t(a.shape(0)) != n)
        throw std::invalid_argument(std::string(what) + ": expected a bool array with one entry per text");
    for (size_t i = 0; i < n; ++i) out[i] = a.data()[i] ? 1 : 0;
    return out;
}

// A DtwTable from token strings (str or None = empty; read from the str's own storage, so lengths
// are Python's len()) and optional weights.
DtwTable* make_dtw_table(const py::sequence& tokens, const py::object& weights) {
    std::vector<uint32_t> raw;
    std::vector<int64_t> raw_off{0};
    const Py_ssize_t n = py::len(tokens);
    for (Py_ssize_t k = 0; k < n; ++k) {
        py::object item = tokens[k];
        PyObject* o = item.ptr();
        if (o != Py_None) {
            if (!PyUnicode_Check(o))
                throw py::type_error("DtwTable: item " + std::to_string(k) + " is " + Py_TYPE(o)->tp_name +
                                     ", expected str or None");
            const Py_ssize_t len = PyUnicode_GET_LENGTH(o);
            const int kind = PyUnicode_KIND(o);
            const void* data = PyUnicode_DATA(o);
            for (Py_ssize_t c = 0; c < len; ++c) raw.push_back(uint32_t(PyUnicode_READ(kind, data, c)));
        }
        raw_off.push_back(int64_t(raw.size()));
    }
    if (weights.is_none()) return new DtwTable(std::move(raw), std::move(raw_off), nullptr);
    const std::vector<int64_t> w = weights.cast<std::vector<int64_t>>();
    return new DtwTable(std::move(raw), std::move(raw_off), &w);
}

}  // namespace
}  // namespace cuda
}  // namespace tokalign

using namespace tokalign;
using namespace tokalign::cuda;

PYBIND11_MODULE(_cuda, m) {
    m.doc() = "tokalign CUDA kernels: batched banded DTW and all-pairs MinED. Host arrays in, host arrays out; "
              "device memory is managed here (cudaMalloc). Every entry point releases the GIL.";
    m.attr("MINED_MAX_TOP_N") = kMinedMaxTopN;
    m.attr("MINED_MAX_QUERY_UNITS") = kMinedMaxQueryUnits;
    m.attr("DTW_MAX_PIVOT") = kDtwMaxPivot;

    m.def(
        "device_info",
        []() {
            DeviceInfo info;
            {
                py::gil_scoped_release release;
                info = device_info();
            }
            py::dict d;
            d["count"] = info.count;
            d["error"] = info.error;
            d["name"] = info.name;
            d["compute_capability"] = py::make_tuple(info.cc_major, info.cc_minor);
            d["total_memory"] = info.total_memory;
            d["driver_version"] = info.driver_version;
            d["runtime_version"] = info.runtime_version;
            return d;
        },
        "Visible CUDA devices: dict(count, error, name, compute_capability, total_memory, driver_version, "
        "runtime_version). Never raises; count == 0 with `error` saying why when no device can be used.");

    m.def(
        "mined_search",
        [](const py::sequence& pivot_texts, py::object candidate, Arr<int64_t> rank,
           const py::sequence& source_texts, py::object query, int top_n, int device, bool emulate) {
            const auto pt = to_strings(pivot_texts, "mined_search pivot_texts");
            const auto stexts = to_strings(source_texts, "mined_search source_texts");
            if (top_n < 1 || top_n > kMinedMaxTopN)
                throw std::invalid_argument("mined_search: top_n must be in 1.." + std::to_string(kMinedMaxTopN));
            const auto cand = to_mask(candidate, pt.size(), "mined_search candidate");
            const auto q = to_mask(query, stexts.size(), "mined_search query");
            if (rank.ndim() != 1 || size_t(rank.shape(0)) != pt.size())
                throw std::invalid_argument("mined_search: rank needs one entry per pivot text");
            std::vector<int64_t> rk(rank.data(), rank.data() + rank.shape(0));
            MinedResult r;
            {
                py::gil_scoped_release release;
                r = mined(pt, cand, rk, stexts, q, top_n, device, emulate);
            }
            const py::ssize_t n = py::ssize_t(stexts.size());
            py::array_t<int32_t> ids({n, py::ssize_t(top_n)}), dists({n, py::ssize_t(top_n)});
            if (!r.ids.empty()) {
                std::memcpy(ids.mutable_data(), r.ids.data(), r.ids.size() * sizeof(int32_t));
                std::memcpy(dists.mutable_data(), r.dists.data(), r.dists.size() * sizeof(int32_t));
            }
            py::array_t<bool> cpu_rows(n);
            for (py::ssize_t i = 0; i < n; ++i) cpu_rows.mutable_data()[i] = r.cpu_rows[size_t(i)] != 0;
            py::dict st;
            st["exact"] = r.exact;
            st["filtered"] = r.timing.filtered;
            st["evaluated"] = r.timing.evaluated;
            st["candidates"] = r.candidates;
            st["gpu_queries"] = r.gpu_queries;
            st["kernel_ms"] = r.timing.kernel_ms;
            st["gpu_total_ms"] = r.timing.total_ms;
            return py::make_tuple(ids, dists, cpu_rows, st);
        },
        py::arg("pivot_texts"), py::arg("candidate"), py::arg("rank"), py::arg("source_texts"), py::arg("query") = py::none(),
        py::arg("top_n") = 1, py::arg("device") = 0, py::arg("emulate") = false,
        "All-pairs MinED on the GPU with the CPU MinEDIndex's result order. Returns (ids, dists, cpu_rows, stats):\n"
        "int32 (n_source, top_n), -1 where empty; cpu_rows marks queried rows left to the CPU (longer than\n"
        "MINED_MAX_QUERY_UNITS units); stats has the cudaEvent kernel time (kernel_ms).\n"
        "emulate=True runs the kernel's scan on the host (tests; no device needed).");

    py::class_<DtwTable>(m, "DtwTable",
                         "Token strings (str or None) of one vocabulary as code points, with band weights (the same\n"
                         "default as tokalign._core.TokenTable); copied to the GPU on first use.")
        .def(py::init([](const py::sequence& tokens, py::object weights) { return make_dtw_table(tokens, weights); }),
             py::arg("tokens"), py::arg("weights") = py::none())
        .def("__len__", &DtwTable::size);

    m.def(
        "dtw_batch",
        [](DtwTable& tp, const std::vector<IdArray>& ps, DtwTable& ts, const std::vector<IdArray>& ss, int tie, int64_t band,
           int device, int64_t max_cells, bool emulate) {
            if (ps.size() != ss.size()) throw std::invalid_argument("dtw_batch: pivot and source lists differ in length");
            if (tie != 0 && tie != 1) throw std::invalid_argument("dtw_batch: unknown tie-break code");
            std::vector<std::vector<int32_t>> P(ps.size()), S(ss.size());
            for (size_t k = 0; k < ps.size(); ++k) {
                P[k].assign(ps[k].data(), ps[k].data() + ps[k].size());
                S[k].assign(ss[k].data(), ss[k].data() + ss[k].size());
            }
            std::vector<PairState> res;
            DtwStats stats;
            {
                py::gil_scoped_release release;
                res = dtw_batch(tp, P, ts, S, tie, band, device, max_cells, emulate, stats);
            }
            py::list out;
            for (auto& s : res) {
                if (s.status != 0) {
                    out.append(py::none());
                    continue;
                }
                py::dict d;
                d["path_p"] = to_array(s.path_p);
                d["path_s"] = to_array(s.path_s);
                d["cost"] = s.cost;
                d["band"] = s.band;
                out.append(d);
            }
            py::dict st;
            st["kernel_ms"] = stats.kernel_ms;
            st["rounds"] = stats.rounds;
            st["launches"] = stats.launches;
            st["cells"] = stats.cells;
            st["cpu_pairs"] = stats.cpu_pairs;
            st["widened"] = stats.widened;
            return py::make_tuple(out, st);
        },
        py::arg("pivot_table"), py::arg("pivot_ids"), py::arg("source_table"), py::arg("source_ids"), py::arg("tie") = 0,
        py::arg("band") = 0, py::arg("device") = 0, py::arg("max_cells") = int64_t(1) << 28, py::arg("emulate") = false,
        "Batched FuseChat DTW on the GPU. band: -1 full matrix, 0 auto, >0 initial radius (as tokalign._core).\n"
        "Returns (results, stats): per pair a dict(path_p, path_s, cost, band) or None where the pair is left to\n"
        "the CPU (empty, pivot longer than DTW_MAX_PIVOT, more than max_cells band cells, or two tokens both\n"
        "longer than 64 code points in one cell); stats has the summed cudaEvent kernel time (kernel_ms).\n"
        "emulate=True runs the kernel's per-cell and traceback code on the host (tests; no device needed).");
}
