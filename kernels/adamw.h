// adamw: the AdamW update with bias correction and decoupled weight decay, and the global gradient
// norm used for clipping.
#pragma once
#include <cstddef>

namespace llmq {

// param, m, v updated in place from grad * grad_scale (grad_scale folds in clipping and loss scaling).
// step is 1-based (bias correction 1 - beta^step). weight_decay is applied as param -= lr*wd*param.
void adamw_update_cpu(float* param, const float* grad, float* m, float* v, size_t n, float lr, float beta1,
                      float beta2, float eps, float weight_decay, int step, float grad_scale);
// sum of squares of x (n), accumulated in double
double sum_squares_cpu(const float* x, size_t n);

}  // namespace llmq
