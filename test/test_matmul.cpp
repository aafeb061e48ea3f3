// Tests of kernels/matmul_cpu.cpp: gemm_cpu against a naive double product (all four transposes,
// padded strides, several k and n blocks, beta = 0 / 1 / other), its thread-count independence, and
// the linear layer's three products (finite differences in double, float against double).
#include <gtest/gtest.h>
#include <omp.h>

#include "../kernels/matmul.h"
#include "op_test_util.h"

using namespace llmq;
using namespace llmq::test;

namespace {

// C(M,N) = alpha op(A) op(B) + beta C in double, the obvious way
std::vector<double> naive_gemm(bool ta, bool tb, int M, int N, int K, double alpha, const std::vector<double>& A,
                               int lda, const std::vector<double>& B, int ldb, double beta,
                               const std::vector<double>& C, int ldc) {
    std::vector<double> R = C;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0;
            for (int k = 0; k < K; k++)
                acc += (ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                       (tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
            R[(size_t)i * ldc + j] = alpha * acc + (beta == 0 ? 0.0 : beta * C[(size_t)i * ldc + j]);
        }
    return R;
}

template <typename Real>
void check_gemm_against_naive(int M, int N, int K, double rtol) {
    Rng rng(100 + M + N + K);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (double beta : {0.0, 1.0, -0.5}) {
                const int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;  // padded rows
                auto A = randn((size_t)(ta ? K : M) * lda, rng), B = randn((size_t)(tb ? N : K) * ldb, rng);
                auto C = randn((size_t)M * ldc, rng);
                auto ref = naive_gemm(ta, tb, M, N, K, 0.75, A, lda, B, ldb, beta, C, ldc);
                auto Cr = cast<Real>(C);
                if (beta == 0.0)  // beta = 0 must overwrite, NaNs included; the padding must survive
                    for (int i = 0; i < M; i++)
                        for (int j = 0; j < N; j++) Cr[(size_t)i * ldc + j] = std::numeric_limits<Real>::quiet_NaN();
                auto Ar = cast<Real>(A), Br = cast<Real>(B);
                gemm_cpu<Real>(ta, tb, M, N, K, Real(0.75), Ar.data(), lda, Br.data(), ldb, Real(beta), Cr.data(), ldc);
                expect_close(format("gemm M=%d N=%d K=%d ta=%d tb=%d beta=%g", M, N, K, ta, tb, beta), to_double(Cr),
                             ref, rtol);
            }
}

}  // namespace

TEST(Gemm, AllTransposesMatchNaiveFloat) {
    check_gemm_against_naive<float>(37, 53, 600, 1e-5);  // partial register tiles, two k blocks (KC = 512)
    check_gemm_against_naive<float>(100, 2100, 3, 1e-5);  // two n blocks (NC = 2048), tiny K
}

TEST(Gemm, AllTransposesMatchNaiveDouble) {
    check_gemm_against_naive<double>(13, 29, 530, 1e-13);
    check_gemm_against_naive<double>(1, 1, 1, 1e-15);
}

TEST(Gemm, DegenerateSizes) {
    Rng rng(5);
    auto C = cast<float>(randn(6, rng));
    auto C0 = C;
    float A = 1.0f, B = 1.0f;
    gemm_cpu<float>(false, false, 2, 3, 0, 1.0f, &A, 1, &B, 3, 2.0f, C.data(), 3);  // K = 0: C = beta C
    for (int i = 0; i < 6; i++) EXPECT_EQ(C[i], 2.0f * C0[i]);
    gemm_cpu<float>(false, false, 0, 3, 4, 1.0f, &A, 4, &B, 3, 0.0f, C.data(), 3);  // M = 0: nothing
    for (int i = 0; i < 6; i++) EXPECT_EQ(C[i], 2.0f * C0[i]);
    auto poisoned = nans<float>(6);
    gemm_cpu<float>(false, false, 2, 3, 0, 1.0f, &A, 1, &B, 3, 0.0f, poisoned.data(), 3);  // K = 0, beta = 0: zeros
    for (int i = 0; i < 6; i++) EXPECT_EQ(poisoned[i], 0.0f);
    poisoned = nans<float>(6);
    std::vector<float> A2(8, 1.0f), B2(12, 1.0f);
    gemm_cpu<float>(false, false, 2, 3, 4, 0.0f, A2.data(), 4, B2.data(), 3, 0.0f, poisoned.data(), 3);  // alpha = 0
    for (int i = 0; i < 6; i++) EXPECT_EQ(poisoned[i], 0.0f);
    EXPECT_THROW(gemm_cpu<float>(false, false, 2, 3, 4, 1.0f, &A, 3, &B, 3, 0.0f, C.data(), 3), Error);  // lda < K
}

TEST(Gemm, ResultDoesNotDependOnThreadCount) {
    Rng rng(6);
    const int M = 300, N = 200, K = 530;  // big enough for gemm_cpu to use a team
    auto A = cast<float>(randn((size_t)K * M, rng)), B = cast<float>(randn((size_t)K * N, rng));
    std::vector<float> C1((size_t)M * N), C2((size_t)M * N);
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    gemm_cpu<float>(true, false, M, N, K, 1.0f, A.data(), M, B.data(), N, 0.0f, C1.data(), N);
    omp_set_num_threads(3);  // more threads than row blocks of some sizes, fewer than others
    gemm_cpu<float>(true, false, M, N, K, 1.0f, A.data(), M, B.data(), N, 0.0f, C2.data(), N);
    omp_set_num_threads(threads);
    EXPECT_EQ(C1, C2);
}

namespace {

struct MatmulResult {
    std::vector<double> out, dinp, dweight;
};

// Runs the forward, then both backward products into buffers that start at dinp0 / dweight0.
template <typename Real>
MatmulResult run_matmul(const std::vector<double>& inp, const std::vector<double>& weight,
                        const std::vector<double>& dout, const std::vector<double>& dinp0,
                        const std::vector<double>& dweight0, int N, int C, int OC) {
    auto x = cast<Real>(inp), w = cast<Real>(weight), dy = cast<Real>(dout);
    auto out = nans<Real>((size_t)N * OC);
    auto dx = cast<Real>(dinp0), dw = cast<Real>(dweight0);
    matmul_forward_cpu<Real>(out.data(), x.data(), w.data(), N, C, OC);
    matmul_backward_input_cpu<Real>(dx.data(), dy.data(), w.data(), N, C, OC);
    matmul_backward_weight_cpu<Real>(dw.data(), dy.data(), x.data(), N, C, OC);
    return {to_double(out), to_double(dx), to_double(dw)};
}

}  // namespace

TEST(Matmul, GradientsMatchFiniteDifferences) {
    Rng rng(7);
    const int N = 5, C = 7, OC = 9;
    auto inp = randn((size_t)N * C, rng), weight = randn((size_t)OC * C, rng);
    auto wloss = randn((size_t)N * OC, rng);  // L = sum(out * wloss), so dout = wloss
    auto dinp0 = randn(inp.size(), rng), dweight0 = randn(weight.size(), rng);
    auto r = run_matmul<double>(inp, weight, wloss, dinp0, dweight0, N, C, OC);
    auto loss = [&]() { return dot(run_matmul<double>(inp, weight, wloss, dinp0, dweight0, N, C, OC).out, wloss); };
    expect_gradient_matches_fd("dinp", inp, added(r.dinp, dinp0), loss);
    expect_gradient_matches_fd("dweight", weight, added(r.dweight, dweight0), loss);
}

TEST(Matmul, FloatMatchesDouble) {
    Rng rng(8);
    const int N = 33, C = 70, OC = 45;
    auto inp = randn((size_t)N * C, rng), weight = randn((size_t)OC * C, rng), dout = randn((size_t)N * OC, rng);
    auto dinp0 = randn(inp.size(), rng), dweight0 = randn(weight.size(), rng);
    auto d = run_matmul<double>(inp, weight, dout, dinp0, dweight0, N, C, OC);
    auto f = run_matmul<float>(inp, weight, dout, dinp0, dweight0, N, C, OC);
    expect_close("out", f.out, d.out);
    expect_close("dinp", f.dinp, d.dinp);
    expect_close("dweight", f.dweight, d.dweight);
}
