// Python bindings of the alignment core (tokalign._core): TokenTable, DTW, span, batch.
// Every entry point copies its inputs into C++ memory first and releases the GIL for the work.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings.h"
#include "tokalign/align.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

namespace tokalign {
namespace {

using IdArray = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using OffArray = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
using MaskArray = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;
using CpArray = py::array_t<uint32_t, py::array::c_style | py::array::forcecast>;

// Appends a Python str (None = empty) as code points; reads the str's own storage, so strings
// with lone surrogates work and lengths are exactly Python's len().
void add_pystr(TokenTable& t, PyObject* o, int64_t index, std::vector<uint32_t>& buf) {
    if (o == Py_None) {
        t.add(buf.data(), 0);
        return;
    }
    if (!PyUnicode_Check(o))
        throw py::type_error("TokenTable: item " + std::to_string(index) + " is " + Py_TYPE(o)->tp_name +
                             ", expected str or None");
    const Py_ssize_t len = PyUnicode_GET_LENGTH(o);
    const int kind = PyUnicode_KIND(o);
    const void* data = PyUnicode_DATA(o);
    buf.resize(static_cast<size_t>(len) + 1);
    for (Py_ssize_t k = 0; k < len; ++k) buf[k] = static_cast<uint32_t>(PyUnicode_READ(kind, data, k));
    t.add(buf.data(), len);
}

TokenTable make_table(const py::sequence& tokens) {
    TokenTable t;
    std::vector<uint32_t> buf(16);
    const Py_ssize_t n = py::len(tokens);
    for (Py_ssize_t k = 0; k < n; ++k) {
        py::object item = tokens[k];
        add_pystr(t, item.ptr(), k, buf);
    }
    return t;
}

template <class T>
py::array_t<T> to_array(const std::vector<T>& v) {
    py::array_t<T> a(static_cast<py::ssize_t>(v.size()));
    if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(T));
    return a;
}

py::dict to_dict(const AlignResult& r) {
    py::dict d;
    d["n"] = r.n;
    d["m"] = r.m;
    d["path_p"] = to_array(r.path_p);
    d["path_s"] = to_array(r.path_s);
    d["p2s_indptr"] = to_array(r.p2s_indptr);
    d["p2s_indices"] = to_array(r.p2s_indices);
    d["s2p_indptr"] = to_array(r.s2p_indptr);
    d["s2p_indices"] = to_array(r.s2p_indices);
    auto groups = to_array(r.groups);
    d["groups"] = groups.reshape({static_cast<py::ssize_t>(r.groups.size() / 4), py::ssize_t(4)});
    d["kinds"] = py::make_tuple(r.kinds[0], r.kinds[1], r.kinds[2], r.kinds[3]);
    d["cost"] = r.cost;
    d["band"] = r.band;
    return d;
}

std::vector<int64_t> offsets_of(const OffArray& a, const char* side) {
    if (a.ndim() != 2 || a.shape(1) != 2)
        throw std::invalid_argument(std::string("span: ") + side + " offsets must have shape (n, 2)");
    return std::vector<int64_t>(a.data(), a.data() + a.size());
}

int threads_for(int requested) {
#ifdef _OPENMP
    return requested > 0 ? requested : omp_get_max_threads();
#else
    (void)requested;
    return 1;
#endif
}

// Runs fn(k) for k in [0, count) on `threads` threads; the first exception (by index) is rethrown.
template <class Fn>
void parallel_for(int64_t count, int threads, Fn fn) {
    std::vector<std::string> errors(static_cast<size_t>(count));
    std::vector<char> failed(static_cast<size_t>(count), 0);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t k = 0; k < count; ++k) {
        try {
            fn(k);
        } catch (const std::exception& e) {
            errors[k] = e.what();
            failed[k] = 1;
        }
    }
    (void)threads;
    for (int64_t k = 0; k < count; ++k)
        if (failed[k]) throw std::invalid_argument("pair " + std::to_string(k) + ": " + errors[k]);
}

}  // namespace

void bind_align(py::module_& m) {
    m.attr("DTW_MAX_CELLS") = py::int_(kMaxFullCells);
    py::class_<TokenTable>(m, "TokenTable",
                           "Code-point strings of a vocabulary, built once (index = token id). Items are str or "
                           "None (empty). Optional weights (int, one per token, >= 0) drive the DTW band: use "
                           "the UTF-8 byte length of each token's text when known.")
        .def(py::init([](const py::sequence& tokens, py::object weights) {
                 TokenTable t = make_table(tokens);
                 if (!weights.is_none()) t.set_weights(weights.cast<std::vector<int64_t>>());
                 return t;
             }),
             py::arg("tokens"), py::arg("weights") = py::none())
        .def("__len__", &TokenTable::size)
        .def("weight", [](const TokenTable& t, int64_t id) {
            if (id < 0 || id >= t.size()) throw py::index_error("token id out of range");
            return t.weight(id);
        });

    m.def(
        "dtw_tokens",
        [](const py::sequence& pivot, const py::sequence& source, int tie, int64_t band, int64_t max_cells) {
            TokenTable tp = make_table(pivot), ts = make_table(source);
            std::vector<int32_t> ip(tp.size()), is(ts.size());
            for (size_t k = 0; k < ip.size(); ++k) ip[k] = static_cast<int32_t>(k);
            for (size_t k = 0; k < is.size(); ++k) is[k] = static_cast<int32_t>(k);
            AlignResult r;
            {
                py::gil_scoped_release release;
                r = dtw_align(tp, ip.data(), tp.size(), ts, is.data(), ts.size(), tie, band, max_cells);
            }
            return to_dict(r);
        },
        py::arg("pivot"), py::arg("source"), py::arg("tie") = 0, py::arg("band") = -1,
        py::arg("max_cells") = kMaxFullCells,
        "FuseChat DTW of two token-string lists. band: -1 full, 0 auto, >0 initial radius (exact either way).");

    m.def(
        "dtw_ids",
        [](const TokenTable& tp, IdArray ip, const TokenTable& ts, IdArray is, int tie, int64_t band, int64_t max_cells) {
            std::vector<int32_t> a(ip.data(), ip.data() + ip.size()), b(is.data(), is.data() + is.size());
            AlignResult r;
            {
                py::gil_scoped_release release;
                r = dtw_align(tp, a.data(), static_cast<int64_t>(a.size()), ts, b.data(),
                              static_cast<int64_t>(b.size()), tie, band, max_cells);
            }
            return to_dict(r);
        },
        py::arg("pivot_table"), py::arg("pivot_ids"), py::arg("source_table"), py::arg("source_ids"),
        py::arg("tie") = 0, py::arg("band") = -1, py::arg("max_cells") = kMaxFullCells);

    m.def(
        "dtw_batch",
        [](const TokenTable& tp, const std::vector<IdArray>& ps, const TokenTable& ts, const std::vector<IdArray>& ss,
           int tie, int64_t band, int threads, int64_t max_cells) {
            if (ps.size() != ss.size()) throw std::invalid_argument("dtw_batch: pivot and source lists differ in length");
            const int64_t count = static_cast<int64_t>(ps.size());
            std::vector<std::vector<int32_t>> a(count), b(count);
            for (int64_t k = 0; k < count; ++k) {
                a[k].assign(ps[k].data(), ps[k].data() + ps[k].size());
                b[k].assign(ss[k].data(), ss[k].data() + ss[k].size());
            }
            std::vector<AlignResult> res(count);
            {
                py::gil_scoped_release release;
                parallel_for(count, threads_for(threads), [&](int64_t k) {
                    res[k] = dtw_align(tp, a[k].data(), static_cast<int64_t>(a[k].size()), ts, b[k].data(),
                                       static_cast<int64_t>(b[k].size()), tie, band, max_cells);
                });
            }
            py::list out;
            for (auto& r : res) out.append(to_dict(r));
            return out;
        },
        py::arg("pivot_table"), py::arg("pivot_ids"), py::arg("source_table"), py::arg("source_ids"),
        py::arg("tie") = 0, py::arg("band") = 0, py::arg("threads") = 0, py::arg("max_cells") = kMaxFullCells);

    m.def(
        "span",
        [](OffArray po, OffArray so) {
            auto a = offsets_of(po, "pivot"), b = offsets_of(so, "source");
            AlignResult r;
            {
                py::gil_scoped_release release;
                r = span_align(a.data(), static_cast<int64_t>(a.size() / 2), b.data(), static_cast<int64_t>(b.size() / 2),
                               nullptr, nullptr, nullptr);
            }
            return to_dict(r);
        },
        py::arg("pivot_offsets"), py::arg("source_offsets"), "Span alignment of [n,2] char offsets over one text.");

    m.def(
        "span_dirty",
        [](OffArray po, OffArray so, MaskArray pd, MaskArray sd) {
            auto a = offsets_of(po, "pivot"), b = offsets_of(so, "source");
            if (static_cast<size_t>(pd.size()) != a.size() / 2 || static_cast<size_t>(sd.size()) != b.size() / 2)
                throw std::invalid_argument("span: dirty masks must have one entry per token");
            std::vector<uint8_t> pdv(pd.data(), pd.data() + pd.size()), sdv(sd.data(), sd.data() + sd.size());
            AlignResult r;
            std::vector<int64_t> st;
            {
                py::gil_scoped_release release;
                r = span_align(a.data(), static_cast<int64_t>(a.size() / 2), b.data(), static_cast<int64_t>(b.size() / 2),
                               pdv.data(), sdv.data(), &st);
            }
            auto sa = to_array(st);
            return py::make_tuple(to_dict(r), sa.reshape({static_cast<py::ssize_t>(st.size() / 4), py::ssize_t(4)}));
        },
        py::arg("pivot_offsets"), py::arg("source_offsets"), py::arg("pivot_dirty"), py::arg("source_dirty"));

    m.def(
        "span_batch",
        [](const std::vector<OffArray>& ps, const std::vector<OffArray>& ss, int threads) {
            if (ps.size() != ss.size()) throw std::invalid_argument("span_batch: pivot and source lists differ in length");
            const int64_t count = static_cast<int64_t>(ps.size());
            std::vector<std::vector<int64_t>> a(count), b(count);
            for (int64_t k = 0; k < count; ++k) {
                a[k] = offsets_of(ps[k], "pivot");
                b[k] = offsets_of(ss[k], "source");
            }
            std::vector<AlignResult> res(count);
            {
                py::gil_scoped_release release;
                parallel_for(count, threads_for(threads), [&](int64_t k) {
                    res[k] = span_align(a[k].data(), static_cast<int64_t>(a[k].size() / 2), b[k].data(),
                                        static_cast<int64_t>(b[k].size() / 2), nullptr, nullptr, nullptr);
                });
            }
            py::list out;
            for (auto& r : res) out.append(to_dict(r));
            return out;
        },
        py::arg("pivot_offsets"), py::arg("source_offsets"), py::arg("threads") = 0);

    m.def(
        "path_result",
        [](IdArray pp, IdArray ps, int64_t n, int64_t m, int64_t cost) {
            AlignResult r;
            r.n = n;
            r.m = m;
            r.cost = cost;
            r.path_p.assign(pp.data(), pp.data() + pp.size());
            r.path_s.assign(ps.data(), ps.data() + ps.size());
            const size_t L = r.path_p.size();
            if (L != r.path_s.size()) throw std::invalid_argument("path_result: path arrays differ in length");
            if (L > 0) {
                if (r.path_p[0] != 0 || r.path_s[0] != 0 || r.path_p[L - 1] != n - 1 || r.path_s[L - 1] != m - 1)
                    throw std::invalid_argument("path_result: path must run from (0, 0) to (n-1, m-1)");
                for (size_t k = 1; k < L; ++k) {
                    const int32_t dp = r.path_p[k] - r.path_p[k - 1], ds = r.path_s[k] - r.path_s[k - 1];
                    if (dp < 0 || dp > 1 || ds < 0 || ds > 1 || dp + ds == 0)
                        throw std::invalid_argument("path_result: step " + std::to_string(k) + " is not a DTW step");
                }
            } else if (n != 0 && m != 0) {
                throw std::invalid_argument("path_result: empty path for non-empty sequences");
            }
            {
                py::gil_scoped_release release;
                finish_result(r);
            }
            return to_dict(r);
        },
        py::arg("path_p"), py::arg("path_s"), py::arg("n"), py::arg("m"), py::arg("cost") = -1);

    m.def(
        "text_blocks",
        [](CpArray a, CpArray b, int64_t max_d) {
            std::vector<uint32_t> av(a.data(), a.data() + a.size()), bv(b.data(), b.data() + b.size());
            std::vector<int64_t> blocks;
            {
                py::gil_scoped_release release;
                blocks = text_blocks(av.data(), static_cast<int64_t>(av.size()), bv.data(),
                                     static_cast<int64_t>(bv.size()), max_d);
            }
            auto arr = to_array(blocks);
            return arr.reshape({static_cast<py::ssize_t>(blocks.size() / 3), py::ssize_t(3)});
        },
        py::arg("a"), py::arg("b"), py::arg("max_d") = 2048,
        "Matching blocks (a_start, b_start, length) of two code-point arrays.");
}

}  // namespace tokalign
