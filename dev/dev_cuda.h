// dev_cuda.h: what the CUDA benchmarks in dev/ share (llm.c's dev/cuda/common.h, plus measured ceilings).
//
//   gpu_or_skip(prog)             false, after printing why, on a machine without a usable GPU (the
//                                 benchmark then exits 0: `make` builds it everywhere, it runs on a GPU)
//   median_ms(launch, reps)       median time of launch() in ms over reps runs, by CUDA events, after warm-up
//   measured_copy_gbs()           the device's copy bandwidth, measured now: a 1 GiB device-to-device copy,
//                                 bytes read plus bytes written (the ceiling of memory-bound kernels)
//   measured_bf16_tflops()        the bf16 matmul rate, measured now: cuBLAS 8192^3, bf16 in, fp32 accumulate,
//                                 on random data (the ceiling of matrix-bound kernels and of MFU)
//   print_summary(...)            one "SUMMARY|bench|case|ms|achieved|of peak" line; `make gpucheck`
//                                 collects these from every benchmark into its table
// Datasheet figures are never used: every ratio is against a ceiling measured in the same run.
#pragma once

#include <cublas_v2.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "../kernels/cuda_common.h"

namespace llmq::dev {

inline bool gpu_or_skip(const char* prog) {
    std::string why;
    if (cuda_device_count(&why) > 0) {
        cudaDeviceProp p;
        CUDA_CHECK(cudaGetDeviceProperties(&p, 0));
        printf("%s on %s (%d SMs, %.0f MiB)\n", prog, p.name, p.multiProcessorCount, p.totalGlobalMem / 1048576.0);
        return true;
    }
    printf("%s: no CUDA GPU (%s); benchmark skipped\n", prog, why.c_str());
    return false;
}

template <typename F>
float median_ms(F&& launch, int reps = 20, int warmup = 3) {
    for (int i = 0; i < warmup; i++) launch();
    CUDA_CHECK_LAUNCH();
    cudaEvent_t start, stop;
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
    std::vector<float> ms(reps);
    for (int i = 0; i < reps; i++) {
        CUDA_CHECK(cudaEventRecord(start));
        launch();
        CUDA_CHECK(cudaEventRecord(stop));
        CUDA_CHECK(cudaEventSynchronize(stop));
        CUDA_CHECK(cudaEventElapsedTime(&ms[i], start, stop));
    }
    CUDA_CHECK_LAUNCH();
    CUDA_CHECK(cudaEventDestroy(start));
    CUDA_CHECK(cudaEventDestroy(stop));
    std::nth_element(ms.begin(), ms.begin() + reps / 2, ms.end());
    return ms[reps / 2];
}

inline double measured_copy_gbs() {
    static double gbs = 0.0;
    if (gbs > 0.0) return gbs;
    const size_t bytes = size_t(1) << 30;
    DeviceBuffer<char> a(bytes), b(bytes);
    a.poison();
    const float ms = median_ms([&] { CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice)); }, 10);
    gbs = 2.0 * bytes / (ms * 1e-3) / 1e9;
    return gbs;
}

static __global__ void dev_fill_random_bf16(bf16* x, size_t n, unsigned seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        unsigned h = (unsigned)i * 2654435761u ^ seed;
        h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
        x[i] = __float2bfloat16((h & 0xffff) / 32768.0f - 1.0f);
    }
}

inline double measured_bf16_tflops() {
    static double tflops = 0.0;
    if (tflops > 0.0) return tflops;
    const int n = 8192;
    DeviceBuffer<bf16> a((size_t)n * n), b((size_t)n * n), c((size_t)n * n);
    dev_fill_random_bf16<<<1024, 256>>>(a.data(), a.size(), 1);
    dev_fill_random_bf16<<<1024, 256>>>(b.data(), b.size(), 2);
    CUDA_CHECK_LAUNCH();
    cublasHandle_t h;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) throw Error("cublasCreate failed");
    const float one = 1.0f, zero = 0.0f;
    const float ms = median_ms([&] {
        cublasStatus_t s = cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a.data(), CUDA_R_16BF, n,
                                        b.data(), CUDA_R_16BF, n, &zero, c.data(), CUDA_R_16BF, n,
                                        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        if (s != CUBLAS_STATUS_SUCCESS) throw Error(format("cublasGemmEx failed (status %d)", (int)s));
    }, 10);
    cublasDestroy(h);
    tflops = 2.0 * n * n * (double)n / (ms * 1e-3) / 1e12;
    return tflops;
}

// achieved and peak in the same unit ("GB/s" or "TFLOP/s"); prints the line and returns achieved / peak
inline double print_summary(const char* bench, const std::string& case_name, float ms, double achieved,
                            double peak, const char* unit) {
    printf("SUMMARY|%s|%s|%.4f ms|%.1f %s|%.1f%% of %.0f %s\n", bench, case_name.c_str(), ms, achieved, unit,
           100.0 * achieved / peak, peak, unit);
    return achieved / peak;
}

}  // namespace llmq::dev
