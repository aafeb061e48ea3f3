// fourbit.cu: NF4/FP4 4-bit weights on the GPU (fourbit_cuda.h): dequantize, quantize, and the fused
// dequantizing matmuls of a frozen 4-bit base weight (QLoRA, LoQT), forward and backward-input.
//
// dequantize_4bit_cuda: elementwise and memory-bound. Per weight it reads 0.5 byte of codes (+ 4/block bytes
//   of absmax) and writes a 2-byte bf16: each thread turns one 8-byte load (16 codes) into two 128-bit stores.
//   The 16-entry code table sits in shared memory: its 16 floats occupy 16 different banks, so the data-
//   dependent lookups of a warp never conflict.
// quantize_4bit_cuda: one warp per block of `block` elements (absmax by a shuffle max, which is exact and
//   order-free), then the CPU's decision replicated to the bit: x * (1/absmax) in fp32 (__frcp_rn, __fmul_rn:
//   IEEE round-to-nearest, as the CPU's 1.0f / absmax and x * inv), compared in double against the midpoints of the
//   ascending code values, which are exact in double, counting the midpoints strictly below (= the CPU's
//   binary search, ties to the lower value / smaller magnitude).
// matmul_4bit_*: compute-bound (2*N*C*OC flops on N*C + C*OC/2 + N*OC bytes). A 128x128 output tile per
//   256-thread block, K in steps of 32: the activation tile goes to shared memory by cp.async, the packed
//   weight tile (16 codes + one absmax per thread, through registers) is dequantized on its way into shared
//   memory, exactly as dequantize_4bit_cuda does, and 8 warps (4 along M x 2 along N, 32x64 each) multiply
//   with WMMA bf16 16x16x16 fragments and fp32 accumulators. Two shared stages: the next K step's loads are
//   in flight during the current step's MMAs, one __syncthreads per step. The dequantized weight never
//   touches global memory. <= 128 registers, 41 KB shared: two blocks per SM. Every output element is owned
//   by one thread and summed in a fixed K order: deterministic, no atomics.
// dev/dequant4.cu has the versions and the benchmark; test/test_fourbit_cuda.cu the checks against
// fourbit_cpu.cpp and the CPU matmul.
#include <mma.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <type_traits>

#include "fourbit_cuda.h"

namespace llmq {

namespace {

// ---- shared device helpers ----------------------------------------------------------------------------

__device__ inline void load_code_table(float* s_code, const float* code) {
    if (threadIdx.x < 16) s_code[threadIdx.x] = code[threadIdx.x];
    __syncthreads();
}

// The dequantized value, rounded once: bf16(code[q] * scale), the fp32 product dequantize_4bit_cpu computes.
// (The helpers marked __host__ are pure index or value math, so a host program can check them too.)
__host__ __device__ inline bf16 dequant_code(unsigned q, float scale, const float* code) {
    return __float2bfloat16(code[q] * scale);
}

// 8 codes from the 4 bytes of `word` as a little-endian load leaves them (the byte at the lowest address in
// the low bits); within a byte the high nibble is the earlier element (formats.h).
__host__ __device__ inline Packed128<bf16> dequant8(uint32_t word, float scale, const float* code) {
    Packed128<bf16> out;
    for (int j = 0; j < 4; j++) {
        const unsigned byte = (word >> (8 * j)) & 0xFFu;
        out.v[2 * j] = dequant_code(byte >> 4, scale, code);
        out.v[2 * j + 1] = dequant_code(byte & 15u, scale, code);
    }
    return out;
}

// log2(block), checking that a 16-element chunk starting at a multiple of 16 never straddles two blocks
int block_shift_of(int block, const char* op) {
    LLMQ_CHECK(block >= 16 && (block & (block - 1)) == 0, "%s: block size %d must be a power of two >= 16", op, block);
    int shift = 0;
    while ((1 << shift) < block) shift++;
    return shift;
}

constexpr int kThreads = 256;

// ---- dequantize ---------------------------------------------------------------------------------------

// out (n) bf16 from packed (n/2): chunk c = 16 elements = 8 code bytes = two 128-bit stores
__global__ void dequantize_4bit_kernel(bf16* out, const uint8_t* packed, const float* absmax, const float* code,
                                       size_t n_chunks, int block_shift) {
    __shared__ float s_code[16];
    load_code_table(s_code, code);
    for (size_t c = blockIdx.x * (size_t)blockDim.x + threadIdx.x; c < n_chunks; c += (size_t)gridDim.x * blockDim.x) {
        const uint2 w = *reinterpret_cast<const uint2*>(packed + c * 8);
        const float scale = absmax[(c * 16) >> block_shift];
        store128(out + c * 16, dequant8(w.x, scale, s_code));
        store128(out + c * 16 + 8, dequant8(w.y, scale, s_code));
    }
}

// unaligned pointers: one code byte (two elements of one block) per thread
__global__ void dequantize_4bit_scalar(bf16* out, const uint8_t* packed, const float* absmax, const float* code,
                                       size_t n_bytes, int block_shift) {
    __shared__ float s_code[16];
    load_code_table(s_code, code);
    for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < n_bytes; j += (size_t)gridDim.x * blockDim.x) {
        const unsigned byte = packed[j];
        const float scale = absmax[(2 * j) >> block_shift];
        out[2 * j] = dequant_code(byte >> 4, scale, s_code);
        out[2 * j + 1] = dequant_code(byte & 15u, scale, s_code);
    }
}

// ---- quantize -----------------------------------------------------------------------------------------

// The CPU's nearest-code decision as data: the r-th smallest code value (of the magnitudes, for FP4) has
// the 4-bit code (code_of_rank >> 4r) & 15, and the rank of x is the number of midpoints strictly below x.
struct NearestCodeTable {
    double mid[15];         // ((double)v[r] + (double)v[r+1]) * 0.5 of the ascending values, +inf padded
    uint64_t code_of_rank;  // nibble r: the code of the r-th smallest value
    int sign_magnitude;     // FP4: rank |x|, then bit 3 set when x < 0 (so -0.0 keeps code 0)
};

NearestCodeTable nearest_code_table(QuantFormat f) {
    const float* code = fourbit_code(f);
    const bool sign_magnitude = f == QuantFormat::FP4;
    const int count = sign_magnitude ? 8 : 16;  // FP4 ranks the magnitudes, codes 0..7
    int order[16];
    std::iota(order, order + count, 0);
    std::sort(order, order + count, [&](int a, int b) { return code[a] < code[b]; });
    NearestCodeTable t{};
    for (int r = 0; r < 15; r++)
        t.mid[r] = r + 1 < count ? ((double)code[order[r]] + (double)code[order[r + 1]]) * 0.5 : INFINITY;
    for (int r = 0; r < count; r++) t.code_of_rank |= (uint64_t)order[r] << (4 * r);
    t.sign_magnitude = sign_magnitude;
    return t;
}

__host__ __device__ inline unsigned nearest_code(float v, const NearestCodeTable& t) {
    const float x = t.sign_magnitude ? fabsf(v) : v;
    int rank = 0;
    for (int r = 0; r < 15; r++) rank += (double)x > t.mid[r];
    unsigned q = (unsigned)(t.code_of_rank >> (4 * rank)) & 15u;
    if (t.sign_magnitude && v < 0.0f) q |= 8u;
    return q;
}

// one warp per block of `block` elements, grid-stride over blocks; lane p handles the element pairs p, p+32, ..
__global__ void quantize_4bit_kernel(uint8_t* packed, float* absmax, const float* w, int64_t n_blocks, int block,
                                     const __grid_constant__ NearestCodeTable table) {
    const int lane = threadIdx.x % 32, pairs = block / 2;
    const int64_t first = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32,
                  stride = (gridDim.x * (int64_t)blockDim.x) / 32;
    for (int64_t b = first; b < n_blocks; b += stride) {  // b is the same for the whole warp
        const float* x = w + b * block;
        float amax = 0.0f;
        for (int p = lane; p < pairs; p += 32) amax = fmaxf(amax, fmaxf(fabsf(x[2 * p]), fabsf(x[2 * p + 1])));
#pragma unroll
        for (int o = 16; o > 0; o /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
        const float inv = amax > 0.0f ? __frcp_rn(amax) : 0.0f;  // the CPU's 1.0f / amax
        uint8_t* out = packed + b * pairs;
        for (int p = lane; p < pairs; p += 32)
            out[p] = (uint8_t)(nearest_code(__fmul_rn(x[2 * p], inv), table) << 4 |
                               nearest_code(__fmul_rn(x[2 * p + 1], inv), table));
        if (lane == 0) absmax[b] = amax;
    }
}

// ---- fused dequantizing matmul ------------------------------------------------------------------------

namespace wmma = nvcuda::wmma;

constexpr int kBM = 128, kBN = 128, kBK = 32;  // block tile: rows of the activations, output columns, K step
constexpr int kWarpsN = 2, kWarpTileM = 32, kWarpTileN = 64;
constexpr int kFragsM = kWarpTileM / 16, kFragsN = kWarpTileN / 16;
constexpr int kPad = 8;           // bf16 per shared row: rows stay 16-byte aligned and shift banks
constexpr int kLdA = kBK + kPad;  // As[m][k]
constexpr int kLdC = 16 + 4;      // the epilogue's fp32 16x16 scratch per warp
static_assert((kBM / kWarpTileM) * kWarpsN * 32 == kThreads, "8 warps cover the block tile");
static_assert(kBM * kBK / 8 == 2 * kThreads, "two 8-bf16 activation chunks per thread");
static_assert(kBN * kBK / 16 == kThreads, "one 16-code weight chunk per thread");

// Forward: B(k, n) = W[n][k], the weight tile kept as W's (kBN, kBK) sub-block. Backward-input: B(k, n) =
// W[k][n], the (kBK, kBN) sub-block. Either way shared memory mirrors W's own layout.
__host__ __device__ constexpr int weight_tile_cols(bool forward) { return forward ? kBK : kBN; }
__host__ __device__ constexpr int weight_tile_ld(bool forward) { return weight_tile_cols(forward) + kPad; }
__host__ __device__ constexpr int weight_tile_elems(bool forward) {
    return (forward ? kBN : kBK) * weight_tile_ld(forward);
}
constexpr int kAElems = kBM * kLdA;

struct Fused4bitArgs {
    bf16* out;             // (M, n_out)
    const bf16* a;         // (M, K) activations (forward: inp, K = C; backward: dout, K = OC)
    const uint8_t* codes;  // W (w_rows, w_cols) = (OC, C) packed
    const float* absmax;   // (w_rows * w_cols / block)
    const float* code;     // (16)
    int M, K, n_out, w_rows, w_cols, block_shift;
    bool accumulate;  // out += instead of =
};

// 16 bytes global -> shared without passing through registers (sm_80+); src_size 0 writes 16 zero bytes and
// reads nothing (the masked chunks past M or K). Completion: cp_async_wait_all(), then a barrier for others.
__device__ inline void cp_async16(void* smem, const void* gmem, bool valid) {
    const unsigned dst = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ inline void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ inline void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// Starts copying the (kBM, kBK) tile at (m0, k0) of A into As: two 8-bf16 chunks per thread, zeros past M and
// K (K is a multiple of 16, so a chunk is all in or all out).
__host__ __device__ inline void activation_chunk_pos(int chunk, int& row, int& col) {
    row = chunk / (kBK / 8), col = (chunk % (kBK / 8)) * 8;
}
__device__ inline void copy_activation_tile_async(bf16* As, const Fused4bitArgs& p, int m0, int k0) {
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int row, col;
        activation_chunk_pos(threadIdx.x + i * kThreads, row, col);
        const bool valid = m0 + row < p.M && k0 + col < p.K;
        cp_async16(As + row * kLdA + col, valid ? p.a + (size_t)(m0 + row) * p.K + k0 + col : p.a, valid);
    }
    cp_async_commit();
}

struct WeightChunk {
    uint2 codes;  // 16 packed codes
    float scale;  // their block's absmax
};

template <bool kForward>
__host__ __device__ inline void weight_chunk_pos(int tid, int& row, int& col) {
    constexpr int kChunksPerRow = weight_tile_cols(kForward) / 16;
    row = tid / kChunksPerRow, col = (tid % kChunksPerRow) * 16;
}

// This thread's 16 consecutive elements of the weight tile: forward rows n0.., columns k0..; backward rows
// k0.., columns n0... Element e = row * C + col is a multiple of 16, so the chunk is 8 aligned bytes inside one
// block (block >= 16, a power of two). Outside W: scale 0, which dequantizes to zeros.
template <bool kForward>
__host__ __device__ inline WeightChunk load_weight_chunk(const Fused4bitArgs& p, int tid, int n0, int k0) {
    int row, col;
    weight_chunk_pos<kForward>(tid, row, col);
    const int wr = (kForward ? n0 : k0) + row, wc = (kForward ? k0 : n0) + col;
    WeightChunk w{make_uint2(0, 0), 0.0f};
    if (wr < p.w_rows && wc < p.w_cols) {
        const int64_t e = (int64_t)wr * p.w_cols + wc;
        w.codes = *reinterpret_cast<const uint2*>(p.codes + e / 2);
        w.scale = p.absmax[e >> p.block_shift];
    }
    return w;
}

template <bool kForward>
__host__ __device__ inline void store_weight_chunk(bf16* Bs, const WeightChunk& w, const float* s_code, int tid) {
    int row, col;
    weight_chunk_pos<kForward>(tid, row, col);
    auto* dst = reinterpret_cast<Packed128<bf16>*>(Bs + row * weight_tile_ld(kForward) + col);  // 16-byte aligned
    dst[0] = dequant8(w.codes.x, w.scale, s_code);
    dst[1] = dequant8(w.codes.y, w.scale, s_code);
}

using AccFrag = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// acc += As (kBM, kBK) @ B (kBK, kBN) for this warp's 32x64 part
template <bool kForward>
__device__ inline void mma_tile(const bf16* As, const bf16* Bs, AccFrag (&acc)[kFragsM][kFragsN], int warp_m,
                                int warp_n) {
    using BLayout = std::conditional_t<kForward, wmma::col_major, wmma::row_major>;
    constexpr int kLdB = weight_tile_ld(kForward);
#pragma unroll 1  // unrolled, ptxas hoists both steps' fragment loads and needs > 128 registers
    for (int kk = 0; kk < kBK; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a[kFragsM];
#pragma unroll
        for (int i = 0; i < kFragsM; i++)
            wmma::load_matrix_sync(a[i], As + (warp_m * kWarpTileM + 16 * i) * kLdA + kk, kLdA);
#pragma unroll
        for (int j = 0; j < kFragsN; j++) {  // one B fragment live at a time: keeps the kernel under 128 registers
            const int n = warp_n * kWarpTileN + 16 * j;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, BLayout> b;
            // col_major B(k, n) at Bs[n * ld + k] (forward, W's rows are n); row_major at Bs[k * ld + n]
            wmma::load_matrix_sync(b, kForward ? Bs + n * kLdB + kk : Bs + kk * kLdB + n, kLdB);
#pragma unroll
            for (int i = 0; i < kFragsM; i++) wmma::mma_sync(acc[i][j], a[i], b, acc[i][j]);
        }
    }
}

// Each accumulator fragment goes through the warp's fp32 scratch; lane l then owns row l/2, 8 columns at
// (l%2)*8, converts (adding the old value when accumulating) and writes them with one 128-bit store.
__device__ inline void store_output_tile(const Fused4bitArgs& p, AccFrag (&acc)[kFragsM][kFragsN], float* scratch,
                                         int m0, int n0, int warp_m, int warp_n) {
    const int lane = threadIdx.x % 32, r = lane / 2, c = (lane % 2) * 8;
#pragma unroll
    for (int i = 0; i < kFragsM; i++) {
#pragma unroll
        for (int j = 0; j < kFragsN; j++) {
            wmma::store_matrix_sync(scratch, acc[i][j], kLdC, wmma::mem_row_major);
            __syncwarp();
            const int row = m0 + warp_m * kWarpTileM + 16 * i + r, col = n0 + warp_n * kWarpTileN + 16 * j + c;
            if (row < p.M && col < p.n_out) {  // n_out is a multiple of 16: the 8 columns are all in
                bf16* dst = p.out + (size_t)row * p.n_out + col;
                const Packed128<bf16> old = p.accumulate ? load128(dst) : Packed128<bf16>{};
                Packed128<bf16> y;
#pragma unroll
                for (int q = 0; q < 8; q++) {
                    float v = scratch[r * kLdC + c + q];
                    if (p.accumulate) v += __bfloat162float(old.v[q]);
                    y.v[q] = __float2bfloat16(v);
                }
                store128(dst, y);
            }
            __syncwarp();  // the scratch is reused by the next fragment
        }
    }
}

// version 2 of dev/dequant4.cu. grid (ceil(n_out / kBN), ceil(M / kBM)), kThreads threads.
template <bool kForward>
__global__ void __launch_bounds__(kThreads, 2) matmul_4bit_kernel(const __grid_constant__ Fused4bitArgs p) {
    constexpr int kBElems = weight_tile_elems(kForward);
    constexpr int kMainBytes = 2 * (kAElems + kBElems) * (int)sizeof(bf16);         // two stages of A and W
    constexpr int kEpilogueBytes = kThreads / 32 * 16 * kLdC * (int)sizeof(float);  // reuses the same memory
    __shared__ __align__(128) unsigned char smem[kMainBytes > kEpilogueBytes ? kMainBytes : kEpilogueBytes];
    __shared__ float s_code[16];
    bf16* As = reinterpret_cast<bf16*>(smem);  // [2][kBM][kLdA]
    bf16* Bs = As + 2 * kAElems;               // [2][weight tile]

    const int warp = threadIdx.x / 32, warp_m = warp / kWarpsN, warp_n = warp % kWarpsN;
    const int m0 = blockIdx.y * kBM, n0 = blockIdx.x * kBN;
    load_code_table(s_code, p.code);

    AccFrag acc[kFragsM][kFragsN];
#pragma unroll
    for (int i = 0; i < kFragsM; i++)
#pragma unroll
        for (int j = 0; j < kFragsN; j++) wmma::fill_fragment(acc[i][j], 0.0f);

    const int k_tiles = ceil_div(p.K, kBK);
    copy_activation_tile_async(As, p, m0, 0);
    const int tid = threadIdx.x;
    WeightChunk w_next = load_weight_chunk<kForward>(p, tid, n0, 0);
    store_weight_chunk<kForward>(Bs, w_next, s_code, tid);
    cp_async_wait_all();
    __syncthreads();
    for (int t = 0; t < k_tiles; t++) {
        const int cur = t % 2;
        const bool more = t + 1 < k_tiles;
        // Step t+1's loads are in flight while the tensor cores work on stage `cur`. The other stage was last
        // read in step t-1, before the barrier that ended it, so it may be overwritten now.
        if (more) {
            copy_activation_tile_async(As + (1 - cur) * kAElems, p, m0, (t + 1) * kBK);
            w_next = load_weight_chunk<kForward>(p, tid, n0, (t + 1) * kBK);
        }
        mma_tile<kForward>(As + cur * kAElems, Bs + cur * kBElems, acc, warp_m, warp_n);
        if (more) store_weight_chunk<kForward>(Bs + (1 - cur) * kBElems, w_next, s_code, tid);
        cp_async_wait_all();
        __syncthreads();
    }
    // every warp is past its last read of As/Bs: the epilogue scratch may overwrite them
    float* scratch = reinterpret_cast<float*>(smem) + warp * 16 * kLdC;
    store_output_tile(p, acc, scratch, m0, n0, warp_m, warp_n);
}

// The checks every user of a DeviceQuantizedTensor needs: its buffers match its shape and block.
void check_device_tensor(const DeviceQuantizedTensor& w, const char* op) {
    LLMQ_CHECK(w.format == QuantFormat::NF4 || w.format == QuantFormat::FP4, "%s: weight format %s is not nf4/fp4", op,
               format_name(w.format));
    LLMQ_CHECK(w.rows > 0 && w.cols > 0 && w.block > 0 && w.numel() % w.block == 0,
               "%s: block size %d does not divide the weight (%lld, %lld)", op, w.block, (long long)w.rows,
               (long long)w.cols);
    LLMQ_CHECK(w.codes.size() == (size_t)(w.numel() / 2) && w.absmax.size() == (size_t)(w.numel() / w.block) &&
                   w.code.size() == 16,
               "%s: the (%lld, %lld) weight holds %zu code bytes, %zu absmax, %zu code values (need %lld, %lld, 16)",
               op, (long long)w.rows, (long long)w.cols, w.codes.size(), w.absmax.size(), w.code.size(),
               (long long)(w.numel() / 2), (long long)(w.numel() / w.block));
}

void launch_matmul_4bit(bool forward, bf16* out, const bf16* a, const DeviceQuantizedTensor& w, int N, int C, int OC,
                        bool accumulate, cudaStream_t stream, const char* op) {
    LLMQ_CHECK(N >= 0, "%s: N %d must be >= 0", op, N);
    LLMQ_CHECK(C > 0 && C % 16 == 0, "%s: C %d must be a positive multiple of 16 (the tensor-core tile)", op, C);
    LLMQ_CHECK(OC > 0 && OC % 16 == 0, "%s: OC %d must be a positive multiple of 16 (the tensor-core tile)", op, OC);
    LLMQ_CHECK(w.rows == OC && w.cols == C, "%s: the weight is (%lld, %lld) but the product needs (OC, C) = (%d, %d)",
               op, (long long)w.rows, (long long)w.cols, OC, C);
    check_device_tensor(w, op);
    const int block_shift = block_shift_of(w.block, op);
    LLMQ_CHECK(ceil_div(N, kBM) <= 65535, "%s: N %d is more rows than one launch covers (%d)", op, N, 65535 * kBM);
    if (N == 0) return;
    LLMQ_CHECK(out && a, "%s: null activation pointer", op);
    LLMQ_CHECK(aligned16(out, a), "%s: the activation buffers must be 16-byte aligned", op);
    const int K = forward ? C : OC, n_out = forward ? OC : C;  // W is (OC, C) either way
    const Fused4bitArgs p{out, a, w.codes.data(), w.absmax.data(), w.code.data(), N, K, n_out, OC, C, block_shift,
                          accumulate};
    const dim3 grid(ceil_div(p.n_out, kBN), ceil_div(N, kBM));
    if (forward) matmul_4bit_kernel<true><<<grid, kThreads, 0, stream>>>(p);
    else matmul_4bit_kernel<false><<<grid, kThreads, 0, stream>>>(p);
    CUDA_CHECK_LAUNCH();
}

}  // namespace

// ---- DeviceQuantizedTensor ----------------------------------------------------------------------------

DeviceQuantizedTensor::DeviceQuantizedTensor(QuantFormat format_, int64_t rows_, int64_t cols_, int block_)
    : format(format_), block(block_), rows(rows_), cols(cols_) {
    LLMQ_CHECK(!is_int_format(format), "DeviceQuantizedTensor: %s is not nf4/fp4", format_name(format));
    check_spec(QuantSpec{format, block}, rows, cols);
    codes.resize(numel() / 2);
    absmax.resize(numel() / block);
    const float* table = fourbit_code(format);
    code.upload(std::vector<float>(table, table + 16));
}

DeviceQuantizedTensor::DeviceQuantizedTensor(const QuantizedTensor& q)
    : DeviceQuantizedTensor(q.spec.format, q.rows, q.cols, q.spec.block) {
    LLMQ_CHECK(q.codes.size() == codes.size(), "DeviceQuantizedTensor: %zu code bytes for a (%lld, %lld) weight",
               q.codes.size(), (long long)rows, (long long)cols);
    const std::vector<float> a = block_absmax(q);
    LLMQ_CHECK(a.size() == absmax.size(), "DeviceQuantizedTensor: %zu absmax values for %lld blocks", a.size(),
               (long long)(numel() / block));
    codes.upload(q.codes);
    absmax.upload(a);
}

QuantizedTensor DeviceQuantizedTensor::download() const {
    QuantizedTensor q;
    q.spec = QuantSpec{format, block};
    q.rows = rows;
    q.cols = cols;
    q.codes = codes.download();
    q.absmax = absmax.download();
    return q;
}

// ---- launchers ----------------------------------------------------------------------------------------

void dequantize_4bit_cuda(bf16* out, const uint8_t* packed, const float* absmax, const float* code16, int64_t rows,
                          int64_t cols, int block, cudaStream_t stream) {
    const char* op = "dequantize_4bit_cuda";
    LLMQ_CHECK(rows >= 0 && cols >= 0, "%s: shape (%lld, %lld) must not be negative", op, (long long)rows,
               (long long)cols);
    const int block_shift = block_shift_of(block, op);
    const size_t n = (size_t)rows * cols;
    LLMQ_CHECK(n % block == 0, "%s: block size %d does not divide the %zu elements of (%lld, %lld)", op, block, n,
               (long long)rows, (long long)cols);
    if (n == 0) return;
    LLMQ_CHECK(out && packed && absmax && code16, "%s: null pointer", op);
    if (aligned16(out) && reinterpret_cast<uintptr_t>(packed) % 8 == 0) {
        const size_t chunks = n / 16;  // block >= 16 divides n
        dequantize_4bit_kernel<<<grid_stride_blocks(chunks, kThreads), kThreads, 0, stream>>>(
            out, packed, absmax, code16, chunks, block_shift);
    } else {
        dequantize_4bit_scalar<<<grid_stride_blocks(n / 2, kThreads), kThreads, 0, stream>>>(
            out, packed, absmax, code16, n / 2, block_shift);
    }
    CUDA_CHECK_LAUNCH();
}

void dequantize_4bit_cuda(bf16* out, const DeviceQuantizedTensor& w, cudaStream_t stream) {
    check_device_tensor(w, "dequantize_4bit_cuda");
    dequantize_4bit_cuda(out, w.codes.data(), w.absmax.data(), w.code.data(), w.rows, w.cols, w.block, stream);
}

void quantize_4bit_cuda(uint8_t* packed, float* absmax, const float* w, int64_t rows, int64_t cols, QuantFormat format,
                        int block, cudaStream_t stream) {
    LLMQ_CHECK(!is_int_format(format), "quantize_4bit_cuda: %s is not nf4/fp4", format_name(format));
    check_spec(QuantSpec{format, block}, rows, cols);  // block a power of two >= 32 dividing rows * cols
    LLMQ_CHECK(packed && absmax && w, "quantize_4bit_cuda: null pointer");
    const int64_t n_blocks = rows * cols / block;
    quantize_4bit_kernel<<<grid_stride_blocks((size_t)n_blocks * 32, kThreads), kThreads, 0, stream>>>(
        packed, absmax, w, n_blocks, block, nearest_code_table(format));
    CUDA_CHECK_LAUNCH();
}

void quantize_4bit_cuda(DeviceQuantizedTensor& q, const float* w, cudaStream_t stream) {
    check_device_tensor(q, "quantize_4bit_cuda");
    quantize_4bit_cuda(q.codes.data(), q.absmax.data(), w, q.rows, q.cols, q.format, q.block, stream);
}

void matmul_4bit_forward_cuda(bf16* out, const bf16* inp, const DeviceQuantizedTensor& w, int N, int C, int OC,
                              cudaStream_t stream) {
    launch_matmul_4bit(true, out, inp, w, N, C, OC, false, stream, "matmul_4bit_forward_cuda");
}

void matmul_4bit_backward_input_cuda(bf16* dinp, const bf16* dout, const DeviceQuantizedTensor& w, int N, int C, int OC,
                                     bool accumulate, cudaStream_t stream) {
    launch_matmul_4bit(false, dinp, dout, w, N, C, OC, accumulate, stream, "matmul_4bit_backward_input_cuda");
}

}  // namespace llmq
