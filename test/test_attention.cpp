// Tests of kernels/attention_cpu.cpp: out and lse against an explicit (T,T) softmax, causality,
// GQA equals MHA with the kv heads repeated, gradients of q, k, v against finite differences in
// double for NH/NKV = 1, 2 and 4 with T = 5 (no block size divides it), float against double.
#include <gtest/gtest.h>

#include "../kernels/attention.h"
#include "op_test_util.h"

using namespace llmq;
using namespace llmq::test;

namespace {

struct Shape {
    int B, T, NH, NKV, hd;
    size_t q_size() const { return (size_t)B * T * NH * hd; }
    size_t kv_size() const { return (size_t)B * T * NKV * hd; }
};

struct AttnResult {
    std::vector<double> out, lse, dq, dk, dv;
};

template <typename Real>
AttnResult run_attention(const Shape& s, const std::vector<double>& q, const std::vector<double>& k,
                         const std::vector<double>& v, const std::vector<double>& dout,
                         const std::vector<double>& dq0, const std::vector<double>& dk0,
                         const std::vector<double>& dv0) {
    auto qr = cast<Real>(q), kr = cast<Real>(k), vr = cast<Real>(v), dy = cast<Real>(dout);
    auto dqr = cast<Real>(dq0), dkr = cast<Real>(dk0), dvr = cast<Real>(dv0);
    auto out = nans<Real>(s.q_size()), lse = nans<Real>((size_t)s.B * s.NH * s.T);
    attention_forward_cpu<Real>(out.data(), lse.data(), qr.data(), kr.data(), vr.data(), s.B, s.T, s.NH, s.NKV, s.hd);
    attention_backward_cpu<Real>(dqr.data(), dkr.data(), dvr.data(), dy.data(), qr.data(), kr.data(), vr.data(),
                                 out.data(), lse.data(), s.B, s.T, s.NH, s.NKV, s.hd);
    return {to_double(out), to_double(lse), to_double(dqr), to_double(dkr), to_double(dvr)};
}

struct Inputs {
    std::vector<double> q, k, v, dout, dq0, dk0, dv0;
    Inputs(const Shape& s, Rng& rng)
        : q(randn(s.q_size(), rng)), k(randn(s.kv_size(), rng)), v(randn(s.kv_size(), rng)),
          dout(randn(s.q_size(), rng)), dq0(randn(s.q_size(), rng)), dk0(randn(s.kv_size(), rng)),
          dv0(randn(s.kv_size(), rng)) {}
    template <typename Real>
    AttnResult run(const Shape& s) const {
        return run_attention<Real>(s, q, k, v, dout, dq0, dk0, dv0);
    }
};

}  // namespace

TEST(Attention, MatchesExplicitSoftmax) {
    for (int NKV : {4, 2}) {  // NKV = NH: plain multi-head attention; then grouped
        SCOPED_TRACE(format("NKV=%d", NKV));
        Rng rng(1 + NKV);
        const Shape s{2, 6, 4, NKV, 5};
        Inputs in(s, rng);
        auto r = in.run<double>(s);
        const int group = s.NH / s.NKV;
        for (int b = 0; b < s.B; b++)
            for (int h = 0; h < s.NH; h++)
                for (int t = 0; t < s.T; t++) {
                    const double* qt = &in.q[(((size_t)b * s.T + t) * s.NH + h) * s.hd];
                    std::vector<double> score(s.T);
                    double sum = 0;
                    for (int u = 0; u <= t; u++) {
                        const double* ku = &in.k[(((size_t)b * s.T + u) * s.NKV + h / group) * s.hd];
                        double d = 0;
                        for (int i = 0; i < s.hd; i++) d += qt[i] * ku[i];
                        score[u] = d / std::sqrt((double)s.hd);
                        sum += std::exp(score[u]);
                    }
                    EXPECT_NEAR(r.lse[((size_t)b * s.NH + h) * s.T + t], std::log(sum), 1e-13);
                    for (int i = 0; i < s.hd; i++) {
                        double o = 0;
                        for (int u = 0; u <= t; u++) {
                            const double vu = in.v[(((size_t)b * s.T + u) * s.NKV + h / group) * s.hd + i];
                            o += std::exp(score[u]) / sum * vu;
                        }
                        EXPECT_NEAR(r.out[(((size_t)b * s.T + t) * s.NH + h) * s.hd + i], o, 1e-13);
                    }
                }
    }
}

TEST(Attention, IsCausal) {
    // changing q, k, v at positions > t0 leaves out and lse at positions <= t0 bitwise unchanged
    Rng rng(2);
    const Shape s{1, 7, 4, 2, 4};
    const int t0 = 3;
    Inputs a(s, rng), b = a;
    for (size_t i = (size_t)(t0 + 1) * s.NH * s.hd; i < b.q.size(); i++) b.q[i] = rng.normal();
    for (size_t i = (size_t)(t0 + 1) * s.NKV * s.hd; i < b.k.size(); i++) {
        b.k[i] = rng.normal();
        b.v[i] = rng.normal();
    }
    auto ra = a.run<float>(s), rb = b.run<float>(s);
    for (size_t i = 0; i < (size_t)(t0 + 1) * s.NH * s.hd; i++) EXPECT_EQ(ra.out[i], rb.out[i]);
    for (int h = 0; h < s.NH; h++)
        for (int t = 0; t <= t0; t++) EXPECT_EQ(ra.lse[h * s.T + t], rb.lse[h * s.T + t]);
    EXPECT_NE(ra.out.back(), rb.out.back());  // the change did reach the later positions
}

TEST(Attention, GqaEqualsMhaWithRepeatedKvHeads) {
    Rng rng(3);
    const Shape gqa{2, 5, 4, 2, 6}, mha{2, 5, 4, 4, 6};
    const int group = gqa.NH / gqa.NKV;
    Inputs in(gqa, rng);
    // kv head j of the GQA layout is repeated as heads j*group .. j*group+group-1 of the MHA layout
    auto repeat = [&](const std::vector<double>& x) {
        std::vector<double> r(mha.kv_size());
        for (int bt = 0; bt < gqa.B * gqa.T; bt++)
            for (int h = 0; h < mha.NKV; h++)
                for (int i = 0; i < gqa.hd; i++)
                    r[((size_t)bt * mha.NKV + h) * gqa.hd + i] = x[((size_t)bt * gqa.NKV + h / group) * gqa.hd + i];
        return r;
    };
    auto zeros_kv = std::vector<double>(mha.kv_size(), 0.0);  // so dk/dv of MHA are pure gradients
    auto rg = run_attention<double>(gqa, in.q, in.k, in.v, in.dout, in.dq0, in.dk0, in.dv0);
    auto rm = run_attention<double>(mha, in.q, repeat(in.k), repeat(in.v), in.dout, in.dq0, zeros_kv, zeros_kv);
    for (size_t i = 0; i < rg.out.size(); i++) EXPECT_NEAR(rg.out[i], rm.out[i], 1e-14);
    for (size_t i = 0; i < rg.lse.size(); i++) EXPECT_NEAR(rg.lse[i], rm.lse[i], 1e-14);
    for (size_t i = 0; i < rg.dq.size(); i++) EXPECT_NEAR(rg.dq[i], rm.dq[i], 1e-13);
    // the gradient of a shared kv head is the sum over the query heads that read it
    for (int bt = 0; bt < gqa.B * gqa.T; bt++)
        for (int j = 0; j < gqa.NKV; j++)
            for (int i = 0; i < gqa.hd; i++) {
                double dk = in.dk0[((size_t)bt * gqa.NKV + j) * gqa.hd + i],
                       dv = in.dv0[((size_t)bt * gqa.NKV + j) * gqa.hd + i];
                for (int g = 0; g < group; g++) {
                    dk += rm.dk[((size_t)bt * mha.NKV + j * group + g) * gqa.hd + i];
                    dv += rm.dv[((size_t)bt * mha.NKV + j * group + g) * gqa.hd + i];
                }
                EXPECT_NEAR(rg.dk[((size_t)bt * gqa.NKV + j) * gqa.hd + i], dk, 1e-13);
                EXPECT_NEAR(rg.dv[((size_t)bt * gqa.NKV + j) * gqa.hd + i], dv, 1e-13);
            }
}

TEST(Attention, GradientsMatchFiniteDifferences) {
    for (auto heads : {std::pair{2, 2}, std::pair{4, 2}, std::pair{4, 1}}) {  // NH/NKV = 1, 2, 4
        const Shape s{2, 5, heads.first, heads.second, 6};
        SCOPED_TRACE(format("NH=%d NKV=%d", s.NH, s.NKV));
        Rng rng(4 + s.NKV);
        Inputs in(s, rng);  // in.dout is the loss weight: L = sum(out * dout)
        auto r = in.run<double>(s);
        auto loss = [&]() { return dot(in.run<double>(s).out, in.dout); };
        expect_gradient_matches_fd("dq", in.q, added(r.dq, in.dq0), loss);
        expect_gradient_matches_fd("dk", in.k, added(r.dk, in.dk0), loss);
        expect_gradient_matches_fd("dv", in.v, added(r.dv, in.dv0), loss);
    }
}

TEST(Attention, FloatMatchesDouble) {
    Rng rng(5);
    const Shape s{2, 37, 4, 2, 16};
    Inputs in(s, rng);
    auto d = in.run<double>(s), f = in.run<float>(s);
    expect_close("out", f.out, d.out);
    expect_close("lse", f.lse, d.lse);
    expect_close("dq", f.dq, d.dq);
    expect_close("dk", f.dk, d.dk);
    expect_close("dv", f.dv, d.dv);
}

TEST(Attention, RejectsHeadsThatDoNotGroup) {
    std::vector<float> x(64, 1.0f);
    EXPECT_THROW(attention_forward_cpu<float>(x.data(), x.data(), x.data(), x.data(), x.data(), 1, 2, 3, 2, 4), Error);
}
