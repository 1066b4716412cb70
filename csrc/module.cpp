// tokalign._core: one module, registered stage by stage (in pipeline order) by the bind_<stage>.cpp units.
#include "bindings.h"

#ifdef _OPENMP
#include <omp.h>
#endif

PYBIND11_MODULE(_core, m) {
    m.doc() = "tokalign native core (C++17). Every entry point releases the GIL.";
#ifdef _OPENMP
    m.attr("openmp") = true;
    m.def("max_threads", []() { return omp_get_max_threads(); }, "OpenMP threads available.");
#else
    m.attr("openmp") = false;
    m.def("max_threads", []() { return 1; }, "OpenMP threads available.");
#endif
    tokalign::bind_tokenize(m);
    tokalign::bind_align(m);
    tokalign::bind_vocab(m);
    tokalign::bind_stats(m);
    tokalign::bind_remap(m);
    tokalign::bind_merge(m);
}
