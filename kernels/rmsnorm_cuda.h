// rmsnorm_cuda.h: the CUDA launchers of kernels/rmsnorm.cu (the op and its CPU reference: rmsnorm.h and,
// for the fused skip connection, residual.h). Activations bf16, statistics and dweight fp32, math fp32.
//
// Requirements (checked, Error names the op and the bad value): N >= 1; C a multiple of 8 and at most
// rmsnorm_cuda_max_channels (8192: the 128-bit path keeps a row in registers); every (N,C) or (C) pointer and
// the scratch 16-byte aligned (cudaMalloc'd buffers are; so is any row of them, C being a multiple of 8).
// rstd and dweight are accessed per element: any float pointer will do.
#pragma once

#include "cuda_common.h"

namespace llmq {

constexpr int rmsnorm_cuda_max_channels = 8192;

// out (N,C) bf16 = inp * rstd * weight, rstd (N) fp32 = 1/sqrt(mean(inp^2) + eps), saved for the
// backward; inp (N,C) bf16, weight (C) bf16. In place (out == inp) is allowed.
void rmsnorm_forward_cuda(bf16* out, float* rstd, const bf16* inp, const bf16* weight, int N, int C, float eps,
                          cudaStream_t stream = 0);

// The skip connection and the next norm in one pass over the row:
//   residual_out (N,C) bf16 = residual_in + branch, added in fp32 and rounded once to bf16;
//   norm_out (N,C) bf16, rstd (N) fp32 = rmsnorm_forward_cuda of the ROUNDED residual_out (so the backward,
//   which reads residual_out, sees exactly the values the norm saw); bit for bit what
//   rmsnorm_forward_cuda(norm_out, rstd, residual_out, ...) gives after the add.
// residual_out may alias residual_in (the model's residual stream updated in place); norm_out must not
// alias residual_out.
void residual_rmsnorm_forward_cuda(bf16* residual_out, bf16* norm_out, float* rstd, const bf16* residual_in,
                                   const bf16* branch, const bf16* weight, int N, int C, float eps,
                                   cudaStream_t stream = 0);

// floats of scratch rmsnorm_backward_cuda needs for (N, C): one fp32 partial dweight row per block of rows
size_t rmsnorm_backward_scratch_floats(int N, int C);

// dinp (N,C) bf16 += d(loss)/d(inp): read, added to in fp32, rounded once (the residual stream's gradient
// flows through it); dweight (C) fp32 += sum over rows of dout * inp * rstd, deterministically: each block
// of rows writes its partial sums into scratch (rmsnorm_backward_scratch_floats(N, C) floats, contents on
// entry ignored), then a second kernel adds them in a fixed order. dout, inp (N,C) bf16, weight (C) bf16,
// rstd (N) fp32 from the forward. dinp must not alias dout or inp.
void rmsnorm_backward_cuda(bf16* dinp, float* dweight, float* scratch, const bf16* dout, const bf16* inp,
                           const bf16* weight, const float* rstd, int N, int C, cudaStream_t stream = 0);

}  // namespace llmq
