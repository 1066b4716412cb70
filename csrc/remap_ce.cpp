// The two CE fields of a remapped store, per pivot position, for a batch of aligned sequences:
//  * source_nll_by_group: token_ce, the source model's own NLL of the text spread over the pivot positions of
//    each alignment group (semantics and conventions: tokalign/remap_ce.py);
//  * remapped_token_ce: the remap_ce diagnostic, -log q(next pivot token) under the stored remapped
//    distribution (tokalign/remap_store.py, remapped_token_ce_packed).
// One pass per sequence, OpenMP over sequences, GIL released. The numpy versions these replace are kept as
// the references in tests/remap_ce_reference.py (tests/test_remap_ce.py compares them with hypothesis).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bindings.h"

namespace py = pybind11;

namespace tokalign {
namespace {

// What is wrong with sequence k's groups, 0 when nothing: checked in this order for every sequence, and the
// caller reports the first problem kind over all sequences (negative lengths first, as the numpy version did).
enum GroupError : int { GROUPS_OK = 0, GROUP_NEGATIVE = 1, GROUP_COVERAGE = 2, GROUP_OUTSIDE = 3 };

py::array_t<float> source_nll_by_group(Arr<float> source_ce, Arr<int64_t> source_offsets, Arr<int64_t> groups,
                                       Arr<int64_t> group_offsets, Arr<int64_t> pivot_offsets, py::object source_lse,
                                       int num_threads) {
    auto fail = [](const std::string& m) { throw std::invalid_argument("source_nll_by_group: " + m); };
    if (source_offsets.ndim() != 1 || pivot_offsets.ndim() != 1 || group_offsets.ndim() != 1 ||
        pivot_offsets.size() < 1)
        fail("offsets must be 1-D with S + 1 entries");
    const int64_t S = pivot_offsets.size() - 1;
    if (groups.ndim() != 2 || groups.shape(1) != 4) fail("groups must have shape [G, 4]");
    const int64_t G = groups.shape(0);
    const int64_t* so = source_offsets.data();
    const int64_t* po = pivot_offsets.data();
    const int64_t* go = group_offsets.data();
    if (source_offsets.size() != S + 1 || group_offsets.size() != S + 1 || go[S] != G)
        fail(std::to_string(pivot_offsets.size()) + " pivot, " + std::to_string(source_offsets.size()) + " source and " +
             std::to_string(group_offsets.size()) + " group offsets for " + std::to_string(G) + " groups");
    const int64_t n_source = so[S];
    if (source_ce.ndim() != 1 || source_ce.shape(0) != n_source)
        fail("source token_ce has shape (" + std::to_string(source_ce.ndim() ? source_ce.shape(0) : 0) +
             ",), expected (" + std::to_string(n_source) + ",)");
    Arr<float> lse;
    if (!source_lse.is_none()) {
        lse = source_lse.cast<Arr<float>>();
        if (lse.ndim() != 1 || lse.shape(0) != n_source) fail("source logsumexp must have the shape of token_ce");
    }
    if (so[0] != 0 || po[0] != 0 || go[0] != 0) fail("offsets must start at 0");
    for (int64_t k = 0; k < S; ++k)
        if (so[k + 1] < so[k] || po[k + 1] < po[k] || go[k + 1] < go[k]) fail("offsets must not decrease");

    const int64_t n_pivot = po[S];
    py::array_t<float> out_arr(static_cast<py::ssize_t>(n_pivot));
    float* out = out_arr.mutable_data();
    const float* ce = source_ce.data();
    const float* ls = lse ? lse.data() : nullptr;
    const int64_t* g = groups.data();
    std::vector<int> error(static_cast<size_t>(S), GROUPS_OK);
    {
        py::gil_scoped_release release;
#pragma omp parallel for num_threads(threads_for(num_threads)) schedule(dynamic, 16)
        for (int64_t k = 0; k < S; ++k) {
            const int64_t lp = po[k + 1] - po[k], ls_len = so[k + 1] - so[k];
            int64_t cover_p = 0, cover_s = 0;
            bool negative = false, outside = false;
            for (int64_t j = go[k]; j < go[k + 1]; ++j) {
                const int64_t* r = g + 4 * j;
                negative |= r[1] < r[0] || r[3] < r[2];
                outside |= r[0] < 0 || r[1] > lp || r[2] < 0 || r[3] > ls_len;
                cover_p += r[1] - r[0];
                cover_s += r[3] - r[2];
            }
            int err = negative ? GROUP_NEGATIVE : (cover_p != lp || cover_s != ls_len) ? GROUP_COVERAGE
                                                                                       : outside ? GROUP_OUTSIDE : 0;
            float* o = out + po[k];
            std::fill(o, o + lp, 0.0f);
            if (err) {
                error[static_cast<size_t>(k)] = err;
                continue;
            }
            const float* c = ce + so[k];
            const float* l = ls ? ls + so[k] : nullptr;
            for (int64_t j = go[k]; j < go[k + 1]; ++j) {
                const int64_t* r = g + 4 * j;
                // NLL of the group's source tokens: token_ce at the positions predicting them, [s0 - 1, s1 - 1)
                const int64_t lo = std::max<int64_t>(r[2] - 1, 0), hi = std::max<int64_t>(r[3] - 1, 0);
                double nll = 0.0;
                bool unknown = false;
                for (int64_t t = lo; t < hi; ++t) {
                    const bool bad = !std::isfinite(c[t]) || (l && !std::isfinite(l[t]));
                    unknown |= bad;
                    nll += bad ? 0.0 : static_cast<double>(c[t]);
                }
                if (unknown) nll = std::nan("");
                // spread over the positions predicting the group's pivot tokens i in [max(p0, 1), p1): i - 1
                const int64_t first = std::max<int64_t>(r[0], 1);
                if (r[1] <= first) continue;
                const float share = static_cast<float>(nll / static_cast<double>(r[1] - first));
                for (int64_t i = first; i < r[1]; ++i) o[i - 1] = share;
            }
            if (lp > 0) o[lp - 1] = 0.0f;  // the last position predicts nothing
        }
    }
    int worst = 0;
    int64_t at = -1;
    for (int kind : {GROUP_NEGATIVE, GROUP_COVERAGE, GROUP_OUTSIDE}) {
        for (int64_t k = 0; k < S && at < 0; ++k)
            if (error[static_cast<size_t>(k)] == kind) at = k, worst = kind;
        if (at >= 0) break;
    }
    if (worst == GROUP_NEGATIVE) fail("a group ends before it starts");
    if (worst != 0) {
        int64_t cover_p = 0, cover_s = 0;
        for (int64_t j = go[at]; j < go[at + 1]; ++j) cover_p += g[4 * j + 1] - g[4 * j], cover_s += g[4 * j + 3] - g[4 * j + 2];
        const std::string k = std::to_string(at);
        if (worst == GROUP_COVERAGE)
            throw std::invalid_argument("sequence " + k + ": the groups cover " + std::to_string(cover_p) + " pivot / " +
                                        std::to_string(cover_s) + " source tokens, the sequences have " +
                                        std::to_string(po[at + 1] - po[at]) + " / " + std::to_string(so[at + 1] - so[at]));
        throw std::invalid_argument("sequence " + k + ": a group lies outside the sequences (" +
                                    std::to_string(po[at + 1] - po[at]) + " pivot / " +
                                    std::to_string(so[at + 1] - so[at]) + " source tokens)");
    }
    return out_arr;
}

py::array_t<float> remapped_token_ce(Arr<int32_t> topk_ids, Arr<float> topk_logits, Arr<float> retained_mass,
                                     Arr<uint8_t> valid, Arr<int32_t> input_ids, Arr<int64_t> offsets,
                                     int num_threads) {
    auto fail = [](const std::string& m) { throw std::invalid_argument("remapped_token_ce: " + m); };
    if (topk_ids.ndim() != 2 || topk_logits.ndim() != 2 || topk_ids.shape(0) != topk_logits.shape(0) ||
        topk_ids.shape(1) != topk_logits.shape(1))
        fail("top-k ids and logits must both have shape [N, K]");
    const int64_t n = topk_ids.shape(0), K = topk_ids.shape(1);
    if (retained_mass.size() != n || valid.size() != n || input_ids.size() != n)
        fail("retained_mass, valid and input_ids must have N entries");
    if (offsets.ndim() != 1 || offsets.size() < 1 || offsets.data()[0] != 0 || offsets.data()[offsets.size() - 1] != n)
        fail("offsets must run from 0 to N");
    const int64_t S = offsets.size() - 1;
    const int64_t* off = offsets.data();
    for (int64_t k = 0; k < S; ++k)
        if (off[k + 1] < off[k]) fail("offsets must not decrease");
    py::array_t<float> out_arr(static_cast<py::ssize_t>(n));
    float* out = out_arr.mutable_data();
    const int32_t* ids = topk_ids.data();
    const float* lg = topk_logits.data();
    const float* kept = retained_mass.data();
    const uint8_t* ok = valid.data();
    const int32_t* nxt = input_ids.data();
    {
        py::gil_scoped_release release;
#pragma omp parallel for num_threads(threads_for(num_threads)) schedule(dynamic, 16)
        for (int64_t k = 0; k < S; ++k) {
            for (int64_t t = off[k]; t < off[k + 1]; ++t) {
                if (t + 1 >= off[k + 1] || !ok[t]) {  // a sequence's last position, invalid positions: 0
                    out[t] = 0.0f;
                    continue;
                }
                const int32_t want = nxt[t + 1];
                float q = 0.0f;
                bool found = false;
                for (int64_t j = 0; j < K; ++j)
                    if (ids[t * K + j] == want) q += lg[t * K + j], found = true;
                out[t] = found ? -q
                               : static_cast<float>(-std::log(std::max(1.0 - static_cast<double>(kept[t]), 1e-6)));
            }
        }
    }
    return out_arr;
}

}  // namespace

void bind_remap_ce(py::module_& m) {
    m.def("source_nll_by_group", &source_nll_by_group, py::arg("source_ce"), py::arg("source_offsets"),
          py::arg("groups"), py::arg("group_offsets"), py::arg("pivot_offsets"), py::arg("source_lse") = py::none(),
          py::arg("num_threads") = 0,
          "token_ce of remapped positions: each alignment group's source NLL spread over the pivot positions\n"
          "predicting its tokens (float32 [Np]; GIL released, OpenMP over sequences). Low-level: use\n"
          "tokalign.remap_ce.source_nll_by_group.");
    m.def("remapped_token_ce", &remapped_token_ce, py::arg("topk_ids"), py::arg("topk_logits"),
          py::arg("retained_mass"), py::arg("valid"), py::arg("input_ids"), py::arg("offsets"),
          py::arg("num_threads") = 0,
          "The remap_ce diagnostic: -log q(next pivot token) when kept, else -log(max(1 - retained, 1e-6));\n"
          "0 at each sequence's last position and where invalid (float32 [N]). Low-level: use\n"
          "tokalign.remap_store.remapped_token_ce_packed.");
}

}  // namespace tokalign
