// rope.cu: rotary position embedding on the GPU (HF rotate_half pairing: dim i with dim i + hd/2), its
// backward (the inverse rotation R^T, accumulated or overwriting) and the math of rope_cpu.cpp.
//
// Memory-bound: 6 flops per pair against 8 bytes of bf16 moved (forward and the overwriting backward read
// and write the tensor once, 2 streams; the accumulating backward also reads dinp, 3 streams). The cos/sin
// tables (T, hd/2) fp32 are the same for every batch row and head, so after the first touch they come from
// L2. Each thread owns whole pairs (it reads x[i] and x[i+hd/2] before writing either), which is what makes
// in place safe without any synchronisation: no two threads touch the same element. The fast path gives a
// thread 8 consecutive pairs, i.e. one 128-bit load of each half of the head and two of each table row;
// when hd/2 is not a multiple of 8 or a pointer is not 16-byte aligned, a scalar kernel does one pair per
// thread. dev/rope.cu has the versions and the benchmark; test/test_rope_cuda.cu the checks.
#include "rope_cuda.h"

namespace llmq {

namespace {

enum class RopeMode { kForward, kBackwardAccumulate, kBackwardOverwrite };

constexpr int kBlock = 256;

// The rotation of one pair by the angle whose cos, sin are (c, s): R = (x1 c - x2 s, x2 c + x1 s).
// R^T is R with -s, so the backward is the same code with the sine negated (exact in fp32).
template <RopeMode M>
__device__ inline void rotate_pair(float& y1, float& y2, float x1, float x2, float c, float s) {
    if constexpr (M != RopeMode::kForward) s = -s;
    y1 = x1 * c - x2 * s;
    y2 = x2 * c + x1 * s;
}

// version 2 of dev/rope.cu. out, inp (B,T,NH,2*half) bf16; cos, sin (T,half) fp32; half % 8 == 0.
// Work item p = 8 consecutive pairs: token (b*T + t), head h, first pair i0 = 8j; grid-stride over items.
// The launch bounds (half occupancy, up to 64 registers) let ptxas issue all six 128-bit loads of an item
// before the first use; at full occupancy it holds them to 32 registers by waiting on each in turn.
template <RopeMode M>
__global__ void __launch_bounds__(kBlock, 4) rope_kernel_vec(bf16* out, const bf16* inp, const float* cos,
                                                             const float* sin, int T, int n_heads, int half,
                                                             size_t n_items) {
    using P = Packed128<bf16>;
    using F = Packed128<float>;
    const int items_per_head = half / P::size, items_per_token = n_heads * items_per_head;
    for (size_t p = blockIdx.x * (size_t)blockDim.x + threadIdx.x; p < n_items; p += (size_t)gridDim.x * blockDim.x) {
        const size_t token = p / items_per_token;
        const int in_token = (int)(p - token * items_per_token);
        const int h = in_token / items_per_head, i0 = (in_token - h * items_per_head) * P::size;
        const int t = (int)(token % T);
        const size_t off = (token * n_heads + h) * (size_t)(2 * half) + i0;
        const float* c = cos + (size_t)t * half + i0;
        const float* s = sin + (size_t)t * half + i0;
        const F c_lo = load128(c), c_hi = load128(c + F::size), s_lo = load128(s), s_hi = load128(s + F::size);
        const P x1 = load128(inp + off), x2 = load128(inp + off + half);
        P old1, old2;  // dinp's values, read only when accumulating
        if constexpr (M == RopeMode::kBackwardAccumulate) old1 = load128(out + off), old2 = load128(out + off + half);
        P y1, y2;
#pragma unroll
        for (int k = 0; k < P::size; k++) {
            const float ck = k < F::size ? c_lo.v[k] : c_hi.v[k - F::size];
            const float sk = k < F::size ? s_lo.v[k] : s_hi.v[k - F::size];
            float a, b;
            rotate_pair<M>(a, b, __bfloat162float(x1.v[k]), __bfloat162float(x2.v[k]), ck, sk);
            if constexpr (M == RopeMode::kBackwardAccumulate) a += __bfloat162float(old1.v[k]), b += __bfloat162float(old2.v[k]);
            y1.v[k] = __float2bfloat16(a);
            y2.v[k] = __float2bfloat16(b);
        }
        store128(out + off, y1);
        store128(out + off + half, y2);
    }
}

// the scalar fallback (version 1's mapping): one pair per thread, any even head_dim, any alignment
template <RopeMode M>
__global__ void rope_kernel_scalar(bf16* out, const bf16* inp, const float* cos, const float* sin, int T,
                                   int n_heads, int half, size_t n_pairs) {
    const size_t pairs_per_token = (size_t)n_heads * half;
    for (size_t p = blockIdx.x * (size_t)blockDim.x + threadIdx.x; p < n_pairs; p += (size_t)gridDim.x * blockDim.x) {
        const size_t token = p / pairs_per_token;
        const int in_token = (int)(p - token * pairs_per_token);
        const int h = in_token / half, i = in_token - h * half;
        const int t = (int)(token % T);
        const size_t off = (token * n_heads + h) * (size_t)(2 * half) + i;
        const size_t at = (size_t)t * half + i;
        float a, b;
        rotate_pair<M>(a, b, __bfloat162float(inp[off]), __bfloat162float(inp[off + half]), cos[at], sin[at]);
        if constexpr (M == RopeMode::kBackwardAccumulate) a += __bfloat162float(out[off]), b += __bfloat162float(out[off + half]);
        out[off] = __float2bfloat16(a);
        out[off + half] = __float2bfloat16(b);
    }
}

template <RopeMode M>
void launch_rope(const char* op, bf16* out, const bf16* inp, const float* cos, const float* sin, int B, int T,
                 int n_heads, int head_dim, cudaStream_t stream) {
    LLMQ_CHECK(B > 0 && T > 0 && n_heads > 0, "%s: B %d, T %d, n_heads %d must all be positive", op, B, T, n_heads);
    LLMQ_CHECK(head_dim >= 2 && head_dim <= kRopeMaxHeadDim && head_dim % 2 == 0,
               "%s: head_dim %d not supported (it must be even, 2..%d)", op, head_dim, kRopeMaxHeadDim);
    LLMQ_CHECK(out && inp && cos && sin, "%s: null pointer (out %p, inp %p, cos %p, sin %p)", op, (void*)out,
               (const void*)inp, (const void*)cos, (const void*)sin);
    const int half = head_dim / 2;
    const size_t n_pairs = (size_t)B * T * n_heads * half;
    // Exactly in place is safe (each thread reads its pairs before writing them); any other overlap is a race
    // between threads, and the accumulating backward cannot run in place at all (it adds dout to dinp).
    const uintptr_t o = reinterpret_cast<uintptr_t>(out), i = reinterpret_cast<uintptr_t>(inp),
                    bytes = 2 * n_pairs * sizeof(bf16);
    const bool disjoint = o + bytes <= i || i + bytes <= o;
    if constexpr (M == RopeMode::kBackwardAccumulate) {
        LLMQ_CHECK(disjoint, "%s: dinp %p overlaps dout %p (the accumulating backward cannot run in place; "
                   "rope_backward_overwrite_cuda can)", op, (void*)out, (const void*)inp);
    } else {
        LLMQ_CHECK(disjoint || o == i, "%s: out %p partly overlaps inp %p (only exactly in place is allowed)", op,
                   (void*)out, (const void*)inp);
    }
    if (half % Packed128<bf16>::size == 0 && aligned16(out, inp, cos, sin)) {
        const size_t items = n_pairs / Packed128<bf16>::size;
        rope_kernel_vec<M><<<grid_stride_blocks(items, kBlock), kBlock, 0, stream>>>(out, inp, cos, sin, T, n_heads,
                                                                                     half, items);
    } else {
        rope_kernel_scalar<M><<<grid_stride_blocks(n_pairs, kBlock), kBlock, 0, stream>>>(out, inp, cos, sin, T,
                                                                                          n_heads, half, n_pairs);
    }
    CUDA_CHECK_LAUNCH();
}

}  // namespace

void rope_forward_cuda(bf16* out, const bf16* inp, const float* cos, const float* sin, int B, int T, int n_heads,
                       int head_dim, cudaStream_t stream) {
    launch_rope<RopeMode::kForward>("rope_forward_cuda", out, inp, cos, sin, B, T, n_heads, head_dim, stream);
}

void rope_backward_cuda(bf16* dinp, const bf16* dout, const float* cos, const float* sin, int B, int T, int n_heads,
                        int head_dim, cudaStream_t stream) {
    launch_rope<RopeMode::kBackwardAccumulate>("rope_backward_cuda", dinp, dout, cos, sin, B, T, n_heads, head_dim,
                                               stream);
}

void rope_backward_overwrite_cuda(bf16* dinp, const bf16* dout, const float* cos, const float* sin, int B, int T,
                                  int n_heads, int head_dim, cudaStream_t stream) {
    launch_rope<RopeMode::kBackwardOverwrite>("rope_backward_overwrite_cuda", dinp, dout, cos, sin, B, T, n_heads,
                                              head_dim, stream);
}

}  // namespace llmq
