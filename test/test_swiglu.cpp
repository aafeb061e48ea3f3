// Tests of kernels/swiglu_cpu.cpp and kernels/residual_cpu.cpp: known values, gradients against
// finite differences in double, float against double, the in-place backward equal to the out-of-place one.
#include <gtest/gtest.h>

#include "../kernels/residual.h"
#include "../kernels/swiglu.h"
#include "op_test_util.h"

using namespace llmq;
using namespace llmq::test;

namespace {

template <typename Real>
void run_swiglu(std::vector<double>& out, std::vector<double>& dgate, std::vector<double>& dup,
                const std::vector<double>& gate, const std::vector<double>& up, const std::vector<double>& dout) {
    const size_t n = gate.size();
    auto g = cast<Real>(gate), u = cast<Real>(up), dy = cast<Real>(dout);
    auto y = nans<Real>(n), dg = nans<Real>(n), du = nans<Real>(n);  // overwritten, whatever they held
    swiglu_forward_cpu<Real>(y.data(), g.data(), u.data(), n);
    swiglu_backward_cpu<Real>(dg.data(), du.data(), dy.data(), g.data(), u.data(), n);
    out = to_double(y);
    dgate = to_double(dg);
    dup = to_double(du);
}

}  // namespace

TEST(Swiglu, KnownValues) {
    Rng rng(1);
    std::vector<double> gate = {0.0, 1.0, -2.0, 30.0}, up = randn(4, rng), out, dg, du;
    run_swiglu<double>(out, dg, du, gate, up, randn(4, rng));
    EXPECT_EQ(out[0], 0.0);                                       // silu(0) = 0
    EXPECT_NEAR(out[1], up[1] / (1.0 + std::exp(-1.0)), 1e-15);   // silu(1) = sigmoid(1)
    EXPECT_NEAR(out[2], -2.0 * up[2] / (1.0 + std::exp(2.0)), 1e-15);
    EXPECT_NEAR(out[3], 30.0 * up[3], 1e-9);                      // silu(x) ~ x for large x
}

TEST(Swiglu, GradientsMatchFiniteDifferences) {
    Rng rng(2);
    const size_t n = 23;
    auto gate = randn(n, rng, 2.0), up = randn(n, rng), wloss = randn(n, rng);
    std::vector<double> out, dg, du;
    run_swiglu<double>(out, dg, du, gate, up, wloss);
    auto loss = [&]() {
        std::vector<double> o, a, b;
        run_swiglu<double>(o, a, b, gate, up, wloss);
        return dot(o, wloss);
    };
    expect_gradient_matches_fd("dgate", gate, dg, loss);
    expect_gradient_matches_fd("dup", up, du, loss);
}

TEST(Swiglu, FloatMatchesDouble) {
    Rng rng(3);
    const size_t n = 1001;
    auto gate = randn(n, rng, 3.0), up = randn(n, rng), dout = randn(n, rng);
    std::vector<double> od, gd, ud, of, gf, uf;
    run_swiglu<double>(od, gd, ud, gate, up, dout);
    run_swiglu<float>(of, gf, uf, gate, up, dout);
    expect_close("out", of, od);
    expect_close("dgate", gf, gd);
    expect_close("dup", uf, ud);
}

// The model's backward writes dgate over gate and dup over up: the same numbers as into fresh buffers.
TEST(Swiglu, InPlaceBackwardEqualsOutOfPlace) {
    Rng rng(5);
    const size_t n = 517;
    auto gate = cast<float>(randn(n, rng, 2.0)), up = cast<float>(randn(n, rng)), dout = cast<float>(randn(n, rng));
    auto dg = nans<float>(n), du = nans<float>(n);
    swiglu_backward_cpu<float>(dg.data(), du.data(), dout.data(), gate.data(), up.data(), n);
    swiglu_backward_cpu<float>(gate.data(), up.data(), dout.data(), gate.data(), up.data(), n);
    for (size_t i = 0; i < n; i++) {
        ASSERT_EQ(gate[i], dg[i]) << "dgate at " << i;
        ASSERT_EQ(up[i], du[i]) << "dup at " << i;
    }
}

TEST(Residual, AddsElementwise) {
    Rng rng(4);
    const size_t n = 77;
    auto a = cast<float>(randn(n, rng)), b = cast<float>(randn(n, rng));
    auto out = nans<float>(n);
    residual_forward_cpu<float>(out.data(), a.data(), b.data(), n);
    for (size_t i = 0; i < n; i++) EXPECT_EQ(out[i], a[i] + b[i]);
    auto outd = nans<double>(n);
    auto ad = to_double(a), bd = to_double(b);
    residual_forward_cpu<double>(outd.data(), ad.data(), bd.data(), n);
    for (size_t i = 0; i < n; i++) EXPECT_EQ(outd[i], ad[i] + bd[i]);
}
