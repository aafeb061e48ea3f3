// attention_cuda.h: the CUDA launchers of kernels/attention.cu (the op and its CPU reference: attention.h).
//
// Causal scaled-dot-product attention with grouped-query heads, flash-attention style: the (T,T) scores
// never reach global memory; the forward keeps the per-row log-sum-exp and the backward recomputes the
// probabilities from it. Layouts as attention_forward_cpu: query head h reads kv head h / (NH/NKV),
// scale 1/sqrt(head_dim).
//
// Requirements of both launchers (checked, each failure throws llmq::Error naming the op and the value):
// B, T > 0; n_kv_heads divides n_heads; head_dim 32, 64 or 128; B * n_heads <= 65535; every bf16 pointer
// 16-byte aligned (cudaMalloc's are); outputs do not alias inputs.
#pragma once

#include <cstddef>

#include "cuda_common.h"

namespace llmq {

// q (B,T,NH,hd), k v (B,T,NKV,hd) bf16 -> out (B,T,NH,hd) bf16 and lse (B,NH,T) fp32, the natural-log
// log-sum-exp of each query row's scaled scores (what attention_backward_cuda needs). Both overwritten.
void attention_forward_cuda(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, int B, int T,
                            int n_heads, int n_kv_heads, int head_dim, cudaStream_t stream = 0);

// fp32 elements of the scratch buffer attention_backward_cuda needs: D = rowsum(dout * out), (B,NH,T).
size_t attention_backward_scratch_floats(int B, int T, int n_heads, int head_dim);

// dout, out (B,T,NH,hd) bf16, lse (B,NH,T) fp32 (the forward's), q k v as the forward ->
// dq (B,T,NH,hd), dk dv (B,T,NKV,hd) bf16.
// UNLIKE attention_backward_cpu, which accumulates (+=), this OVERWRITES dq, dk and dv (the model hands it
// fresh buffers; a bf16 += would round twice). scratch: attention_backward_scratch_floats(...) floats, its
// contents on entry do not matter. Deterministic: no atomics, every sum runs in a fixed order, so two calls
// on the same inputs give bitwise-identical gradients.
void attention_backward_cuda(bf16* dq, bf16* dk, bf16* dv, float* scratch, const bf16* dout, const bf16* q,
                             const bf16* k, const bf16* v, const bf16* out, const float* lse, int B, int T,
                             int n_heads, int n_kv_heads, int head_dim, cudaStream_t stream = 0);

}  // namespace llmq
