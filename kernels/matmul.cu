// matmul.cu: the linear layer's three products on the GPU, through cuBLASLt (no kernel of our own).
//
// Compute-bound: a product of (M,K) by (K,N) does 2MNK flops on (MK + KN + MN) elements, ~1000 flops per
// byte at the models' shapes (N = 8192 rows, C >= 512), far above the ~300 flops/byte an H100 balances at,
// so the tensor cores set the speed and cuBLASLt's kernels are the ones to use. bf16 operands, fp32
// accumulation (CUBLAS_COMPUTE_32F, scale type fp32). dweight is fp32 with beta = 1: cuBLASLt's table of
// supported types has A/B CUDA_R_16BF with C/D CUDA_R_32F for CUBLAS_COMPUTE_32F (the combination
// Megatron / TransformerEngine use for their fp32 main_grad accumulation).
//
// Row-major to column-major: cuBLAS is column-major. A row-major (R,S) matrix with row stride S is, read
// column-major, its transpose (S,R) with ld = S, without moving a byte. So every row-major product
// Y = X1 X2 is computed as the column-major Y^T = X2^T X1^T, with each operand's stored buffer taken as
// the column-major transpose of what the row-major formula names:
//   forward        out (N,OC) = inp (N,C) W^T        ->  out^T (OC,N) = W (OC,C) inp^T (C,N)
//                  A = W stored col-major (C,OC) ld C, op T;  B = inp (C,N) ld C, op N;  D (OC,N) ld OC
//   backward in    dinp (N,C) = dout (N,OC) W (OC,C) ->  dinp^T (C,N) = W^T (C,OC) dout^T (OC,N)
//                  A = W (C,OC) ld C, op N;  B = dout (OC,N) ld OC, op N;  D (C,N) ld C
//   backward w     dW (OC,C) += dout^T inp           ->  dW^T (C,OC) += inp^T (C,N) dout (N,OC)
//                  A = inp (C,N) ld C, op N;  B = dout stored (OC,N) ld OC, op T;  D (C,OC) ld C
//
// Determinism: cuBLASLt gives the same bits on every run for the same algorithm and device, and the
// algorithm is chosen once per problem and cached. Split-K is restricted to reductions in the compute type
// (workspace partials summed in a fixed order): the "in place" and "output type" schemes would sum partial
// products in bf16 for the bf16 outputs, losing accuracy.
//
// dev/matmul.cu has the versions and the benchmark; test/test_matmul_cuda.cu the check against the CPU.
#include "matmul_cuda.h"

#include <map>
#include <tuple>

namespace llmq {

void cublas_check(cublasStatus_t status, const char* call, const char* file, int line) {
    if (status == CUBLAS_STATUS_SUCCESS) return;
    throw Error(format("cuBLAS error in %s (%s:%d): %s: %s", call, file, line, cublasLtGetStatusName(status),
                       cublasLtGetStatusString(status)));
}

// (transa, transb, m, n, k, D type, accumulate, alignment of A, B, C/D in bytes) -> the heuristic's choice
struct Blas::AlgoCache {
    using Key = std::tuple<bool, bool, int, int, int, int, bool, unsigned, unsigned, unsigned>;
    std::map<Key, cublasLtMatmulAlgo_t> algos;
};

Blas::Blas() : workspace_(kWorkspaceBytes), cache_(std::make_unique<AlgoCache>()) {
    CUBLAS_CHECK(cublasLtCreate(&handle_));
}

Blas::~Blas() {
    if (handle_) cublasLtDestroy(handle_);
}

size_t Blas::cached_algorithms() const { return cache_->algos.size(); }

namespace {

// Owners of cuBLASLt's descriptors, so an error thrown halfway leaks none.
struct MatmulDesc {
    cublasLtMatmulDesc_t d = nullptr;
    MatmulDesc(bool trans_a, bool trans_b) {
        CUBLAS_CHECK(cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
        const cublasOperation_t ta = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    }
    ~MatmulDesc() { cublasLtMatmulDescDestroy(d); }
};
// a column-major (rows, cols) matrix with leading dimension ld, as stored (before op)
struct Layout {
    cublasLtMatrixLayout_t l = nullptr;
    Layout(cudaDataType_t type, int rows, int cols, int ld) {
        CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, type, (uint64_t)rows, (uint64_t)cols, (int64_t)ld));
    }
    ~Layout() { cublasLtMatrixLayoutDestroy(l); }
};
struct Preference {
    cublasLtMatmulPreference_t p = nullptr;
    Preference() { CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&p)); }
    ~Preference() { cublasLtMatmulPreferenceDestroy(p); }
    void set(cublasLtMatmulPreferenceAttributes_t attr, uint32_t value) {
        CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(p, attr, &value, sizeof value));
    }
};

// The largest power of two, up to 256, dividing the address: what the heuristic may assume of a pointer.
unsigned alignment_bytes(const void* p) {
    unsigned a = 256;
    while (a > 1 && reinterpret_cast<uintptr_t>(p) % a != 0) a /= 2;
    return a;
}

// Column-major D (m,n) = op(A) op(B) (+ D when accumulate), A and B bf16, D bf16 or fp32 (d_type), C = D.
// op(A) is (m,k): A is stored (k,m) when trans_a, else (m,k); op(B) is (k,n): B stored (n,k) when trans_b.
void gemm_lt(Blas& blas, const char* op, bool trans_a, bool trans_b, int m, int n, int k, const bf16* A, int lda,
             const bf16* B, int ldb, void* D, cudaDataType_t d_type, int ldd, bool accumulate, cudaStream_t stream) {
    MatmulDesc desc(trans_a, trans_b);
    Layout a(CUDA_R_16BF, trans_a ? k : m, trans_a ? m : k, lda), b(CUDA_R_16BF, trans_b ? n : k, trans_b ? k : n, ldb),
        d(d_type, m, n, ldd);
    const unsigned align_a = alignment_bytes(A), align_b = alignment_bytes(B), align_d = alignment_bytes(D);
    const Blas::AlgoCache::Key key{trans_a, trans_b, m, n, k, (int)d_type, accumulate, align_a, align_b, align_d};
    auto& algos = blas.algo_cache().algos;
    auto it = algos.find(key);
    if (it == algos.end()) {
        // the heuristic's first choice under our constraints; without any compute-type split-K algorithm
        // (not expected), any reduction scheme rather than none
        cublasLtMatmulHeuristicResult_t result{};
        int found = 0;
        for (uint32_t schemes : {(uint32_t)CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE, (uint32_t)CUBLASLT_REDUCTION_SCHEME_MASK}) {
            Preference pref;
            const uint64_t workspace = Blas::kWorkspaceBytes;
            CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                              &workspace, sizeof workspace));
            pref.set(CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, schemes);
            pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_a);
            pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_b);
            pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_d);
            pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_d);
            CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(blas.handle(), desc.d, a.l, b.l, d.l, d.l, pref.p, 1, &result,
                                                        &found));
            if (found > 0) break;
        }
        LLMQ_CHECK(found > 0,
                   "%s: cuBLASLt has no algorithm for m=%d n=%d k=%d (lda %d, ldb %d, ldd %d, alignment %u/%u/%u bytes)",
                   op, m, n, k, lda, ldb, ldd, align_a, align_b, align_d);
        it = algos.emplace(key, result.algo).first;
    }
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    CUBLAS_CHECK(cublasLtMatmul(blas.handle(), desc.d, &alpha, A, a.l, B, b.l, &beta, D, d.l, D, d.l, &it->second,
                                blas.workspace(), Blas::kWorkspaceBytes, stream));
    CUDA_CHECK_LAUNCH();
}

void check_sizes(const char* op, int N, int C, int OC) {
    LLMQ_CHECK(N > 0 && C > 0 && OC > 0, "%s: sizes must be positive (N=%d, C=%d, OC=%d)", op, N, C, OC);
}
template <typename T>
void check_pointer(const char* op, const char* name, const T* p) {
    LLMQ_CHECK(p != nullptr, "%s: %s is null", op, name);
    LLMQ_CHECK(reinterpret_cast<uintptr_t>(p) % sizeof(T) == 0, "%s: %s (%p) is not aligned to its %zu-byte elements",
               op, name, (const void*)p, sizeof(T));
}

}  // namespace

void matmul_forward_cuda(Blas& blas, bf16* out, const bf16* inp, const bf16* weight, int N, int C, int OC,
                         cudaStream_t stream) {
    const char* op = "matmul_forward_cuda";
    check_sizes(op, N, C, OC);
    check_pointer(op, "out", out), check_pointer(op, "inp", inp), check_pointer(op, "weight", weight);
    // out^T (OC,N) = W (OC,C) inp^T (C,N): m = OC, n = N, k = C
    gemm_lt(blas, op, true, false, OC, N, C, weight, C, inp, C, out, CUDA_R_16BF, OC, false, stream);
}

void matmul_backward_input_cuda(Blas& blas, bf16* dinp, const bf16* dout, const bf16* weight, int N, int C, int OC,
                                bool accumulate, cudaStream_t stream) {
    const char* op = "matmul_backward_input_cuda";
    check_sizes(op, N, C, OC);
    check_pointer(op, "dinp", dinp), check_pointer(op, "dout", dout), check_pointer(op, "weight", weight);
    // dinp^T (C,N) = W^T (C,OC) dout^T (OC,N): m = C, n = N, k = OC
    gemm_lt(blas, op, false, false, C, N, OC, weight, C, dout, OC, dinp, CUDA_R_16BF, C, accumulate, stream);
}

void matmul_backward_weight_cuda(Blas& blas, float* dweight, const bf16* dout, const bf16* inp, int N, int C, int OC,
                                 cudaStream_t stream) {
    const char* op = "matmul_backward_weight_cuda";
    check_sizes(op, N, C, OC);
    check_pointer(op, "dweight", dweight), check_pointer(op, "dout", dout), check_pointer(op, "inp", inp);
    // dW^T (C,OC) += inp^T (C,N) dout (N,OC): m = C, n = OC, k = N
    gemm_lt(blas, op, false, true, C, OC, N, inp, C, dout, OC, dweight, CUDA_R_32F, C, true, stream);
}

}  // namespace llmq
