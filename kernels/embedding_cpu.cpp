// embedding_cpu.cpp: token embedding lookup and the scatter-add of its gradient.
// The backward splits the channels between threads, so each dwte element is summed by one thread in
// the order n = 0..N-1: the result is bitwise the same for any thread count (no atomics, no races).
#include "embedding.h"

#include "cpu_parallel.h"

#include <algorithm>
#include <cstddef>

namespace llmq {

template <typename Real>
void embedding_forward_cpu(Real* out, const int* tokens, const Real* wte, int N, int C) {
    // out (N,C) = wte (V,C) [tokens (N)]
#pragma omp parallel for schedule(static) if (parallel_worth((long long)N * C))
    for (int n = 0; n < N; n++) std::copy_n(wte + (size_t)tokens[n] * C, C, out + (size_t)n * C);
}

template <typename Real>
void embedding_backward_cpu(Real* dwte, const Real* dout, const int* tokens, int N, int C) {
    // dwte (V,C) += dout (N,C) scattered by token; threads own column slices of 64 channels
    constexpr int SLICE = 64;
    const int n_slices = (C + SLICE - 1) / SLICE;
#pragma omp parallel for schedule(static) if (parallel_worth((long long)N * C))
    for (int s = 0; s < n_slices; s++) {
        const int c0 = s * SLICE, c1 = std::min(C, c0 + SLICE);
        for (int n = 0; n < N; n++) {
            Real* dst = dwte + (size_t)tokens[n] * C;
            const Real* src = dout + (size_t)n * C;
            for (int c = c0; c < c1; c++) dst[c] += src[c];
        }
    }
}

template void embedding_forward_cpu<float>(float*, const int*, const float*, int, int);
template void embedding_forward_cpu<double>(double*, const int*, const double*, int, int);
template void embedding_backward_cpu<float>(float*, const float*, const int*, int, int);
template void embedding_backward_cpu<double>(double*, const double*, const int*, int, int);

}  // namespace llmq
