// crossentropy.cu: the fused classifier on the GPU. Per row of bf16 logits: loss = logsumexp - logit[target]
// (fp32) and, in place or out of place, dlogits = grad_scale * (softmax - onehot) (bf16), so the fp32
// probabilities of an (N,V) chunk are never stored.
//
// Shape: memory-bound. Each element is read twice (pass 1 online softmax, pass 2 gradient; a row is at most
// 128256 * 2 B = 250 KiB, so pass 2 mostly re-reads it from L2) and written once, with ~2 exps per element:
// far below the SFU and FMA rates. One block per row keeps the row's reduction inside the block (no
// atomics, one owner per output: deterministic) and lets pass 2 start right after one barrier.
//   pass 1: each thread folds its elements into a running (max, sum of exp(x - max)) pair, 8 bf16 per 128-bit
//           load; the block combines the pairs in a fixed tree order (warp shuffles, then warp 0).
//   pass 2: each thread rewrites the packs it read in pass 1 (reads before writes, per element, same thread),
//           so dlogits may alias logits.
// A row of odd V starts anywhere relative to a 16-byte boundary: its first elements up to the boundary
// and its last ones past the final full pack are done one at a time (RowSplit).
// dev/crossentropy.cu has the versions and the benchmark; test/test_crossentropy_cuda.cu the checks.
#include "crossentropy_cuda.h"

#include <math_constants.h>

#include <cmath>

namespace llmq {

namespace {

constexpr int kBlock = 512;
constexpr int kWarps = kBlock / 32;
using Pack = Packed128<bf16>;

// The online-softmax state of a set of elements: their max and the sum of exp(x - max).
// The empty set is {-inf, 0}.
struct MaxSum {
    float max, sum;
};

// The state of the union of two sets. The side holding the larger max keeps its sum exactly (factor 1), which
// also keeps {-inf, 0} + {-inf, 0} = {-inf, 0} (no exp(-inf - -inf) = NaN). Commutative, bit for bit.
__device__ inline MaxSum combine(MaxSum a, MaxSum b) {
    const float m = fmaxf(a.max, b.max);
    const float sa = a.max == m ? a.sum : a.sum * __expf(a.max - m);
    const float sb = b.max == m ? b.sum : b.sum * __expf(b.max - m);
    return {m, sa + sb};
}

__device__ inline MaxSum warp_combine(MaxSum s) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1)
        s = combine(s, {__shfl_down_sync(0xffffffffu, s.max, offset), __shfl_down_sync(0xffffffffu, s.sum, offset)});
    return s;  // lane 0 holds the warp's state
}

// The whole block's state, returned to every thread; one call per kernel (its shared memory is not reused).
// Also the barrier after which the row may be overwritten: every thread has finished pass 1 when it returns.
__device__ inline MaxSum block_combine(MaxSum s) {
    __shared__ MaxSum per_warp[kWarps];
    __shared__ MaxSum total;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    s = warp_combine(s);
    if (lane == 0) per_warp[warp] = s;
    __syncthreads();
    if (warp == 0) {
        s = warp_combine(lane < kWarps ? per_warp[lane] : MaxSum{-CUDART_INF_F, 0.0f});
        if (lane == 0) total = s;
    }
    __syncthreads();
    return total;
}

// A row's elements [0, head) and [head + 8 * packs, V) are done one at a time, the packs between by 128-bit
// accesses. The split depends on the row's address only: the launcher guarantees that the dlogits row sits at
// the same offset from a 16-byte boundary as the logits row, or asks for no packs at all.
struct RowSplit {
    int head, packs;
};

__device__ inline RowSplit row_split(const bf16* row, int V, bool vectorized) {
    if (!vectorized) return {V, 0};
    const int misalign = (int)((reinterpret_cast<uintptr_t>(row) / sizeof(bf16)) % Pack::size);
    const int head = min(V, (Pack::size - misalign) % Pack::size);
    return {head, (V - head) / Pack::size};
}

// scalar(j) for the single elements, pack(j) for the packs starting at element j; threads stride the block
template <typename Scalar, typename PackFn>
__device__ inline void for_each_in_row(const RowSplit& split, int V, Scalar&& scalar, PackFn&& pack) {
    for (int j = threadIdx.x; j < split.head; j += kBlock) scalar(j);
    for (int p = threadIdx.x; p < split.packs; p += kBlock) pack(split.head + p * Pack::size);
    for (int j = split.head + split.packs * Pack::size + threadIdx.x; j < V; j += kBlock) scalar(j);
}

// version 2 of dev/crossentropy.cu. Grid: one block of kBlock threads per row.
__global__ void __launch_bounds__(kBlock)
    crossentropy_kernel(float* losses, bf16* dlogits, const bf16* logits, const int* targets, int V,
                        int ignore_index, float grad_scale, bool vectorized) {
    const int row = blockIdx.x, target = targets[row];
    const bf16* x = logits + (size_t)row * V;
    bf16* dx = dlogits ? dlogits + (size_t)row * V : nullptr;
    const RowSplit split = row_split(x, V, vectorized);

    if (target == ignore_index) {  // the whole block takes this branch: no barrier is skipped by some threads only
        if (threadIdx.x == 0) losses[row] = 0.0f;
        if (!dx) return;
        Pack zeros;
#pragma unroll
        for (int k = 0; k < Pack::size; k++) zeros.v[k] = __float2bfloat16(0.0f);
        for_each_in_row(split, V, [&](int j) { dx[j] = zeros.v[0]; }, [&](int j) { store128(dx + j, zeros); });
        return;
    }
    const bool valid = target >= 0 && target < V;
    // read before block_combine's barrier, hence before any thread of the block overwrites the row
    const float target_logit = threadIdx.x == 0 && valid ? __bfloat162float(x[target]) : 0.0f;

    // pass 1: the online softmax state of this thread's elements
    MaxSum state{-CUDART_INF_F, 0.0f};
    for_each_in_row(
        split, V, [&](int j) { state = combine(state, {__bfloat162float(x[j]), 1.0f}); },
        [&](int j) {
            const Pack in = load128(x + j);
            float v[Pack::size], pack_max = -CUDART_INF_F;
#pragma unroll
            for (int k = 0; k < Pack::size; k++) v[k] = __bfloat162float(in.v[k]), pack_max = fmaxf(pack_max, v[k]);
            const float m = fmaxf(state.max, pack_max);
            float sum = state.max == m ? state.sum : state.sum * __expf(state.max - m);
#pragma unroll
            for (int k = 0; k < Pack::size; k++) sum += __expf(v[k] - m);
            state = {m, sum};
        });
    const MaxSum row_state = block_combine(state);
    const float lse = row_state.max + logf(row_state.sum);
    if (threadIdx.x == 0) losses[row] = valid ? lse - target_logit : CUDART_NAN_F;
    if (!dx) return;

    // pass 2: dlogits = scale * (exp(x - lse) - onehot); a NaN scale poisons the row of an invalid target
    const float scale = valid ? grad_scale : CUDART_NAN_F;
    auto grad = [&](float xj, int j) {
        return __float2bfloat16(scale * __expf(xj - lse) - (j == target ? scale : 0.0f));
    };
    for_each_in_row(
        split, V, [&](int j) { dx[j] = grad(__bfloat162float(x[j]), j); },
        [&](int j) {
            const Pack in = load128(x + j);
            Pack out;
#pragma unroll
            for (int k = 0; k < Pack::size; k++) out.v[k] = grad(__bfloat162float(in.v[k]), j + k);
            store128(dx + j, out);
        });
}

}  // namespace

void crossentropy_forward_backward_cuda(float* losses, bf16* dlogits, const bf16* logits, const int* targets, int N,
                                        int V, int ignore_index, float grad_scale, cudaStream_t stream) {
    // losses (N) fp32, dlogits (N,V) bf16 or null, logits (N,V) bf16, targets (N) int
    LLMQ_CHECK(N >= 0, "crossentropy_cuda: N %d must not be negative", N);
    LLMQ_CHECK(V > 0, "crossentropy_cuda: V %d must be positive", V);
    if (N == 0) return;
    LLMQ_CHECK(losses && logits && targets, "crossentropy_cuda: losses, logits and targets must not be null");
    LLMQ_CHECK(std::isfinite(grad_scale), "crossentropy_cuda: grad_scale %g is not finite", grad_scale);
    // Rows of the two buffers start at the same byte offsets from their bases, so 128-bit accesses fit both when
    // the bases agree modulo 16 (in place, or two cudaMalloc'd buffers); otherwise every element is done alone.
    const bool vectorized =
        !dlogits || reinterpret_cast<uintptr_t>(dlogits) % 16 == reinterpret_cast<uintptr_t>(logits) % 16;
    crossentropy_kernel<<<N, kBlock, 0, stream>>>(losses, dlogits, logits, targets, V, ignore_index, grad_scale,
                                                  vectorized);
    CUDA_CHECK_LAUNCH();
}

}  // namespace llmq
