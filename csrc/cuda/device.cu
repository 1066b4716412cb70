// Device discovery for tokalign._cuda (host code only). With the static CUDA runtime the module
// loads on machines without a driver; the first runtime call then fails and is reported here.
#include "cuda_api.h"
#include "cuda_util.cuh"

namespace tokalign {
namespace cuda {

DeviceInfo device_info() {
    DeviceInfo info;
    cudaRuntimeGetVersion(&info.runtime_version);
    cudaDriverGetVersion(&info.driver_version);  // 0 when no driver is installed
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        cudaGetLastError();
        info.error = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
        return info;
    }
    if (count == 0) {
        info.error = "no CUDA device visible";
        return info;
    }
    cudaDeviceProp prop;
    const cudaError_t perr = cudaGetDeviceProperties(&prop, 0);
    if (perr != cudaSuccess) {
        cudaGetLastError();
        info.error = std::string("cudaGetDeviceProperties: ") + cudaGetErrorString(perr);
        return info;
    }
    info.count = count;
    info.name = prop.name;
    info.cc_major = prop.major;
    info.cc_minor = prop.minor;
    info.total_memory = int64_t(prop.totalGlobalMem);
    return info;
}

}  // namespace cuda
}  // namespace tokalign
