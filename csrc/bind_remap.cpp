// pybind11 bindings of the remap stage's kernels (csrc/remap_kernel.cpp, remap_align.cpp, remap_ce.cpp):
// check shapes, allocate the outputs and run the kernels with the GIL released. Python wrappers and
// semantics: tokalign/remap/ (kernel.py, stores.py, ce.py), docs/remap.md.
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings.h"
#include "tokalign/remap.h"
#include "tokalign/remap_align.h"
#include "tokalign/remap_ce.h"

namespace py = pybind11;

namespace tokalign {
namespace {

py::dict remap_topk(Arr<int64_t> groups, Arr<int64_t> group_offsets, Arr<int32_t> source_ids,
                    Arr<float> source_logits, Arr<float> source_lse, Arr<int64_t> source_offsets,
                    Arr<int64_t> map_indptr, Arr<int32_t> map_indices, Arr<float> map_data, int64_t pivot_vocab,
                    Arr<int32_t> pivot_ids, Arr<int64_t> pivot_offsets, py::object pivot_topk_ids,
                    py::object pivot_topk_logits, py::object pivot_lse, int64_t k_out, int inside, int one_to_many,
                    int num_threads) {
    auto fail = [](const std::string& m) { throw std::invalid_argument(m); };
    if (groups.ndim() != 2 || groups.shape(1) != 4) fail("remap: groups must have shape [G, 4]");
    if (group_offsets.ndim() != 1 || group_offsets.size() < 1) fail("remap: group_offsets must have length S + 1");
    const int64_t S = group_offsets.size() - 1;
    if (source_offsets.size() != S + 1 || pivot_offsets.size() != S + 1)
        fail("remap: group, source and pivot offsets must all have length S + 1");
    if (source_ids.ndim() != 2 || source_logits.ndim() != 2 || source_ids.shape(0) != source_logits.shape(0) ||
        source_ids.shape(1) != source_logits.shape(1))
        fail("remap: source top-k ids and logits must both have shape [N, K]");
    if (source_lse.ndim() != 1 || source_lse.shape(0) != source_ids.shape(0))
        fail("remap: source logsumexp must have shape [N]");
    if (pivot_ids.ndim() != 1) fail("remap: pivot ids must be 1-D");
    if (map_indptr.ndim() != 1 || map_indptr.size() < 1) fail("remap: map indptr must have length source_vocab + 1");
    if (map_indices.size() != map_data.size()) fail("remap: map indices and data differ in length");
    if (pivot_vocab <= 0) fail("remap: pivot vocabulary size must be positive");
    if (k_out < 1) fail("remap: k_out must be >= 1");

    remap::Inputs in;
    in.groups = groups.data();
    in.group_offsets = group_offsets.data();
    in.n_seq = S;
    in.n_groups = groups.shape(0);
    in.source_ids = source_ids.data();
    in.source_logits = source_logits.data();
    in.source_lse = source_lse.data();
    in.source_offsets = source_offsets.data();
    in.n_source = source_ids.shape(0);
    in.k_source = source_ids.shape(1);
    in.map_indptr = map_indptr.data();
    in.map_indices = map_indices.data();
    in.map_data = map_data.data();
    in.source_vocab = map_indptr.size() - 1;
    in.pivot_vocab = pivot_vocab;
    in.pivot_ids = pivot_ids.data();
    in.pivot_offsets = pivot_offsets.data();
    in.n_pivot = pivot_ids.shape(0);
    if (in.map_indptr[in.source_vocab] != static_cast<int64_t>(map_indices.size()))
        fail("remap: map indptr does not end at the number of stored entries");

    Arr<int32_t> piv_ids;
    Arr<float> piv_logits, piv_lse;
    if (!pivot_topk_ids.is_none()) {
        piv_ids = pivot_topk_ids.cast<Arr<int32_t>>();
        piv_logits = pivot_topk_logits.cast<Arr<float>>();
        piv_lse = pivot_lse.cast<Arr<float>>();
        if (piv_ids.ndim() != 2 || piv_logits.ndim() != 2 || piv_ids.shape(0) != in.n_pivot ||
            piv_logits.shape(0) != in.n_pivot || piv_ids.shape(1) != piv_logits.shape(1) || piv_lse.ndim() != 1 ||
            piv_lse.shape(0) != in.n_pivot)
            fail("remap: pivot top-k ids / logits must have shape [Np, Kp] and pivot logsumexp [Np]");
        in.pivot_topk_ids = piv_ids.data();
        in.pivot_topk_logits = piv_logits.data();
        in.pivot_lse = piv_lse.data();
        in.k_pivot = piv_ids.shape(1);
    }

    remap::Options opt;
    opt.k_out = k_out;
    opt.inside = inside;
    opt.one_to_many = one_to_many;
    opt.num_threads = num_threads;

    const py::ssize_t n = static_cast<py::ssize_t>(in.n_pivot), k = static_cast<py::ssize_t>(k_out);
    Arr<int32_t> ids({n, k});
    Arr<float> logits({n, k});
    py::array_t<uint8_t> kind(n), valid(n);
    Arr<float> retained(n);
    Arr<int32_t> source_pos(n);
    remap::Outputs out;
    out.ids = ids.mutable_data();
    out.logits = logits.mutable_data();
    out.kind = kind.mutable_data();
    out.retained = retained.mutable_data();
    out.valid = valid.mutable_data();
    out.source_pos = source_pos.mutable_data();
    remap::Counts counts;
    std::string err;
    {
        py::gil_scoped_release release;
        err = remap::run(in, opt, out, counts);
    }
    if (!err.empty()) throw std::invalid_argument(err);
    py::dict d;
    d["topk_ids"] = ids;
    d["topk_logits"] = logits;
    d["group_kind"] = kind;
    d["retained_mass"] = retained;
    d["valid"] = valid;
    d["source_position"] = source_pos;
    d["n_masked"] = counts.masked;
    d["n_nonfinite"] = counts.nonfinite;
    d["n_empty"] = counts.empty;
    return d;
}

// Token bytes table (data uint8 [B], offsets int64 [V + 1]) -> kernel view; checks the offsets.
remap::TokenBytes token_bytes(const Arr<uint8_t>& data, const Arr<int64_t>& offsets, const char* side) {
    auto fail = [&](const std::string& m) { throw std::invalid_argument(std::string("align: ") + side + " " + m); };
    if (data.ndim() != 1 || offsets.ndim() != 1 || offsets.size() < 1) fail("token bytes must be 1-D with offsets [V + 1]");
    const int64_t* o = offsets.data();
    const int64_t v = offsets.size() - 1;
    if (o[0] != 0 || o[v] != static_cast<int64_t>(data.size())) fail("token byte offsets must run from 0 to the byte count");
    for (int64_t t = 0; t < v; ++t)
        if (o[t + 1] < o[t]) fail("token byte offsets decrease at token " + std::to_string(t));
    remap::TokenBytes tb;
    tb.data = data.data();
    tb.offsets = o;
    tb.size = v;
    return tb;
}

py::tuple remap_align_batch(Arr<uint8_t> pivot_bytes, Arr<int64_t> pivot_byte_offsets, Arr<int32_t> pivot_ids,
                            Arr<int64_t> pivot_offsets, Arr<uint8_t> source_bytes, Arr<int64_t> source_byte_offsets,
                            Arr<int32_t> source_ids, Arr<int64_t> source_offsets, int64_t max_diff, int tie,
                            int num_threads) {
    auto fail = [](const std::string& m) { throw std::invalid_argument(m); };
    if (pivot_offsets.ndim() != 1 || pivot_offsets.size() < 1 || source_offsets.size() != pivot_offsets.size())
        fail("align: pivot and source offsets must both have length S + 1");
    if (pivot_ids.ndim() != 1 || source_ids.ndim() != 1) fail("align: ids must be 1-D");
    const int64_t S = pivot_offsets.size() - 1;
    const int64_t* po = pivot_offsets.data();
    const int64_t* so = source_offsets.data();
    if (po[0] != 0 || po[S] != pivot_ids.size() || so[0] != 0 || so[S] != source_ids.size())
        fail("align: offsets must run from 0 to the number of ids");
    if (tie != 0 && tie != 1) fail("align: tie must be 0 (pivot first) or 1 (source first)");
    const remap::TokenBytes pb = token_bytes(pivot_bytes, pivot_byte_offsets, "pivot");
    const remap::TokenBytes sb = token_bytes(source_bytes, source_byte_offsets, "source");
    remap::AlignBatchOutput out;
    std::string err;
    {
        py::gil_scoped_release release;
        err = remap::align_batch(pb, pivot_ids.data(), po, sb, source_ids.data(), so, S, max_diff, tie, num_threads,
                                 out);
    }
    if (!err.empty()) throw std::invalid_argument(err);
    const py::ssize_t G = static_cast<py::ssize_t>(out.group_offsets.back());
    py::array_t<int64_t> groups({G, py::ssize_t(4)});
    py::array_t<int64_t> goff(static_cast<py::ssize_t>(out.group_offsets.size()));
    py::array_t<uint8_t> path(static_cast<py::ssize_t>(out.path.size()));
    {
        int64_t* dst = groups.mutable_data();
        py::gil_scoped_release release;
        out.copy_groups(dst);
    }
    std::memcpy(goff.mutable_data(), out.group_offsets.data(), out.group_offsets.size() * sizeof(int64_t));
    if (!out.path.empty()) std::memcpy(path.mutable_data(), out.path.data(), out.path.size());
    return py::make_tuple(groups, goff, path);
}

// ---- the CE fields (kernels: csrc/remap_ce.cpp)

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

    py::array_t<float> out(static_cast<py::ssize_t>(po[S]));
    {
        py::gil_scoped_release release;
        remap::source_nll_by_group(source_ce.data(), lse ? lse.data() : nullptr, so, groups.data(), go, po, S,
                                   threads_for(num_threads), out.mutable_data());
    }
    return out;
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
    py::array_t<float> out(static_cast<py::ssize_t>(n));
    {
        py::gil_scoped_release release;
        remap::remapped_token_ce(topk_ids.data(), topk_logits.data(), retained_mass.data(), valid.data(),
                                 input_ids.data(), off, S, K, threads_for(num_threads), out.mutable_data());
    }
    return out;
}

}  // namespace

void bind_remap(py::module_& m) {
    m.def("remap_topk", &remap_topk, py::arg("groups"), py::arg("group_offsets"), py::arg("source_ids"),
          py::arg("source_logits"), py::arg("source_lse"), py::arg("source_offsets"), py::arg("map_indptr"),
          py::arg("map_indices"), py::arg("map_data"), py::arg("pivot_vocab"), py::arg("pivot_ids"),
          py::arg("pivot_offsets"), py::arg("pivot_topk_ids") = py::none(), py::arg("pivot_topk_logits") = py::none(),
          py::arg("pivot_lse") = py::none(), py::arg("k_out") = 10, py::arg("inside") = 0, py::arg("one_to_many") = 0,
          py::arg("num_threads") = 0,
          "Remap ragged source top-k distributions into the pivot vocabulary (GIL released, OpenMP).\n"
          "inside: 0 onehot, 1 pivot, 2 mask; one_to_many: 0 last, 1 weighted. Returns a dict of arrays\n"
          "(topk_ids, topk_logits, group_kind, retained_mass, valid (uint8), source_position) and counts.\n"
          "Low-level: use tokalign.remap.remap_batch.");

    m.def("remap_align_batch", &remap_align_batch, py::arg("pivot_bytes"), py::arg("pivot_byte_offsets"),
          py::arg("pivot_ids"), py::arg("pivot_offsets"), py::arg("source_bytes"), py::arg("source_byte_offsets"),
          py::arg("source_ids"), py::arg("source_offsets"), py::arg("max_diff") = 2048, py::arg("tie") = 0,
          py::arg("num_threads") = 0,
          "Align a batch of stored id sequences like tokalign.align.span on the texts their token bytes spell\n"
          "(GIL released, OpenMP over pairs). Returns (groups [G, 4] int64, group_offsets [S + 1] int64,\n"
          "path uint8 [S]: 0 same text, 1 diff, 2 diff + DTW, 3 empty). Low-level: see tokalign.remap.stores.");
    m.def("source_nll_by_group", &source_nll_by_group, py::arg("source_ce"), py::arg("source_offsets"),
          py::arg("groups"), py::arg("group_offsets"), py::arg("pivot_offsets"), py::arg("source_lse") = py::none(),
          py::arg("num_threads") = 0,
          "token_ce of remapped positions: each alignment group's source NLL spread over the pivot positions\n"
          "predicting its tokens (float32 [Np]; GIL released, OpenMP over sequences). Low-level: use\n"
          "tokalign.remap.ce.source_nll_by_group.");
    m.def("remapped_token_ce", &remapped_token_ce, py::arg("topk_ids"), py::arg("topk_logits"),
          py::arg("retained_mass"), py::arg("valid"), py::arg("input_ids"), py::arg("offsets"),
          py::arg("num_threads") = 0,
          "The remap_ce diagnostic: -log q(next pivot token) when kept, else -log(max(1 - retained, 1e-6));\n"
          "0 at each sequence's last position and where invalid (float32 [N]). Low-level: use\n"
          "tokalign.remap.stores.remapped_token_ce_packed.");
}

}  // namespace tokalign
