// cuda_common.h: what llmq's CUDA files (kernels, GPU tests, dev/ benchmarks) share.
//
//   bf16                     __nv_bfloat16: the storage type of activations and weights on the GPU
//                            (fp32 master weights and optimizer states stay fp32)
//   CUDA_CHECK(call)         throws llmq::Error "CUDA error in <call> (file:line): <reason>"
//   CUDA_CHECK_LAUNCH()      the same for the kernel launched just before (cudaGetLastError)
//   ceil_div(a, b)           how many b-sized pieces cover a (grid sizes)
//   grid_stride_blocks(w,b)  blocks for a grid-stride loop over w items with b threads each: enough to
//                            fill every SM several times over, never more than the work needs
//   cuda_device_count(why)   usable GPUs; 0, with the reason in *why, when there is no driver or device.
//                            Never throws: it is how tests and programs decide to skip or refuse.
//   Packed128<T>, load128,   16 bytes of T (8 bf16 or 4 floats) moved by one 128-bit load or store, the
//   store128, aligned16      access width that saturates memory bandwidth; aligned16(p...) says whether
//                            pointers allow it (kernels fall back to scalar code when they do not)
//   NvtxRange r("name")      an NVTX range (Nsight Systems' timeline) open while r lives: every layer and op
//                            of the GPU model is one, so a profile reads like the model's code
//   DeviceBuffer<T>          a cudaMalloc'd array freed on destruction: upload, download, zero, and
//                            poison (every byte 0xFF, a NaN in fp32 and in bf16), so a test proves that a
//                            kernel wrote every element it should have.
//
// Only .cu files include this header (it needs the CUDA toolkit's headers); the CPU build never sees it.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <nvtx3/nvToolsExt.h>

#include <string>
#include <utility>
#include <vector>

#include "common.h"

namespace llmq {

using bf16 = __nv_bfloat16;

// Throws Error naming the call, the file and line, and CUDA's reason, unless err is cudaSuccess.
void cuda_check(cudaError_t err, const char* call, const char* file, int line);
#define CUDA_CHECK(call) ::llmq::cuda_check((call), #call, __FILE__, __LINE__)
#define CUDA_CHECK_LAUNCH() ::llmq::cuda_check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

__host__ __device__ constexpr inline int ceil_div(long long a, long long b) { return (int)((a + b - 1) / b); }

int cuda_device_count(std::string* why = nullptr);

int grid_stride_blocks(size_t work, int block);

template <typename T>
struct alignas(16) Packed128 {
    static constexpr int size = 16 / sizeof(T);
    T v[size];
};
template <typename T>
__device__ inline Packed128<T> load128(const T* p) {
    return *reinterpret_cast<const Packed128<T>*>(p);
}
template <typename T>
__device__ inline void store128(T* p, const Packed128<T>& x) {
    *reinterpret_cast<Packed128<T>*>(p) = x;
}
template <typename... P>
inline bool aligned16(const P*... p) {
    return ((reinterpret_cast<uintptr_t>(p) % 16 == 0) && ...);
}

struct NvtxRange {
    explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
    explicit NvtxRange(const std::string& name) : NvtxRange(name.c_str()) {}
    ~NvtxRange() { nvtxRangePop(); }
    NvtxRange(const NvtxRange&) = delete;
    NvtxRange& operator=(const NvtxRange&) = delete;
};

template <typename T>
class DeviceBuffer {
  public:
    DeviceBuffer() = default;
    explicit DeviceBuffer(size_t n) { resize(n); }
    explicit DeviceBuffer(const std::vector<T>& host) { upload(host); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), n_(std::exchange(o.n_, 0)) {}
    DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
        std::swap(ptr_, o.ptr_);
        std::swap(n_, o.n_);
        return *this;
    }
    ~DeviceBuffer() { release(); }

    // n elements, contents undefined (the previous ones are freed)
    void resize(size_t n) {
        release();
        if (n) CUDA_CHECK(cudaMalloc(&ptr_, n * sizeof(T)));
        n_ = n;
    }
    void upload(const std::vector<T>& host) {
        if (host.size() != n_) resize(host.size());
        if (n_) CUDA_CHECK(cudaMemcpy(ptr_, host.data(), bytes(), cudaMemcpyHostToDevice));
    }
    std::vector<T> download() const {
        std::vector<T> host(n_);
        if (n_) CUDA_CHECK(cudaMemcpy(host.data(), ptr_, bytes(), cudaMemcpyDeviceToHost));
        return host;
    }
    void zero() {
        if (n_) CUDA_CHECK(cudaMemset(ptr_, 0, bytes()));
    }
    void poison() {
        if (n_) CUDA_CHECK(cudaMemset(ptr_, 0xFF, bytes()));
    }

    T* data() { return ptr_; }
    const T* data() const { return ptr_; }
    size_t size() const { return n_; }
    size_t bytes() const { return n_ * sizeof(T); }

  private:
    void release() {
        if (ptr_) cudaFree(ptr_);
        ptr_ = nullptr;
        n_ = 0;
    }
    T* ptr_ = nullptr;
    size_t n_ = 0;
};

}  // namespace llmq
