// rope_cpu.cpp: rotary position embedding, HF "rotate_half" pairing (dim i with dim i + hd/2).
// Each pair (x1, x2) = (x[i], x[i+hd/2]) at position t is rotated by the angle t * inv_freq[i]:
//   forward  R(t):    (x1 c - x2 s, x2 c + x1 s)
//   backward R(t)^T:  (d1 c + d2 s, d2 c - d1 s)      (a rotation's inverse is its transpose)
#include "rope.h"

#include <cmath>
#include <cstddef>

#include "common.h"
#include "cpu_parallel.h"

namespace llmq {

template <typename Real>
void rope_tables_cpu(Real* cos, Real* sin, int T, int head_dim, Real theta) {
    // cos, sin (T, hd/2); the angle in double so long positions keep their precision
    LLMQ_CHECK(head_dim > 0 && head_dim % 2 == 0, "rope: head_dim %d must be even", head_dim);
    const int half = head_dim / 2;
    for (int i = 0; i < half; i++) {
        const double inv_freq = std::pow((double)theta, -2.0 * i / head_dim);
        for (int t = 0; t < T; t++) {
            const double angle = t * inv_freq;
            cos[(size_t)t * half + i] = (Real)std::cos(angle);
            sin[(size_t)t * half + i] = (Real)std::sin(angle);
        }
    }
}

template <typename Real>
void rope_forward_cpu(Real* out, const Real* inp, const Real* cos, const Real* sin, int B, int T, int n_heads,
                      int head_dim) {
    // out, inp (B,T,NH,hd); in place allowed: each pair is read whole before it is written
    const int half = head_dim / 2;
#pragma omp parallel for collapse(2) schedule(static) if (parallel_worth((long long)B * T * n_heads * head_dim))
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const Real* c = cos + (size_t)t * half;
            const Real* s = sin + (size_t)t * half;
            for (int h = 0; h < n_heads; h++) {
                const size_t off = (((size_t)b * T + t) * n_heads + h) * head_dim;
                for (int i = 0; i < half; i++) {
                    const Real x1 = inp[off + i], x2 = inp[off + i + half];
                    out[off + i] = x1 * c[i] - x2 * s[i];
                    out[off + i + half] = x2 * c[i] + x1 * s[i];
                }
            }
        }
}

template <typename Real>
void rope_backward_cpu(Real* dinp, const Real* dout, const Real* cos, const Real* sin, int B, int T, int n_heads,
                       int head_dim) {
    // dinp (B,T,NH,hd) += R(t)^T dout
    const int half = head_dim / 2;
#pragma omp parallel for collapse(2) schedule(static) if (parallel_worth((long long)B * T * n_heads * head_dim))
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const Real* c = cos + (size_t)t * half;
            const Real* s = sin + (size_t)t * half;
            for (int h = 0; h < n_heads; h++) {
                const size_t off = (((size_t)b * T + t) * n_heads + h) * head_dim;
                for (int i = 0; i < half; i++) {
                    const Real d1 = dout[off + i], d2 = dout[off + i + half];
                    dinp[off + i] += d1 * c[i] + d2 * s[i];
                    dinp[off + i + half] += d2 * c[i] - d1 * s[i];
                }
            }
        }
}

#define LLMQ_INSTANTIATE(Real)                                                                                  \
    template void rope_tables_cpu<Real>(Real*, Real*, int, int, Real);                                          \
    template void rope_forward_cpu<Real>(Real*, const Real*, const Real*, const Real*, int, int, int, int);     \
    template void rope_backward_cpu<Real>(Real*, const Real*, const Real*, const Real*, int, int, int, int);
LLMQ_INSTANTIATE(float)
LLMQ_INSTANTIATE(double)
#undef LLMQ_INSTANTIATE

}  // namespace llmq
