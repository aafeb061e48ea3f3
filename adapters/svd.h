// svd: the dense factorisations the low-rank methods need, in double on the CPU through LAPACK
// (cuSOLVER takes this over on the GPU later).
//
//   GaLore   the top-r singular vectors of a weight gradient (the projection P)
//   LoQT     the same, of the gradient accumulated at a merge step
//   LoftQ    a rank-r truncated SVD of the quantization residual W - deq(Q)
//   CLoQ     the eigendecomposition of the calibration Hessian H = X^T X, then a truncated SVD
//
// Matrices are row-major. LAPACK is column-major: a row-major (m,n) matrix is the column-major (n,m)
// matrix A^T, and A^T = U' S V'^T means A = V' S U'^T, so LAPACK's V'^T (column-major) *is* our U
// (row-major) and its U' is our V^T: no transposes are copied (see svd.cpp).
#pragma once

#include <cstdint>
#include <vector>

namespace llmq {

// Thin SVD A = U diag(S) Vt of a (m,n) row-major matrix, k = min(m,n).
struct Svd {
    int64_t m = 0, n = 0, k = 0;
    std::vector<double> U;   // (m,k) row-major, orthonormal columns
    std::vector<double> S;   // (k), descending, >= 0
    std::vector<double> Vt;  // (k,n) row-major, orthonormal rows
};

// Throws Error naming `what` when a holds a non-finite value or LAPACK does not converge.
Svd svd_thin(const double* a, int64_t m, int64_t n, const char* what);

// Eigendecomposition A = V diag(w) V^T of a symmetric (n,n) matrix (only the lower triangle is read):
// w ascending, V (n,n) row-major with eigenvector j in column j.
struct SymmetricEigen {
    int64_t n = 0;
    std::vector<double> w;
    std::vector<double> V;
};
SymmetricEigen symmetric_eigen(const double* a, int64_t n, const char* what);

}  // namespace llmq
