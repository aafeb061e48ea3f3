// svd: thin SVD and symmetric eigendecomposition through LAPACK's divide-and-conquer drivers (svd.h).
#include "svd.h"

#include <algorithm>
#include <cmath>

#include "../kernels/common.h"

// LAPACK's Fortran entry points (liblapack); declared here rather than through lapacke so only the
// reference library is needed.
extern "C" {
void dgesdd_(const char* jobz, const int* m, const int* n, double* a, const int* lda, double* s, double* u,
             const int* ldu, double* vt, const int* ldvt, double* work, const int* lwork, int* iwork, int* info);
void dsyevd_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda, double* w, double* work,
             const int* lwork, int* iwork, const int* liwork, int* info);
}

namespace llmq {

static void check_finite(const double* a, int64_t count, int64_t cols, const char* what) {
    for (int64_t i = 0; i < count; i++)
        LLMQ_CHECK(std::isfinite(a[i]), "%s: matrix holds a non-finite value (row %lld col %lld)", what,
                   (long long)(i / cols), (long long)(i % cols));
}

Svd svd_thin(const double* a, int64_t m, int64_t n, const char* what) {
    LLMQ_CHECK(m > 0 && n > 0 && m < (1 << 30) / std::max<int64_t>(n, 1),
               "%s: SVD of a (%lld, %lld) matrix is not supported", what, (long long)m, (long long)n);
    check_finite(a, m * n, n, what);
    Svd r;
    r.m = m, r.n = n, r.k = std::min(m, n);
    r.U.resize(m * r.k), r.S.resize(r.k), r.Vt.resize(r.k * n);
    // LAPACK sees the column-major (n,m) matrix A^T = U' S V'^T: its U' (n,k) is our Vt (k,n) row-major,
    // its V'^T (k,m) is our U (m,k) row-major.
    std::vector<double> at(a, a + m * n);  // dgesdd overwrites its input
    const int M = (int)n, N = (int)m, K = (int)r.k, lda = M, ldu = M, ldvt = K;
    std::vector<int> iwork(8 * (size_t)K);
    int info = 0, lwork = -1;
    double query = 0;
    dgesdd_("S", &M, &N, at.data(), &lda, r.S.data(), r.Vt.data(), &ldu, r.U.data(), &ldvt, &query, &lwork,
            iwork.data(), &info);
    lwork = (int)query;
    std::vector<double> work(std::max(lwork, 1));
    dgesdd_("S", &M, &N, at.data(), &lda, r.S.data(), r.Vt.data(), &ldu, r.U.data(), &ldvt, work.data(), &lwork,
            iwork.data(), &info);
    LLMQ_CHECK(info == 0, "%s: SVD of a (%lld, %lld) matrix failed (LAPACK dgesdd info %d)", what, (long long)m,
               (long long)n, info);
    return r;
}

SymmetricEigen symmetric_eigen(const double* a, int64_t n, const char* what) {
    LLMQ_CHECK(n > 0 && n < (1 << 15), "%s: eigendecomposition of a (%lld, %lld) matrix is not supported", what,
               (long long)n, (long long)n);
    SymmetricEigen r;
    r.n = n, r.w.resize(n);
    // Our lower triangle (row-major) is LAPACK's upper triangle (column-major). LAPACK returns the
    // eigenvectors as columns of a column-major matrix, i.e. as rows of our row-major buffer: transpose.
    std::vector<double> v(a, a + n * n);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j <= i; j++) LLMQ_CHECK(std::isfinite(v[i * n + j]),
                       "%s: matrix holds a non-finite value (row %lld col %lld)", what, (long long)i, (long long)j);
    const int N = (int)n;
    int info = 0, lwork = -1, liwork = -1, iquery = 0;
    double query = 0;
    dsyevd_("V", "U", &N, v.data(), &N, r.w.data(), &query, &lwork, &iquery, &liwork, &info);
    lwork = (int)query, liwork = iquery;
    std::vector<double> work(std::max(lwork, 1));
    std::vector<int> iwork(std::max(liwork, 1));
    dsyevd_("V", "U", &N, v.data(), &N, r.w.data(), work.data(), &lwork, iwork.data(), &liwork, &info);
    LLMQ_CHECK(info == 0, "%s: eigendecomposition of a (%lld, %lld) matrix failed (LAPACK dsyevd info %d)", what,
               (long long)n, (long long)n, info);
    r.V.resize(n * n);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) r.V[i * n + j] = v[j * n + i];
    return r;
}

}  // namespace llmq
