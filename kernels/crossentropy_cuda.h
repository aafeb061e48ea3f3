// crossentropy_cuda.h: the CUDA launcher of kernels/crossentropy.cu (the op and its CPU reference:
// crossentropy.h).
#pragma once

#include "cuda_common.h"

namespace llmq {

// The fused classifier on one chunk of rows, as crossentropy_forward_backward_cpu:
//   logits (N,V) bf16, the lm_head matmul's output; targets (N) int, on the device;
//   losses (N) fp32, overwritten: logsumexp(row) - row[target], 0 for target == ignore_index;
//   dlogits (N,V) bf16, overwritten with grad_scale * (softmax(row) - onehot(target)), zero rows for ignored
//   targets; null for the loss alone (eval). dlogits may equal logits (in place: the probabilities are never
//   stored anywhere); any other overlap of the two is not allowed.
// Targets are validated on the host by the caller (the kernel cannot report an error). A target outside [0, V)
// that is not ignore_index is never read through: its row gets a NaN loss and a NaN gradient row, so the
// mistake shows in the mean loss and in the gradient norm instead of reading out of bounds.
void crossentropy_forward_backward_cuda(float* losses, bf16* dlogits, const bf16* logits, const int* targets, int N,
                                        int V, int ignore_index, float grad_scale, cudaStream_t stream = 0);

}  // namespace llmq
