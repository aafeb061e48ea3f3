// Tests of kernels/adamw_cpu.cpp: one step worked by hand, the first step's bias correction
// (update = lr * sign(g) up to eps), decoupled weight decay, float against double, and
// sum_squares accumulating in double (deterministic over its chunks).
#include <gtest/gtest.h>

#include "../kernels/adamw.h"
#include "op_test_util.h"

using namespace llmq;
using namespace llmq::test;

TEST(Adamw, OneStepByHand) {
    // param 1, grad 0.5 scaled by 2 -> g = 1; m 0.1, v 0.01 from earlier steps; step 2
    double param = 1.0, grad = 0.5, m = 0.1, v = 0.01;
    adamw_update_cpu<double>(&param, &grad, &m, &v, 1, /*lr*/ 0.01, /*beta1*/ 0.9, /*beta2*/ 0.999, /*eps*/ 1e-8,
                             /*wd*/ 0.1, /*step*/ 2, /*grad_scale*/ 2.0);
    const double m_want = 0.9 * 0.1 + 0.1 * 1.0;               // 0.19
    const double v_want = 0.999 * 0.01 + 0.001 * 1.0;          // 0.01099
    const double mhat = m_want / (1 - 0.81), vhat = v_want / (1 - 0.998001);  // 1.0, 5.4977...
    const double param_want = 1.0 - 0.01 * (mhat / (std::sqrt(vhat) + 1e-8) + 0.1 * 1.0);
    EXPECT_NEAR(m, m_want, 1e-15);
    EXPECT_NEAR(v, v_want, 1e-15);
    EXPECT_NEAR(param, param_want, 1e-14);
    EXPECT_NEAR(param, 0.9947351128, 1e-10);  // the same, as a number (worked out separately in Python)
}

TEST(Adamw, FirstStepIsBiasCorrected) {
    // from m = v = 0, step 1: mhat = g, vhat = g^2, so each parameter moves by lr * g / (|g| + eps)
    Rng rng(1);
    const size_t n = 50;
    auto p0 = randn(n, rng), g = randn(n, rng);
    auto p = p0;
    std::vector<double> m(n, 0.0), v(n, 0.0);
    adamw_update_cpu<double>(p.data(), g.data(), m.data(), v.data(), n, 1e-3, 0.9, 0.95, 1e-8, 0.0, 1, 1.0);
    for (size_t i = 0; i < n; i++) EXPECT_NEAR(p[i], p0[i] - 1e-3 * g[i] / (std::fabs(g[i]) + 1e-8), 1e-15);
}

TEST(Adamw, WeightDecayIsDecoupled) {
    // the only difference weight decay makes is - lr * wd * param, whatever the gradient
    Rng rng(2);
    const size_t n = 40;
    auto p0 = randn(n, rng), g = randn(n, rng), m0 = randn(n, rng, 0.1), v0 = randn(n, rng, 0.1);
    for (auto& x : v0) x = x * x;  // second moments are >= 0
    auto pa = p0, pb = p0, ma = m0, mb = m0, va = v0, vb = v0;
    adamw_update_cpu<double>(pa.data(), g.data(), ma.data(), va.data(), n, 0.01, 0.9, 0.95, 1e-8, 0.0, 5, 0.5);
    adamw_update_cpu<double>(pb.data(), g.data(), mb.data(), vb.data(), n, 0.01, 0.9, 0.95, 1e-8, 0.1, 5, 0.5);
    for (size_t i = 0; i < n; i++) EXPECT_NEAR(pa[i] - pb[i], 0.01 * 0.1 * p0[i], 1e-15);
    EXPECT_EQ(ma, mb);
    EXPECT_EQ(va, vb);
}

TEST(Adamw, FloatMatchesDouble) {
    Rng rng(3);
    const size_t n = 1000;
    auto p0 = randn(n, rng), g = randn(n, rng), m0 = randn(n, rng, 0.1), v0 = randn(n, rng, 0.1);
    for (auto& x : v0) x = x * x;
    auto pd = p0, md = m0, vd = v0;
    auto pf = cast<float>(p0), gf = cast<float>(g), mf = cast<float>(m0), vf = cast<float>(v0);
    adamw_update_cpu<double>(pd.data(), g.data(), md.data(), vd.data(), n, 0.01, 0.9, 0.95, 1e-8, 0.1, 3, 0.7);
    adamw_update_cpu<float>(pf.data(), gf.data(), mf.data(), vf.data(), n, 0.01f, 0.9f, 0.95f, 1e-8f, 0.1f, 3, 0.7f);
    expect_close("param", to_double(pf), pd);
    expect_close("m", to_double(mf), md);
    expect_close("v", to_double(vf), vd);
}

TEST(Adamw, RejectsStepZero) {
    float p = 1, g = 1, m = 0, v = 0;
    EXPECT_THROW(adamw_update_cpu<float>(&p, &g, &m, &v, 1, 0.1f, 0.9f, 0.95f, 1e-8f, 0.0f, 0, 1.0f), Error);
}

TEST(SumSquares, AccumulatesInDouble) {
    // 1e4^2 = 1e8 then 999 ones: an fp32 accumulator loses every one of them (ulp(1e8) = 8)
    std::vector<float> x(1000, 1.0f);
    x[0] = 1e4f;
    EXPECT_EQ(sum_squares_cpu<float>(x.data(), x.size()), 1e8 + 999.0);
    // over several chunks, against a plain double sum
    Rng rng(4);
    auto y = cast<float>(randn(200003, rng));
    double want = 0;
    for (float e : y) want += (double)e * e;
    EXPECT_NEAR(sum_squares_cpu<float>(y.data(), y.size()), want, 1e-12 * want);
    auto yd = to_double(y);
    EXPECT_NEAR(sum_squares_cpu<double>(yd.data(), yd.size()), want, 1e-12 * want);
}
