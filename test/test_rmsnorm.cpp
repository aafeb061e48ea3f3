// Tests of kernels/rmsnorm_cpu.cpp: known rstd and output, gradients of input and weight against
// finite differences in double (odd C), float against double.
#include <gtest/gtest.h>

#include "../kernels/rmsnorm.h"
#include "op_test_util.h"

using namespace llmq;
using namespace llmq::test;

namespace {

struct RmsnormResult {
    std::vector<double> out, rstd, dinp, dweight;
};

template <typename Real>
RmsnormResult run_rmsnorm(const std::vector<double>& inp, const std::vector<double>& weight,
                          const std::vector<double>& dout, const std::vector<double>& dinp0,
                          const std::vector<double>& dweight0, int N, int C, double eps) {
    auto x = cast<Real>(inp), w = cast<Real>(weight), dy = cast<Real>(dout);
    auto dx = cast<Real>(dinp0), dw = cast<Real>(dweight0);
    auto y = nans<Real>((size_t)N * C), rstd = nans<Real>(N);
    rmsnorm_forward_cpu<Real>(y.data(), rstd.data(), x.data(), w.data(), N, C, (Real)eps);
    rmsnorm_backward_cpu<Real>(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), N, C);
    return {to_double(y), to_double(rstd), to_double(dx), to_double(dw)};
}

}  // namespace

TEST(Rmsnorm, KnownValues) {
    Rng rng(1);
    const int N = 3, C = 5;
    const double eps = 1e-5;
    auto inp = randn((size_t)N * C, rng), weight = randn(C, rng);
    auto r = run_rmsnorm<double>(inp, weight, randn(inp.size(), rng), randn(inp.size(), rng), randn(C, rng), N, C, eps);
    for (int n = 0; n < N; n++) {
        double ms = 0;
        for (int c = 0; c < C; c++) ms += inp[n * C + c] * inp[n * C + c] / C;
        const double rstd = 1.0 / std::sqrt(ms + eps);
        EXPECT_NEAR(r.rstd[n], rstd, 1e-14 * rstd);
        for (int c = 0; c < C; c++) EXPECT_NEAR(r.out[n * C + c], inp[n * C + c] * rstd * weight[c], 1e-13);
    }
}

TEST(Rmsnorm, GradientsMatchFiniteDifferences) {
    Rng rng(2);
    const int N = 4, C = 7;
    const double eps = 1e-5;
    auto inp = randn((size_t)N * C, rng), weight = randn(C, rng), wloss = randn(inp.size(), rng);
    auto dinp0 = randn(inp.size(), rng), dweight0 = randn(C, rng);
    auto r = run_rmsnorm<double>(inp, weight, wloss, dinp0, dweight0, N, C, eps);
    auto loss = [&]() { return dot(run_rmsnorm<double>(inp, weight, wloss, dinp0, dweight0, N, C, eps).out, wloss); };
    expect_gradient_matches_fd("dinp", inp, added(r.dinp, dinp0), loss);
    expect_gradient_matches_fd("dweight", weight, added(r.dweight, dweight0), loss);
}

TEST(Rmsnorm, FloatMatchesDouble) {
    Rng rng(3);
    const int N = 40, C = 129;
    auto inp = randn((size_t)N * C, rng, 3.0), weight = randn(C, rng), dout = randn(inp.size(), rng);
    auto dinp0 = randn(inp.size(), rng), dweight0 = randn(C, rng);
    auto d = run_rmsnorm<double>(inp, weight, dout, dinp0, dweight0, N, C, 1e-6);
    auto f = run_rmsnorm<float>(inp, weight, dout, dinp0, dweight0, N, C, 1e-6);
    expect_close("out", f.out, d.out);
    expect_close("rstd", f.rstd, d.rstd);
    expect_close("dinp", f.dinp, d.dinp);
    expect_close("dweight", f.dweight, d.dweight);
}
