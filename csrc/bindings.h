// Each binding unit registers its functions on the one `tokalign._core` module.
#pragma once
#include <pybind11/pybind11.h>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tokalign {
void bind_align(pybind11::module_& m);    // bind_align.cpp: DTW / banded DTW / span / batch
void bind_vocab(pybind11::module_& m);    // bind_vocab.cpp: Levenshtein, all-pairs MinED
void bind_stats(pybind11::module_& m);    // stats_count.cpp: mapping-statistics accumulation
void bind_remap(pybind11::module_& m);    // bind_remap.cpp: top-k remapping kernels
void bind_remap_ce(pybind11::module_& m); // remap_ce.cpp: the CE fields of remapped stores
void bind_merge(pybind11::module_& m);    // bind_merge.cpp: element-wise kernels for model merging

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
