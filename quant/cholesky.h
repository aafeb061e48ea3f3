// cholesky: the small dense symmetric positive-definite algebra GPTQ needs, in double on the CPU
// (cuSOLVER takes this over on the GPU later).
//
// GPTQ wants the upper Cholesky factor of the inverse (damped) Hessian: U with H^{-1} = U^T U. As the
// reference (torch) does, that is three steps: L = chol(H), H^{-1} = L^{-T} L^{-1}, U = chol(H^{-1})^T.
// Matrices are (n, n) row-major doubles. Row loops are OpenMP-parallel; O(n^3) each, n = a layer's input
// width (<= ~16k), so this is seconds, not the bottleneck of quantizing a layer.
#pragma once

#include <cstdint>
#include <vector>

namespace llmq {

// L (n,n), lower-triangular with zeros above the diagonal, such that A = L L^T. Reads only the lower
// triangle of a. Throws Error naming `what` and the failing pivot when A is not positive definite (a pivot
// <= 0) or holds a non-finite value.
std::vector<double> cholesky_lower(const double* a, int64_t n, const char* what);
// A^{-1} (n,n) from A's lower Cholesky factor l (torch.cholesky_inverse): L^{-T} L^{-1}, symmetric.
std::vector<double> cholesky_inverse(const double* l, int64_t n);
// U (n,n), upper-triangular with zeros below the diagonal, such that A = U^T U (U = L^T).
std::vector<double> cholesky_upper(const double* a, int64_t n, const char* what);

}  // namespace llmq
