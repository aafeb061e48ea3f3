// embedding.cu: the token embedding lookup on the GPU and the deterministic scatter-add of its gradient,
// with the math (and, for the backward, the exact summation order) of embedding_cpu.cpp.
//
// Both are memory-bound gathers/scatters with no arithmetic to speak of.
//   forward:  out (N,C) = wte[tokens]: N*C bf16 read and written once. A thread copies 8 channels (one 128-bit
//             load and store) of one row; rows of wte repeat for repeated ids and then come from L2.
//   backward: dwte (V,C) fp32 += dout scattered by id: N*C bf16 read, and each distinct id's dwte row read and
//             written once. No atomics: the host groups the batch's rows by id (EmbeddingBackwardPlan, a CSR
//             built from the tokens it already holds), and one warp owns each (id, chunk of 256 channels): its
//             lanes start from dwte's value and add that id's rows one by one in increasing n, so every element
//             is summed in the CPU's order and the result is bitwise the CPU's, run after run. Loads of the
//             next 8 rows are issued before they are added (in order), so a long bucket keeps 8 loads in
//             flight per lane instead of 1; still, a bucket's length is a chain its lanes walk alone (a
//             padding id repeated thousands of times: dev/embedding.cu times such a batch too).
// When C % 8 != 0 or a pointer is not 16-byte aligned, both fall back to one channel per thread/lane.
// dev/embedding.cu has the versions and the benchmark; test/test_embedding_cuda.cu the checks.
#include "embedding_cuda.h"

#include <algorithm>
#include <numeric>
#include <vector>

namespace llmq {

namespace {

// ---- forward ----

// version 2 of dev/embedding.cu: item p = 8 channels of one row; grid-stride over the N*C/8 items
__global__ void embedding_forward_vec(bf16* out, const int* tokens, const bf16* wte, int C, size_t n_items) {
    using P = Packed128<bf16>;
    const int items_per_row = C / P::size;
    for (size_t p = blockIdx.x * (size_t)blockDim.x + threadIdx.x; p < n_items; p += (size_t)gridDim.x * blockDim.x) {
        const size_t n = p / items_per_row;
        const int c = (int)(p - n * items_per_row) * P::size;
        store128(out + p * P::size, load128(wte + (size_t)tokens[n] * C + c));
    }
}

// the scalar fallback: one element per thread, any C, any alignment
__global__ void embedding_forward_scalar(bf16* out, const int* tokens, const bf16* wte, int C, size_t n_elems) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n_elems; i += (size_t)gridDim.x * blockDim.x) {
        const size_t n = i / C;
        out[i] = wte[(size_t)tokens[n] * C + (i - n * C)];
    }
}

// ---- backward ----

// VEC consecutive channels of one lane: 8 (128-bit accesses) on the fast path, 1 in the fallback
template <int VEC>
struct LaneChannels {
    static_assert(VEC == 1 || VEC == Packed128<bf16>::size, "8 channels (128-bit) or 1");
    bf16 v[VEC];
    __device__ void load(const bf16* p) {
        if constexpr (VEC == 1) {
            v[0] = *p;
        } else {
            const Packed128<bf16> x = load128(p);
#pragma unroll
            for (int k = 0; k < VEC; k++) v[k] = x.v[k];
        }
    }
};
template <int VEC>
__device__ inline void load_floats(float (&acc)[VEC], const float* p) {
    if constexpr (VEC == 1) {
        acc[0] = *p;
    } else {
#pragma unroll
        for (int h = 0; h < VEC; h += Packed128<float>::size) {
            const Packed128<float> x = load128(p + h);
#pragma unroll
            for (int k = 0; k < Packed128<float>::size; k++) acc[h + k] = x.v[k];
        }
    }
}
template <int VEC>
__device__ inline void store_floats(float* p, const float (&acc)[VEC]) {
    if constexpr (VEC == 1) {
        *p = acc[0];
    } else {
#pragma unroll
        for (int h = 0; h < VEC; h += Packed128<float>::size) {
            Packed128<float> x;
#pragma unroll
            for (int k = 0; k < Packed128<float>::size; k++) x.v[k] = acc[h + k];
            store128(p + h, x);
        }
    }
}

constexpr int kWarpsPerBlock = 4;
constexpr int kRowsInFlight = 8;  // rows of a bucket loaded before they are added

// One warp per work item (bucket b, chunk of 32*VEC channels), items bucket-major so that the largest buckets
// (first in the plan) are scheduled first. Lane l owns channels c .. c+VEC-1 of dwte's row bucket_ids[b].
// The launch bounds (half occupancy, up to 64 registers) are what make ptxas keep the 8 rows' loads in flight
// together: at full occupancy it fits 32 registers by waiting on each load before issuing the next.
template <int VEC>
__global__ void __launch_bounds__(kWarpsPerBlock * 32, 8) embedding_backward_kernel(float* dwte, const bf16* dout, const int* bucket_ids,
                                          const int* bucket_start, const int* positions, int n_buckets, int C) {
    const int chunks = ceil_div(C, 32 * VEC);
    const long long item = (long long)blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
    if (item >= (long long)n_buckets * chunks) return;
    const int b = (int)(item / chunks);
    const int c = (int)(item - (long long)b * chunks) * 32 * VEC + (threadIdx.x % 32) * VEC;
    if (c >= C) return;  // the last chunk's spare lanes (C % VEC == 0, so c < C means all VEC channels exist)
    float* dst = dwte + (size_t)bucket_ids[b] * C + c;
    const bf16* src = dout + c;
    float acc[VEC];
    load_floats<VEC>(acc, dst);  // start from dwte: ((dwte + d[n0]) + d[n1]) + ..., the CPU's order
    const int end = bucket_start[b + 1];
    int k = bucket_start[b];
    for (; k + kRowsInFlight <= end; k += kRowsInFlight) {
        LaneChannels<VEC> rows[kRowsInFlight];
#pragma unroll
        for (int r = 0; r < kRowsInFlight; r++) rows[r].load(src + (size_t)positions[k + r] * C);
#pragma unroll
        for (int r = 0; r < kRowsInFlight; r++)
#pragma unroll
            for (int j = 0; j < VEC; j++) acc[j] += __bfloat162float(rows[r].v[j]);
    }
    for (; k < end; k++) {
        LaneChannels<VEC> row;
        row.load(src + (size_t)positions[k] * C);
#pragma unroll
        for (int j = 0; j < VEC; j++) acc[j] += __bfloat162float(row.v[j]);
    }
    store_floats<VEC>(dst, acc);
}

constexpr int kBlock = 256;

}  // namespace

void embedding_forward_cuda(bf16* out, const int* tokens, const bf16* wte, int N, int C, cudaStream_t stream) {
    LLMQ_CHECK(N > 0 && C > 0, "embedding_forward_cuda: N %d and C %d must be positive", N, C);
    LLMQ_CHECK(out && tokens && wte, "embedding_forward_cuda: null pointer (out %p, tokens %p, wte %p)", (void*)out,
               (const void*)tokens, (const void*)wte);
    const size_t n_elems = (size_t)N * C;
    if (C % Packed128<bf16>::size == 0 && aligned16(out, wte)) {
        const size_t items = n_elems / Packed128<bf16>::size;
        embedding_forward_vec<<<grid_stride_blocks(items, kBlock), kBlock, 0, stream>>>(out, tokens, wte, C, items);
    } else {
        embedding_forward_scalar<<<grid_stride_blocks(n_elems, kBlock), kBlock, 0, stream>>>(out, tokens, wte, C,
                                                                                           n_elems);
    }
    CUDA_CHECK_LAUNCH();
}

void EmbeddingBackwardPlan::build(const int* tokens_host, int N_, int V_) {
    LLMQ_CHECK(N_ > 0 && V_ > 0, "embedding backward plan: N %d and V %d must be positive", N_, V_);
    LLMQ_CHECK(tokens_host, "embedding backward plan: tokens_host is null");
    std::vector<int> count(V_, 0);  // rows per id; later each id's next free slot in positions
    for (int n = 0; n < N_; n++) {
        const int id = tokens_host[n];
        LLMQ_CHECK(id >= 0 && id < V_, "embedding backward plan: token %d at position %d is outside the vocabulary [0, %d)",
                   id, n, V_);
        count[id]++;
    }
    std::vector<int> ids;  // the distinct ids, largest bucket first, ties by id (a fixed order)
    for (int id = 0; id < V_; id++)
        if (count[id]) ids.push_back(id);
    std::stable_sort(ids.begin(), ids.end(), [&](int a, int b) { return count[a] > count[b]; });
    std::vector<int> start(N_ + 1, N_), pos(N_);
    int at = 0;
    for (size_t b = 0; b < ids.size(); b++) {
        start[b] = at;
        at += count[ids[b]];
        count[ids[b]] = start[b];  // now the cursor of the id's bucket
    }
    for (int n = 0; n < N_; n++) pos[count[tokens_host[n]]++] = n;  // n increasing: each bucket sorted
    N = N_, V = V_, n_buckets = (int)ids.size();
    max_bucket = n_buckets ? start[1] - start[0] : 0;
    ids.resize(N_, 0);  // fixed sizes: the device buffers are allocated once per N
    bucket_ids.upload(ids);
    bucket_start.upload(start);
    positions.upload(pos);
}

void embedding_backward_cuda(float* dwte, const bf16* dout, const EmbeddingBackwardPlan& plan, int C,
                             cudaStream_t stream) {
    LLMQ_CHECK(plan.N > 0 && plan.n_buckets > 0, "embedding_backward_cuda: the plan was not built");
    LLMQ_CHECK(C > 0, "embedding_backward_cuda: C %d must be positive", C);
    LLMQ_CHECK(dwte && dout, "embedding_backward_cuda: null pointer (dwte %p, dout %p)", (void*)dwte,
               (const void*)dout);
    const int threads = kWarpsPerBlock * 32;
    auto launch = [&](auto vec) {
        constexpr int VEC = decltype(vec)::value;
        const long long items = (long long)plan.n_buckets * ceil_div(C, 32 * VEC);
        const long long blocks = (items + kWarpsPerBlock - 1) / kWarpsPerBlock;
        LLMQ_CHECK(blocks < (1ll << 31), "embedding_backward_cuda: %lld blocks exceed the grid (C %d, %d ids)", blocks,
                   C, plan.n_buckets);
        embedding_backward_kernel<VEC><<<(unsigned)blocks, threads, 0, stream>>>(
            dwte, dout, plan.bucket_ids.data(), plan.bucket_start.data(), plan.positions.data(), plan.n_buckets, C);
    };
    if (C % Packed128<bf16>::size == 0 && aligned16(dwte, dout))
        launch(std::integral_constant<int, Packed128<bf16>::size>{});
    else
        launch(std::integral_constant<int, 1>{});
    CUDA_CHECK_LAUNCH();
}

}  // namespace llmq
