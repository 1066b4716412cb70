// What the binding units (csrc/bind_*.cpp, csrc/cuda/bind_cuda.cpp) share: the array aliases and
// conversions every one of them needs, and the registration function of each stage, called by
// module.cpp on the one `tokalign._core` module. Kernels do not include this header.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tokalign {

// A C-contiguous numpy array of T; other dtypes and layouts are converted (copied) on the way in.
template <typename T>
using Arr = pybind11::array_t<T, pybind11::array::c_style | pybind11::array::forcecast>;
using IdArray = Arr<int32_t>;    // token ids
using OffArray = Arr<int64_t>;   // offsets, groups
using MaskArray = Arr<uint8_t>;  // 0/1 masks

void bind_align(pybind11::module_& m);     // bind_align.cpp: DTW / banded DTW / span / batch
void bind_tokenize(pybind11::module_& m);  // bind_tokenize.cpp: exact character offsets of encodings
void bind_vocab(pybind11::module_& m);     // bind_vocab.cpp: Levenshtein, all-pairs MinED
void bind_stats(pybind11::module_& m);     // bind_stats.cpp: mapping-statistics accumulation
void bind_remap(pybind11::module_& m);     // bind_remap.cpp: top-k remapping, alignment, CE fields
void bind_merge(pybind11::module_& m);     // bind_merge.cpp: element-wise kernels for model merging

// A sequence of bytes objects as strings; anything else is a TypeError naming `what`.
inline std::vector<std::string> to_strings(const pybind11::sequence& seq, const char* what) {
    std::vector<std::string> out;
    out.reserve(size_t(pybind11::len(seq)));
    for (const pybind11::handle& item : seq) {
        if (!pybind11::isinstance<pybind11::bytes>(item))
            throw pybind11::type_error(std::string(what) + ": expected a sequence of bytes");
        out.emplace_back(item.cast<std::string>());
    }
    return out;
}

// A new 1-d numpy array holding a copy of v.
template <class T, class A>
pybind11::array_t<T> to_array(const std::vector<T, A>& v) {
    pybind11::array_t<T> a(static_cast<pybind11::ssize_t>(v.size()));
    if (!v.empty()) std::memcpy(a.mutable_data(), v.data(), v.size() * sizeof(T));
    return a;
}

// OpenMP threads for one call: `requested` when > 0, else all available (1 in a build without OpenMP).
inline int threads_for(int requested) {
#ifdef _OPENMP
    return requested > 0 ? requested : omp_get_max_threads();
#else
    (void)requested;
    return 1;
#endif
}
}  // namespace tokalign
