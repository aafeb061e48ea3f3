// GPU tests of kernels/attention.cu against the CPU reference (attention_cpu.cpp, fp32) run on the same
// bf16-rounded inputs: forward out and lse, backward dq, dk, dv, for lengths with and without tails
// (T = 1, 17, 64, 100, 256 against 64-row tiles), GQA ratios 1, 2 and 4, head_dim 32, 64 and 128, the
// 60m model's heads (8 x 64), the forward feeding the backward, bitwise determinism, and the argument
// checks. Every output is poisoned (NaN) first, so an element the kernels skip fails the test. Sizes stay
// small: these also run under compute-sanitizer racecheck.
#include <cstring>

#include "../kernels/attention.h"
#include "../kernels/attention_cuda.h"
#include "gpu_test_util.h"

using namespace llmq;
using namespace llmq::test;

namespace {

struct Shape {
    int B, T, NH, NKV, hd;
    size_t q_size() const { return (size_t)B * T * NH * hd; }
    size_t kv_size() const { return (size_t)B * T * NKV * hd; }
    size_t lse_size() const { return (size_t)B * NH * T; }
    std::string name() const { return format("B=%d T=%d NH=%d NKV=%d hd=%d", B, T, NH, NKV, hd); }
};

// bf16-rounded random inputs (scale 1: softmax neither uniform nor one-hot) and the CPU results on them.
// out is rounded to bf16 too: it is what the GPU backward is given, so the CPU backward runs on it.
struct Reference {
    std::vector<float> q, k, v, dout, out_fp32, out, lse, dq, dk, dv;
};

Reference make_reference(const Shape& s, uint64_t seed) {
    Rng rng(seed);
    Reference r;
    r.q = bf16_rounded(randn_floats(s.q_size(), rng));
    r.k = bf16_rounded(randn_floats(s.kv_size(), rng));
    r.v = bf16_rounded(randn_floats(s.kv_size(), rng));
    r.dout = bf16_rounded(randn_floats(s.q_size(), rng));
    r.out_fp32.resize(s.q_size());
    r.lse.resize(s.lse_size());
    attention_forward_cpu<float>(r.out_fp32.data(), r.lse.data(), r.q.data(), r.k.data(), r.v.data(), s.B, s.T, s.NH,
                                 s.NKV, s.hd);
    r.out = bf16_rounded(r.out_fp32);
    r.dq.assign(s.q_size(), 0.0f);  // the CPU backward accumulates: from zeros it equals the GPU's overwrite
    r.dk.assign(s.kv_size(), 0.0f);
    r.dv.assign(s.kv_size(), 0.0f);
    attention_backward_cpu<float>(r.dq.data(), r.dk.data(), r.dv.data(), r.dout.data(), r.q.data(), r.k.data(),
                                  r.v.data(), r.out.data(), r.lse.data(), s.B, s.T, s.NH, s.NKV, s.hd);
    return r;
}

// The norm-wise check (expect_rel_close) plus one per element, |got - want| <= tol (|want| + rms(want)), which
// a single wrong row or masked-out key cannot average away. A reference that is exactly zero (dq and dk at
// T = 1, where the only probability is 1 and dS = 0) is checked as |got| <= 1e-3 instead.
void expect_close(const std::string& name, const std::vector<float>& got, const std::vector<float>& want, double tol) {
    ASSERT_EQ(got.size(), want.size()) << name;
    double sq = 0.0;
    for (float w : want) sq += (double)w * w;
    if (sq == 0.0) {
        for (size_t i = 0; i < got.size(); i++)
            ASSERT_TRUE(std::isfinite(got[i]) && std::fabs(got[i]) <= 1e-3) << name << "[" << i << "] = " << got[i];
        return;
    }
    expect_rel_close(name, got, want, tol);
    const double rms = std::sqrt(sq / want.size());
    for (size_t i = 0; i < got.size(); i++)
        ASSERT_LE(std::fabs((double)got[i] - want[i]), tol * (std::fabs(want[i]) + rms))
            << name << "[" << i << "]: got " << got[i] << ", want " << want[i];
}

struct GpuForward {
    std::vector<bf16> out;
    std::vector<float> lse;
};

GpuForward gpu_forward(const Shape& s, const Reference& r) {
    DeviceBuffer<bf16> q(to_bf16(r.q)), k(to_bf16(r.k)), v(to_bf16(r.v)), out(s.q_size());
    DeviceBuffer<float> lse(s.lse_size());
    out.poison(), lse.poison();
    attention_forward_cuda(out.data(), lse.data(), q.data(), k.data(), v.data(), s.B, s.T, s.NH, s.NKV, s.hd);
    CUDA_CHECK(cudaDeviceSynchronize());
    return {out.download(), lse.download()};
}

struct GpuBackward {
    std::vector<bf16> dq, dk, dv;
};

// the backward given out and lse (the CPU's, rounded, or the GPU forward's)
GpuBackward gpu_backward(const Shape& s, const Reference& r, const std::vector<bf16>& out_bf16,
                         const std::vector<float>& lse_host) {
    DeviceBuffer<bf16> q(to_bf16(r.q)), k(to_bf16(r.k)), v(to_bf16(r.v)), dout(to_bf16(r.dout)), out(out_bf16);
    DeviceBuffer<float> lse(lse_host), scratch(attention_backward_scratch_floats(s.B, s.T, s.NH, s.hd));
    DeviceBuffer<bf16> dq(s.q_size()), dk(s.kv_size()), dv(s.kv_size());
    dq.poison(), dk.poison(), dv.poison(), scratch.poison();
    attention_backward_cuda(dq.data(), dk.data(), dv.data(), scratch.data(), dout.data(), q.data(), k.data(),
                            v.data(), out.data(), lse.data(), s.B, s.T, s.NH, s.NKV, s.hd);
    CUDA_CHECK(cudaDeviceSynchronize());
    return {dq.download(), dk.download(), dv.download()};
}

void check_forward(const Shape& s, uint64_t seed) {
    SCOPED_TRACE(s.name());
    const Reference r = make_reference(s, seed);
    const GpuForward g = gpu_forward(s, r);
    expect_close("out", from_bf16(g.out), r.out_fp32, 1e-2);
    expect_close("lse", g.lse, r.lse, 1e-5);  // fp32 math on the same (bf16-exact) inputs
}

void check_backward(const Shape& s, uint64_t seed) {
    SCOPED_TRACE(s.name());
    const Reference r = make_reference(s, seed);
    const GpuBackward g = gpu_backward(s, r, to_bf16(r.out), r.lse);
    expect_close("dq", from_bf16(g.dq), r.dq, 1e-2);
    expect_close("dk", from_bf16(g.dk), r.dk, 1e-2);
    expect_close("dv", from_bf16(g.dv), r.dv, 1e-2);
}

bool same_bits(const std::vector<bf16>& a, const std::vector<bf16>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(bf16)) == 0;
}

}  // namespace

TEST(AttentionCuda, ForwardMatchesCpuForEveryLength) {
    LLMQ_REQUIRE_GPU();
    for (int T : {1, 17, 64, 100, 256}) check_forward({2, T, 8, 2, 64}, 100 + T);
}

TEST(AttentionCuda, ForwardMatchesCpuForGqaRatiosAndHeadDims) {
    LLMQ_REQUIRE_GPU();
    for (int hd : {64, 128})
        for (int NKV : {8, 4, 2}) check_forward({2, 100, 8, NKV, hd}, 200 + hd + NKV);
}

TEST(AttentionCuda, BackwardMatchesCpuForEveryLength) {
    LLMQ_REQUIRE_GPU();
    for (int T : {1, 17, 64, 100, 256}) check_backward({2, T, 8, 4, 64}, 300 + T);
}

TEST(AttentionCuda, BackwardMatchesCpuForGqaRatiosAndHeadDims) {
    LLMQ_REQUIRE_GPU();
    for (int hd : {64, 128})
        for (int NKV : {8, 4, 2}) check_backward({2, 100, 8, NKV, hd}, 400 + hd + NKV);
}

TEST(AttentionCuda, HeadDim32MatchesCpu) {
    LLMQ_REQUIRE_GPU();
    check_forward({2, 130, 4, 2, 32}, 501);
    check_backward({2, 130, 4, 2, 32}, 502);
}

// the 60m model's attention (8 heads of 64, MHA), the backward fed the GPU forward's own out and lse
TEST(AttentionCuda, ForwardThenBackwardMatchesCpu) {
    LLMQ_REQUIRE_GPU();
    const Shape s{2, 100, 8, 8, 64};
    const Reference r = make_reference(s, 601);
    const GpuForward f = gpu_forward(s, r);
    const GpuBackward g = gpu_backward(s, r, f.out, f.lse);
    expect_close("out", from_bf16(f.out), r.out_fp32, 1e-2);
    expect_close("dq", from_bf16(g.dq), r.dq, 1e-2);
    expect_close("dk", from_bf16(g.dk), r.dk, 1e-2);
    expect_close("dv", from_bf16(g.dv), r.dv, 1e-2);
}

TEST(AttentionCuda, ForwardAndBackwardAreBitwiseDeterministic) {
    LLMQ_REQUIRE_GPU();
    const Shape s{2, 200, 8, 2, 128};  // GQA 4: each dk, dv block sums over 4 heads x up to 4 query tiles
    const Reference r = make_reference(s, 701);
    const GpuForward f1 = gpu_forward(s, r), f2 = gpu_forward(s, r);
    EXPECT_TRUE(same_bits(f1.out, f2.out)) << "forward out differs between two runs";
    EXPECT_EQ(0, std::memcmp(f1.lse.data(), f2.lse.data(), f1.lse.size() * sizeof(float)))
        << "forward lse differs between two runs";
    const GpuBackward g1 = gpu_backward(s, r, f1.out, f1.lse), g2 = gpu_backward(s, r, f1.out, f1.lse);
    EXPECT_TRUE(same_bits(g1.dq, g2.dq)) << "dq differs between two runs";
    EXPECT_TRUE(same_bits(g1.dk, g2.dk)) << "dk differs between two runs";
    EXPECT_TRUE(same_bits(g1.dv, g2.dv)) << "dv differs between two runs";
    expect_close("dk", from_bf16(g1.dk), r.dk, 1e-2);  // and they are the right bits
}

TEST(AttentionCuda, RejectsUnsupportedArguments) {
    LLMQ_REQUIRE_GPU();
    const int B = 1, T = 8, NH = 4;
    DeviceBuffer<bf16> q((size_t)B * T * NH * 128 + 8), o(q.size()), dq(q.size());
    DeviceBuffer<float> lse((size_t)B * NH * T), scratch(lse.size());
    auto fwd = [&](int NKV, int hd, const bf16* qp) {
        attention_forward_cuda(o.data(), lse.data(), qp, q.data(), q.data(), B, T, NH, NKV, hd);
    };
    auto bwd = [&](int NKV, int hd) {
        attention_backward_cuda(dq.data(), o.data(), o.data(), scratch.data(), q.data(), q.data(), q.data(),
                                q.data(), q.data(), lse.data(), B, T, NH, NKV, hd);
    };
    EXPECT_THROW(fwd(4, 96, q.data()), Error);      // head_dim not supported
    EXPECT_THROW(fwd(4, 80, q.data()), Error);
    EXPECT_THROW(fwd(3, 64, q.data()), Error);      // n_kv_heads does not divide n_heads
    EXPECT_THROW(fwd(4, 64, q.data() + 1), Error);  // not 16-byte aligned
    EXPECT_THROW(bwd(4, 256), Error);
    EXPECT_THROW(bwd(0, 64), Error);
    EXPECT_THROW(attention_forward_cuda(o.data(), lse.data(), q.data(), q.data(), q.data(), B, 0, NH, NH, 64), Error);
    try {
        fwd(4, 96, q.data());
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("head_dim 96"), std::string::npos) << e.what();
    }
}
