// swiglu_cuda.h: the CUDA launchers of kernels/swiglu.cu (the op and its CPU reference: swiglu.h).
#pragma once

#include "cuda_common.h"

namespace llmq {

// out, gate, up (n) bf16: out = silu(gate) * up, computed in fp32
void swiglu_forward_cuda(bf16* out, const bf16* gate, const bf16* up, size_t n, cudaStream_t stream = 0);
// dgate, dup (n) bf16, overwritten; in place allowed (dgate == gate, dup == up), as swiglu_backward_cpu
void swiglu_backward_cuda(bf16* dgate, bf16* dup, const bf16* dout, const bf16* gate, const bf16* up, size_t n,
                          cudaStream_t stream = 0);

}  // namespace llmq
