// residual_cpu.cpp: out = a + b, the skip connection (its backward is the identity: see residual.h).
#include "residual.h"

#include "cpu_parallel.h"

namespace llmq {

template <typename Real>
void residual_forward_cpu(Real* out, const Real* a, const Real* b, size_t n) {
#pragma omp parallel for schedule(static) if (parallel_worth((long long)n))
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

template void residual_forward_cpu<float>(float*, const float*, const float*, size_t);
template void residual_forward_cpu<double>(double*, const double*, const double*, size_t);

}  // namespace llmq
