// Shared definitions for the tokalign native core.
#pragma once

// Functions marked TA_HD are compiled for the CPU by the C++ build and for the GPU by
// nvcc, so CPU tests exercise exactly the arithmetic the CUDA kernels run.
#if defined(__CUDACC__)
#define TA_HD __host__ __device__ __forceinline__
#else
#define TA_HD inline
#endif
