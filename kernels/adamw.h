// adamw: the AdamW update with bias correction and decoupled weight decay, and the global gradient
// norm used for clipping.
#pragma once
#include <cmath>
#include <cstddef>

// adam_direction, adamw_apply and adamw_element are also the element math of the CUDA kernel (kernels/adamw.cu),
// so the GPU update is this very code: compiled by nvcc they are callable on the device too.
#if defined(__CUDACC__)
#define LLMQ_HOST_DEVICE __host__ __device__
#else
#define LLMQ_HOST_DEVICE
#endif

namespace llmq {

// Every *_cpu function is a template over the scalar type Real, instantiated for float (the runtime) and
// double (the finite-difference gradient checks) in the .cpp beside this header.

// The element math, shared by adamw_update_cpu and GaLore's projected Adam (adapters/galore.h):
//   bias correction  bc = 1 - beta^step (step 1-based)
//   direction        m, v updated from g; returns mhat / (sqrt(vhat) + eps)
//   apply            param -= lr * (dir + weight_decay * param)   (decoupled weight decay)
template <typename Real>
inline Real adam_bias_correction(Real beta, int step) { return Real(1) - (Real)std::pow((double)beta, step); }
template <typename Real>
LLMQ_HOST_DEVICE inline Real adam_direction(Real g, Real& m, Real& v, Real beta1, Real beta2, Real eps, Real bc1,
                                            Real bc2) {
    m = beta1 * m + (Real(1) - beta1) * g;
    v = beta2 * v + (Real(1) - beta2) * g * g;
    const Real mhat = m / bc1, vhat = v / bc2;
    return mhat / (std::sqrt(vhat) + eps);
}
template <typename Real>
LLMQ_HOST_DEVICE inline void adamw_apply(Real& param, Real dir, Real lr, Real weight_decay) {
    param -= lr * (dir + weight_decay * param);
}

// One element's whole AdamW update with the bias corrections bc1, bc2 given: direction, then decoupled decay
// (SwitchLoRA's per-vector step counts call it; adamw_update_cpu below is the same per element).
template <typename Real>
LLMQ_HOST_DEVICE inline void adamw_element(Real& param, Real g, Real& m, Real& v, Real lr, Real beta1, Real beta2,
                                           Real eps, Real weight_decay, Real bc1, Real bc2) {
    adamw_apply(param, adam_direction(g, m, v, beta1, beta2, eps, bc1, bc2), lr, weight_decay);
}

// param, m, v updated in place from grad * grad_scale (grad_scale folds in clipping and loss scaling).
// step is 1-based (bias correction 1 - beta^step). weight_decay is applied as param -= lr*wd*param.
template <typename Real>
void adamw_update_cpu(Real* param, const Real* grad, Real* m, Real* v, size_t n, Real lr, Real beta1,
                      Real beta2, Real eps, Real weight_decay, int step, Real grad_scale);
// out (n) = the Adam direction (adam_direction) of grad * grad_scale; m, v (n) updated in place. No parameter
// is touched: GaLore projects out back to the weight's shape first. out may be grad itself.
template <typename Real>
void adam_direction_cpu(Real* out, const Real* grad, Real* m, Real* v, size_t n, Real beta1, Real beta2, Real eps,
                        int step, Real grad_scale);
// sum of squares of x (n), accumulated in double
template <typename Real>
double sum_squares_cpu(const Real* x, size_t n);

}  // namespace llmq
