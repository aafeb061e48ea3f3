// rmsnorm: y = x * rsqrt(mean(x^2) + eps) * w, per row, in fp32 (LLaMA's pre-norm).
#pragma once

namespace llmq {

// out (N,C), rstd (N) saved for the backward, inp (N,C), weight (C)
void rmsnorm_forward_cpu(float* out, float* rstd, const float* inp, const float* weight, int N, int C, float eps);
// dinp (N,C) += ..., dweight (C) += ...
void rmsnorm_backward_cpu(float* dinp, float* dweight, const float* dout, const float* inp, const float* weight,
                          const float* rstd, int N, int C);

}  // namespace llmq
