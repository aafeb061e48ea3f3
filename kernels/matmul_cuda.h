// matmul_cuda.h: the linear layer's three products on the GPU through cuBLASLt (kernels/matmul.cu; the CPU
// reference: matmul.h / matmul_cpu.cpp).
//
//   CUBLAS_CHECK(call)   throws llmq::Error "cuBLAS error in <call> (file:line): <name>: <reason>"
//   Blas                 owns a cuBLASLt handle, its 32 MiB workspace and the algorithm chosen per problem
//                        (cublasLtMatmulAlgoGetHeuristic runs once per shape, not once per call)
//   matmul_*_cuda        out = inp W^T, dinp (+)= dout W, dweight += dout^T inp; bf16 operands, fp32 accumulate
//
// Requirements (LLMQ_CHECKed): sizes > 0; pointers non-null and naturally aligned (2 bytes for bf16, 4 for
// fp32). cuBLASLt itself needs no particular leading dimension for bf16 with CUBLAS_COMPUTE_32F: the
// heuristic sees every layout (ld = C or OC here) and the real alignment of every pointer (passed as
// CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*_BYTES, default 256 would be a lie for offset pointers) and only
// returns an algorithm that supports them. Speed is another matter: C and OC multiples of 8 (rows of 16
// bytes) and 16-byte aligned pointers let the tensor-core kernels use 16-byte (TMA on sm_90) loads; an odd
// ld such as the 1b preset's F = 5461 still works, on slower kernels.
//
// A Blas is used by one host thread at a time, and its workspace by one stream at a time: launches on two
// streams at once need two Blas objects.
#pragma once

#include <cublasLt.h>

#include <memory>

#include "cuda_common.h"

namespace llmq {

// Throws Error naming the call, the file and line, and cuBLAS's status, unless status is CUBLAS_STATUS_SUCCESS.
void cublas_check(cublasStatus_t status, const char* call, const char* file, int line);
#define CUBLAS_CHECK(call) ::llmq::cublas_check((call), #call, __FILE__, __LINE__)

class Blas {
  public:
    static constexpr size_t kWorkspaceBytes = size_t(32) << 20;

    Blas();  // creates the handle and allocates the workspace on the current device
    ~Blas();
    Blas(const Blas&) = delete;
    Blas& operator=(const Blas&) = delete;

    cublasLtHandle_t handle() const { return handle_; }
    void* workspace() { return workspace_.data(); }
    // how many distinct problems have had an algorithm chosen (the cache's size; tests check reuse)
    size_t cached_algorithms() const;

    struct AlgoCache;  // matmul.cu's: problem key -> cublasLtMatmulAlgo_t
    AlgoCache& algo_cache() { return *cache_; }

  private:
    cublasLtHandle_t handle_ = nullptr;
    DeviceBuffer<char> workspace_;
    std::unique_ptr<AlgoCache> cache_;
};

// out (N,OC) bf16 = inp (N,C) bf16 @ weight (OC,C)^T bf16, fp32 accumulate, overwrites out (NaNs in it ignored)
void matmul_forward_cuda(Blas& blas, bf16* out, const bf16* inp, const bf16* weight, int N, int C, int OC,
                         cudaStream_t stream = 0);
// dinp (N,C) bf16 = dout (N,OC) bf16 @ weight (OC,C) bf16; += (read in bf16, summed in fp32, rounded once)
// when accumulate, else overwrite
void matmul_backward_input_cuda(Blas& blas, bf16* dinp, const bf16* dout, const bf16* weight, int N, int C, int OC,
                                bool accumulate, cudaStream_t stream = 0);
// dweight (OC,C) fp32 += dout (N,OC)^T bf16 @ inp (N,C) bf16, fp32 accumulate (always +=, as the CPU backward)
void matmul_backward_weight_cuda(Blas& blas, float* dweight, const bf16* dout, const bf16* inp, int N, int C, int OC,
                                 cudaStream_t stream = 0);

}  // namespace llmq
