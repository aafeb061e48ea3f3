// rmsnorm: y = x * rsqrt(mean(x^2) + eps) * w, per row, in fp32 (LLaMA's pre-norm).
#pragma once

namespace llmq {

// Every *_cpu function is a template over the scalar type Real, instantiated for float (the runtime) and
// double (the finite-difference gradient checks) in the .cpp beside this header.

// out (N,C), rstd (N) saved for the backward, inp (N,C), weight (C)
template <typename Real>
void rmsnorm_forward_cpu(Real* out, Real* rstd, const Real* inp, const Real* weight, int N, int C, Real eps);
// dinp (N,C) += ..., dweight (C) += ...
template <typename Real>
void rmsnorm_backward_cpu(Real* dinp, Real* dweight, const Real* dout, const Real* inp, const Real* weight,
                          const Real* rstd, int N, int C);

}  // namespace llmq
