// adamw_cpu.cpp: AdamW (Loshchilov & Hutter) with bias correction and decoupled weight decay:
//   g = grad * grad_scale
//   m = beta1 m + (1 - beta1) g,      v = beta2 v + (1 - beta2) g^2
//   param -= lr * ( (m / (1 - beta1^step)) / (sqrt(v / (1 - beta2^step)) + eps) + weight_decay * param )
// and the sum of squares behind the global gradient norm, in double over fixed chunks summed in
// order, so clipping decisions do not depend on the thread count.
#include "adamw.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common.h"
#include "cpu_parallel.h"

namespace llmq {

template <typename Real>
void adamw_update_cpu(Real* param, const Real* grad, Real* m, Real* v, size_t n, Real lr, Real beta1, Real beta2,
                      Real eps, Real weight_decay, int step, Real grad_scale) {
    LLMQ_CHECK(step >= 1, "adamw: step %d must be >= 1 (1-based, for the bias correction)", step);
    const Real bc1 = adam_bias_correction(beta1, step), bc2 = adam_bias_correction(beta2, step);
#pragma omp parallel for schedule(static) if (parallel_worth((long long)n))
    for (size_t i = 0; i < n; i++)
        adamw_element(param[i], grad[i] * grad_scale, m[i], v[i], lr, beta1, beta2, eps, weight_decay, bc1, bc2);
}

template <typename Real>
double sum_squares_cpu(const Real* x, size_t n) {
    constexpr size_t CHUNK = 1 << 16;
    const size_t n_chunks = (n + CHUNK - 1) / CHUNK;
    std::vector<double> partial(n_chunks);
#pragma omp parallel for schedule(static) if (parallel_worth((long long)n))
    for (size_t c = 0; c < n_chunks; c++) {
        double acc = 0.0;
        for (size_t i = c * CHUNK; i < std::min(n, (c + 1) * CHUNK); i++) acc += (double)x[i] * (double)x[i];
        partial[c] = acc;
    }
    double total = 0.0;
    for (double p : partial) total += p;
    return total;
}

template void adamw_update_cpu<float>(float*, const float*, float*, float*, size_t, float, float, float, float, float,
                                      int, float);
template void adamw_update_cpu<double>(double*, const double*, double*, double*, size_t, double, double, double,
                                       double, double, int, double);
template double sum_squares_cpu<float>(const float*, size_t);
template double sum_squares_cpu<double>(const double*, size_t);

}  // namespace llmq
