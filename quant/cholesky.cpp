// cholesky: Cholesky factorisation and the inverse from it, in double (cholesky.h).
#include "cholesky.h"

#include <algorithm>
#include <cmath>

#include "../kernels/common.h"

namespace llmq {

std::vector<double> cholesky_lower(const double* a, int64_t n, const char* what) {
    LLMQ_CHECK(n > 0, "%s: matrix size %lld must be positive", what, (long long)n);
    std::vector<double> l(n * n, 0.0);
    // Cholesky-Banachiewicz by columns: each entry is a dot product of two row prefixes (contiguous).
    for (int64_t j = 0; j < n; j++) {
        const double* lj = &l[j * n];
        double d = a[j * n + j];
        for (int64_t k = 0; k < j; k++) d -= lj[k] * lj[k];
        LLMQ_CHECK(std::isfinite(d) && d > 0,
                   "%s: matrix (%lld, %lld) is not positive definite (pivot %lld is %g) or holds a non-finite value",
                   what, (long long)n, (long long)n, (long long)j, d);
        const double djj = std::sqrt(d);
        l[j * n + j] = djj;
        // a parallel region per column only pays off when the column's work is large (oversubscribed
        // machines make every barrier expensive)
#pragma omp parallel for schedule(static) if ((n - j) * j > (1 << 20))
        for (int64_t i = j + 1; i < n; i++) {
            const double* li = &l[i * n];
            double s = a[i * n + j];
            for (int64_t k = 0; k < j; k++) s -= li[k] * lj[k];
            l[i * n + j] = s / djj;
        }
    }
    // a non-finite off-diagonal entry of a does not show in any pivot it feeds through 0 * inf; check all
    for (int64_t i = 0; i < n * n; i++)
        LLMQ_CHECK(std::isfinite(l[i]), "%s: matrix (%lld, %lld) holds a non-finite value (row %lld col %lld)", what,
                   (long long)n, (long long)n, (long long)(i / n), (long long)(i % n));
    return l;
}

std::vector<double> cholesky_inverse(const double* l, int64_t n) {
    // M = L^{-1} (lower), row by row: M[i][:] = (e_i - sum_{k<i} L[i][k] M[k][:]) / L[i][i]. Columns are
    // independent, so each thread owns a strip of 64 columns and walks the rows with contiguous axpys.
    std::vector<double> m(n * n, 0.0);
    const int64_t strip = 64;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t j0 = 0; j0 < n; j0 += strip) {
        const int64_t j1 = std::min(n, j0 + strip);
        for (int64_t i = j0; i < n; i++) {
            double* mi = &m[i * n];
            for (int64_t k = j0; k < i; k++) {
                const double lik = l[i * n + k];
                const double* mk = &m[k * n];
                for (int64_t j = j0; j < std::min(j1, k + 1); j++) mi[j] -= lik * mk[j];
            }
            if (i < j1) mi[i] += 1.0;
            for (int64_t j = j0; j < std::min(j1, i + 1); j++) mi[j] /= l[i * n + i];
        }
    }
    // A^{-1} = M^T M: entry (i, j) = sum over k >= max(i, j) of M[k][i] M[k][j]; fill both triangles.
    std::vector<double> inv(n * n, 0.0);
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = i; k < n; k++) {
            const double mki = m[k * n + i];
            for (int64_t j = i; j <= k; j++) inv[i * n + j] += mki * m[k * n + j];
        }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++) inv[i * n + j] = inv[j * n + i];
    return inv;
}

std::vector<double> cholesky_upper(const double* a, int64_t n, const char* what) {
    std::vector<double> l = cholesky_lower(a, n, what), u(n * n);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) u[i * n + j] = l[j * n + i];
    return u;
}

}  // namespace llmq
