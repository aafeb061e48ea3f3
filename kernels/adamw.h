// adamw: the AdamW update with bias correction and decoupled weight decay, and the global gradient
// norm used for clipping.
#pragma once
#include <cmath>
#include <cstddef>

namespace llmq {

// Every *_cpu function is a template over the scalar type Real, instantiated for float (the runtime) and
// double (the finite-difference gradient checks) in the .cpp beside this header.

// The bias correction 1 - beta^step of 1-based step (computed in double, then rounded to Real).
template <typename Real>
inline Real adam_bias_correction(Real beta, int step) {
    return Real(1) - (Real)std::pow((double)beta, step);
}

// One element's AdamW update with the bias corrections bc1 = 1 - beta1^t, bc2 = 1 - beta2^t given: the formula
// every AdamW of llmq shares (adamw_update_cpu below; SwitchLoRA's per-vector step counts, adapters/).
template <typename Real>
inline void adamw_element(Real& param, Real g, Real& m, Real& v, Real lr, Real beta1, Real beta2, Real eps,
                          Real weight_decay, Real bc1, Real bc2) {
    m = beta1 * m + (Real(1) - beta1) * g;
    v = beta2 * v + (Real(1) - beta2) * g * g;
    const Real mhat = m / bc1, vhat = v / bc2;
    param -= lr * (mhat / (std::sqrt(vhat) + eps) + weight_decay * param);
}

// param, m, v updated in place from grad * grad_scale (grad_scale folds in clipping and loss scaling).
// step is 1-based (bias correction 1 - beta^step). weight_decay is applied as param -= lr*wd*param.
template <typename Real>
void adamw_update_cpu(Real* param, const Real* grad, Real* m, Real* v, size_t n, Real lr, Real beta1,
                      Real beta2, Real eps, Real weight_decay, int step, Real grad_scale);
// sum of squares of x (n), accumulated in double
template <typename Real>
double sum_squares_cpu(const Real* x, size_t n);

}  // namespace llmq
