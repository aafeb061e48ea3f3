// adamw_cuda.h: the CUDA launchers of kernels/adamw.cu (the op and its CPU reference: adamw.h): the fused
// AdamW step on fp32 master weights with a stochastically rounded bf16 copy, and the squared global gradient
// norm for clipping.
#pragma once

#include "cuda_common.h"

namespace llmq {

// master, m, v (n) fp32, updated in place exactly as adamw_update_cpu (the same element code, adamw.h) from
// grad (n) fp32 times grad_scale; step is 1-based. param (n) bf16, if not null, is overwritten with the new
// master rounded stochastically (stochastic_round_cuda.h): element i rounds with the random bits of (seed, i),
// so the same inputs and seed give the same bits. Pass a new seed every step (e.g. the step number).
void adamw_update_cuda(float* master, bf16* param, const float* grad, float* m, float* v, size_t n, float lr,
                       float beta1, float beta2, float eps, float weight_decay, int step, float grad_scale,
                       uint32_t seed, cudaStream_t stream = 0);

// out (n) bf16 = in (n) fp32 rounded stochastically with the bits of (seed, i): exactly the param copy that
// adamw_update_cuda with this seed wrote for a master equal to in. A resumed run rebuilds its bf16 weights
// with it from the checkpoint's masters, bit for bit as if it had never stopped.
void stochastic_round_cuda(bf16* out, const float* in, size_t n, uint32_t seed, cudaStream_t stream = 0);

// How many doubles of scratch sum_squares_cuda needs for n elements (at most 1024, at least 1).
size_t sum_squares_scratch_count(size_t n);

// *result_device (one fp32, on the device) = sum of x[i]^2 over x (n) fp32, overwritten; sqrt of it is the
// global gradient norm. Squares and sums are in double, as sum_squares_cpu, so the result is the CPU's to fp32
// rounding for any n (a double add per 4 bytes read costs nothing on A100/H100, where fp64 runs at half the fp32
// rate). Deterministic, bit for bit: a grid that depends on n alone (not on the SM count) writes one partial per
// block to scratch (sum_squares_scratch_count(n) doubles), then one block adds them in a fixed order.
// Several tensors: one call each, into separate results, added by the caller.
void sum_squares_cuda(float* result_device, double* scratch, const float* x, size_t n, cudaStream_t stream = 0);

}  // namespace llmq
