// Tests of quant/adam8bit.h: one fused step against an independent reference (dequantize, update, nearest
// code by linear scan), non-finite gradients, the fp32 path for small tensors, state bytes per parameter,
// a least-squares trajectory tracking fp32 Adam, exact serialisation round trips and bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "../quant/adam8bit.h"
#include "../quant/dynamic_map.h"
#include "adam8bit_test_util.h"
#include "quant_test_util.h"

using namespace llmq;
using llmq_test::expect_error;

static int nearest_by_scan(const DynamicMap& map, float x) {
    int best = 0;
    for (int i = 1; i < 256; i++)
        if (std::fabs((double)x - map[i]) < std::fabs((double)x - map[best])) best = i;
    return best;
}

using llmq::test::adam8bit_random_state;

TEST(Adam8bit, OneStepMatchesIndependentReference) {
    llmq::Rng rng(8);
    const int64_t n = 256 * 17 + 100;  // a partial last block
    Adam8bitState s = adam8bit_random_state(rng, n);
    std::vector<float> p = llmq_test::normal_vector(rng, n), g = llmq_test::normal_vector(rng, n, 0.01f);
    g[5] = std::nanf("");
    g[300] = INFINITY;
    const Adam8bitHyper h{2e-3f, 0.9f, 0.99f, 1e-8f, 0.1f};
    const int step = 7;
    const float grad_scale = 0.5f;
    // reference, written out element by element
    const DynamicMap& sm = dynamic_map_signed();
    const DynamicMap& um = dynamic_map_unsigned();
    const float c1 = (float)(1 - std::pow((double)0.9f, step)), c2 = (float)(1 - std::pow((double)0.99f, step));
    std::vector<float> m(n), v(n), p_ref = p;
    std::vector<float> m_absmax(s.num_blocks(), 0.0f), v_absmax(s.num_blocks(), 0.0f);
    for (int64_t i = 0; i < n; i++) {
        int64_t b = i / 256;
        m[i] = sm[s.m_codes[i]] * s.m_absmax[b];
        v[i] = um[s.v_codes[i]] * s.v_absmax[b];
        float gi = g[i] * grad_scale;
        if (std::isfinite(gi)) {
            v[i] = h.beta2 * v[i] + (1 - h.beta2) * gi * gi;
            m[i] = h.beta1 * m[i] + (1 - h.beta1) * gi;
            p_ref[i] = (p_ref[i] - h.lr * (m[i] / c1) / (std::sqrt(v[i] / c2) + h.eps)) * (1 - h.lr * h.weight_decay);
        }
        m_absmax[b] = std::max(m_absmax[b], std::fabs(m[i]));
        v_absmax[b] = std::max(v_absmax[b], std::fabs(v[i]));
    }
    const float m_old5 = sm[s.m_codes[5]] * s.m_absmax[0];
    std::vector<float> p_before = p;
    adam8bit_step_cpu(p.data(), g.data(), s, h, step, grad_scale);
    EXPECT_EQ(p[5], p_before[5]);  // non-finite gradients leave the parameter alone
    EXPECT_EQ(p[300], p_before[300]);
    for (int64_t b = 0; b < s.num_blocks(); b++) {
        ASSERT_EQ(s.m_absmax[b], m_absmax[b]) << "block " << b;
        ASSERT_EQ(s.v_absmax[b], v_absmax[b]) << "block " << b;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t b = i / 256;
        ASSERT_EQ(s.m_codes[i], nearest_by_scan(sm, m[i] / m_absmax[b])) << "m code " << i;
        ASSERT_EQ(s.v_codes[i], nearest_by_scan(um, v[i] / v_absmax[b])) << "v code " << i;
        ASSERT_NEAR(p[i], p_ref[i], 1e-6f * std::fabs(p_ref[i]) + 1e-9f) << "param " << i;
    }
    // the skipped element's first moment survived (up to requantization against the new block absmax)
    std::vector<float> m_new = adam8bit_m(s);
    EXPECT_NEAR(m_new[5], m_old5, 0.01f * m_absmax[0]);
}

TEST(Adam8bit, SmallTensorsKeepFp32States) {
    llmq::Rng rng(9);
    for (int64_t n : {1, 300, 4095}) {
        Adam8bitState s = adam8bit_init(n);
        EXPECT_FALSE(s.eight_bit);
        EXPECT_EQ(s.state_bytes(), 8u * n);
        EXPECT_TRUE(s.m_codes.empty());
        std::vector<float> p = llmq_test::normal_vector(rng, n), g = llmq_test::normal_vector(rng, n), p0 = p;
        const Adam8bitHyper h{1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f};
        adam8bit_step_cpu(p.data(), g.data(), s, h, 1);
        // first step: m = 0.1 g, v = 0.001 g^2, bias-corrected m/c1 = g, v/c2 = g^2: p -= lr g / (|g| + eps)
        for (int64_t i = 0; i < n; i++) {
            double expected = p0[i] - 1e-2 * g[i] / (std::fabs((double)g[i]) + 1e-8);
            ASSERT_NEAR(p[i], expected, 1e-6) << i;
            ASSERT_EQ(s.m32[i], (1 - h.beta1) * g[i]);
        }
    }
    EXPECT_TRUE(adam8bit_init(4096).eight_bit);
}

TEST(Adam8bit, StateBytesPerParam) {
    Adam8bitState s = adam8bit_init(256 * 64);
    EXPECT_EQ(s.state_bytes(), 2u * 256 * 64 + 8u * 64);
    EXPECT_DOUBLE_EQ((double)s.state_bytes() / s.n, 2.03125);
    Adam8bitState t = adam8bit_init(4196);  // 17 blocks, the last partial
    EXPECT_EQ(t.num_blocks(), 17);
    EXPECT_EQ(t.state_bytes(), 2u * 4196 + 8u * 17);
    EXPECT_EQ(adam8bit_serialized_bytes(t), 20 + t.state_bytes());
}

// Least squares: W (out, in) fits Y = X W*^T + noise; loss = 1/(2N) sum (X W^T - Y)^2. With N > in and label
// noise the optimum has loss ~ noise^2 / 2 (1 - in/N), as real training has a floor. Both optimisers start from
// the same W and see their own gradients; the 8-bit trajectory must track fp32 Adam.
struct LeastSquares {
    int N = 160, in = 64, out = 80;
    std::vector<float> X, Y;
    explicit LeastSquares(llmq::Rng& rng) {
        X = llmq_test::normal_vector(rng, (size_t)N * in);
        std::vector<float> w_true = llmq_test::normal_vector(rng, (size_t)out * in, 0.3f);
        Y.assign((size_t)N * out, 0.0f);
        for (int r = 0; r < N; r++)
            for (int o = 0; o < out; o++) {
                double acc = 0.5 * rng.normal();
                for (int k = 0; k < in; k++) acc += (double)X[r * in + k] * w_true[o * in + k];
                Y[r * out + o] = (float)acc;
            }
    }
    // returns the loss and writes the gradient (out, in)
    double loss_and_grad(const std::vector<float>& W, std::vector<float>& G) const {
        std::fill(G.begin(), G.end(), 0.0f);
        double loss = 0;
        for (int r = 0; r < N; r++)
            for (int o = 0; o < out; o++) {
                float pred = 0;
                for (int k = 0; k < in; k++) pred += X[r * in + k] * W[o * in + k];
                float err = pred - Y[r * out + o];
                loss += 0.5 * err * err / N;
                for (int k = 0; k < in; k++) G[o * in + k] += err * X[r * in + k] / N;
            }
        return loss;
    }
};

TEST(Adam8bit, LeastSquaresTracksFp32Adam) {
    llmq::Rng rng(2021);
    LeastSquares problem(rng);
    const size_t n = (size_t)problem.out * problem.in;  // 5120 parameters: 20 blocks of 256
    std::vector<float> w8 = llmq_test::normal_vector(rng, n, 0.1f), w32 = w8, g(n);
    Adam8bitState s8 = adam8bit_init(n), s32 = adam8bit_init(n, /*min_8bit_size=*/1 << 30);
    ASSERT_TRUE(s8.eight_bit);
    ASSERT_FALSE(s32.eight_bit);
    const Adam8bitHyper h{5e-3f, 0.9f, 0.999f, 1e-8f, 0.01f};
    const double loss0 = problem.loss_and_grad(w8, g);
    double worst_gap = 0, loss8 = 0, loss32 = 0;
    for (int step = 1; step <= 300; step++) {
        loss8 = problem.loss_and_grad(w8, g);
        adam8bit_step_cpu(w8.data(), g.data(), s8, h, step);
        loss32 = problem.loss_and_grad(w32, g);
        adam8bit_step_cpu(w32.data(), g.data(), s32, h, step);
        if (step % 25 == 0) worst_gap = std::max(worst_gap, std::fabs(loss8 - loss32) / loss32);
    }
    std::printf("[          ] least squares: loss %.4f -> fp32 %.5f, 8-bit %.5f; worst relative gap %.4f\n", loss0,
                loss32, loss8, worst_gap);
    EXPECT_LT(loss32, 0.05 * loss0);  // the problem is really being optimised
    EXPECT_LT(std::fabs(loss8 - loss32), 0.05 * loss32);
    EXPECT_LT(worst_gap, 0.10);
    double dist = 0, travel = 0;
    for (size_t i = 0; i < n; i++) dist += std::pow(w8[i] - w32[i], 2);
    for (size_t i = 0; i < n; i++) travel += std::pow(w32[i], 2);
    EXPECT_LT(std::sqrt(dist / travel), 0.05) << "8-bit parameters drifted from the fp32 ones";
}

TEST(Adam8bit, SerialisationRoundTripsExactly) {
    llmq::Rng rng(12);
    const int64_t n8 = 5000, n32 = 700;
    Adam8bitState a = adam8bit_init(n8), b = adam8bit_init(n32);
    std::vector<float> pa = llmq_test::normal_vector(rng, n8), pb = llmq_test::normal_vector(rng, n32);
    const Adam8bitHyper h;
    for (int step = 1; step <= 3; step++) {
        std::vector<float> ga = llmq_test::normal_vector(rng, n8), gb = llmq_test::normal_vector(rng, n32);
        adam8bit_step_cpu(pa.data(), ga.data(), a, h, step);
        adam8bit_step_cpu(pb.data(), gb.data(), b, h, step);
    }
    std::vector<uint8_t> buf;
    adam8bit_serialize(a, buf);
    adam8bit_serialize(b, buf);
    ASSERT_EQ(buf.size(), adam8bit_serialized_bytes(a) + adam8bit_serialized_bytes(b));
    size_t offset = 0;
    Adam8bitState a2 = adam8bit_deserialize(buf.data(), buf.size(), &offset, "ckpt.bin");
    Adam8bitState b2 = adam8bit_deserialize(buf.data(), buf.size(), &offset, "ckpt.bin");
    EXPECT_EQ(offset, buf.size());
    EXPECT_EQ(a2.n, n8);
    EXPECT_TRUE(a2.eight_bit);
    EXPECT_EQ(a2.m_codes, a.m_codes);
    EXPECT_EQ(a2.v_codes, a.v_codes);
    EXPECT_EQ(a2.m_absmax, a.m_absmax);
    EXPECT_EQ(a2.v_absmax, a.v_absmax);
    EXPECT_FALSE(b2.eight_bit);
    EXPECT_EQ(b2.m32, b.m32);
    EXPECT_EQ(b2.v32, b.v32);
    // continuing from the restored state is bit-identical
    std::vector<float> g = llmq_test::normal_vector(rng, n8), pa2 = pa;
    adam8bit_step_cpu(pa.data(), g.data(), a, h, 4);
    adam8bit_step_cpu(pa2.data(), g.data(), a2, h, 4);
    EXPECT_EQ(pa, pa2);
    // damaged input
    offset = 0;
    expect_error([&] { adam8bit_deserialize(buf.data(), 1000, &offset, "ckpt.bin"); }, {"ckpt.bin", "truncated"});
    std::vector<uint8_t> bad = buf;
    bad[0] ^= 0xFF;
    offset = 0;
    expect_error([&] { adam8bit_deserialize(bad.data(), bad.size(), &offset, "ckpt.bin"); }, {"ckpt.bin", "magic"});
    bad = buf;
    bad[16] = 128;  // block size 256 = bytes 00 01 00 00 -> 128
    bad[17] = 0;
    offset = 0;
    expect_error([&] { adam8bit_deserialize(bad.data(), bad.size(), &offset, "ckpt.bin"); }, {"block size 128"});
}

TEST(Adam8bit, BadInputErrors) {
    Adam8bitState s = adam8bit_init(5000);
    std::vector<float> p(5000, 1.0f), g(5000, 0.5f);
    expect_error([&] { adam8bit_step_cpu(p.data(), g.data(), s, Adam8bitHyper{}, 0); }, {"adam8bit", "step 0"});
    expect_error([&] { adam8bit_step_cpu(p.data(), g.data(), s, Adam8bitHyper{0.0f}, 1); }, {"lr 0"});
    expect_error([&] { adam8bit_step_cpu(p.data(), g.data(), s, Adam8bitHyper{1e-3f, 0.9f, 1.0f}, 1); }, {"betas"});
    expect_error([] { adam8bit_init(0); }, {"adam8bit", "0 elements"});
    s.v_absmax.pop_back();
    expect_error([&] { adam8bit_step_cpu(p.data(), g.data(), s, Adam8bitHyper{}, 1); }, {"5000 elements"});
}
