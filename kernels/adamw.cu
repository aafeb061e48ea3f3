// adamw.cu: the optimizer step on the GPU. The fused AdamW update of fp32 master weights and moments, with the
// bf16 compute copy written from the new master by stochastic rounding, and the squared global gradient norm.
//
// Shape: both are streaming and memory-bound. AdamW moves 30 bytes per parameter (reads master, grad, m, v:
// 16 B; writes master, m, v: 12 B, and the bf16 copy: 2 B) for ~20 flops and one 64-bit hash: each thread
// updates 4 parameters per iteration of a grid-stride loop with 128-bit loads and stores (a 64-bit store of
// the 4 bf16). The element math is adamw.h's own (adamw_element), so the
// fp32 results are the CPU's up to FMA contraction (an ulp). The norm reads 4 bytes per element.
//
// Determinism: AdamW is elementwise (one owner per output; the rounding bits depend on (seed, index) only).
// The norm sums in double: per-thread sums over a grid-stride slice, a fixed-order block tree, one partial per
// block in scratch, then one block adds the partials in a fixed order. The grid is a function of n alone (not of
// the GPU's SM count), so the result does not depend on the device either.
// dev/adamw.cu has the versions and the benchmark; test/test_adamw_cuda.cu the checks.
#include "adamw.h"
#include "adamw_cuda.h"
#include "stochastic_round_cuda.h"

#include <algorithm>

namespace llmq {

namespace {

constexpr int kBlock = 256;

// One step's constants, passed by value (kernel parameter space)
struct AdamwStep {
    float lr, beta1, beta2, eps, weight_decay, bc1, bc2, grad_scale;
    uint64_t round_key;
};

__device__ inline void update_element(float& w, float g, float& m, float& v, const AdamwStep& s) {
    adamw_element(w, g * s.grad_scale, m, v, s.lr, s.beta1, s.beta2, s.eps, s.weight_decay, s.bc1, s.bc2);
}

struct alignas(8) Bf16x4 {
    bf16 v[4];
};

// version 2 of dev/adamw.cu: 4 parameters per thread per iteration, 128-bit accesses, grid-stride
__global__ void __launch_bounds__(kBlock) adamw_packed_kernel(float* master, bf16* param, const float* grad, float* m,
                                                             float* v, size_t n_packs, AdamwStep s) {
    using P = Packed128<float>;
    for (size_t p = blockIdx.x * (size_t)blockDim.x + threadIdx.x; p < n_packs; p += (size_t)gridDim.x * blockDim.x) {
        const size_t i = p * P::size;
        P w = load128(master + i), mm = load128(m + i), vv = load128(v + i);
        const P g = load128(grad + i);
#pragma unroll
        for (int k = 0; k < P::size; k++) update_element(w.v[k], g.v[k], mm.v[k], vv.v[k], s);
        store128(master + i, w);
        store128(m + i, mm);
        store128(v + i, vv);
        if (param) {
            Bf16x4 rounded;
#pragma unroll
            for (int k = 0; k < P::size; k++) rounded.v[k] = stochastic_round_bf16(w.v[k], s.round_key, i + k);
            *reinterpret_cast<Bf16x4*>(param + i) = rounded;
        }
    }
}

// the scalar fallback (version 1): elements [begin, n), any alignment; also the tail after the last full pack
__global__ void __launch_bounds__(kBlock) adamw_scalar_kernel(float* master, bf16* param, const float* grad, float* m,
                                                             float* v, size_t begin, size_t n, AdamwStep s) {
    for (size_t i = begin + blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float w = master[i], mi = m[i], vi = v[i];
        update_element(w, grad[i], mi, vi, s);
        master[i] = w, m[i] = mi, v[i] = vi;
        if (param) param[i] = stochastic_round_bf16(w, s.round_key, i);
    }
}

// ---- the global norm ----

constexpr int kNormBlock = 256, kNormMaxBlocks = 1024;
// a block's first pass covers kNormBlock * 4 packs of 4 floats before the grid grows: small n stays in few blocks
constexpr size_t kNormMinPerBlock = (size_t)kNormBlock * 16;

int norm_blocks(size_t n) {
    return (int)std::clamp<size_t>((n + kNormMinPerBlock - 1) / kNormMinPerBlock, 1, kNormMaxBlocks);
}

// the block's sum, valid in thread 0; one call per kernel (its shared memory is not reused)
__device__ inline double block_sum(double x) {
    __shared__ double per_warp[kNormBlock / 32];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_down_sync(0xffffffffu, x, offset);
    if (lane == 0) per_warp[warp] = x;
    __syncthreads();
    x = 0.0;
    if (warp == 0) {
        x = lane < kNormBlock / 32 ? per_warp[lane] : 0.0;
#pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_down_sync(0xffffffffu, x, offset);
    }
    return x;
}

// partials[block] = the sum of squares of the block's grid-stride slice of x (n); packs of 4 when x is aligned
__global__ void __launch_bounds__(kNormBlock) sum_squares_partials_kernel(double* partials, const float* x, size_t n,
                                                                         size_t n_packs) {
    const size_t first = blockIdx.x * (size_t)kNormBlock + threadIdx.x, stride = (size_t)gridDim.x * kNormBlock;
    double acc = 0.0;  // each product of two fp32 is exact in double: only the additions round
#pragma unroll 4  // several loads in flight per thread (the additions stay in order)
    for (size_t p = first; p < n_packs; p += stride) {
        const Packed128<float> a = load128(x + p * 4);
#pragma unroll
        for (int k = 0; k < 4; k++) acc += (double)a.v[k] * (double)a.v[k];
    }
    for (size_t i = n_packs * 4 + first; i < n; i += stride) acc += (double)x[i] * (double)x[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// *result = the sum of partials (count), in a fixed order, by one block
__global__ void __launch_bounds__(kNormBlock) sum_squares_final_kernel(float* result, const double* partials,
                                                                      int count) {
    double acc = 0.0;
    for (int i = threadIdx.x; i < count; i += kNormBlock) acc += partials[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0) *result = (float)acc;
}

// out[i] = the stochastic rounding of in[i] with the bits of (key, i): the bf16 copy adamw_update_cuda writes
__global__ void stochastic_round_kernel(bf16* out, const float* in, size_t n, uint64_t key) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = stochastic_round_bf16(in[i], key, i);
}

}  // namespace

void stochastic_round_cuda(bf16* out, const float* in, size_t n, uint32_t seed, cudaStream_t stream) {
    if (n == 0) return;
    LLMQ_CHECK(out && in, "stochastic_round_cuda: out and in must not be null (n = %zu)", n);
    stochastic_round_kernel<<<grid_stride_blocks(n, kBlock), kBlock, 0, stream>>>(out, in, n,
                                                                                   stochastic_round_key(seed));
    CUDA_CHECK_LAUNCH();
}

void adamw_update_cuda(float* master, bf16* param, const float* grad, float* m, float* v, size_t n, float lr,
                       float beta1, float beta2, float eps, float weight_decay, int step, float grad_scale,
                       uint32_t seed, cudaStream_t stream) {
    // master, grad, m, v (n) fp32; param (n) bf16 or null
    LLMQ_CHECK(step >= 1, "adamw_cuda: step %d must be >= 1 (1-based, for the bias correction)", step);
    LLMQ_CHECK(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1,
               "adamw_cuda: beta1 %g and beta2 %g must lie in [0, 1)", beta1, beta2);
    LLMQ_CHECK(std::isfinite(lr) && std::isfinite(grad_scale), "adamw_cuda: lr %g and grad_scale %g must be finite",
               lr, grad_scale);
    if (n == 0) return;
    LLMQ_CHECK(master && grad && m && v, "adamw_cuda: master, grad, m and v must not be null (n = %zu)", n);
    const AdamwStep s{lr,
                      beta1,
                      beta2,
                      eps,
                      weight_decay,
                      adam_bias_correction(beta1, step),
                      adam_bias_correction(beta2, step),
                      grad_scale,
                      stochastic_round_key(seed)};
    const bool packed = aligned16(master, grad, m, v) && reinterpret_cast<uintptr_t>(param) % 8 == 0;
    const size_t packs = packed ? n / 4 : 0, tail = packs * 4;
    if (packs)
        adamw_packed_kernel<<<grid_stride_blocks(packs, kBlock), kBlock, 0, stream>>>(master, param, grad, m, v,
                                                                                       packs, s);
    if (tail < n)
        adamw_scalar_kernel<<<grid_stride_blocks(n - tail, kBlock), kBlock, 0, stream>>>(master, param, grad, m, v,
                                                                                          tail, n, s);
    CUDA_CHECK_LAUNCH();
}

size_t sum_squares_scratch_count(size_t n) { return (size_t)norm_blocks(n); }

void sum_squares_cuda(float* result_device, double* scratch, const float* x, size_t n, cudaStream_t stream) {
    // result_device (1) fp32, scratch (sum_squares_scratch_count(n)) double, x (n) fp32
    LLMQ_CHECK(result_device && scratch, "sum_squares_cuda: result_device and scratch must not be null");
    LLMQ_CHECK(x || n == 0, "sum_squares_cuda: x is null with n = %zu", n);
    const int blocks = norm_blocks(n);
    const size_t packs = aligned16(x) ? n / 4 : 0;
    sum_squares_partials_kernel<<<blocks, kNormBlock, 0, stream>>>(scratch, x, n, packs);
    sum_squares_final_kernel<<<1, kNormBlock, 0, stream>>>(result_device, scratch, blocks);
    CUDA_CHECK_LAUNCH();
}

}  // namespace llmq
