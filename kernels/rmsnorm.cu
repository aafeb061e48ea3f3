// rmsnorm.cu: LLaMA's RMSNorm on the GPU, y = x * rstd * w with rstd = 1/sqrt(mean(x^2) + eps) per row of C
// channels, fused with the skip connection before it (residual_out = residual_in + branch, then the norm of
// it), and the backward (dinp +=, dweight +=). The math is rmsnorm_cpu.cpp's and residual_cpu.cpp's, in fp32.
//
// Memory-bound: a few flops per element against 2 bytes per element per stream. Bytes per call, N*C = n:
//   rmsnorm forward            4n (inp read, out written)
//   residual + rmsnorm fused   8n (residual_in, branch read; residual_out, norm_out written); done as a
//                              separate add and norm it would be 12n (the sum written, then read back)
//   backward                   8n (dout, inp, dinp read, dinp written) + 2 * 4 * C * blocks of fp32 partials
// So every kernel reads each element once, with 128-bit accesses, and keeps the row in registers between
// the row's sum (the statistic every output depends on) and the outputs.
//
// Mapping: a row team of T = 32 * ceil(C / (8 * 32 * 4)) threads per row (one warp up to C = 1024, eight
// warps at C = 8192), each thread holding up to 4 packs of 8 bf16 (pack p of the row goes to thread p % T);
// blocks of T x (256 / T) threads, one row per team. Row sums: warp shuffles, then the team's warps added in
// order through shared memory (cuda_reduce.h). All orders are fixed: outputs are bitwise reproducible.
// dweight: each block takes a fixed range of rows (ceil(N / 512) of them, so the block count and the scratch
// depend on N and C only), its teams accumulate their channels over their rows in shared memory, the
// teams' sums are added in team order into the block's row of scratch, and rmsnorm_dweight_reduce_kernel adds
// the blocks' rows in block order into dweight. No atomics anywhere.
//
// dev/rmsnorm.cu has the versions and the benchmark; test/test_rmsnorm_cuda.cu the checks.
#include "rmsnorm_cuda.h"

#include <algorithm>

#include "cuda_reduce.h"

namespace llmq {

namespace {

using P = Packed128<bf16>;  // 8 bf16, one 128-bit access
constexpr int kPacksPerThread = 4;
constexpr int kBlockThreads = 256;    // threads per block, all its teams together
constexpr int kBackwardBlocks = 512;  // the backward's blocks of rows (fewer when N < 512): the scratch rows
static_assert(rmsnorm_cuda_max_channels == (kBlockThreads / 32) * 32 * kPacksPerThread * P::size,
              "the widest row must fit one block: 8 warps, 4 packs of 8 a thread");

// (threads per row team, teams per block) for rows of C channels
dim3 row_team_block(int C) {
    const int threads = 32 * ceil_div(C / P::size, 32 * kPacksPerThread);
    return dim3(threads, std::max(1, kBlockThreads / threads));
}
int backward_rows_per_block(int N) { return ceil_div(N, kBackwardBlocks); }

// Forward, plain (kFused false: inp -> out) or after the skip connection (kFused true: residual_out =
// inp + branch, rounded, then its norm into out). No __restrict__: out may alias inp and residual_out may
// alias inp; each element is read and then written by one thread only, so aliasing is safe.
template <bool kFused>
__global__ void __launch_bounds__(kBlockThreads)
    rmsnorm_forward_kernel(bf16* residual_out, bf16* out, float* rstd, const bf16* inp, const bf16* branch,
                           const bf16* weight, int N, int C, float eps) {
    __shared__ float team_buf[kBlockThreads / 32];
    const int row = blockIdx.x * blockDim.y + threadIdx.y, packs = C / P::size;
    const bool active = row < N;  // a team past the last row still takes part in team_sum's barriers
    const size_t row_start = (size_t)row * C;

    // Every load comes before every store: the pointers may alias, so the compiler could not move a load
    // above an earlier store, and one thread's 4..12 loads must be in flight together to use the bandwidth.
    P x[kPacksPerThread], b[kPacksPerThread], w[kPacksPerThread];
#pragma unroll
    for (int k = 0; k < kPacksPerThread; k++) {
        const int p = threadIdx.x + k * blockDim.x;
        if (!active || p >= packs) continue;
        x[k] = load128(inp + row_start + (size_t)p * P::size);
        if constexpr (kFused) b[k] = load128(branch + row_start + (size_t)p * P::size);
        w[k] = load128(weight + (size_t)p * P::size);
    }
    float sum_sq = 0.0f;
#pragma unroll
    for (int k = 0; k < kPacksPerThread; k++) {
        const int p = threadIdx.x + k * blockDim.x;
        if (!active || p >= packs) continue;
        if constexpr (kFused) {
#pragma unroll
            for (int j = 0; j < P::size; j++)
                x[k].v[j] = __float2bfloat16(__bfloat162float(x[k].v[j]) + __bfloat162float(b[k].v[j]));
            store128(residual_out + row_start + (size_t)p * P::size, x[k]);  // the norm below reads these values
        }
#pragma unroll
        for (int j = 0; j < P::size; j++) {
            const float v = __bfloat162float(x[k].v[j]);
            sum_sq += v * v;
        }
    }
    sum_sq = team_sum(sum_sq, team_buf);
    if (!active) return;  // no barrier after this point
    const float r = 1.0f / sqrtf(sum_sq / C + eps);
    if (threadIdx.x == 0) rstd[row] = r;
#pragma unroll
    for (int k = 0; k < kPacksPerThread; k++) {
        const int p = threadIdx.x + k * blockDim.x;
        if (p >= packs) continue;
        P y;
#pragma unroll
        for (int j = 0; j < P::size; j++)
            y.v[j] = __float2bfloat16(__bfloat162float(x[k].v[j]) * r * __bfloat162float(w[k].v[j]));
        store128(out + row_start + (size_t)p * P::size, y);
    }
}

// Backward, rows [blockIdx.x * rows_per_block, + rows_per_block) of this block, team t taking rows t, t + R, ...
// of them (R = blockDim.y). partials (gridDim.x, C): this block's sum of dout * inp * rstd over its rows.
// Dynamic shared memory, R * C floats: each team's running dweight sums over its rows, every thread updating
// only its own channels (so no barrier until the end), then added in team order. __restrict__ (the launcher
// refuses dinp aliasing dout or inp) lets the compiler issue a row's loads together. (In registers the sums
// took the kernel to 172 registers a thread on sm_90, one block per SM; this way it is 128, two blocks.)
__global__ void __launch_bounds__(kBlockThreads)
    rmsnorm_backward_kernel(bf16* __restrict__ dinp, float* __restrict__ partials, const bf16* __restrict__ dout,
                            const bf16* __restrict__ inp, const bf16* __restrict__ weight,
                            const float* __restrict__ rstd, int N, int C, int rows_per_block) {
    using F4 = Packed128<float>;
    extern __shared__ __align__(16) float team_dweight[];
    __shared__ float team_buf[kBlockThreads / 32];
    const int packs = C / P::size, teams = blockDim.y;
    const int begin = blockIdx.x * rows_per_block, end = min(N, begin + rows_per_block);
    float* my_dweight = team_dweight + threadIdx.y * C;

    for (int p = threadIdx.x; p < packs; p += blockDim.x) {
        const F4 zero = {};
        store128(my_dweight + p * P::size, zero);
        store128(my_dweight + p * P::size + F4::size, zero);
    }
    // the trip count is the same for every team of the block: all of them reach team_sum's barriers
    for (int base = begin; base < end; base += teams) {
        const int row = base + threadIdx.y;
        const bool active = row < end;
        const size_t row_start = (size_t)row * C;
        P dy[kPacksPerThread], x[kPacksPerThread];
        float dot = 0.0f;  // sum_j dout_j w_j x_j
#pragma unroll
        for (int k = 0; k < kPacksPerThread; k++) {
            const int p = threadIdx.x + k * blockDim.x;
            if (!active || p >= packs) continue;
            dy[k] = load128(dout + row_start + (size_t)p * P::size);
            x[k] = load128(inp + row_start + (size_t)p * P::size);
            const P w = load128(weight + (size_t)p * P::size);
#pragma unroll
            for (int j = 0; j < P::size; j++)
                dot += __bfloat162float(dy[k].v[j]) * __bfloat162float(w.v[j]) * __bfloat162float(x[k].v[j]);
        }
        dot = team_sum(dot, team_buf);
        if (!active) continue;  // (its next iteration is inactive too, and still calls team_sum)
        const float r = rstd[row], coef = r * r * r * dot / C;
        P dx[kPacksPerThread];  // the row's dinp loads all issued before its first store
#pragma unroll
        for (int k = 0; k < kPacksPerThread; k++) {
            const int p = threadIdx.x + k * blockDim.x;
            if (p < packs) dx[k] = load128(dinp + row_start + (size_t)p * P::size);
        }
#pragma unroll
        for (int k = 0; k < kPacksPerThread; k++) {
            const int p = threadIdx.x + k * blockDim.x;
            if (p >= packs) continue;
            float* dw_at = my_dweight + p * P::size;
            const P w = load128(weight + (size_t)p * P::size);  // (an L1 hit: read in the first loop)
            F4 dw[2] = {load128(dw_at), load128(dw_at + F4::size)};
#pragma unroll
            for (int j = 0; j < P::size; j++) {
                const float d = __bfloat162float(dy[k].v[j]), xj = __bfloat162float(x[k].v[j]);
                dx[k].v[j] = __float2bfloat16(__bfloat162float(dx[k].v[j]) +
                                              (r * d * __bfloat162float(w.v[j]) - coef * xj));
                dw[j / F4::size].v[j % F4::size] += d * xj * r;
            }
            store128(dinp + row_start + (size_t)p * P::size, dx[k]);
            store128(dw_at, dw[0]);
            store128(dw_at + F4::size, dw[1]);
        }
    }
    __syncthreads();
    for (int c = threadIdx.y * blockDim.x + threadIdx.x; c < C; c += blockDim.x * teams) {
        float sum = 0.0f;
        for (int t = 0; t < teams; t++) sum += team_dweight[t * C + c];
        partials[(size_t)blockIdx.x * C + c] = sum;
    }
}

// dweight (C) += sum over b of partials (n_parts, C), in a fixed order: 32 channels per block, its
// kReduceRows rows of threads each summing every kReduceRows-th partial in order, then row 0 adding
// the rows' sums in row order.
constexpr int kReduceRows = 16;
__global__ void rmsnorm_dweight_reduce_kernel(float* dweight, const float* partials, int n_parts, int C) {
    __shared__ float row_sums[kReduceRows][32];
    const int c = blockIdx.x * 32 + threadIdx.x;
    float sum = 0.0f;
    if (c < C)
        for (int b = threadIdx.y; b < n_parts; b += kReduceRows) sum += partials[(size_t)b * C + c];
    row_sums[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y != 0 || c >= C) return;
    float total = 0.0f;
    for (int t = 0; t < kReduceRows; t++) total += row_sums[t][threadIdx.x];
    dweight[c] += total;
}

void check_rows(const char* op, int N, int C) {
    LLMQ_CHECK(N >= 1, "%s: N = %d rows, need at least 1", op, N);
    LLMQ_CHECK(C >= P::size && C % P::size == 0 && C <= rmsnorm_cuda_max_channels,
               "%s: C = %d channels not supported (need a multiple of 8, at most %d)", op, C,
               rmsnorm_cuda_max_channels);
}

template <bool kFused>
void launch_forward(const char* op, bf16* residual_out, bf16* out, float* rstd, const bf16* inp, const bf16* branch,
                    const bf16* weight, int N, int C, float eps, cudaStream_t stream) {
    check_rows(op, N, C);
    LLMQ_CHECK(eps >= 0.0f, "%s: eps = %g must be >= 0", op, eps);
    const dim3 block = row_team_block(C);
    rmsnorm_forward_kernel<kFused><<<ceil_div(N, block.y), block, 0, stream>>>(residual_out, out, rstd, inp, branch,
                                                                               weight, N, C, eps);
    CUDA_CHECK_LAUNCH();
}

}  // namespace

void rmsnorm_forward_cuda(bf16* out, float* rstd, const bf16* inp, const bf16* weight, int N, int C, float eps,
                          cudaStream_t stream) {
    LLMQ_CHECK(aligned16(out, inp, weight), "rmsnorm_forward_cuda: out, inp and weight must be 16-byte aligned");
    launch_forward<false>("rmsnorm_forward_cuda", nullptr, out, rstd, inp, nullptr, weight, N, C, eps, stream);
}

void residual_rmsnorm_forward_cuda(bf16* residual_out, bf16* norm_out, float* rstd, const bf16* residual_in,
                                   const bf16* branch, const bf16* weight, int N, int C, float eps,
                                   cudaStream_t stream) {
    LLMQ_CHECK(aligned16(residual_out, norm_out, residual_in, branch, weight),
               "residual_rmsnorm_forward_cuda: residual_out, norm_out, residual_in, branch and weight must be "
               "16-byte aligned");
    LLMQ_CHECK(norm_out != residual_out, "residual_rmsnorm_forward_cuda: norm_out must not alias residual_out");
    launch_forward<true>("residual_rmsnorm_forward_cuda", residual_out, norm_out, rstd, residual_in, branch, weight,
                         N, C, eps, stream);
}

size_t rmsnorm_backward_scratch_floats(int N, int C) {
    if (N < 1 || C < 1) return 0;
    return (size_t)ceil_div(N, backward_rows_per_block(N)) * C;
}

void rmsnorm_backward_cuda(bf16* dinp, float* dweight, float* scratch, const bf16* dout, const bf16* inp,
                           const bf16* weight, const float* rstd, int N, int C, cudaStream_t stream) {
    const char* op = "rmsnorm_backward_cuda";
    check_rows(op, N, C);
    LLMQ_CHECK(aligned16(dinp, scratch, dout, inp, weight), "%s: dinp, scratch, dout, inp and weight must be 16-byte "
               "aligned", op);
    LLMQ_CHECK(dinp != dout && dinp != inp, "%s: dinp must not alias dout or inp", op);
    const dim3 block = row_team_block(C);
    const int rows_per_block = backward_rows_per_block(N), blocks = ceil_div(N, rows_per_block);
    // the teams' dweight sums: teams * C <= (256 / T) * (32 * T) floats, 32 KiB at most
    const size_t shared = (size_t)block.y * C * sizeof(float);
    rmsnorm_backward_kernel<<<blocks, block, shared, stream>>>(dinp, scratch, dout, inp, weight, rstd, N, C,
                                                               rows_per_block);
    CUDA_CHECK_LAUNCH();
    rmsnorm_dweight_reduce_kernel<<<ceil_div(C, 32), dim3(32, kReduceRows), 0, stream>>>(dweight, scratch, blocks, C);
    CUDA_CHECK_LAUNCH();
}

}  // namespace llmq
