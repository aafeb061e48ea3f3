// matmul: the linear layer's three products, y = x W^T and its two gradients, plus the general
// cache-blocked SGEMM they (and adapters, GaLore projections, GPTQ, ...) are built on.
// CPU reference in matmul_cpu.cpp (OpenMP, cache-blocked, vectorisable inner loop); on the GPU the
// plain products go through cuBLASLt.
#pragma once

namespace llmq {

// Every *_cpu function is a template over the scalar type Real, instantiated for float (the runtime) and
// double (the finite-difference gradient checks) in the .cpp beside this header.

// Row-major C(M,N) = alpha * op(A) op(B) + beta * C, op(X) = X or X^T.
// A is (M,K) or, transposed, stored (K,M); B is (K,N) or, transposed, stored (N,K).
// lda/ldb/ldc are the row strides of the matrices as stored. beta = 0 overwrites C (NaNs in C ignored).
template <typename Real>
void gemm_cpu(bool trans_a, bool trans_b, int M, int N, int K, Real alpha, const Real* A, int lda,
              const Real* B, int ldb, Real beta, Real* C, int ldc);

// out (N,OC) = inp (N,C) @ weight (OC,C)^T           (overwrites out)
template <typename Real>
void matmul_forward_cpu(Real* out, const Real* inp, const Real* weight, int N, int C, int OC);
// dinp (N,C) += dout (N,OC) @ weight (OC,C)
template <typename Real>
void matmul_backward_input_cpu(Real* dinp, const Real* dout, const Real* weight, int N, int C, int OC);
// dweight (OC,C) += dout (N,OC)^T @ inp (N,C)
template <typename Real>
void matmul_backward_weight_cpu(Real* dweight, const Real* dout, const Real* inp, int N, int C, int OC);

}  // namespace llmq
