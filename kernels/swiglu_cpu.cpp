// swiglu_cpu.cpp: out = silu(gate) * up, elementwise, silu(x) = x * sigmoid(x).
// d silu/dx = sig(x) * (1 + x * (1 - sig(x))).
#include "swiglu.h"

#include "cpu_parallel.h"

#include <cmath>

namespace llmq {

template <typename Real>
static inline Real sigmoid(Real x) {
    return Real(1) / (Real(1) + std::exp(-x));
}

template <typename Real>
void swiglu_forward_cpu(Real* out, const Real* gate, const Real* up, size_t n) {
#pragma omp parallel for schedule(static) if (parallel_worth((long long)n))
    for (size_t i = 0; i < n; i++) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

template <typename Real>
void swiglu_backward_cpu(Real* dgate, Real* dup, const Real* dout, const Real* gate, const Real* up, size_t n) {
#pragma omp parallel for schedule(static) if (parallel_worth((long long)n))
    for (size_t i = 0; i < n; i++) {
        const Real g = gate[i], u = up[i], d = dout[i], sg = sigmoid(g);  // read both before writing (in place)
        dgate[i] = d * u * sg * (Real(1) + g * (Real(1) - sg));
        dup[i] = d * g * sg;
    }
}

template void swiglu_forward_cpu<float>(float*, const float*, const float*, size_t);
template void swiglu_forward_cpu<double>(double*, const double*, const double*, size_t);
template void swiglu_backward_cpu<float>(float*, float*, const float*, const float*, const float*, size_t);
template void swiglu_backward_cpu<double>(double*, double*, const double*, const double*, const double*, size_t);

}  // namespace llmq
