// rope_cuda.h: the CUDA launchers of kernels/rope.cu (the op and its CPU reference: rope.h).
//
// inp, out, dinp, dout (B,T,NH,hd) bf16, computed in fp32; cos, sin (T, hd/2) fp32: rope_tables_cpu<float>'s
// tables, uploaded once (the kernels only read them). head_dim even, 2..256.
#pragma once

#include "cuda_common.h"

namespace llmq {

constexpr int kRopeMaxHeadDim = 256;

// out = R(t) inp, as rope_forward_cpu. out may equal inp (in place, as the model applies it to q and k); a
// partial overlap is refused.
void rope_forward_cuda(bf16* out, const bf16* inp, const float* cos, const float* sin, int B, int T, int n_heads,
                       int head_dim, cudaStream_t stream = 0);
// dinp += R(t)^T dout, as rope_backward_cpu: accumulates into dinp, which must not overlap dout.
void rope_backward_cuda(bf16* dinp, const bf16* dout, const float* cos, const float* sin, int B, int T, int n_heads,
                        int head_dim, cudaStream_t stream = 0);
// dinp = R(t)^T dout, overwriting dinp; in place allowed (dinp == dout). The model zeroes dq_pre/dk_pre just to
// accumulate into them once (model_core.cpp), so its GPU path should call this one: no zeroing pass, no
// read of dinp, and dq/dk can be rotated where they lie.
void rope_backward_overwrite_cuda(bf16* dinp, const bf16* dout, const float* cos, const float* sin, int B, int T,
                                  int n_heads, int head_dim, cudaStream_t stream = 0);

}  // namespace llmq
