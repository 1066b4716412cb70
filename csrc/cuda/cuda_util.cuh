// Small CUDA helpers shared by the .cu files: error checks that throw, RAII device buffers and
// events (cudaMalloc only: no managed memory), 64-bit warp minimum.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace tokalign {
namespace cuda {

inline void check(cudaError_t err, const char* what) {
    if (err != cudaSuccess) {
        cudaGetLastError();  // clear a non-sticky error so later calls start clean
        throw std::runtime_error(std::string("tokalign._cuda: ") + what + ": " + cudaGetErrorString(err));
    }
}

template <class T>
class DeviceBuffer {
  public:
    DeviceBuffer() = default;
    explicit DeviceBuffer(size_t count) { allocate(count); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    ~DeviceBuffer() { release(); }

    void allocate(size_t count) {
        release();
        count_ = count;
        if (count) check(cudaMalloc(reinterpret_cast<void**>(&ptr_), count * sizeof(T)), "cudaMalloc");
    }
    void upload(const T* host, size_t count) {
        allocate(count);
        if (count) check(cudaMemcpy(ptr_, host, count * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy H2D");
    }
    void download(T* host, size_t count) const {
        if (count) check(cudaMemcpy(host, ptr_, count * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
    }
    void release() {
        if (ptr_) cudaFree(ptr_);  // errors ignored: may run at teardown
        ptr_ = nullptr;
        count_ = 0;
    }
    T* get() const { return ptr_; }
    size_t size() const { return count_; }

  private:
    T* ptr_ = nullptr;
    size_t count_ = 0;
};

class EventTimer {
  public:
    EventTimer() {
        check(cudaEventCreate(&start_), "cudaEventCreate");
        check(cudaEventCreate(&stop_), "cudaEventCreate");
    }
    ~EventTimer() {
        cudaEventDestroy(start_);
        cudaEventDestroy(stop_);
    }
    void start() { check(cudaEventRecord(start_), "cudaEventRecord"); }
    float stop_ms() {
        check(cudaEventRecord(stop_), "cudaEventRecord");
        check(cudaEventSynchronize(stop_), "cudaEventSynchronize");
        float ms = 0;
        check(cudaEventElapsedTime(&ms, start_, stop_), "cudaEventElapsedTime");
        return ms;
    }

  private:
    cudaEvent_t start_{}, stop_{};
};

inline void set_device(int device) { check(cudaSetDevice(device), "cudaSetDevice"); }

}  // namespace cuda
}  // namespace tokalign
