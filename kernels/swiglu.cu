// swiglu.cu: the SwiGLU gate of LLaMA's MLP on the GPU, out = silu(gate) * up, and its backward.
// Elementwise and memory-bound: 3 bf16 streams forward (2 read, 1 written), 5 backward (3 read, 2
// written). Each thread moves 8 bf16 per stream with 128-bit loads and computes in fp32; the math is
// swiglu_cpu.cpp's. dev/swiglu.cu has the versions and the benchmark; test/test_swiglu_cuda.cu the check.
#include "swiglu_cuda.h"

namespace llmq {

namespace {

__device__ inline float sigmoidf_(float x) { return 1.0f / (1.0f + __expf(-x)); }

// version 2 of dev/swiglu.cu: one 128-bit access per stream per thread, grid-stride over packs
__global__ void swiglu_forward_kernel(bf16* out, const bf16* gate, const bf16* up, size_t n_packs) {
    using P = Packed128<bf16>;
    for (size_t p = blockIdx.x * (size_t)blockDim.x + threadIdx.x; p < n_packs; p += (size_t)gridDim.x * blockDim.x) {
        const P g = load128(gate + p * P::size), u = load128(up + p * P::size);
        P y;
#pragma unroll
        for (int k = 0; k < P::size; k++) {
            const float gk = __bfloat162float(g.v[k]);
            y.v[k] = __float2bfloat16(gk * sigmoidf_(gk) * __bfloat162float(u.v[k]));
        }
        store128(out + p * P::size, y);
    }
}

__global__ void swiglu_backward_kernel(bf16* dgate, bf16* dup, const bf16* dout, const bf16* gate, const bf16* up,
                                       size_t n_packs) {
    using P = Packed128<bf16>;
    for (size_t p = blockIdx.x * (size_t)blockDim.x + threadIdx.x; p < n_packs; p += (size_t)gridDim.x * blockDim.x) {
        const P g = load128(gate + p * P::size), u = load128(up + p * P::size), d = load128(dout + p * P::size);
        P dg, du;  // all reads happen before the writes: in place is safe
#pragma unroll
        for (int k = 0; k < P::size; k++) {
            const float gk = __bfloat162float(g.v[k]), uk = __bfloat162float(u.v[k]), dk = __bfloat162float(d.v[k]);
            const float sg = sigmoidf_(gk);
            dg.v[k] = __float2bfloat16(dk * uk * sg * (1.0f + gk * (1.0f - sg)));
            du.v[k] = __float2bfloat16(dk * gk * sg);
        }
        store128(dgate + p * P::size, dg);
        store128(dup + p * P::size, du);
    }
}

// the scalar fallback (version 1): any n, any alignment; also covers the tail after the last full pack
__global__ void swiglu_forward_scalar(bf16* out, const bf16* gate, const bf16* up, size_t begin, size_t n) {
    const size_t i = begin + blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float g = __bfloat162float(gate[i]);
    out[i] = __float2bfloat16(g * sigmoidf_(g) * __bfloat162float(up[i]));
}

__global__ void swiglu_backward_scalar(bf16* dgate, bf16* dup, const bf16* dout, const bf16* gate, const bf16* up,
                                       size_t begin, size_t n) {
    const size_t i = begin + blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float g = __bfloat162float(gate[i]), u = __bfloat162float(up[i]), d = __bfloat162float(dout[i]);
    const float sg = sigmoidf_(g);
    dgate[i] = __float2bfloat16(d * u * sg * (1.0f + g * (1.0f - sg)));
    dup[i] = __float2bfloat16(d * g * sg);
}

constexpr int kBlock = 256;

}  // namespace

void swiglu_forward_cuda(bf16* out, const bf16* gate, const bf16* up, size_t n, cudaStream_t stream) {
    const size_t packs = aligned16(out, gate, up) ? n / Packed128<bf16>::size : 0, tail = packs * Packed128<bf16>::size;
    if (packs) swiglu_forward_kernel<<<grid_stride_blocks(packs, kBlock), kBlock, 0, stream>>>(out, gate, up, packs);
    if (tail < n) swiglu_forward_scalar<<<ceil_div(n - tail, kBlock), kBlock, 0, stream>>>(out, gate, up, tail, n);
    CUDA_CHECK_LAUNCH();
}

void swiglu_backward_cuda(bf16* dgate, bf16* dup, const bf16* dout, const bf16* gate, const bf16* up, size_t n,
                          cudaStream_t stream) {
    const size_t packs = aligned16(dgate, dup, dout, gate, up) ? n / Packed128<bf16>::size : 0,
                 tail = packs * Packed128<bf16>::size;
    if (packs) swiglu_backward_kernel<<<grid_stride_blocks(packs, kBlock), kBlock, 0, stream>>>(dgate, dup, dout, gate, up, packs);
    if (tail < n)
        swiglu_backward_scalar<<<ceil_div(n - tail, kBlock), kBlock, 0, stream>>>(dgate, dup, dout, gate, up, tail, n);
    CUDA_CHECK_LAUNCH();
}

}  // namespace llmq
