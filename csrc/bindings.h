// Each binding unit registers its functions on the one `tokalign._core` module.
#pragma once
#include <pybind11/pybind11.h>

namespace tokalign {
void bind_align(pybind11::module_& m);    // bind_align.cpp: DTW / banded DTW / span / batch
void bind_vocab(pybind11::module_& m);    // bind_vocab.cpp: Levenshtein, all-pairs MinED
void bind_stats(pybind11::module_& m);    // stats_count.cpp: mapping-statistics accumulation
void bind_remap(pybind11::module_& m);    // bind_remap.cpp: top-k remapping kernels
void bind_merge(pybind11::module_& m);    // bind_merge.cpp: element-wise kernels for model merging
}  // namespace tokalign
