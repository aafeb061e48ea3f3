// Tests of kernels/rope_cpu.cpp: the tables, position 0 is the identity, the rotate_half pairing
// (dim i with i + hd/2, NOT (2i, 2i+1)), backward = inverse rotation, in-place forward, gradient
// against finite differences in double, float against double.
#include <gtest/gtest.h>

#include "../kernels/rope.h"
#include "op_test_util.h"

using namespace llmq;
using namespace llmq::test;

namespace {

const double kTheta = 10000.0;

template <typename Real>
std::vector<double> rope_forward(const std::vector<double>& inp, int B, int T, int NH, int hd) {
    auto cos = nans<Real>((size_t)T * hd / 2), sin = nans<Real>((size_t)T * hd / 2);
    rope_tables_cpu<Real>(cos.data(), sin.data(), T, hd, (Real)kTheta);
    auto x = cast<Real>(inp);
    auto y = nans<Real>(x.size());
    rope_forward_cpu<Real>(y.data(), x.data(), cos.data(), sin.data(), B, T, NH, hd);
    return to_double(y);
}

template <typename Real>
std::vector<double> rope_backward(const std::vector<double>& dout, const std::vector<double>& dinp0, int B, int T,
                                  int NH, int hd) {
    auto cos = nans<Real>((size_t)T * hd / 2), sin = nans<Real>((size_t)T * hd / 2);
    rope_tables_cpu<Real>(cos.data(), sin.data(), T, hd, (Real)kTheta);
    auto dy = cast<Real>(dout), dx = cast<Real>(dinp0);
    rope_backward_cpu<Real>(dx.data(), dy.data(), cos.data(), sin.data(), B, T, NH, hd);
    return to_double(dx);
}

}  // namespace

TEST(Rope, Tables) {
    const int T = 9, hd = 12;
    auto cos = nans<double>(T * hd / 2), sin = nans<double>(T * hd / 2);
    rope_tables_cpu<double>(cos.data(), sin.data(), T, hd, kTheta);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < hd / 2; i++) {
            const double angle = t * std::pow(kTheta, -2.0 * i / hd);
            EXPECT_NEAR(cos[t * hd / 2 + i], std::cos(angle), 1e-15);
            EXPECT_NEAR(sin[t * hd / 2 + i], std::sin(angle), 1e-15);
        }
    EXPECT_THROW(rope_tables_cpu<double>(cos.data(), sin.data(), T, 7, kTheta), Error);  // odd head_dim
}

TEST(Rope, PositionZeroIsIdentity) {
    Rng rng(1);
    const int B = 2, T = 3, NH = 2, hd = 8;
    auto inp = randn((size_t)B * T * NH * hd, rng);
    auto out = rope_forward<float>(inp, B, T, NH, hd);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < NH * hd; i++) {
            const size_t at = (size_t)b * T * NH * hd + i;  // t = 0
            EXPECT_EQ(out[at], inp[at]);
        }
}

TEST(Rope, PairsDimIWithDimIPlusHalf) {
    // a unit vector along dim i at position t rotates within the plane (i, i + hd/2) only:
    // out[i] = cos(angle), out[i + hd/2] = sin(angle). With (2i, 2i+1) pairs this fails.
    const int T = 4, hd = 8, t = 3;
    for (int i = 0; i < hd / 2; i++) {
        std::vector<double> inp((size_t)T * hd, 0.0);
        inp[(size_t)t * hd + i] = 1.0;
        auto out = rope_forward<double>(inp, 1, T, 1, hd);
        const double angle = t * std::pow(kTheta, -2.0 * i / hd);
        for (int j = 0; j < hd; j++) {
            const double want = j == i ? std::cos(angle) : j == i + hd / 2 ? std::sin(angle) : 0.0;
            EXPECT_NEAR(out[(size_t)t * hd + j], want, 1e-15) << "i=" << i << " j=" << j;
        }
    }
}

TEST(Rope, BackwardIsTheInverseRotation) {
    Rng rng(2);
    const int B = 2, T = 7, NH = 3, hd = 10;
    auto inp = randn((size_t)B * T * NH * hd, rng), start = randn(inp.size(), rng);
    auto rotated = rope_forward<double>(inp, B, T, NH, hd);
    auto restored = added(rope_backward<double>(rotated, start, B, T, NH, hd), start);
    for (size_t i = 0; i < inp.size(); i++) EXPECT_NEAR(restored[i], inp[i], 1e-13);
}

TEST(Rope, ForwardInPlace) {
    Rng rng(3);
    const int B = 1, T = 6, NH = 2, hd = 6;
    auto cos = nans<float>(T * hd / 2), sin = nans<float>(T * hd / 2);
    rope_tables_cpu<float>(cos.data(), sin.data(), T, hd, (float)kTheta);
    auto x = cast<float>(randn((size_t)B * T * NH * hd, rng));
    auto y = nans<float>(x.size());
    rope_forward_cpu<float>(y.data(), x.data(), cos.data(), sin.data(), B, T, NH, hd);
    rope_forward_cpu<float>(x.data(), x.data(), cos.data(), sin.data(), B, T, NH, hd);
    EXPECT_EQ(x, y);
}

TEST(Rope, GradientMatchesFiniteDifferences) {
    Rng rng(4);
    const int B = 2, T = 5, NH = 3, hd = 8;
    auto inp = randn((size_t)B * T * NH * hd, rng), wloss = randn(inp.size(), rng), dinp0 = randn(inp.size(), rng);
    auto dinp = added(rope_backward<double>(wloss, dinp0, B, T, NH, hd), dinp0);
    auto loss = [&]() { return dot(rope_forward<double>(inp, B, T, NH, hd), wloss); };
    expect_gradient_matches_fd("dinp", inp, dinp, loss);
}

TEST(Rope, FloatMatchesDouble) {
    Rng rng(5);
    const int B = 2, T = 64, NH = 3, hd = 16;
    auto inp = randn((size_t)B * T * NH * hd, rng), dout = randn(inp.size(), rng), dinp0 = randn(inp.size(), rng);
    expect_close("out", rope_forward<float>(inp, B, T, NH, hd), rope_forward<double>(inp, B, T, NH, hd));
    expect_close("dinp", rope_backward<float>(dout, dinp0, B, T, NH, hd),
                 rope_backward<double>(dout, dinp0, B, T, NH, hd));
}
