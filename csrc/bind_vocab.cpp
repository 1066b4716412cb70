// Python bindings of the vocabulary-map kernels (tokalign.vocab uses them through tokalign._core).
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "bindings.h"
#include "tokalign/levenshtein.h"
#include "tokalign/vocab.h"

namespace py = pybind11;

namespace tokalign {

namespace {

std::vector<uint32_t> units_of(const std::string& s) {
    std::vector<uint32_t> u;
    lev::decode_units(reinterpret_cast<const uint8_t*>(s.data()), s.size(), u);
    return u;
}

}  // namespace

void bind_vocab(py::module_& m) {
    m.def(
        "decode_units",
        [](const py::bytes& text) { return units_of(std::string(text)); },
        py::arg("text"),
        "Text units of UTF-8 bytes: code points, and U+DC00+byte for bytes outside well-formed sequences\n"
        "(= ord() of each character of text.decode('utf-8', 'surrogateescape')).");

    m.def(
        "levenshtein",
        [](const py::bytes& a, const py::bytes& b) {
            const std::vector<uint32_t> ua = units_of(std::string(a)), ub = units_of(std::string(b));
            py::gil_scoped_release release;
            return vocab::levenshtein(ua.data(), int(ua.size()), ub.data(), int(ub.size()));
        },
        py::arg("a"), py::arg("b"), "Levenshtein distance between the text units of two byte strings (bit-parallel).");

    m.def(
        "levenshtein_pairs",
        [](const py::sequence& texts_a, const py::sequence& texts_b, Arr<int64_t> ia,
           Arr<int64_t> ib, int threads) {
            if (ia.ndim() != 1 || ib.ndim() != 1 || ia.shape(0) != ib.shape(0))
                throw std::invalid_argument("levenshtein_pairs: ia and ib must be 1-d and of equal length");
            const std::vector<std::string> sa = to_strings(texts_a, "levenshtein_pairs texts_a");
            const std::vector<std::string> sb = to_strings(texts_b, "levenshtein_pairs texts_b");
            const int64_t count = ia.shape(0);
            const int64_t* pa = ia.data();
            const int64_t* pb = ib.data();
            for (int64_t k = 0; k < count; ++k)
                if (pa[k] < 0 || pa[k] >= int64_t(sa.size()) || pb[k] < 0 || pb[k] >= int64_t(sb.size()))
                    throw std::out_of_range("levenshtein_pairs: pair " + std::to_string(k) + " indexes past the texts");
            py::array_t<int32_t> dist(count);
            py::array_t<bool> contains(count);
            int32_t* pd = dist.mutable_data();
            uint8_t* pc = reinterpret_cast<uint8_t*>(contains.mutable_data());
            {
                py::gil_scoped_release release;
                const vocab::UnitTexts ua = vocab::decode_texts(sa), ub = vocab::decode_texts(sb);
                vocab::levenshtein_pairs(ua, ub, pa, pb, count, threads, pd, pc);
            }
            return py::make_tuple(dist, contains);
        },
        py::arg("texts_a"), py::arg("texts_b"), py::arg("ia"), py::arg("ib"), py::arg("threads") = 0,
        "For each k: Levenshtein distance between texts_a[ia[k]] and texts_b[ib[k]] and whether either is a\n"
        "substring of the other (units). Returns (int32 distances, bool contains). GIL released, OpenMP.");

    py::class_<vocab::MinEDIndex>(m, "MinEDIndex",
                                  "All-pairs minimum edit distance against a fixed pivot vocabulary (bucketed by length,\n"
                                  "signature filter, bit-parallel Levenshtein). Result key: (distance, |len difference|,\n"
                                  "rank, pivot id), smaller first; an exact text match short-circuits.")
        .def(py::init([](const py::sequence& pivot_texts, Arr<bool> candidate,
                         Arr<int64_t> rank) {
                 std::vector<std::string> texts = to_strings(pivot_texts, "MinEDIndex pivot_texts");
                 if (candidate.ndim() != 1 || rank.ndim() != 1 || size_t(candidate.shape(0)) != texts.size() ||
                     size_t(rank.shape(0)) != texts.size())
                     throw std::invalid_argument("MinEDIndex: candidate and rank need one entry per pivot text");
                 std::vector<uint8_t> cand(texts.size());
                 std::vector<int64_t> rk(rank.data(), rank.data() + rank.shape(0));
                 for (size_t i = 0; i < cand.size(); ++i) cand[i] = candidate.data()[i] ? 1 : 0;
                 py::gil_scoped_release release;
                 return new vocab::MinEDIndex(texts, cand, rk);
             }),
             py::arg("pivot_texts"), py::arg("candidate"), py::arg("rank"))
        .def_property_readonly("candidates", &vocab::MinEDIndex::candidates)
        .def_property_readonly("alphabet_size", &vocab::MinEDIndex::alphabet_size)
        .def(
            "query",
            [](const vocab::MinEDIndex& self, const py::sequence& source_texts, py::object query, int top_n, int threads) {
                const std::vector<std::string> texts = to_strings(source_texts, "MinEDIndex.query source_texts");
                const int64_t count = int64_t(texts.size());
                std::vector<uint8_t> mask;
                if (!query.is_none()) {
                    auto q = Arr<bool>::ensure(query);
                    if (!q || q.ndim() != 1 || q.shape(0) != count)
                        throw std::invalid_argument("MinEDIndex.query: query must be a bool array, one entry per text");
                    mask.resize(size_t(count));
                    for (int64_t i = 0; i < count; ++i) mask[size_t(i)] = q.data()[i] ? 1 : 0;
                }
                if (top_n < 1) throw std::invalid_argument("MinEDIndex.query: top_n must be >= 1");
                py::array_t<int32_t> ids({count, int64_t(top_n)});
                py::array_t<int32_t> dists({count, int64_t(top_n)});
                int32_t* pi = ids.mutable_data();
                int32_t* pd = dists.mutable_data();
                vocab::MinEDStats stats;
                {
                    py::gil_scoped_release release;
                    stats = self.query(texts, mask.empty() ? nullptr : mask.data(), top_n, threads, pi, pd);
                }
                py::dict st;
                st["exact"] = stats.exact;
                st["filtered"] = stats.filtered;
                st["evaluated"] = stats.evaluated;
                return py::make_tuple(ids, dists, st);
            },
            py::arg("source_texts"), py::arg("query") = py::none(), py::arg("top_n") = 1, py::arg("threads") = 0,
            "Returns (ids, dists, stats): int32 (n, top_n) arrays, -1 where empty; stats counts pairs filtered\n"
            "and evaluated. GIL released, OpenMP over source texts.");
}

}  // namespace tokalign
