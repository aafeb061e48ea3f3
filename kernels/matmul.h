// matmul: the linear layer's three products, y = x W^T and its two gradients, plus the general
// cache-blocked SGEMM they (and adapters, GaLore projections, GPTQ, ...) are built on.
// CPU reference in matmul_cpu.cpp (OpenMP, cache-blocked, vectorisable inner loop); on the GPU the
// plain products go through cuBLASLt.
#pragma once

namespace llmq {

// Row-major C(M,N) = alpha * op(A) op(B) + beta * C, op(X) = X or X^T.
// A is (M,K) or, transposed, stored (K,M); B is (K,N) or, transposed, stored (N,K).
// lda/ldb/ldc are the row strides of the matrices as stored. beta = 0 overwrites C (NaNs in C ignored).
void gemm_cpu(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
              const float* B, int ldb, float beta, float* C, int ldc);

// out (N,OC) = inp (N,C) @ weight (OC,C)^T           (overwrites out)
void matmul_forward_cpu(float* out, const float* inp, const float* weight, int N, int C, int OC);
// dinp (N,C) += dout (N,OC) @ weight (OC,C)
void matmul_backward_input_cpu(float* dinp, const float* dout, const float* weight, int N, int C, int OC);
// dweight (OC,C) += dout (N,OC)^T @ inp (N,C)
void matmul_backward_weight_cpu(float* dweight, const float* dout, const float* inp, int N, int C, int OC);

}  // namespace llmq
