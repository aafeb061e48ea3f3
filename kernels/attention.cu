// attention.cu: causal grouped-query attention on the GPU, flash-attention 2 style, forward and backward
// (the math is attention_cpu.cpp's; the launchers are declared in attention_cuda.h).
//
// Why it is shaped this way. Per (b, query head) the forward does 4 T^2/2 hd flops (QK^T and PV, causal
// half) on 4 T hd bf16 of traffic (q, k, v, out), so for T beyond a few hundred it is compute-bound, and
// the (T,T) probabilities are never written anywhere: each block keeps a 64-query tile of Q in shared
// memory, streams 64-key tiles of K and V past it and folds each into fp32 running sums with the online
// softmax (running max m, running sum l, rescaled output). Key tiles entirely above the diagonal are
// skipped. This is version 2 of dev/attention.cu (fp32 FMAs on CUDA cores); tensor cores are the planned
// version 3 (see that file's header). Test: test/test_attention_cuda.cu.
//
// One block = 256 threads seen as 16 x 16 (ty, tx). In every (64,64) score tile the thread owns rows
// ty + 16 r and columns tx + 16 c (r, c < 4): its 16 scores cost 4 + 4 float4 shared loads per 4 steps of
// the dot product (tile_dot). In every (64,hd) accumulator it owns the same 4 rows and hd/16 columns
// (tile_accumulate), so the row statistics of the softmax live in the 16 lanes of one half-warp and are
// combined with xor shuffles. The probability tile goes through shared memory, but each half-warp reads
// back only the rows it wrote, so a __syncwarp orders it.
//
// Backward (no atomics, deterministic): a preprocessing kernel writes D = rowsum(dout * out) (fp32, one warp
// per row) into the scratch buffer; then
//   dkdv: one block per (64-key tile, kv head, b) owns those dk, dv rows outright. It loops over the query
//         heads of its group and, for each, over the query tiles at or below the diagonal, recomputing
//         P^T = exp(K Q^T scale - lse) and dS^T = P^T (V dO^T - D), and accumulates dV += P^T dO and
//         dK += dS^T Q in registers, in a fixed order.
//   dq:   one block per (64-query tile, query head, b) owns its dq rows; it loops over key tiles at or
//         left of the diagonal and accumulates dQ += dS K.
// Each kernel recomputes what it needs (the price of no atomics: QK^T and dO V^T are computed twice).
//
// Shared memory: (64, hd+4) fp32 tiles (the +4 keeps rows 16-byte aligned and puts consecutive rows one
// bank group apart, so the float4 reads of tile_dot are conflict-free) and a (64,80) probability tile (two
// rows written by one warp land 16 banks apart). Forward 3 tiles + P (119 KiB at hd 128), backward 4 tiles
// + P (152 KiB at hd 128): dynamic shared memory, opted in with cudaFuncSetAttribute.
#include "attention_cuda.h"

#include <cmath>

namespace llmq {

namespace {

constexpr int kTile = 64;                 // queries per query tile, keys per key tile
constexpr int kThreads = 256;             // 16 x 16 threads: (ty, tx) = (threadIdx.x / 16, threadIdx.x % 16)
constexpr int kPStride = kTile + 16;      // floats per row of the (64,64) probability tile
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <int HD>
__host__ __device__ constexpr int tile_stride() {  // floats per row of a (64,HD) tile in shared memory
    return HD + 4;
}
template <int HD>
__host__ __device__ constexpr int tile_floats() {
    return kTile * tile_stride<HD>();
}
template <int HD>
__host__ __device__ constexpr int vec_dims() {  // contiguous columns a thread owns per group in an accumulator row
    return HD >= 64 ? 4 : 2;
}
template <int HD>
__host__ __device__ constexpr int acc_dims() {  // columns a thread owns in an accumulator row (groups of vec_dims)
    return HD / 16;
}
// column of element (group g, element e) of thread tx's share of an accumulator row: groups of 16 threads
// x vec_dims columns, so a half-warp reads one contiguous 16 * vec_dims run of a row
template <int HD>
__device__ __host__ constexpr int acc_col(int g, int e, int tx) {
    return g * 16 * vec_dims<HD>() + tx * vec_dims<HD>() + e;
}

template <int HD>
constexpr size_t forward_smem_bytes() {  // Q, K, V tiles + P
    return (3 * (size_t)tile_floats<HD>() + kTile * kPStride) * sizeof(float);
}
template <int HD>
constexpr size_t backward_smem_bytes() {  // 4 tiles + P (or dS) + lse and D of the query tile
    return (4 * (size_t)tile_floats<HD>() + kTile * kPStride + 2 * kTile) * sizeof(float);
}

// dst (64, HD+4) fp32 shared <- rows [0, valid_rows) of src bf16 (row r at src + r * src_stride); rows past
// valid_rows become zeros, so the scores of padded rows and keys stay finite (they are masked or unwritten).
template <int HD>
__device__ inline void load_tile(float* dst, const bf16* src, size_t src_stride, int valid_rows) {
    constexpr int kChunks = HD / 8;  // 16-byte chunks per row
    for (int c = threadIdx.x; c < kTile * kChunks; c += kThreads) {
        const int row = c / kChunks, col = (c % kChunks) * 8;
        float f[8];
        if (row < valid_rows) {
            const Packed128<bf16> p = load128(src + row * src_stride + col);
#pragma unroll
            for (int e = 0; e < 8; e++) f[e] = __bfloat162float(p.v[e]);
        } else {
#pragma unroll
            for (int e = 0; e < 8; e++) f[e] = 0.0f;
        }
        float4* d = reinterpret_cast<float4*>(dst + row * tile_stride<HD>() + col);
        d[0] = make_float4(f[0], f[1], f[2], f[3]);
        d[1] = make_float4(f[4], f[5], f[6], f[7]);
    }
}

// lse2_s, D_s (64) <- lse * log2(e) and D of the query tile's rows (zeros past valid_rows)
__device__ inline void load_row_stats(float* lse2_s, float* D_s, const float* lse, const float* D, int valid_rows) {
    for (int i = threadIdx.x; i < kTile; i += kThreads) {
        lse2_s[i] = i < valid_rows ? lse[i] * kLog2e : 0.0f;
        D_s[i] = i < valid_rows ? D[i] : 0.0f;
    }
}

// acc[r][c] = sum_i A[ty + 16 r][i] * B[tx + 16 c][i]: this thread's 16 entries of the (64,64) tile A B^T.
// A's rows are shared by the half-warp (broadcast), B's 16 rows are one bank group apart (conflict-free).
template <int HD>
__device__ inline void tile_dot(float (&acc)[4][4], const float* A, const float* B, int ty, int tx) {
    constexpr int S = tile_stride<HD>();
#pragma unroll
    for (int r = 0; r < 4; r++)
#pragma unroll
        for (int c = 0; c < 4; c++) acc[r][c] = 0.0f;
#pragma unroll 2
    for (int i = 0; i < HD; i += 4) {
        float4 a[4], b[4];
#pragma unroll
        for (int r = 0; r < 4; r++) a[r] = *reinterpret_cast<const float4*>(A + (ty + 16 * r) * S + i);
#pragma unroll
        for (int c = 0; c < 4; c++) b[c] = *reinterpret_cast<const float4*>(B + (tx + 16 * c) * S + i);
#pragma unroll
        for (int r = 0; r < 4; r++)
#pragma unroll
            for (int c = 0; c < 4; c++) {
                float s = acc[r][c];
                s = fmaf(a[r].x, b[c].x, s);
                s = fmaf(a[r].y, b[c].y, s);
                s = fmaf(a[r].z, b[c].z, s);
                s = fmaf(a[r].w, b[c].w, s);
                acc[r][c] = s;
            }
    }
}

// acc[r][d] += sum_j P[ty + 16 r][j] * M[j][acc_col(d)], j < 64: this thread's share of the (64,HD) product
// P M, P the (64,64) tile in shared memory (row stride kPStride), M a (64,HD) tile.
template <int HD>
__device__ inline void tile_accumulate(float (&acc)[4][acc_dims<HD>()], const float* P, const float* M, int ty,
                                       int tx) {
    constexpr int S = tile_stride<HD>(), V = vec_dims<HD>(), G = acc_dims<HD>() / V;
#pragma unroll 2
    for (int j = 0; j < kTile; j += 4) {
        float p[4][4];
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const float4 t = *reinterpret_cast<const float4*>(P + (ty + 16 * r) * kPStride + j);
            p[r][0] = t.x, p[r][1] = t.y, p[r][2] = t.z, p[r][3] = t.w;
        }
#pragma unroll
        for (int jj = 0; jj < 4; jj++) {
            float m[G][V];
#pragma unroll
            for (int g = 0; g < G; g++) {
                const float* src = M + (j + jj) * S + acc_col<HD>(g, 0, tx);
                if constexpr (V == 4) {
                    const float4 t = *reinterpret_cast<const float4*>(src);
                    m[g][0] = t.x, m[g][1] = t.y, m[g][2] = t.z, m[g][3] = t.w;
                } else {
                    const float2 t = *reinterpret_cast<const float2*>(src);
                    m[g][0] = t.x, m[g][1] = t.y;
                }
            }
#pragma unroll
            for (int r = 0; r < 4; r++)
#pragma unroll
                for (int g = 0; g < G; g++)
#pragma unroll
                    for (int e = 0; e < V; e++) acc[r][g * V + e] = fmaf(p[r][jj], m[g][e], acc[r][g * V + e]);
        }
    }
}

// dst[acc_col(d)] = acc[d] * mul as bf16 (this thread's share of one row)
template <int HD>
__device__ inline void store_row_share(bf16* dst, const float (&acc)[acc_dims<HD>()], float mul, int tx) {
    constexpr int V = vec_dims<HD>(), G = acc_dims<HD>() / V;
#pragma unroll
    for (int g = 0; g < G; g++)
#pragma unroll
        for (int e = 0; e < V; e += 2)
            *reinterpret_cast<__nv_bfloat162*>(dst + acc_col<HD>(g, e, tx)) =
                __floats2bfloat162_rn(acc[g * V + e] * mul, acc[g * V + e + 1] * mul);
}

// max / sum over the 16 lanes of a half-warp (every lane gets the same bits: xor butterflies are symmetric)
__device__ inline float half_warp_max(float x) {
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}
__device__ inline float half_warp_sum(float x) {
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// grid (ceil(T/64), B*NH): block = one query tile of one (b, h), the longest (last) tiles scheduled first
template <int HD>
__global__ void __launch_bounds__(kThreads, 2)
    attention_forward_kernel(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, int T, int NH,
                             int NKV, float scale_log2) {
    extern __shared__ float4 smem4[];
    float* Q_s = reinterpret_cast<float*>(smem4);
    float* K_s = Q_s + tile_floats<HD>();
    float* V_s = K_s + tile_floats<HD>();
    float* P_s = V_s + tile_floats<HD>();
    const int qt = gridDim.x - 1 - blockIdx.x, q0 = qt * kTile;
    const int b = blockIdx.y / NH, h = blockIdx.y % NH, kvh = h / (NH / NKV);
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const size_t q_stride = (size_t)NH * HD, kv_stride = (size_t)NKV * HD;
    const bf16* k_head = k + (size_t)b * T * kv_stride + (size_t)kvh * HD;
    const bf16* v_head = v + (size_t)b * T * kv_stride + (size_t)kvh * HD;
    load_tile<HD>(Q_s, q + ((size_t)b * T + q0) * q_stride + (size_t)h * HD, q_stride, min(kTile, T - q0));

    // running max (of scores in log2 units), this thread's part of the running sum, the output rows
    float m[4], l[4], o[4][acc_dims<HD>()];
#pragma unroll
    for (int r = 0; r < 4; r++) {
        m[r] = -INFINITY, l[r] = 0.0f;
#pragma unroll
        for (int d = 0; d < acc_dims<HD>(); d++) o[r][d] = 0.0f;
    }
    for (int kt = 0; kt <= qt; kt++) {  // key tiles right of the diagonal are all masked: skipped
        const int k0 = kt * kTile;
        __syncthreads();  // everyone is done with the previous K, V (and P) tiles
        load_tile<HD>(K_s, k_head + k0 * kv_stride, kv_stride, min(kTile, T - k0));
        load_tile<HD>(V_s, v_head + k0 * kv_stride, kv_stride, min(kTile, T - k0));
        __syncthreads();
        float s[4][4];
        tile_dot<HD>(s, Q_s, K_s, ty, tx);
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int row = q0 + ty + 16 * r;
            float mx = -INFINITY;
#pragma unroll
            for (int c = 0; c < 4; c++) {
                s[r][c] = k0 + tx + 16 * c <= row ? s[r][c] * scale_log2 : -INFINITY;
                mx = fmaxf(mx, s[r][c]);
            }
            // finite: key k0 <= row for every row of every tile visited, so each row has an unmasked score
            const float m_new = fmaxf(m[r], half_warp_max(mx));
            const float corr = exp2f(m[r] - m_new);  // 0 on the first tile (m = -inf)
            m[r] = m_new;
            l[r] *= corr;
#pragma unroll
            for (int d = 0; d < acc_dims<HD>(); d++) o[r][d] *= corr;
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const float p = exp2f(s[r][c] - m_new);
                l[r] += p;
                P_s[(ty + 16 * r) * kPStride + tx + 16 * c] = p;
            }
        }
        __syncwarp();  // each half-warp reads back only the P rows it wrote
        tile_accumulate<HD>(o, P_s, V_s, ty, tx);
    }
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const int row = q0 + ty + 16 * r;
        const float l_row = half_warp_sum(l[r]);  // every lane takes part (before the row < T branch)
        if (row < T) {
            store_row_share<HD>(out + ((size_t)b * T + row) * q_stride + (size_t)h * HD, o[r], 1.0f / l_row, tx);
            if (tx == 0) lse[((size_t)b * NH + h) * T + row] = (m[r] + log2f(l_row)) * kLn2;
        }
    }
}

// D (B,NH,T) = rowsum(dout * out): one warp per row of the (B,T,NH,hd) tensors, lanes stride the row
__global__ void attention_row_dot_kernel(float* D, const bf16* dout, const bf16* out, int T, int NH, int HD,
                                         size_t rows) {
    const size_t row = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) return;  // row is the same for the whole warp
    const bf16* a = dout + row * HD;
    const bf16* o = out + row * HD;
    float sum = 0.0f;
    for (int i = lane; i < HD; i += 32) sum = fmaf(__bfloat162float(a[i]), __bfloat162float(o[i]), sum);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (lane == 0) {
        const size_t h = row % NH, bt = row / NH, t = bt % T, b = bt / T;
        D[(b * NH + h) * T + t] = sum;
    }
}

// grid (ceil(T/64), B*NKV): block = one key tile of one (b, kv head), owning its dk, dv rows; smallest key
// tiles (the most query tiles below them) first
template <int HD>
__global__ void __launch_bounds__(kThreads)
    attention_backward_dkdv_kernel(bf16* dk, bf16* dv, const bf16* dout, const bf16* q, const bf16* k,
                                   const bf16* v, const float* lse, const float* D, int T, int NH, int NKV,
                                   float scale, float scale_log2) {
    extern __shared__ float4 smem4[];
    float* K_s = reinterpret_cast<float*>(smem4);
    float* V_s = K_s + tile_floats<HD>();
    float* Q_s = V_s + tile_floats<HD>();
    float* dO_s = Q_s + tile_floats<HD>();
    float* P_s = dO_s + tile_floats<HD>();
    float* lse2_s = P_s + kTile * kPStride;
    float* D_s = lse2_s + kTile;
    const int kt = blockIdx.x, k0 = kt * kTile, nq = gridDim.x;
    const int b = blockIdx.y / NKV, kvh = blockIdx.y % NKV, group = NH / NKV;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const size_t q_stride = (size_t)NH * HD, kv_stride = (size_t)NKV * HD;
    const size_t kv_tile = ((size_t)b * T + k0) * kv_stride + (size_t)kvh * HD;
    load_tile<HD>(K_s, k + kv_tile, kv_stride, min(kTile, T - k0));
    load_tile<HD>(V_s, v + kv_tile, kv_stride, min(kTile, T - k0));

    float dk_acc[4][acc_dims<HD>()], dv_acc[4][acc_dims<HD>()];
#pragma unroll
    for (int r = 0; r < 4; r++)
#pragma unroll
        for (int d = 0; d < acc_dims<HD>(); d++) dk_acc[r][d] = dv_acc[r][d] = 0.0f;
    // one flat loop over (query head of the group, query tile at or below the diagonal), in a fixed order
    // (query tiles above the diagonal see none of these keys); flat, it keeps fewer registers live
    const int tiles_per_head = nq - kt;
    for (int it = 0; it < group * tiles_per_head; it++) {
        const int h = kvh * group + it / tiles_per_head, qt = kt + it % tiles_per_head;
        const int q0 = qt * kTile, valid = min(kTile, T - q0);
        const size_t q_tile = ((size_t)b * T + q0) * q_stride + (size_t)h * HD;
        const size_t stats = ((size_t)b * NH + h) * T + q0;
        __syncthreads();  // everyone is done with the previous Q, dO, P tiles and stats
        load_tile<HD>(Q_s, q + q_tile, q_stride, valid);
        load_tile<HD>(dO_s, dout + q_tile, q_stride, valid);
        load_row_stats(lse2_s, D_s, lse + stats, D + stats, valid);
        __syncthreads();
        // P^T first, and dV with it, before dP^T is computed: fewer registers live at once
        float p[4][4];  // P^T: rows keys ty + 16 r, columns queries tx + 16 c
        tile_dot<HD>(p, K_s, Q_s, ty, tx);
#pragma unroll
        for (int r = 0; r < 4; r++)
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const int key = k0 + ty + 16 * r, qi = tx + 16 * c, query = q0 + qi;
                p[r][c] = key <= query && query < T ? exp2f(p[r][c] * scale_log2 - lse2_s[qi]) : 0.0f;
                P_s[(ty + 16 * r) * kPStride + qi] = p[r][c];
            }
        __syncwarp();  // each half-warp reads back only the rows it wrote
        tile_accumulate<HD>(dv_acc, P_s, dO_s, ty, tx);
        float ds[4][4];
        tile_dot<HD>(ds, V_s, dO_s, ty, tx);  // dP^T
        __syncwarp();  // the half-warp is done reading P before dS^T overwrites it
#pragma unroll
        for (int r = 0; r < 4; r++)
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const int qi = tx + 16 * c;
                P_s[(ty + 16 * r) * kPStride + qi] = p[r][c] * (ds[r][c] - D_s[qi]);
            }
        __syncwarp();
        tile_accumulate<HD>(dk_acc, P_s, Q_s, ty, tx);
    }
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const int key = k0 + ty + 16 * r;
        if (key >= T) continue;
        const size_t at = ((size_t)b * T + key) * kv_stride + (size_t)kvh * HD;
        store_row_share<HD>(dk + at, dk_acc[r], scale, tx);
        store_row_share<HD>(dv + at, dv_acc[r], 1.0f, tx);
    }
}

// grid (ceil(T/64), B*NH): block = one query tile of one (b, h), owning its dq rows; longest tiles first
template <int HD>
__global__ void __launch_bounds__(kThreads)
    attention_backward_dq_kernel(bf16* dq, const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                                 const float* lse, const float* D, int T, int NH, int NKV, float scale,
                                 float scale_log2) {
    extern __shared__ float4 smem4[];
    float* Q_s = reinterpret_cast<float*>(smem4);
    float* dO_s = Q_s + tile_floats<HD>();
    float* K_s = dO_s + tile_floats<HD>();
    float* V_s = K_s + tile_floats<HD>();
    float* P_s = V_s + tile_floats<HD>();
    float* lse2_s = P_s + kTile * kPStride;
    float* D_s = lse2_s + kTile;
    const int qt = gridDim.x - 1 - blockIdx.x, q0 = qt * kTile, valid = min(kTile, T - q0);
    const int b = blockIdx.y / NH, h = blockIdx.y % NH, kvh = h / (NH / NKV);
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const size_t q_stride = (size_t)NH * HD, kv_stride = (size_t)NKV * HD;
    const size_t q_tile = ((size_t)b * T + q0) * q_stride + (size_t)h * HD;
    const size_t stats = ((size_t)b * NH + h) * T + q0;
    const bf16* k_head = k + (size_t)b * T * kv_stride + (size_t)kvh * HD;
    const bf16* v_head = v + (size_t)b * T * kv_stride + (size_t)kvh * HD;
    load_tile<HD>(Q_s, q + q_tile, q_stride, valid);
    load_tile<HD>(dO_s, dout + q_tile, q_stride, valid);
    load_row_stats(lse2_s, D_s, lse + stats, D + stats, valid);

    float dq_acc[4][acc_dims<HD>()];
#pragma unroll
    for (int r = 0; r < 4; r++)
#pragma unroll
        for (int d = 0; d < acc_dims<HD>(); d++) dq_acc[r][d] = 0.0f;
    for (int kt = 0; kt <= qt; kt++) {
        const int k0 = kt * kTile;
        __syncthreads();  // everyone is done with the previous K, V, dS tiles (and the stats are visible)
        load_tile<HD>(K_s, k_head + k0 * kv_stride, kv_stride, min(kTile, T - k0));
        load_tile<HD>(V_s, v_head + k0 * kv_stride, kv_stride, min(kTile, T - k0));
        __syncthreads();
        float s[4][4], dp[4][4];  // rows queries ty + 16 r, columns keys tx + 16 c
        tile_dot<HD>(s, Q_s, K_s, ty, tx);
        tile_dot<HD>(dp, dO_s, V_s, ty, tx);
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int qi = ty + 16 * r, query = q0 + qi;
            const float lse2 = lse2_s[qi], Drow = D_s[qi];
#pragma unroll
            for (int c = 0; c < 4; c++) {
                const int key = k0 + tx + 16 * c;
                const float p = key <= query && query < T ? exp2f(s[r][c] * scale_log2 - lse2) : 0.0f;
                P_s[qi * kPStride + tx + 16 * c] = p * (dp[r][c] - Drow);
            }
        }
        __syncwarp();  // each half-warp reads back only the dS rows it wrote
        tile_accumulate<HD>(dq_acc, P_s, K_s, ty, tx);
    }
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const int query = q0 + ty + 16 * r;
        if (query >= T) continue;
        store_row_share<HD>(dq + ((size_t)b * T + query) * q_stride + (size_t)h * HD, dq_acc[r], scale, tx);
    }
}

void check_args(const char* op, int B, int T, int NH, int NKV, int HD) {
    LLMQ_CHECK(B > 0 && T > 0, "%s: B %d and T %d must be positive", op, B, T);
    LLMQ_CHECK(NH > 0 && NKV > 0 && NH % NKV == 0, "%s: n_kv_heads %d must be positive and divide n_heads %d", op,
               NKV, NH);
    LLMQ_CHECK(HD == 32 || HD == 64 || HD == 128, "%s: head_dim %d not supported (32, 64 or 128)", op, HD);
    LLMQ_CHECK((long long)B * NH <= 65535, "%s: B * n_heads = %lld exceeds the grid limit 65535", op,
               (long long)B * NH);
}

// opts the kernel in to `bytes` of dynamic shared memory, after checking the device has that much per block
template <typename Kernel>
void allow_shared_memory(const char* op, Kernel kernel, size_t bytes, int HD) {
    int device = 0, optin = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    LLMQ_CHECK(bytes <= (size_t)optin,
               "%s: head_dim %d needs %zu bytes of shared memory per block; the device allows %d", op, HD, bytes,
               optin);
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

template <int HD>
void forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, int B, int T, int NH, int NKV,
             cudaStream_t stream) {
    const size_t smem = forward_smem_bytes<HD>();
    allow_shared_memory("attention_forward_cuda", attention_forward_kernel<HD>, smem, HD);
    const float scale_log2 = 1.0f / std::sqrt((float)HD) * kLog2e;
    attention_forward_kernel<HD><<<dim3(ceil_div(T, kTile), B * NH), kThreads, smem, stream>>>(out, lse, q, k, v, T,
                                                                                                NH, NKV, scale_log2);
    CUDA_CHECK_LAUNCH();
}

template <int HD>
void backward(bf16* dq, bf16* dk, bf16* dv, const float* D, const bf16* dout, const bf16* q, const bf16* k,
              const bf16* v, const float* lse, int B, int T, int NH, int NKV, cudaStream_t stream) {
    const size_t smem = backward_smem_bytes<HD>();
    allow_shared_memory("attention_backward_cuda", attention_backward_dkdv_kernel<HD>, smem, HD);
    allow_shared_memory("attention_backward_cuda", attention_backward_dq_kernel<HD>, smem, HD);
    const float scale = 1.0f / std::sqrt((float)HD), scale_log2 = scale * kLog2e;
    const int tiles = ceil_div(T, kTile);
    attention_backward_dkdv_kernel<HD><<<dim3(tiles, B * NKV), kThreads, smem, stream>>>(
        dk, dv, dout, q, k, v, lse, D, T, NH, NKV, scale, scale_log2);
    CUDA_CHECK_LAUNCH();
    attention_backward_dq_kernel<HD><<<dim3(tiles, B * NH), kThreads, smem, stream>>>(dq, dout, q, k, v, lse, D, T,
                                                                                      NH, NKV, scale, scale_log2);
    CUDA_CHECK_LAUNCH();
}

}  // namespace

void attention_forward_cuda(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, int B, int T,
                            int n_heads, int n_kv_heads, int head_dim, cudaStream_t stream) {
    const char* op = "attention_forward_cuda";
    check_args(op, B, T, n_heads, n_kv_heads, head_dim);
    LLMQ_CHECK(out && lse && q && k && v, "%s: null pointer argument", op);
    LLMQ_CHECK(aligned16(out, q, k, v), "%s: out, q, k and v must be 16-byte aligned (128-bit loads)", op);
    if (head_dim == 32) forward<32>(out, lse, q, k, v, B, T, n_heads, n_kv_heads, stream);
    if (head_dim == 64) forward<64>(out, lse, q, k, v, B, T, n_heads, n_kv_heads, stream);
    if (head_dim == 128) forward<128>(out, lse, q, k, v, B, T, n_heads, n_kv_heads, stream);
}

size_t attention_backward_scratch_floats(int B, int T, int n_heads, int head_dim) {
    return (size_t)B * n_heads * T;  // D; the dq, dk, dv accumulators live in registers
}

void attention_backward_cuda(bf16* dq, bf16* dk, bf16* dv, float* scratch, const bf16* dout, const bf16* q,
                             const bf16* k, const bf16* v, const bf16* out, const float* lse, int B, int T,
                             int n_heads, int n_kv_heads, int head_dim, cudaStream_t stream) {
    const char* op = "attention_backward_cuda";
    check_args(op, B, T, n_heads, n_kv_heads, head_dim);
    LLMQ_CHECK(dq && dk && dv && scratch && dout && q && k && v && out && lse, "%s: null pointer argument", op);
    LLMQ_CHECK(aligned16(dq, dk, dv, dout, q, k, v, out),
               "%s: dq, dk, dv, dout, q, k, v and out must be 16-byte aligned (128-bit loads)", op);
    float* D = scratch;  // (B,NH,T)
    const size_t rows = (size_t)B * T * n_heads;
    constexpr int kRowBlock = 256;  // 8 rows (warps) per block
    attention_row_dot_kernel<<<ceil_div(rows, kRowBlock / 32), kRowBlock, 0, stream>>>(D, dout, out, T, n_heads,
                                                                                      head_dim, rows);
    CUDA_CHECK_LAUNCH();
    if (head_dim == 32) backward<32>(dq, dk, dv, D, dout, q, k, v, lse, B, T, n_heads, n_kv_heads, stream);
    if (head_dim == 64) backward<64>(dq, dk, dv, D, dout, q, k, v, lse, B, T, n_heads, n_kv_heads, stream);
    if (head_dim == 128) backward<128>(dq, dk, dv, D, dout, q, k, v, lse, B, T, n_heads, n_kv_heads, stream);
}

}  // namespace llmq
