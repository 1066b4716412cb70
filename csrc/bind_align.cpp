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

using CpArray = Arr<uint32_t>;  // code points

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

// Hands the vector's buffer to numpy without copying (a capsule owns it).
template <class T>
py::array_t<T> own_array(OutVec<T>&& v) {
    if (v.empty()) return py::array_t<T>(0);
    auto* heap = new OutVec<T>(std::move(v));
    py::capsule owner(heap, [](void* p) { delete static_cast<OutVec<T>*>(p); });
    return py::array_t<T>({static_cast<py::ssize_t>(heap->size())}, {static_cast<py::ssize_t>(sizeof(T))}, heap->data(),
                          owner);
}

// Result dict. "path" is the (L, 2) path; "path_p"/"path_s" are its columns, which are also the
// CSR index arrays (a monotone path is sorted both ways), so they are one array each.
py::dict to_dict(AlignResult&& r) {
    const py::ssize_t L = static_cast<py::ssize_t>(r.path_p.size());
    py::array_t<int32_t> path({L, py::ssize_t(2)});
    {
        int32_t* dst = path.mutable_data();
        const int32_t* pp = r.path_p.data();
        const int32_t* ps = r.path_s.data();
        for (py::ssize_t k = 0; k < L; ++k) {
            dst[2 * k] = pp[k];
            dst[2 * k + 1] = ps[k];
        }
    }
    const py::ssize_t G = static_cast<py::ssize_t>(r.groups.size() / 4);
    py::dict d;
    d["n"] = r.n;
    d["m"] = r.m;
    d["path"] = path;
    auto path_p = own_array(std::move(r.path_p));
    auto path_s = own_array(std::move(r.path_s));
    d["path_p"] = path_p;
    d["path_s"] = path_s;
    d["p2s_indptr"] = own_array(std::move(r.p2s_indptr));
    d["p2s_indices"] = path_s;
    d["s2p_indptr"] = own_array(std::move(r.s2p_indptr));
    d["s2p_indices"] = path_p;
    d["groups"] = own_array(std::move(r.groups)).reshape({G, py::ssize_t(4)});
    d["kinds"] = py::make_tuple(r.kinds[0], r.kinds[1], r.kinds[2], r.kinds[3]);
    d["cost"] = r.cost;
    d["band"] = r.band;
    return d;
}

// Checked (n, 2) offsets; the array (contiguous int64 after forcecast) is read in place.
int64_t offsets_rows(const OffArray& a, const char* side) {
    if (a.ndim() != 2 || a.shape(1) != 2)
        throw std::invalid_argument(std::string("span: ") + side + " offsets must have shape (n, 2)");
    return static_cast<int64_t>(a.shape(0));
}

// One batch item: an integer array of shape (n, 2) (or empty), read as contiguous int64.
int64_t batch_offsets(const py::handle& obj, const char* side, int64_t k, OffArray& keep) {
    py::array arr = py::array::ensure(obj);
    if (!arr) throw std::invalid_argument(std::string("align.batch: ") + side + "_offsets[" + std::to_string(k) +
                                          "] is not an array");
    if (arr.size() == 0) return 0;
    const char kind = arr.dtype().kind();
    if (arr.ndim() != 2 || arr.shape(1) != 2 || (kind != 'i' && kind != 'u'))
        throw std::invalid_argument(std::string("align.batch: ") + side + "_offsets[" + std::to_string(k) +
                                    "] must be an integer array of shape (n, 2)");
    keep = OffArray::ensure(arr);
    if (!keep) throw py::error_already_set();
    return static_cast<int64_t>(keep.shape(0));
}

// Many results as one set of concatenated arrays (one allocation each instead of eight per
// pair); "items" holds per pair: n, m, path start, path length, p2s_indptr start, s2p_indptr
// start, group start, group count, four kind counts, cost, band.
py::dict flat_results(std::vector<AlignResult>& res) {
    const int64_t count = static_cast<int64_t>(res.size());
    py::array_t<int64_t> items({static_cast<py::ssize_t>(count), py::ssize_t(14)});
    int64_t* it = items.mutable_data();
    int64_t L = 0, NP = 0, MP = 0, G = 0;
    for (int64_t k = 0; k < count; ++k) {
        const AlignResult& r = res[k];
        const int64_t l = static_cast<int64_t>(r.path_p.size()), g = static_cast<int64_t>(r.groups.size() / 4);
        int64_t* row = it + 14 * k;
        row[0] = r.n;
        row[1] = r.m;
        row[2] = L;
        row[3] = l;
        row[4] = NP;
        row[5] = MP;
        row[6] = G;
        row[7] = g;
        for (int q = 0; q < 4; ++q) row[8 + q] = r.kinds[q];
        row[12] = r.cost;
        row[13] = r.band;
        L += l;
        NP += r.n + 1;
        MP += r.m + 1;
        G += g;
    }
    py::array_t<int32_t> path({static_cast<py::ssize_t>(L), py::ssize_t(2)});
    py::array_t<int32_t> path_p(static_cast<py::ssize_t>(L)), path_s(static_cast<py::ssize_t>(L));
    py::array_t<int64_t> p2s(static_cast<py::ssize_t>(NP)), s2p(static_cast<py::ssize_t>(MP));
    py::array_t<int64_t> groups({static_cast<py::ssize_t>(G), py::ssize_t(4)});
    {
        int32_t* dpath = path.mutable_data();
        int32_t* dp = path_p.mutable_data();
        int32_t* ds = path_s.mutable_data();
        int64_t* dp2s = p2s.mutable_data();
        int64_t* ds2p = s2p.mutable_data();
        int64_t* dg = groups.mutable_data();
        py::gil_scoped_release release;
        for (int64_t k = 0; k < count; ++k) {
            AlignResult& r = res[k];
            const int64_t* row = it + 14 * k;
            const int64_t l = row[3];
            for (int64_t q = 0; q < l; ++q) {
                dpath[2 * (row[2] + q)] = r.path_p[q];
                dpath[2 * (row[2] + q) + 1] = r.path_s[q];
            }
            if (l) {
                std::memcpy(dp + row[2], r.path_p.data(), l * sizeof(int32_t));
                std::memcpy(ds + row[2], r.path_s.data(), l * sizeof(int32_t));
            }
            std::memcpy(dp2s + row[4], r.p2s_indptr.data(), (r.n + 1) * sizeof(int64_t));
            std::memcpy(ds2p + row[5], r.s2p_indptr.data(), (r.m + 1) * sizeof(int64_t));
            if (row[7]) std::memcpy(dg + 4 * row[6], r.groups.data(), 4 * row[7] * sizeof(int64_t));
            r = AlignResult();  // free as we go
        }
    }
    py::dict d;
    d["items"] = items;
    d["path"] = path;
    d["path_p"] = path_p;
    d["path_s"] = path_s;
    d["p2s_indptr"] = p2s;
    d["s2p_indptr"] = s2p;
    d["groups"] = groups;
    return d;
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
            return to_dict(std::move(r));
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
            return to_dict(std::move(r));
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
            py::list out(count);
            for (int64_t k = 0; k < count; ++k) out[k] = to_dict(std::move(res[k]));
            return out;
        },
        py::arg("pivot_table"), py::arg("pivot_ids"), py::arg("source_table"), py::arg("source_ids"),
        py::arg("tie") = 0, py::arg("band") = 0, py::arg("threads") = 0, py::arg("max_cells") = kMaxFullCells);

    m.def(
        "span",
        [](OffArray po, OffArray so) {
            const int64_t n = offsets_rows(po, "pivot"), mm = offsets_rows(so, "source");
            AlignResult r;
            {
                py::gil_scoped_release release;
                r = span_align(po.data(), n, so.data(), mm, nullptr, nullptr, nullptr);
            }
            return to_dict(std::move(r));
        },
        py::arg("pivot_offsets"), py::arg("source_offsets"), "Span alignment of [n,2] char offsets over one text.");

    m.def(
        "span_dirty",
        [](OffArray po, OffArray so, MaskArray pd, MaskArray sd) {
            const int64_t n = offsets_rows(po, "pivot"), mm = offsets_rows(so, "source");
            if (static_cast<int64_t>(pd.size()) != n || static_cast<int64_t>(sd.size()) != mm)
                throw std::invalid_argument("span: dirty masks must have one entry per token");
            AlignResult r;
            std::vector<int64_t> st;
            {
                py::gil_scoped_release release;
                r = span_align(po.data(), n, so.data(), mm, pd.data(), sd.data(), &st);
            }
            auto sa = to_array(st);
            return py::make_tuple(to_dict(std::move(r)),
                                  sa.reshape({static_cast<py::ssize_t>(st.size() / 4), py::ssize_t(4)}));
        },
        py::arg("pivot_offsets"), py::arg("source_offsets"), py::arg("pivot_dirty"), py::arg("source_dirty"));

    m.def(
        "span_batch_flat",
        [](const py::list& ps, const py::list& ss, int threads) {
            if (ps.size() != ss.size()) throw std::invalid_argument("span_batch: pivot and source lists differ in length");
            const int64_t count = static_cast<int64_t>(ps.size());
            std::vector<OffArray> pa(count), sa(count);
            std::vector<int64_t> a(count), b(count);
            for (int64_t k = 0; k < count; ++k) {
                a[k] = batch_offsets(ps[k], "pivot", k, pa[k]);
                b[k] = batch_offsets(ss[k], "source", k, sa[k]);
            }
            std::vector<AlignResult> res(count);
            {
                py::gil_scoped_release release;
                parallel_for(count, threads_for(threads), [&](int64_t k) {
                    res[k] = span_align(a[k] ? pa[k].data() : nullptr, a[k], b[k] ? sa[k].data() : nullptr, b[k],
                                        nullptr, nullptr, nullptr);
                });
            }
            return flat_results(res);
        },
        py::arg("pivot_offsets"), py::arg("source_offsets"), py::arg("threads") = 0,
        "Span alignment of many pairs; results concatenated (see tokalign.align._from_flat).");

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
            return to_dict(std::move(r));
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
