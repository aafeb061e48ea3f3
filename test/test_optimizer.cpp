// Tests of layers/optimizer.h: the schedule, one AdamW step against a hand computation, decay on 2-D
// tensors only, global-norm clipping, and a tiny model overfitting a fixed batch.
#include <gtest/gtest.h>


#include <cmath>
#include <vector>

#include "../kernels/common.h"
#include "../layers/model.h"
#include "../layers/optimizer.h"

using namespace llmq;

namespace {


ModelConfig small_config() {
    ModelConfig c;
    c.name = "small";
    c.vocab_size = 29;
    c.dim = 16;
    c.ffn_dim = 24;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.max_seq_len = 16;
    c.tied_embeddings = false;
    return c;
}

void fill_grads(Model& m, uint64_t seed, float std) {
    Rng rng(seed);
    for (size_t i = 0; i < m.num_params(); i++) m.grads()[i] = std * rng.normal();
}

}  // namespace

TEST(Schedule, WarmupPeakAndCosineToTheFloor) {
    OptimizerConfig c;
    c.lr = 1e-3f;
    c.min_lr_ratio = 0.1f;
    c.warmup_steps = 10;
    c.total_steps = 110;
    EXPECT_FLOAT_EQ(lr_at_step(c, 0), 1e-4f);  // lr / warmup
    EXPECT_FLOAT_EQ(lr_at_step(c, 4), 5e-4f);
    EXPECT_FLOAT_EQ(lr_at_step(c, 9), 1e-3f);   // end of warmup
    EXPECT_FLOAT_EQ(lr_at_step(c, 10), 1e-3f);  // peak: cosine starts
    EXPECT_FLOAT_EQ(lr_at_step(c, 60), 1e-3f * (0.1f + 0.9f * 0.5f));  // half way
    EXPECT_FLOAT_EQ(lr_at_step(c, 110), 1e-4f);  // the floor at total_steps
    EXPECT_FLOAT_EQ(lr_at_step(c, 500), 1e-4f);  // and after
    for (int s = 10; s < 110; s++) EXPECT_LE(lr_at_step(c, s + 1), lr_at_step(c, s)) << s;
    c.warmup_steps = 0;
    EXPECT_FLOAT_EQ(lr_at_step(c, 0), 1e-3f);
}

TEST(AdamW, StepEqualsHandComputationWithDecayOnMatricesOnly) {
    Model model(small_config(), 3);
    OptimizerConfig c;
    c.lr = 0.01f;
    c.warmup_steps = 0;
    c.total_steps = 1000;
    c.weight_decay = 0.1f;
    c.grad_clip = 0;  // off
    AdamW opt(c, model.num_params());
    const size_t n = model.num_params();
    std::vector<double> p(model.params(), model.params() + n), m(n, 0), v(n, 0);
    for (int step = 0; step < 2; step++) {
        fill_grads(model, 10 + step, 0.05f);
        const double lr = lr_at_step(c, step);
        for (const ParamTensor& t : model.tensors())
            for (size_t i = t.offset; i < t.offset + t.size; i++) {
                const double g = model.grads()[i];
                m[i] = c.beta1 * m[i] + (1 - c.beta1) * g;
                v[i] = c.beta2 * v[i] + (1 - c.beta2) * g * g;
                const double mhat = m[i] / (1 - std::pow((double)c.beta1, step + 1));
                const double vhat = v[i] / (1 - std::pow((double)c.beta2, step + 1));
                const double wd = t.shape.size() == 2 ? c.weight_decay : 0.0;
                p[i] -= lr * (mhat / (std::sqrt(vhat) + c.eps) + wd * p[i]);
            }
        opt.step(model, step);
        EXPECT_EQ(opt.steps_taken(), step + 1);
        for (size_t i = 0; i < n; i++) ASSERT_NEAR(model.params()[i], p[i], 1e-6 * (1 + std::fabs(p[i]))) << i;
    }
}

TEST(AdamW, ZeroGradientOnlyDecaysTheMatrices) {
    Model model(small_config(), 4);
    OptimizerConfig c;
    c.lr = 0.1f;
    c.weight_decay = 0.5f;
    AdamW opt(c, model.num_params());
    const std::vector<float> before(model.params(), model.params() + model.num_params());
    model.zero_grad();
    opt.step(model, 0);
    const float lr = lr_at_step(c, 0);
    for (const ParamTensor& t : model.tensors())
        for (size_t i = t.offset; i < t.offset + t.size; i++) {
            const float want = t.shape.size() == 2 ? before[i] * (1 - lr * c.weight_decay) : before[i];
            ASSERT_FLOAT_EQ(model.params()[i], want) << t.name;
        }
}

TEST(AdamW, ClippingScalesTheGradientToTheMaxNorm) {
    OptimizerConfig clipped;
    clipped.grad_clip = 1.0f;
    clipped.weight_decay = 0.1f;
    OptimizerConfig unclipped = clipped;
    unclipped.grad_clip = 0;
    Model a(small_config(), 5), b(small_config(), 5);
    AdamW opt_a(clipped, a.num_params()), opt_b(unclipped, b.num_params());
    for (int step = 0; step < 3; step++) {
        const float std = step == 2 ? 1e-4f : 0.5f;  // the last step's norm is below the clip: no scaling
        fill_grads(a, 20 + step, std);
        double sq = 0;
        for (size_t i = 0; i < a.num_params(); i++) sq += (double)a.grads()[i] * a.grads()[i];
        const double norm = std::sqrt(sq);
        const double scale = norm > 1.0 ? 1.0 / norm : 1.0;
        for (size_t i = 0; i < b.num_params(); i++) b.grads()[i] = (float)(a.grads()[i] * scale);
        EXPECT_NEAR(opt_a.step(a, step), norm, 1e-5 * norm);  // the pre-clip norm
        if (step < 2) {
            EXPECT_GT(norm, 1.0);
        }
        opt_b.step(b, step);
        for (size_t i = 0; i < a.num_params(); i++)
            ASSERT_NEAR(a.params()[i], b.params()[i], 1e-6 * (1 + std::fabs(b.params()[i]))) << step << " " << i;
    }
    a.grads()[0] = NAN;
    EXPECT_THROW(opt_a.step(a, 3), Error);
}

TEST(AdamW, TinyModelOverfitsAFixedBatch) {
    Model model(small_config(), 6);
    OptimizerConfig c;
    c.lr = 1e-2f;
    c.warmup_steps = 3;
    c.total_steps = 30;
    c.weight_decay = 0.0f;
    AdamW opt(c, model.num_params());
    const int B = 2, T = 16;
    std::vector<int> tokens(B * T), targets(B * T);
    Rng rng(8);
    for (int i = 0; i < B * T; i++) tokens[i] = (int)rng.below(29);
    for (int i = 0; i < B * T; i++) targets[i] = (i % T == T - 1) ? kIgnoreIndex : tokens[i + 1];
    float first = 0, last = 0;
    for (int step = 0; step < 30; step++) {
        model.zero_grad();
        last = model.forward(tokens.data(), targets.data(), B, T);
        if (step == 0) first = last;
        model.backward();
        opt.step(model, step);
    }
    EXPECT_NEAR(first, std::log(29.0f), 0.3f);  // starts near uniform
    EXPECT_LT(last, 0.5f * first) << "loss " << first << " -> " << last;
}

// An AdamW over a subset of a buffer's tensors (LoQT's unwrapped ones) holds states for those alone, compactly,
// and updates them exactly as an AdamW over the whole layout does; the checkpoint form (the buffer's layout,
// zero elsewhere) round-trips.
TEST(AdamW, ASubsetOfTensorsHoldsOnlyItsOwnStatesAndStepsLikeTheWholeLayout) {
    std::vector<ParamTensor> all = {{"a", 0, {3, 4}, 12, true}, {"b", 12, {5}, 5, false}, {"c", 17, {2, 3}, 6, true}};
    std::vector<ParamTensor> subset = {all[0], all[2]};  // "b" is frozen
    OptimizerConfig c;
    c.total_steps = 10, c.warmup_steps = 0, c.lr = 1e-2f, c.weight_decay = 0.1f, c.grad_clip = 0;
    AdamW whole(c, all), part(c, subset);
    EXPECT_EQ(part.state_bytes(), 8u * (12 + 6));
    EXPECT_EQ(whole.state_bytes(), 8u * 23);
    Rng rng(3);
    std::vector<float> p1(23), g(23);
    for (float& x : p1) x = rng.normal();
    std::vector<float> p2 = p1;
    for (int step = 0; step < 4; step++) {
        for (float& x : g) x = rng.normal();
        for (int i = 12; i < 17; i++) g[i] = 0;  // "b" undecayed with no gradient: the whole layout leaves it be
        whole.step(p1.data(), g.data(), 23, all, step);
        part.step(p2.data(), g.data(), 23, subset, step);
    }
    EXPECT_EQ(p1, p2);
    std::vector<float> m1, v1, m2, v2;
    whole.fp32_state_as_buffer(23, m1, v1);
    part.fp32_state_as_buffer(23, m2, v2);
    EXPECT_EQ(m1, m2);
    EXPECT_EQ(v1, v2);
    for (int i = 12; i < 17; i++) EXPECT_EQ(m2[i], 0.0f) << "the frozen tensor has no state";
    AdamW back(c, subset);
    back.set_fp32_state_from_buffer(23, m2.data(), v2.data());
    EXPECT_EQ(back.m(), part.m());
    EXPECT_EQ(back.v(), part.v());
}
