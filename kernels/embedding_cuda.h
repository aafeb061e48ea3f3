// embedding_cuda.h: the CUDA launchers of kernels/embedding.cu (the op and its CPU reference: embedding.h).
//
// The backward needs the batch's tokens grouped by id. The host has the tokens anyway (it sent them), so it
// groups them once per batch into an EmbeddingBackwardPlan (llm.c's encoder_backward buckets), uploads it,
// and the kernel gives each (distinct id, channel chunk) one owner that sums that id's rows in order n.
#pragma once

#include "cuda_common.h"

namespace llmq {

// out (N,C) bf16 = wte (V,C) bf16 [tokens (N) int, on the device]. The ids must already be checked on the
// host to lie in [0,V) (the kernel does not know V).
void embedding_forward_cuda(bf16* out, const int* tokens, const bf16* wte, int N, int C, cudaStream_t stream = 0);

// The batch's tokens grouped by id, as a CSR on the device:
//   bucket b (0 <= b < n_buckets) is the distinct id bucket_ids[b]; its rows n are
//   positions[bucket_start[b] .. bucket_start[b+1]), in increasing n (the CPU's summation order).
// Buckets are ordered largest first (ties by id), so the longest sums (a padding id repeated thousands of
// times) start first; the order changes no result, since every bucket owns its own rows of dwte.
// The buffers are sized N and N+1 whatever the number of distinct ids, so rebuilding for every batch of the
// same N reuses them. build() uploads with a synchronous cudaMemcpy: do not rebuild a plan while a backward
// that uses it may still be running on another (non-blocking) stream.
struct EmbeddingBackwardPlan {
    int N = 0, V = 0;
    int n_buckets = 0;    // distinct ids in the batch
    int max_bucket = 0;   // rows of the largest bucket
    DeviceBuffer<int> bucket_ids;    // (N), the first n_buckets used
    DeviceBuffer<int> bucket_start;  // (N+1), the first n_buckets+1 used; bucket_start[n_buckets] == N
    DeviceBuffer<int> positions;     // (N)

    // tokens_host (N) on the host; throws Error naming the first id outside [0,V) and its position
    void build(const int* tokens_host, int N, int V);
};

// dwte (V,C) fp32 += scatter of dout (N,C) bf16 by token id, with plan built from the same batch (N rows):
// every dwte element is dwte + dout[n0] + dout[n1] + ... added left to right in increasing n, exactly
// embedding_backward_cpu's order, so the result is bitwise the CPU's and the same on every run.
void embedding_backward_cuda(float* dwte, const bf16* dout, const EmbeddingBackwardPlan& plan, int C,
                             cudaStream_t stream = 0);

}  // namespace llmq
