// rmsnorm_cpu.cpp: y = x * rstd * w with rstd = 1/sqrt(mean(x^2) + eps), per row of C channels.
// Backward, with r = rstd and g_i = dout_i * w_i:
//   dx_i = r * g_i - r^3 / C * x_i * sum_j(g_j x_j)      (r depends on every x_j of the row)
//   dw_i = sum over rows of dout_i * x_i * r
// The rows are split between threads for out/dinp; dweight is reduced by a second pass split over
// channels, each summing the rows in order, so the result does not depend on the thread count.
#include "rmsnorm.h"

#include "cpu_parallel.h"

#include <cmath>
#include <cstddef>

namespace llmq {

template <typename Real>
void rmsnorm_forward_cpu(Real* out, Real* rstd, const Real* inp, const Real* weight, int N, int C, Real eps) {
    // out (N,C), rstd (N), inp (N,C), weight (C)
#pragma omp parallel for schedule(static) if (parallel_worth((long long)N * C))
    for (int n = 0; n < N; n++) {
        const Real* x = inp + (size_t)n * C;
        Real* y = out + (size_t)n * C;
        Real ss = 0;
        for (int i = 0; i < C; i++) ss += x[i] * x[i];
        Real r = Real(1) / std::sqrt(ss / C + eps);
        for (int i = 0; i < C; i++) y[i] = x[i] * r * weight[i];
        rstd[n] = r;
    }
}

template <typename Real>
void rmsnorm_backward_cpu(Real* dinp, Real* dweight, const Real* dout, const Real* inp, const Real* weight,
                          const Real* rstd, int N, int C) {
    // dinp (N,C) += ..., rows independent
#pragma omp parallel for schedule(static) if (parallel_worth((long long)N * C))
    for (int n = 0; n < N; n++) {
        const Real* x = inp + (size_t)n * C;
        const Real* dy = dout + (size_t)n * C;
        Real* dx = dinp + (size_t)n * C;
        const Real r = rstd[n];
        Real dot = 0;  // sum_j dout_j w_j x_j
        for (int i = 0; i < C; i++) dot += dy[i] * weight[i] * x[i];
        const Real coef = r * r * r * dot / C;
        for (int i = 0; i < C; i++) dx[i] += r * dy[i] * weight[i] - coef * x[i];
    }
    // dweight (C) += sum_n dout * x * rstd, channels split between threads, rows summed in order
#pragma omp parallel for schedule(static) if (parallel_worth((long long)N * C))
    for (int i = 0; i < C; i++) {
        Real acc = 0;
        for (int n = 0; n < N; n++) acc += dout[(size_t)n * C + i] * inp[(size_t)n * C + i] * rstd[n];
        dweight[i] += acc;
    }
}

template void rmsnorm_forward_cpu<float>(float*, float*, const float*, const float*, int, int, float);
template void rmsnorm_forward_cpu<double>(double*, double*, const double*, const double*, int, int, double);
template void rmsnorm_backward_cpu<float>(float*, float*, const float*, const float*, const float*, const float*,
                                          int, int);
template void rmsnorm_backward_cpu<double>(double*, double*, const double*, const double*, const double*,
                                           const double*, int, int);

}  // namespace llmq
