// adam8bit.cu: the fused blockwise 8-bit Adam step on the GPU (adam8bit.h describes the state and the step).
//
// Memory-bound: per parameter it reads param and grad (fp32), the two codes (uint8) and, per 256, the two
// absmax, and writes param, codes and absmax back: 16 bytes + 16/256, for ~40 flops and two 8-step binary
// searches. The shape follows the quantization block: one thread block of 256 threads per block of 256
// elements, one element per thread, so the block's new absmax is one block reduction (warp shuffles, then
// 8 warp results through shared memory) and every code is written by the thread that computed it.
// Thread blocks stride over the quantization blocks (grid_stride_blocks), so each loads the two maps into
// shared memory once: the floats to dequantize and, in double, the 255 midpoints between neighbours that
// the nearest-code search compares against (exact, as quantize_to_map's).
//
// Same bits as adam8bit_step_cpu: the element update is adam8bit_update.h's, compiled on both sides with
// one rounding per operation; the max is exact and order-free; the search is quantize_to_map's, unrolled.
// So no atomics and no order-dependent sums: deterministic, and equal to the CPU.
//
// dev/adam8bit.cu has the versions and the benchmark; test/test_adam8bit_cuda.cu the check against the CPU.
#include "adam8bit_cuda.h"

#include <vector>

#include "adam8bit_update.h"
#include "dynamic_map.h"

namespace llmq {

namespace {

constexpr int kThreads = kAdam8bitBlock;  // one thread per element of a quantization block
constexpr int kWarps = kThreads / 32;
static_assert(kThreads % 32 == 0 && kThreads <= 1024, "a quantization block must fit one thread block");

// The midpoint between two neighbouring map values, exact in double (as in quantize_to_map).
__device__ inline double midpoint(float a, float b) { return __dmul_rn(__dadd_rn((double)a, (double)b), 0.5); }

// quantize_to_map's binary search over the 255 midpoints, unrolled: the range [lo, lo + 2h) halves 8 times;
// x strictly above the midpoint below its upper half moves lo up (ties and NaN stay low).
__device__ inline uint8_t nearest_code(const double* mid, float x) {
    const double xd = x;
    int lo = 0;
#pragma unroll
    for (int half = 128; half >= 1; half /= 2)
        if (xd > mid[lo + half - 1]) lo += half;
    return (uint8_t)lo;
}

// The max over the thread block of a and of b, returned to every thread. scratch is the block's shared
// (2, kWarps); the barrier after reading it lets the next call write it again.
__device__ inline float2 block_max2(float a, float b, float (*scratch)[kWarps]) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
        a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, offset));
        b = fmaxf(b, __shfl_xor_sync(0xffffffffu, b, offset));
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) scratch[0][warp] = a, scratch[1][warp] = b;
    __syncthreads();
    a = scratch[0][0], b = scratch[1][0];
#pragma unroll
    for (int w = 1; w < kWarps; w++) a = fmaxf(a, scratch[0][w]), b = fmaxf(b, scratch[1][w]);
    __syncthreads();
    return make_float2(a, b);
}

// version 2 of dev/adam8bit.cu. blockDim.x == kThreads.
__global__ void __launch_bounds__(kThreads)
    adam8bit_step_kernel(float* param, const float* grad, uint8_t* m_codes, uint8_t* v_codes, float* m_absmax,
                         float* v_absmax, const float* signed_map, const float* unsigned_map, int64_t n,
                         Adam8bitStepConstants k, float grad_scale) {
    namespace am = adam8bit_math;
    __shared__ float smap[256], umap[256];
    __shared__ double smid[255], umid[255];
    __shared__ float scratch[2][kWarps];
    const int t = threadIdx.x;
    smap[t] = signed_map[t], umap[t] = unsigned_map[t];
    __syncthreads();
    if (t < 255) smid[t] = midpoint(smap[t], smap[t + 1]), umid[t] = midpoint(umap[t], umap[t + 1]);
    __syncthreads();

    const int64_t n_blocks = (n + kThreads - 1) / kThreads;
    for (int64_t b = blockIdx.x; b < n_blocks; b += gridDim.x) {
        const int64_t i = b * kThreads + t;
        const bool inside = i < n;  // the last block may be partial: its outside threads count as zeros
        float m = 0.0f, v = 0.0f;
        if (inside) {
            // every thread reads this block's absmax before block_max2's barrier; thread 0 writes it after
            m = am::mul(smap[m_codes[i]], m_absmax[b]);
            v = am::mul(umap[v_codes[i]], v_absmax[b]);
            float p = param[i];
            adam8bit_update(p, m, v, am::mul(grad[i], grad_scale), k);
            param[i] = p;
        }
        const float2 absmax = block_max2(am::max_abs(0.0f, m), am::max_abs(0.0f, v), scratch);
        if (inside) {
            m_codes[i] = nearest_code(smid, adam8bit_normalized(m, absmax.x));
            v_codes[i] = nearest_code(umid, adam8bit_normalized(v, absmax.y));
        }
        if (t == 0) m_absmax[b] = absmax.x, v_absmax[b] = absmax.y;
    }
}

// the fp32 state of small tensors: elementwise, grid-stride
__global__ void adam_fp32_step_kernel(float* param, const float* grad, float* m, float* v, int64_t n,
                                      Adam8bitStepConstants k, float grad_scale) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float p = param[i], mi = m[i], vi = v[i];
        adam8bit_update(p, mi, vi, adam8bit_math::mul(grad[i], grad_scale), k);
        param[i] = p, m[i] = mi, v[i] = vi;
    }
}

std::vector<float> as_vector(const DynamicMap& map) { return std::vector<float>(map.begin(), map.end()); }

}  // namespace

Adam8bitMapsCuda::Adam8bitMapsCuda()
    : signed_map(as_vector(dynamic_map_signed())), unsigned_map(as_vector(dynamic_map_unsigned())) {}

void adam8bit_step_cuda(float* param, const float* grad, uint8_t* m_codes, uint8_t* v_codes, float* m_absmax,
                        float* v_absmax, const float* signed_map, const float* unsigned_map, int64_t n,
                        const Adam8bitHyper& hyper, int step, float grad_scale, cudaStream_t stream) {
    const Adam8bitStepConstants k = adam8bit_step_constants(hyper, step);
    LLMQ_CHECK(n >= 1, "adam8bit_step_cuda: tensor of %lld elements (must be positive)", (long long)n);
    LLMQ_CHECK(param && grad && m_codes && v_codes && m_absmax && v_absmax && signed_map && unsigned_map,
               "adam8bit_step_cuda: null pointer (param %p, grad %p, m_codes %p, v_codes %p, m_absmax %p, v_absmax "
               "%p, signed_map %p, unsigned_map %p)",
               (void*)param, (const void*)grad, (void*)m_codes, (void*)v_codes, (void*)m_absmax, (void*)v_absmax,
               (const void*)signed_map, (const void*)unsigned_map);
    const int grid = grid_stride_blocks((size_t)n, kThreads);  // <= one thread block per quantization block
    adam8bit_step_kernel<<<grid, kThreads, 0, stream>>>(param, grad, m_codes, v_codes, m_absmax, v_absmax,
                                                        signed_map, unsigned_map, n, k, grad_scale);
    CUDA_CHECK_LAUNCH();
}

void adam8bit_step_fp32_cuda(float* param, const float* grad, float* m, float* v, int64_t n,
                             const Adam8bitHyper& hyper, int step, float grad_scale, cudaStream_t stream) {
    const Adam8bitStepConstants k = adam8bit_step_constants(hyper, step);
    LLMQ_CHECK(n >= 1, "adam8bit_step_fp32_cuda: tensor of %lld elements (must be positive)", (long long)n);
    LLMQ_CHECK(param && grad && m && v, "adam8bit_step_fp32_cuda: null pointer (param %p, grad %p, m %p, v %p)",
               (void*)param, (const void*)grad, (void*)m, (void*)v);
    constexpr int block = 256;
    adam_fp32_step_kernel<<<grid_stride_blocks((size_t)n, block), block, 0, stream>>>(param, grad, m, v, n, k,
                                                                                        grad_scale);
    CUDA_CHECK_LAUNCH();
}

}  // namespace llmq
