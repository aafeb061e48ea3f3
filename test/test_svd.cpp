// test_svd: the LAPACK-backed thin SVD and symmetric eigendecomposition reconstruct their input, return
// orthonormal factors and ordered values, and name the matrix on bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "../adapters/svd.h"
#include "test_util.h"

using namespace llmq;

namespace {

std::vector<double> random_matrix(int64_t m, int64_t n, uint64_t seed) {
    Rng rng(seed);
    std::vector<double> a(m * n);
    for (double& x : a) x = rng.normal();
    return a;
}

void check_svd(int64_t m, int64_t n, uint64_t seed) {
    const std::vector<double> a = random_matrix(m, n, seed);
    const Svd s = svd_thin(a.data(), m, n, "test matrix");
    const int64_t k = std::min(m, n);
    ASSERT_EQ(s.k, k);
    for (int64_t i = 1; i < k; i++) EXPECT_GE(s.S[i - 1], s.S[i]);
    EXPECT_GE(s.S[k - 1], 0.0);
    double err = 0, norm = 0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double r = 0;
            for (int64_t c = 0; c < k; c++) r += s.U[i * k + c] * s.S[c] * s.Vt[c * n + j];
            err = std::max(err, std::fabs(r - a[i * n + j]));
            norm = std::max(norm, std::fabs(a[i * n + j]));
        }
    EXPECT_LT(err, 1e-12 * norm * (m + n)) << m << "x" << n;
    for (int64_t c = 0; c < k; c++)
        for (int64_t d = 0; d < k; d++) {
            double uu = 0, vv = 0;
            for (int64_t i = 0; i < m; i++) uu += s.U[i * k + c] * s.U[i * k + d];
            for (int64_t j = 0; j < n; j++) vv += s.Vt[c * n + j] * s.Vt[d * n + j];
            EXPECT_NEAR(uu, c == d ? 1.0 : 0.0, 1e-12);
            EXPECT_NEAR(vv, c == d ? 1.0 : 0.0, 1e-12);
        }
}

}  // namespace

TEST(Svd, ReconstructsTallWideAndSquare) {
    check_svd(7, 3, 1);
    check_svd(3, 7, 2);
    check_svd(12, 12, 3);
    check_svd(1, 5, 4);
}

TEST(Svd, KnownSingularValues) {
    // diag(3, 1) rotated: singular values are 3 and 1 whatever the rotation
    const double c = std::cos(0.3), s = std::sin(0.3);
    const double a[4] = {3 * c, -1 * s, 3 * s, 1 * c};
    const Svd r = svd_thin(a, 2, 2, "rotation");
    EXPECT_NEAR(r.S[0], 3.0, 1e-14);
    EXPECT_NEAR(r.S[1], 1.0, 1e-14);
}

TEST(Svd, NonFiniteInputNamesTheMatrix) {
    std::vector<double> a = random_matrix(4, 4, 5);
    a[6] = std::numeric_limits<double>::quiet_NaN();
    llmq_test::expect_error([&] { svd_thin(a.data(), 4, 4, "layer 3 gradient"); },
                            {"layer 3 gradient", "non-finite", "row 1 col 2"});
}

TEST(SymmetricEigen, ReconstructsAndOrders) {
    const int64_t n = 9;
    const std::vector<double> b = random_matrix(n, n, 6);
    std::vector<double> a(n * n, 0.0);  // a = b b^T, symmetric positive semi-definite
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            for (int64_t c = 0; c < n; c++) a[i * n + j] += b[i * n + c] * b[j * n + c];
    std::vector<double> lower = a;  // only the lower triangle may be read: poison the upper one
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i + 1; j < n; j++) lower[i * n + j] = 1e30;
    const SymmetricEigen e = symmetric_eigen(lower.data(), n, "hessian");
    for (int64_t i = 1; i < n; i++) EXPECT_LE(e.w[i - 1], e.w[i]);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double r = 0, vv = 0;
            for (int64_t c = 0; c < n; c++) r += e.V[i * n + c] * e.w[c] * e.V[j * n + c];
            for (int64_t c = 0; c < n; c++) vv += e.V[c * n + i] * e.V[c * n + j];
            EXPECT_NEAR(r, a[i * n + j], 1e-10 * (1 + std::fabs(a[i * n + j])));
            EXPECT_NEAR(vv, i == j ? 1.0 : 0.0, 1e-12);
        }
}
