// Python binding of exact character offsets (kernel: csrc/exact_offsets.cpp): builds a vocabulary's
// CanonicalTable from its canonical bytes, and converts texts, ids and post-processor masks of a batch
// into OffsetItems, so that the kernel runs on the whole batch with the GIL released.
// Python side: tokalign/tokenize/canonical.py.
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bindings.h"
#include "tokalign/offsets.h"

namespace py = pybind11;

namespace tokalign {
namespace {

Prepend parse_prepend(const std::string& mode) {
    if (mode == "never") return Prepend::kNever;
    if (mode == "always") return Prepend::kAlways;
    return Prepend::kFirst;  // "first" and any other scheme: the reference's non-"always" branch
}

CanonicalTable make_canonical_table(const py::sequence& texts, Arr<uint8_t> added,
                                    const std::string& prepend) {
    const Py_ssize_t v = py::len(texts);
    if (added.ndim() != 1 || added.shape(0) != v)
        throw std::invalid_argument("CanonicalOffsets: added_mask must have one entry per text (" + std::to_string(v) + ")");
    if (v > INT32_MAX) throw std::invalid_argument("CanonicalOffsets: vocabulary too large");
    CanonicalTable t;
    t.prepend = parse_prepend(prepend);
    t.begin.reserve(static_cast<size_t>(v) + 1);
    t.begin.push_back(0);
    const uint8_t* am = added.data();
    for (Py_ssize_t i = 0; i < v; ++i) {
        py::object o = texts[i];
        char* p = nullptr;
        Py_ssize_t len = 0;
        if (PyBytes_AsStringAndSize(o.ptr(), &p, &len) != 0) {
            PyErr_Clear();
            throw py::type_error("CanonicalOffsets: text " + std::to_string(i) + " is " + Py_TYPE(o.ptr())->tp_name +
                                 ", expected bytes");
        }
        t.add(reinterpret_cast<const uint8_t*>(p), len, am[i] != 0);
    }
    return t;
}

// Copies a sequence of ints (list fast path, else any int array) into a new int32 array, checking ids.
py::array_t<int32_t> ids_array(const py::handle& obj, int64_t vocab, Py_ssize_t item) {
    auto bad = [&](long long id) {
        return py::index_error("exact_offsets_batch: item " + std::to_string(item) + ": token id " + std::to_string(id) +
                               " outside the vocabulary (" + std::to_string(vocab) + ")");
    };
    if (PyList_Check(obj.ptr())) {
        const Py_ssize_t n = PyList_GET_SIZE(obj.ptr());
        py::array_t<int32_t> out(n);
        int32_t* d = out.mutable_data();
        for (Py_ssize_t k = 0; k < n; ++k) {
            const long long id = PyLong_AsLongLong(PyList_GET_ITEM(obj.ptr(), k));
            if (id == -1 && PyErr_Occurred()) throw py::error_already_set();
            if (id < 0 || id >= vocab) throw bad(id);
            d[k] = static_cast<int32_t>(id);
        }
        return out;
    }
    auto a = Arr<int64_t>::ensure(obj);
    if (!a || a.ndim() != 1)
        throw py::type_error("exact_offsets_batch: ids of item " + std::to_string(item) + " must be a 1-d int sequence");
    const int64_t n = a.shape(0);
    py::array_t<int32_t> out(n);
    int32_t* d = out.mutable_data();
    const int64_t* s = a.data();
    for (int64_t k = 0; k < n; ++k) {
        if (s[k] < 0 || s[k] >= vocab) throw bad(s[k]);
        d[k] = static_cast<int32_t>(s[k]);
    }
    return out;
}

py::tuple exact_offsets_batch_py(const CanonicalTable& table, const py::sequence& texts, const py::sequence& ids,
                                 const py::object& inserted, const py::object& sequence_ids) {
    const Py_ssize_t m = py::len(texts);
    if (py::len(ids) != static_cast<size_t>(m))
        throw std::invalid_argument("exact_offsets_batch: texts and ids differ in length");
    if (!inserted.is_none() && !sequence_ids.is_none())
        throw std::invalid_argument("exact_offsets_batch: give inserted or sequence_ids, not both");
    py::sequence ins_seq, seq_seq;
    if (!inserted.is_none()) ins_seq = py::reinterpret_borrow<py::sequence>(inserted);
    if (!sequence_ids.is_none()) seq_seq = py::reinterpret_borrow<py::sequence>(sequence_ids);
    if ((ins_seq && py::len(ins_seq) != static_cast<size_t>(m)) || (seq_seq && py::len(seq_seq) != static_cast<size_t>(m)))
        throw std::invalid_argument("exact_offsets_batch: inserted / sequence_ids must have one entry per text");

    std::vector<py::object> keep_texts(m);  // keeps the UTF-8 buffers alive while the GIL is released
    std::vector<OffsetItem> items(m);
    std::vector<std::vector<uint8_t>> masks(m);
    py::list ids_out(m), offs_out(m);
    std::vector<py::array_t<int64_t>> offs(m);
    for (Py_ssize_t k = 0; k < m; ++k) {
        py::object txt = texts[k];
        const char* p = nullptr;
        Py_ssize_t len = 0;
        if (PyUnicode_Check(txt.ptr())) {
            if (PyUnicode_IS_ASCII(txt.ptr())) {  // the str's own storage is its UTF-8
                p = PyUnicode_AsUTF8AndSize(txt.ptr(), &len);
                if (!p) throw py::error_already_set();
            } else {  // a temporary copy: PyUnicode_AsUTF8 would keep one cached in every str
                txt = py::reinterpret_steal<py::object>(PyUnicode_AsUTF8String(txt.ptr()));
                if (!txt) throw py::error_already_set();
                p = PyBytes_AS_STRING(txt.ptr());
                len = PyBytes_GET_SIZE(txt.ptr());
            }
        } else if (PyBytes_Check(txt.ptr())) {
            p = PyBytes_AS_STRING(txt.ptr());
            len = PyBytes_GET_SIZE(txt.ptr());
        } else {
            throw py::type_error("exact_offsets_batch: text " + std::to_string(k) + " is " + Py_TYPE(txt.ptr())->tp_name +
                                 ", expected str");
        }
        keep_texts[k] = txt;
        py::array_t<int32_t> id_arr = ids_array(ids[k], table.size(), k);
        const int64_t n = id_arr.shape(0);
        OffsetItem& it = items[k];
        it.text = reinterpret_cast<const uint8_t*>(p);
        it.text_len = len;
        it.ids = id_arr.data();
        it.n = n;
        if (ins_seq) {
            py::object mk = ins_seq[k];
            if (!mk.is_none()) {
                auto a = Arr<uint8_t>::ensure(mk);
                if (!a || a.ndim() != 1 || a.shape(0) != n)
                    throw std::invalid_argument("exact_offsets_batch: inserted mask of item " + std::to_string(k) +
                                                " must have one entry per token");
                masks[k].assign(a.data(), a.data() + n);
            }
        } else if (seq_seq) {
            py::object sq = seq_seq[k];
            if (!sq.is_none()) {
                py::sequence s = py::reinterpret_borrow<py::sequence>(sq);
                if (py::len(s) != static_cast<size_t>(n))
                    throw std::invalid_argument("exact_offsets_batch: sequence_ids of item " + std::to_string(k) +
                                                " must have one entry per token");
                bool any = false;
                std::vector<uint8_t> mk(static_cast<size_t>(n));
                for (int64_t j = 0; j < n; ++j) any |= (mk[j] = s[j].is_none() ? 1 : 0);
                if (any) masks[k] = std::move(mk);
            }
        }
        if (!masks[k].empty()) it.inserted = masks[k].data();
        offs[k] = py::array_t<int64_t>({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(2)});
        it.out = offs[k].mutable_data();
        ids_out[k] = std::move(id_arr);
    }
    std::vector<uint8_t> ok(m);
    {
        py::gil_scoped_release release;
        exact_offsets_batch(table, items, ok.data());
    }
    for (Py_ssize_t k = 0; k < m; ++k) {
        if (ok[k])
            offs_out[k] = offs[k];
        else
            offs_out[k] = py::none();
    }
    return py::make_tuple(ids_out, offs_out);
}

}  // namespace

void bind_tokenize(py::module_& m) {
    py::class_<CanonicalTable>(m, "CanonicalOffsets",
                               "Canonical token bytes of a vocabulary, for exact_offsets_batch (built once per tokenizer).")
        .def(py::init(&make_canonical_table), py::arg("texts"), py::arg("added_mask"), py::arg("prepend"),
             "texts: canonical bytes per id; added_mask: bool per id; prepend: 'never' | 'always' | 'first'.")
        .def_property_readonly("size", &CanonicalTable::size)
        .def_property_readonly("prepend", [](const CanonicalTable& t) {
            return t.prepend == Prepend::kNever ? "never" : (t.prepend == Prepend::kAlways ? "always" : "first");
        });
    m.def("exact_offsets_batch", &exact_offsets_batch_py, py::arg("table"), py::arg("texts"), py::arg("ids"),
          py::arg("inserted") = py::none(), py::arg("sequence_ids") = py::none(),
          "Exact character offsets of many encodings (see canonical.exact_offsets_reference).\n"
          "texts: str (or UTF-8 bytes) per item; ids: int list/array per item; inserted: per item None or a bool\n"
          "mask of post-processor tokens; or sequence_ids: per item None or a list where None marks them.\n"
          "Returns (ids, offsets): int32 arrays, and [n, 2] int64 arrays or None where the texts do not add up.");
}

}  // namespace tokalign
