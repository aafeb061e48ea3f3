// adam8bit_update.h: the per-element arithmetic of the 8-bit Adam step, shared by the CPU reference
// (adam8bit_cpu.cpp) and the GPU kernel (adam8bit.cu) so that both produce the same bits.
//
// Why this needs care: g++ contracts a * b + c into one fused multiply-add wherever it likes (C++ default
// -ffp-contract=fast, -march=native has FMA), and nvcc does the same on the device (--fmad=true). Left
// alone, the two compilers round differently and the GPU's codes drift from the CPU's. So every operation
// here rounds exactly once, as written: the two moment updates and the weight-decay factor are explicit
// fmas (where g++ put them before this header existed, so the CPU results did not change), everything
// else is one correctly rounded IEEE op (the device uses the __f*_rn intrinsics, which nvcc never fuses;
// nothing on the host side is a product feeding a sum, so g++ has nothing left to contract).
#pragma once

#include <cmath>

#include "adam8bit.h"

#if defined(__CUDACC__)
#define LLMQ_HOST_DEVICE __host__ __device__
#else
#define LLMQ_HOST_DEVICE
#endif

namespace llmq {

// What one step needs besides the tensors: the hyperparameters and the step's bias corrections.
struct Adam8bitStepConstants {
    float beta1, beta2, one_minus_beta1, one_minus_beta2, lr, eps;
    float c1, c2;   // 1 - beta1^step, 1 - beta2^step (computed in double, rounded once)
    float decay;    // 1 - lr * weight_decay (one fma)
};

// Validates hyper and step (Error naming the bad value: step < 1, lr or eps <= 0, weight decay < 0, betas
// outside [0, 1)) and computes the constants. Host only; the GPU launcher passes the result to its kernel.
Adam8bitStepConstants adam8bit_step_constants(const Adam8bitHyper& hyper, int step);

namespace adam8bit_math {

LLMQ_HOST_DEVICE inline float mul(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
LLMQ_HOST_DEVICE inline float add(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}
LLMQ_HOST_DEVICE inline float sub(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}
LLMQ_HOST_DEVICE inline float div(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}
LLMQ_HOST_DEVICE inline float sqrt(float a) {
#ifdef __CUDA_ARCH__
    return __fsqrt_rn(a);
#else
    return std::sqrt(a);
#endif
}
LLMQ_HOST_DEVICE inline float fma(float a, float b, float c) {  // a * b + c, rounded once
#ifdef __CUDA_ARCH__
    return __fmaf_rn(a, b, c);
#else
    return std::fma(a, b, c);
#endif
}
LLMQ_HOST_DEVICE inline bool finite(float x) {
#ifdef __CUDA_ARCH__
    return isfinite(x);
#else
    return std::isfinite(x);
#endif
}
// max(m, |x|) ignoring a NaN x, as std::fmax: exact, so any order of a reduction gives the same result
LLMQ_HOST_DEVICE inline float max_abs(float m, float x) {
#ifdef __CUDA_ARCH__
    return fmaxf(m, fabsf(x));
#else
    return std::fmax(m, std::fabs(x));
#endif
}

}  // namespace adam8bit_math

// One element's Adam step on fp32 p, m, v with the scaled gradient g; a non-finite g changes nothing.
//   v = b2 v + (1-b2) g^2;  m = b1 m + (1-b1) g;  p = (p - lr (m / c1) / (sqrt(v / c2) + eps)) * decay
LLMQ_HOST_DEVICE inline void adam8bit_update(float& p, float& m, float& v, float g, const Adam8bitStepConstants& k) {
    namespace am = adam8bit_math;
    if (!am::finite(g)) return;
    v = am::fma(k.beta2, v, am::mul(am::mul(k.one_minus_beta2, g), g));
    m = am::fma(k.beta1, m, am::mul(k.one_minus_beta1, g));
    const float step = am::div(am::mul(k.lr, am::div(m, k.c1)), am::add(am::sqrt(am::div(v, k.c2)), k.eps));
    p = am::mul(am::sub(p, step), k.decay);
}

// x / absmax, the value requantized to the map; an all-zero block (absmax 0) stores the code of 0.0
LLMQ_HOST_DEVICE inline float adam8bit_normalized(float x, float absmax) {
    return absmax > 0.0f ? adam8bit_math::div(x, absmax) : 0.0f;
}

}  // namespace llmq
