// pybind11 bindings of the merge kernels (csrc/merge_kernel.cpp): check shapes and dtypes, run with the
// GIL released. Python wrapper and semantics: fusion_train/merge/native.py, docs/merge.md.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings.h"
#include "tokalign/merge.h"

namespace py = pybind11;

namespace tokalign {
namespace {

// fp32, C-contiguous; arguments declared noconvert so nothing is silently copied (an output copy would be lost)
using F32 = py::array_t<float, py::array::c_style>;

template <typename T>
void need_size(const std::vector<T>& v, size_t n, const char* what) {
    if (v.size() != n) throw std::invalid_argument(std::string("gta_merge: ") + what + " must have one entry per model");
}

bool overlaps(const float* a, int64_t na, const float* b, int64_t nb) {
    return na > 0 && nb > 0 && a < b + nb && b < a + na;
}

py::dict gta_merge(F32 base, py::list models, F32 out, std::vector<double> weights, std::vector<int> sparsify,
                   std::vector<int64_t> ks, std::vector<uint32_t> keep_below, std::vector<uint64_t> keys,
                   bool consensus, bool normalize, bool rescale, double lambda, double divisor, int num_threads) {
    const int64_t n = static_cast<int64_t>(base.size());
    const size_t M = models.size();
    if (M == 0) throw std::invalid_argument("gta_merge: no models");
    need_size(weights, M, "weights");
    need_size(sparsify, M, "sparsify");
    need_size(ks, M, "ks");
    need_size(keep_below, M, "keep_below");
    need_size(keys, M, "keys");
    if (static_cast<int64_t>(out.size()) != n) throw std::invalid_argument("gta_merge: out must have the base's size");
    if (!out.writeable()) throw std::invalid_argument("gta_merge: out is read-only");
    float* out_ptr = out.mutable_data();
    if (overlaps(out_ptr, n, base.data(), n)) throw std::invalid_argument("gta_merge: out overlaps the base");
    std::vector<F32> keep_alive;  // the model arrays stay referenced while the GIL is released
    std::vector<merge::ModelInput> in(M);
    for (size_t m = 0; m < M; ++m) {
        py::handle h = models[m];
        if (!py::isinstance<F32>(h))
            throw std::invalid_argument("gta_merge: models[" + std::to_string(m) + "] is not a C-contiguous float32 array");
        F32 a = py::reinterpret_borrow<F32>(h);
        if (static_cast<int64_t>(a.size()) != n)
            throw std::invalid_argument("gta_merge: models[" + std::to_string(m) + "] has a different size from the base");
        if (overlaps(out_ptr, n, a.data(), n))
            throw std::invalid_argument("gta_merge: out overlaps models[" + std::to_string(m) + "]");
        in[m].data = a.data();
        in[m].weight = static_cast<float>(weights[m]);
        in[m].sparsify = sparsify[m];
        in[m].k = ks[m];
        in[m].keep_below = keep_below[m];
        in[m].key = keys[m];
        keep_alive.push_back(std::move(a));
    }
    merge::Options opt;
    opt.consensus = consensus;
    opt.normalize = normalize;
    opt.rescale = rescale;
    opt.lambda = static_cast<float>(lambda);
    opt.divisor = static_cast<float>(divisor);
    opt.num_threads = num_threads;
    std::vector<merge::ModelStats> stats;
    std::string err;
    const float* base_ptr = base.data();
    {
        py::gil_scoped_release release;
        err = merge::gta_merge(base_ptr, n, in, opt, out_ptr, &stats);
    }
    if (!err.empty()) throw std::invalid_argument(err);
    py::list thresholds, scales;
    for (const auto& s : stats) {
        thresholds.append(s.threshold);
        scales.append(s.scale);
    }
    py::dict d;
    d["thresholds"] = thresholds;
    d["scales"] = scales;
    return d;
}

std::vector<const float*> model_pointers(const char* what, py::list models, int64_t n, const float* out, int64_t n_out,
                                        std::vector<F32>& keep_alive) {
    std::vector<const float*> xs;
    for (size_t m = 0; m < models.size(); ++m) {
        py::handle h = models[m];
        if (!py::isinstance<F32>(h))
            throw std::invalid_argument(std::string(what) + ": models[" + std::to_string(m) +
                                        "] is not a C-contiguous float32 array");
        F32 a = py::reinterpret_borrow<F32>(h);
        if (static_cast<int64_t>(a.size()) != n)
            throw std::invalid_argument(std::string(what) + ": models[" + std::to_string(m) +
                                        "] has a different size from the base");
        if (overlaps(out, n_out, a.data(), n))
            throw std::invalid_argument(std::string(what) + ": out overlaps models[" + std::to_string(m) + "]");
        xs.push_back(a.data());
        keep_alive.push_back(std::move(a));
    }
    if (xs.empty()) throw std::invalid_argument(std::string(what) + ": no models");
    return xs;
}

void linear_merge(py::list models, F32 out, std::vector<double> weights, bool normalize, double divisor,
                  int num_threads) {
    const int64_t n = static_cast<int64_t>(out.size());
    float* o = out.mutable_data();
    std::vector<F32> keep_alive;
    const std::vector<const float*> xs = model_pointers("linear_merge", models, n, o, n, keep_alive);
    need_size(weights, xs.size(), "weights");
    std::vector<float> w(weights.begin(), weights.end());
    py::gil_scoped_release release;
    merge::linear_merge(n, xs, w, normalize, static_cast<float>(divisor), o, num_threads);
}

void sce_variance(F32 base, py::list models, F32 out, int num_threads) {
    const int64_t n = static_cast<int64_t>(base.size());
    if (static_cast<int64_t>(out.size()) != n) throw std::invalid_argument("sce_variance: out must have the base's size");
    float* o = out.mutable_data();
    if (overlaps(o, n, base.data(), n)) throw std::invalid_argument("sce_variance: out overlaps the base");
    std::vector<F32> keep_alive;
    const std::vector<const float*> xs = model_pointers("sce_variance", models, n, o, n, keep_alive);
    const float* b = base.data();
    py::gil_scoped_release release;
    merge::sce_variance(b, n, xs, o, num_threads);
}

std::vector<double> sce_merge(F32 base, py::list models, py::object variances, F32 out, int mask_mode, double threshold,
                              bool mergekit, int num_threads) {
    const int64_t n = static_cast<int64_t>(base.size());
    if (static_cast<int64_t>(out.size()) != n) throw std::invalid_argument("sce_merge: out must have the base's size");
    float* o = out.mutable_data();
    if (overlaps(o, n, base.data(), n)) throw std::invalid_argument("sce_merge: out overlaps the base");
    std::vector<F32> keep_alive;
    const std::vector<const float*> xs = model_pointers("sce_merge", models, n, o, n, keep_alive);
    const float* var = nullptr;
    F32 var_arr;
    if (!variances.is_none()) {
        if (!py::isinstance<F32>(variances)) throw std::invalid_argument("sce_merge: variances must be C-contiguous float32");
        var_arr = py::reinterpret_borrow<F32>(variances);
        if (static_cast<int64_t>(var_arr.size()) != n) throw std::invalid_argument("sce_merge: variances must have the base's size");
        var = var_arr.data();
    }
    merge::SceOptions opt;
    opt.mask_mode = mask_mode;
    opt.threshold = static_cast<float>(threshold);
    opt.mergekit = mergekit;
    opt.num_threads = num_threads;
    std::vector<double> eta;
    std::string err;
    const float* b = base.data();
    {
        py::gil_scoped_release release;
        err = merge::sce_merge(b, n, xs, var, opt, o, &eta);
    }
    if (!err.empty()) throw std::invalid_argument(err);
    return eta;
}

float topk_abs_threshold(F32 base, F32 model, int64_t k, int num_threads) {
    if (base.size() != model.size()) throw std::invalid_argument("topk_abs_threshold: base and model differ in size");
    const int64_t n = static_cast<int64_t>(base.size());
    if (k < 1 || k > n) throw std::invalid_argument("topk_abs_threshold: need 1 <= k <= size");
    const float *b = base.data(), *x = model.data();
    py::gil_scoped_release release;
    return merge::topk_abs_threshold(b, x, n, k, num_threads);
}

float kth_largest(F32 values, int64_t k, int num_threads) {
    const int64_t n = static_cast<int64_t>(values.size());
    if (k < 1 || k > n) throw std::invalid_argument("kth_largest: need 1 <= k <= size");
    const float* v = values.data();
    py::gil_scoped_release release;
    return merge::kth_largest(v, n, k, num_threads);
}

py::array_t<uint8_t> random_keep_mask(uint64_t key, uint32_t keep_below, int64_t n, int num_threads) {
    if (n < 0) throw std::invalid_argument("random_keep_mask: negative size");
    py::array_t<uint8_t> mask(static_cast<py::ssize_t>(n));
    uint8_t* p = mask.mutable_data();
    {
        py::gil_scoped_release release;
        merge::random_keep_mask(key, keep_below, n, p, num_threads);
    }
    return mask;
}

}  // namespace

void bind_merge(py::module_& m) {
    m.def("merge_gta", &gta_merge, py::arg("base").noconvert(), py::arg("models"), py::arg("out").noconvert(),
          py::arg("weights"), py::arg("sparsify"), py::arg("ks"), py::arg("keep_below"), py::arg("keys"),
          py::arg("consensus"), py::arg("normalize"), py::arg("rescale"), py::arg("lambda_"), py::arg("divisor"),
          py::arg("num_threads") = 0,
          "Fused generalized task arithmetic (TIES / DARE / task arithmetic) into `out` (GIL released, OpenMP).\n"
          "All arrays C-contiguous float32 of one size. Per model: weight, sparsify (0 keep all, 1 drop all,\n"
          "2 magnitude top-k with k, 3 random keep with keep_below = floor(density * 2^32) and stream key).\n"
          "Returns {'thresholds': [...], 'scales': [...]}. Low-level: use fusion_train.merge.native.");
    m.def("merge_topk_abs_threshold", &topk_abs_threshold, py::arg("base").noconvert(), py::arg("model").noconvert(),
          py::arg("k"), py::arg("num_threads") = 0,
          "The k-th largest |model - base| (exact, radix select; equals torch.kthvalue(|d|, n - k + 1)).");
    m.def("merge_kth_largest", &kth_largest, py::arg("values").noconvert(), py::arg("k"), py::arg("num_threads") = 0,
          "The k-th largest value (exact, radix select; no NaN allowed): torch.kthvalue(values, n - k + 1).");
    m.def("merge_linear", &linear_merge, py::arg("models"), py::arg("out").noconvert(), py::arg("weights"),
          py::arg("normalize"), py::arg("divisor"), py::arg("num_threads") = 0,
          "Linear merge into out: sum_j w_j x_j (/ divisor when normalize).");
    m.def("merge_sce_variance", &sce_variance, py::arg("base").noconvert(), py::arg("models"), py::arg("out").noconvert(),
          py::arg("num_threads") = 0, "SCE: population variance across models of (model - base), into out.");
    m.def("merge_sce", &sce_merge, py::arg("base").noconvert(), py::arg("models"), py::arg("variances"),
          py::arg("out").noconvert(), py::arg("mask_mode"), py::arg("threshold"), py::arg("mergekit"),
          py::arg("num_threads") = 0,
          "SCE merge into out. mask_mode: 0 none, 1 variances >= threshold, 2 empty. Returns eta.");
    m.def("merge_random_keep_mask", &random_keep_mask, py::arg("key"), py::arg("keep_below"), py::arg("n"),
          py::arg("num_threads") = 0, "DARE keep mask (uint8, 1 = kept) of n elements for one stream key.");
}

}  // namespace tokalign
