// adamw: the AdamW update with bias correction and decoupled weight decay, and the global gradient
// norm used for clipping.
#pragma once
#include <cstddef>

namespace llmq {

// Every *_cpu function is a template over the scalar type Real, instantiated for float (the runtime) and
// double (the finite-difference gradient checks) in the .cpp beside this header.

// param, m, v updated in place from grad * grad_scale (grad_scale folds in clipping and loss scaling).
// step is 1-based (bias correction 1 - beta^step). weight_decay is applied as param -= lr*wd*param.
template <typename Real>
void adamw_update_cpu(Real* param, const Real* grad, Real* m, Real* v, size_t n, Real lr, Real beta1,
                      Real beta2, Real eps, Real weight_decay, int step, Real grad_scale);
// sum of squares of x (n), accumulated in double
template <typename Real>
double sum_squares_cpu(const Real* x, size_t n);

}  // namespace llmq
