// matmul_cpu.cpp: the CPU SGEMM/DGEMM and the linear layer's three products built on it.
//
// gemm_cpu is a cache-blocked GEMM in the BLIS/GotoBLAS layout, written in plain C++ so that
// -O3 -march=native turns the micro-kernel into FMA vector code:
//   - op(B) is packed, one KC x NC block at a time, into panels of NR columns stored k-major
//     ((NC/NR) panels of (KC,NR)): the micro-kernel then streams B contiguously whatever the transpose;
//   - op(A) is packed, one MC x KC block at a time, into panels of MR rows stored k-major, with alpha
//     folded in: the micro-kernel reads MR scalars per k, also contiguously;
//   - edges are zero-padded in the packed copies, so one micro-kernel serves every size;
//   - the micro-kernel keeps an MR x NR tile of C in registers (MR*NR/vector-width accumulators) and
//     does one broadcast-FMA per (row, vector) per k: 6 x 16 floats = 12 ymm accumulators on AVX2.
// Threads split the M dimension (tasks of rows, see gemm_cpu); every element of C is accumulated by
// one thread in a fixed k order, so results do not depend on the thread count.
#include "matmul.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "common.h"
#include "cpu_parallel.h"

namespace llmq {

namespace {

// Register tile: MR rows x NR columns, NR = two 32-byte vectors of Real (16 floats or 8 doubles).
constexpr int MR = 6;
template <typename Real>
constexpr int NR = 64 / (int)sizeof(Real);
// Cache blocks (floats): a KC x NR panel of B (32 KiB) is reused from L1/L2 by the MC/MR micro-kernels
// of a block, a MC x KC block of A (192 KiB) stays in L2, the KC x NC block of B (4 MiB) in L3.
// KC = 512 measured ~15% faster than 256 on the 60m shapes (C = 512: one k block instead of two,
// so C is read and written once); MC and NC made no difference above the noise of the dev box.
constexpr int KC = 512;
constexpr int MC = 96;  // multiple of MR
constexpr int NC = 2048;  // multiple of NR

inline int ceil_div(int a, int b) { return (a + b - 1) / b; }
inline int round_up(int a, int b) { return ceil_div(a, b) * b; }

// Element (i, k) of op(A) and (k, j) of op(B).
template <typename Real>
inline Real at_a(const Real* A, int lda, bool trans, int i, int k) {
    return trans ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
}

// Packs op(B)[pc:pc+kc, jc + panel*NR : +NR] into dst (kc, NR), zero-padding columns past n.
template <typename Real>
void pack_b_panel(Real* dst, const Real* B, int ldb, bool trans_b, int pc, int kc, int j0, int n) {
    constexpr int nr = NR<Real>;
    int width = std::min(nr, n - j0);
    if (!trans_b) {
        // rows of B are contiguous along j
        for (int k = 0; k < kc; k++) {
            const Real* src = B + (size_t)(pc + k) * ldb + j0;
            Real* d = dst + (size_t)k * nr;
            int j = 0;
            for (; j < width; j++) d[j] = src[j];
            for (; j < nr; j++) d[j] = 0;
        }
    } else {
        // B stored (N,K): column j of op(B) is row j of B, contiguous along k
        for (int j = 0; j < nr; j++) {
            if (j < width) {
                const Real* src = B + (size_t)(j0 + j) * ldb + pc;
                for (int k = 0; k < kc; k++) dst[(size_t)k * nr + j] = src[k];
            } else {
                for (int k = 0; k < kc; k++) dst[(size_t)k * nr + j] = 0;
            }
        }
    }
}

// Packs alpha * op(A)[i0:i0+MR, pc:pc+kc] into dst (kc, MR), zero-padding rows past m.
template <typename Real>
void pack_a_panel(Real* dst, const Real* A, int lda, bool trans_a, Real alpha, int i0, int m, int pc, int kc) {
    int height = std::min(MR, m - i0);
    if (trans_a) {
        // A stored (K,M): rows of A are contiguous along i
        for (int k = 0; k < kc; k++) {
            const Real* src = A + (size_t)(pc + k) * lda + i0;
            Real* d = dst + (size_t)k * MR;
            int r = 0;
            for (; r < height; r++) d[r] = alpha * src[r];
            for (; r < MR; r++) d[r] = 0;
        }
    } else {
        for (int r = 0; r < MR; r++) {
            if (r < height) {
                const Real* src = A + (size_t)(i0 + r) * lda + pc;
                for (int k = 0; k < kc; k++) dst[(size_t)k * MR + r] = alpha * src[k];
            } else {
                for (int k = 0; k < kc; k++) dst[(size_t)k * MR + r] = 0;
            }
        }
    }
}

// C[0:rows, 0:cols] += Ap (kc, MR) x Bp (kc, NR), the tile held in registers; with overwrite, = instead
// of += (the first k block when beta = 0: C is never read, so NaNs in it vanish and a pass is saved).
template <typename Real>
inline void micro_kernel(int kc, const Real* __restrict Ap, const Real* __restrict Bp, Real* C, int ldc, int rows,
                         int cols, bool overwrite) {
    constexpr int nr = NR<Real>;
    Real acc[MR][nr] = {};
    for (int k = 0; k < kc; k++) {
        const Real* b = Bp + (size_t)k * nr;
        const Real* a = Ap + (size_t)k * MR;
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
#pragma omp simd
            for (int c = 0; c < nr; c++) acc[r][c] += a[r] * b[c];
        }
    }
    if (overwrite) {
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) C[(size_t)r * ldc + c] = acc[r][c];
    } else if (rows == MR && cols == nr) {
        for (int r = 0; r < MR; r++)
#pragma omp simd
            for (int c = 0; c < nr; c++) C[(size_t)r * ldc + c] += acc[r][c];
    } else {
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) C[(size_t)r * ldc + c] += acc[r][c];
    }
}

// C = beta * C, with beta = 0 overwriting (so NaNs already in C do not survive).
template <typename Real>
void scale_c(Real* C, int ldc, int M, int N, Real beta) {
    if (beta == Real(1)) return;
#pragma omp parallel for schedule(static) if (parallel_worth((long long)M * N))
    for (int i = 0; i < M; i++) {
        Real* row = C + (size_t)i * ldc;
        if (beta == Real(0))
            std::memset(row, 0, sizeof(Real) * N);
        else
            for (int j = 0; j < N; j++) row[j] *= beta;
    }
}

}  // namespace

template <typename Real>
void gemm_cpu(bool trans_a, bool trans_b, int M, int N, int K, Real alpha, const Real* A, int lda, const Real* B,
              int ldb, Real beta, Real* C, int ldc) {
    constexpr int nr = NR<Real>;
    LLMQ_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm_cpu: negative size M=%d N=%d K=%d", M, N, K);
    LLMQ_CHECK(ldc >= N && lda >= (trans_a ? M : K) && ldb >= (trans_b ? K : N),
               "gemm_cpu: leading dimension too small (lda=%d ldb=%d ldc=%d for M=%d N=%d K=%d)", lda, ldb, ldc, M, N,
               K);
    if (M == 0 || N == 0) return;
    if (K == 0 || alpha == Real(0)) return scale_c(C, ldc, M, N, beta);
    // beta = 0 is folded into the first k block (overwrite), beta = 1 needs nothing
    if (beta != Real(0)) scale_c(C, ldc, M, N, beta);

    // Rows are dealt out in tasks, ~4 per thread so a thread that the OS preempts delays little; each
    // task packs its own copies of the B blocks it needs, which costs 1/task_rows of its multiply-adds
    // in copies and frees the threads of any barrier (on a busy machine a barrier can wait a whole
    // scheduler time slice). A multiply-add is cheaper than an elementwise op, hence the / 64.
    const bool parallel = parallel_worth((long long)M * N * K / 64);
    const int n_threads = parallel ? omp_get_max_threads() : 1;
    const int task_rows = round_up(ceil_div(M, 4 * n_threads), MR);
    const int n_tasks = ceil_div(M, task_rows);
#pragma omp parallel if (parallel)
    {
        // packed blocks, this thread's own (new[] leaves them uninitialised: they are written before read)
        std::unique_ptr<Real[]> Bp(new Real[(size_t)std::min(KC, K) * std::min(NC, round_up(N, nr))]);
        std::unique_ptr<Real[]> Ap(new Real[(size_t)std::min(KC, K) * MC]);
#pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < n_tasks; task++) {
            const int i0 = task * task_rows, i1 = std::min(M, i0 + task_rows);
            for (int jc = 0; jc < N; jc += NC) {
                const int nc = std::min(NC, N - jc);
                const int n_panels = ceil_div(nc, nr);
                for (int pc = 0; pc < K; pc += KC) {
                    const int kc = std::min(KC, K - pc);
                    for (int p = 0; p < n_panels; p++)
                        pack_b_panel(Bp.get() + (size_t)p * kc * nr, B, ldb, trans_b, pc, kc, jc + p * nr, N);
                    for (int ic = i0; ic < i1; ic += MC) {
                        const int mc = std::min(MC, i1 - ic);
                        for (int ir = 0; ir < mc; ir += MR)
                            pack_a_panel(Ap.get() + (size_t)ir * kc, A, lda, trans_a, alpha, ic + ir, i1, pc, kc);
                        for (int p = 0; p < n_panels; p++) {
                            const int j0 = p * nr;
                            const int cols = std::min(nr, nc - j0);
                            for (int ir = 0; ir < mc; ir += MR)
                                micro_kernel(kc, Ap.get() + (size_t)ir * kc, Bp.get() + (size_t)p * kc * nr,
                                             C + (size_t)(ic + ir) * ldc + jc + j0, ldc, std::min(MR, mc - ir),
                                             cols, beta == Real(0) && pc == 0);
                        }
                    }
                }
            }
        }
    }
}

template <typename Real>
void matmul_forward_cpu(Real* out, const Real* inp, const Real* weight, int N, int C, int OC) {
    // out (N,OC) = inp (N,C) @ weight (OC,C)^T
    gemm_cpu<Real>(false, true, N, OC, C, Real(1), inp, C, weight, C, Real(0), out, OC);
}

template <typename Real>
void matmul_backward_input_cpu(Real* dinp, const Real* dout, const Real* weight, int N, int C, int OC) {
    // dinp (N,C) += dout (N,OC) @ weight (OC,C)
    gemm_cpu<Real>(false, false, N, C, OC, Real(1), dout, OC, weight, C, Real(1), dinp, C);
}

template <typename Real>
void matmul_backward_weight_cpu(Real* dweight, const Real* dout, const Real* inp, int N, int C, int OC) {
    // dweight (OC,C) += dout (N,OC)^T @ inp (N,C)
    gemm_cpu<Real>(true, false, OC, C, N, Real(1), dout, OC, inp, C, Real(1), dweight, C);
}

#define LLMQ_INSTANTIATE(Real)                                                                                   \
    template void gemm_cpu<Real>(bool, bool, int, int, int, Real, const Real*, int, const Real*, int, Real, Real*, \
                                 int);                                                                           \
    template void matmul_forward_cpu<Real>(Real*, const Real*, const Real*, int, int, int);                      \
    template void matmul_backward_input_cpu<Real>(Real*, const Real*, const Real*, int, int, int);               \
    template void matmul_backward_weight_cpu<Real>(Real*, const Real*, const Real*, int, int, int);
LLMQ_INSTANTIATE(float)
LLMQ_INSTANTIATE(double)
#undef LLMQ_INSTANTIATE

}  // namespace llmq
