// adapters/switchlora.h: the init and every switch leave the model's logits unchanged (fp32 rounding), the
// schedule matches hand-computed intervals and its expected switch count, the per-vector optimizer is plain
// AdamW without resets and restarts a reset vector exactly as written down, the checkpoint state resumes
// bit-identically and refuses bad bytes, and swapped-out vectors wait in the pool.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "../adapters/lora.h"
#include "../adapters/switchlora.h"
#include "../layers/model.h"
#include "test_util.h"

using namespace llmq;
using namespace llmq_test;

namespace {

ModelConfig small_config(int dim = 32) { return small_model_config(dim); }

LoraOptions lora_options(int rank) { return LoraOptions{rank, 1.0f, "all-linear"}; }  // s = 1/r

OptimizerConfig opt_config() {
    OptimizerConfig c;
    c.lr = 1e-2f, c.warmup_steps = 2, c.total_steps = 40, c.weight_decay = 0.1f, c.grad_clip = 1.0f;
    return c;
}

// Frequent switches: interval 10 at the start, x1/0.3 over descent * total_steps.
SwitchLoraOptions frequent_switches(int total_steps, float descent, uint64_t seed) {
    SwitchLoraOptions o;
    o.total_steps = total_steps, o.interval0 = 10, o.descent = descent, o.seed = seed;
    return o;
}

std::vector<float> logits_of(Model& m) { return logits_on_random_tokens(m, 10, 8); }

float max_rel_diff(const std::vector<float>& a, const std::vector<float>& ref) {
    float scale = 0;
    for (float x : ref) scale = std::max(scale, std::fabs(x));
    return max_abs_diff(a, ref) / scale;
}

void random_grads(LoraAdapters& lora, Rng& rng) {
    for (size_t i = 0; i < lora.num_params(); i++) lora.grads()[i] = 0.05f * rng.normal();
}

// A real gradient: loss on fresh random tokens, backward into the adapters.
void real_grads(Model& m, LoraAdapters& lora, uint64_t seed) {
    const int B = 2, T = 8, V = m.config().vocab_size;
    Rng rng(seed);
    std::vector<int> tokens(B * T), targets(B * T);
    for (int& t : tokens) t = (int)rng.below(V);
    for (int& t : targets) t = (int)rng.below(V);
    m.zero_grad();
    lora.zero_grad();
    m.forward(tokens.data(), targets.data(), B, T);
    m.backward();
}

std::vector<float> copy_of(const float* p, size_t n) { return std::vector<float>(p, p + n); }

}  // namespace

TEST(SwitchLora, InitLeavesTheLogitsUnchangedAndDrawsTheFactors) {
    const int r = 4;
    Model m(small_config(), 7);
    LoraAdapters lora(m, lora_options(r), 1);
    const std::vector<float> before = logits_of(m);
    const std::vector<float> base = copy_of(m.params(), m.num_params());
    SwitchLoraOptions o;
    o.total_steps = 100, o.seed = 3;
    SwitchLora sl(lora, o, opt_config());
    const float rel = max_rel_diff(logits_of(m), before);
    EXPECT_LT(rel, 1e-5f);
    EXPECT_GT(max_abs_diff(copy_of(m.params(), m.num_params()), base), 1e-3f) << "W0 - s B A";
    // bounds of q_proj (m = n = 32): sqrt(3) ((sqrt(m) r) / n^1.5)^(1/4) (1/3)^(1/4), the same for B here
    const float bound = std::sqrt(3.0f) * std::pow(std::sqrt(32.0f) * r / std::pow(32.0f, 1.5f), 0.25f) *
                        std::pow(1.0f / 3.0f, 0.25f);
    for (int t = 0; t < 2; t++) {
        const ParamTensor& pt = lora.tensors()[t];
        float mx = 0;
        for (size_t j = 0; j < pt.size; j++) mx = std::max(mx, std::fabs(lora.params()[pt.offset + j]));
        EXPECT_LE(mx, bound) << pt.name;
        EXPECT_GT(mx, 0.8f * bound) << pt.name;
    }
    // pools: min(m,n) - r waiting per factor; k_proj/v_proj are 16 x 32
    ASSERT_EQ(sl.num_layers(), 14u);
    EXPECT_EQ(sl.pool_size(0), 32 - r);
    EXPECT_EQ(sl.pool_size(1), 16 - r);
    EXPECT_EQ(sl.pool_A(1).size(), (size_t)(16 - r) * 32);
    EXPECT_EQ(sl.pool_B(1).size(), (size_t)(16 - r) * 16);
    size_t pools = 0;
    for (size_t l = 0; l < sl.num_layers(); l++) pools += sl.pool_A(l).size() + sl.pool_B(l).size();
    EXPECT_EQ(sl.state_bytes(), 4 * pools + 8 * lora.num_params() + 8 * (14 * 2 * r));
    EXPECT_NE(sl.describe().find("switchlora: 14 layers, rank 4"), std::string::npos) << sl.describe();
    printf("init: max relative logit change %.3g; %s\n", rel, sl.describe().c_str());
    // a quantized base cannot take the init (or any switch)
    Model q(small_config(), 7);
    LoraAdapters ql(q, lora_options(r), 1);
    quantize_model_linears(q, QuantSpec{});
    expect_error([&] { SwitchLora bad(ql, o, opt_config()); }, {"quantized", "q_proj"});
}

TEST(SwitchLora, EverySwitchLeavesTheOutputUnchanged) {
    Model m(small_config(), 11);
    LoraAdapters lora(m, lora_options(4), 1);
    const SwitchLoraOptions o = frequent_switches(80, 1.0f, 5);
    SwitchLora sl(lora, o, opt_config());
    Rng rng(21);
    float worst = 0;
    int switched = 0, switching_steps = 0;
    for (int t = 0; t < o.total_steps; t++) {
        random_grads(lora, rng);
        const std::vector<float> before = logits_of(m);
        const int n = sl.switch_vectors(t);
        if (n > 0) {
            worst = std::max(worst, max_rel_diff(logits_of(m), before));
            switched += n, switching_steps++;
        }
        sl.step(t);  // the adapters move between switches: the swaps act on trained-looking factors
    }
    EXPECT_GT(switching_steps, 30);
    EXPECT_LT(worst, 1e-5f);
    printf("%d vectors switched at %d of %d steps; max relative logit change at a switch %.3g\n", switched,
           switching_steps, o.total_steps, worst);
}

TEST(SwitchLora, IntervalScheduleAndStochasticRounding) {
    SwitchLoraOptions o;
    o.total_steps = 1000;  // descent 0.1: the interval grows x1/0.3 every 100 steps
    EXPECT_NEAR(switchlora_interval(o, 0), 40.4845, 1e-3);  // 40 / 0.3^(1/100) = 40 exp(0.0120397)
    EXPECT_NEAR(switchlora_interval(o, 99), 133.3333, 1e-3);  // 40 / 0.3
    EXPECT_NEAR(switchlora_interval(o, 199), 444.4444, 1e-3);  // 40 / 0.09
    EXPECT_NEAR(switchlora_interval(o, 999) / 6.77404e6, 1.0, 1e-4);  // 40 / 0.3^10
    o.interval0 = 4;  // clamped at 2 freeze_steps = 10
    EXPECT_EQ(switchlora_interval(o, 0), 10.0);
    o.interval0 = 40, o.total_steps = 10;  // rate 0.3^1000 floored at 1e-8
    EXPECT_NEAR(switchlora_interval(o, 999), 4e9, 1.0);
    Rng rng(9);
    double sum = 0;
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        const int k = stochastic_round(2.25, rng);
        ASSERT_TRUE(k == 2 || k == 3);
        sum += k;
    }
    EXPECT_NEAR(sum / n, 2.25, 4 * std::sqrt(0.25 * 0.75 / n));
    EXPECT_EQ(stochastic_round(3.0, rng), 3);
}

TEST(SwitchLora, SwitchedCountMatchesTheScheduleOnAverage) {
    const int r = 16;  // dim 64: every module's smaller side is 32, pools of 16
    Model m(small_config(64), 2);
    LoraAdapters lora(m, lora_options(r), 1);
    SwitchLoraOptions o;
    o.total_steps = 300, o.descent = 1.0f, o.seed = 8;  // interval 40 -> 133 over the run
    OptimizerConfig c = opt_config();
    c.total_steps = o.total_steps;
    SwitchLora sl(lora, o, c);
    Rng rng(4);
    double expected = 0, variance = 0, count = 0;
    const double L = (double)sl.num_layers();
    for (int t = 0; t < o.total_steps; t++) {
        const double x = r / switchlora_interval(o, t), p = x - std::floor(x);
        expected += 2 * L * x;                  // k rows of A and k columns of B per layer
        variance += 4 * L * p * (1 - p);        // one rounding per layer: var(2k) = 4 p (1 - p)
        count += sl.switch_vectors(t);
        random_grads(lora, rng);
        sl.step(t);  // thaws the frozen counterparts
    }
    printf("switched %.0f vectors, schedule expects %.1f (sd %.1f)\n", count, expected, std::sqrt(variance));
    EXPECT_GT(expected, 1000);
    EXPECT_NEAR(count, expected, 4 * std::sqrt(variance));
}

TEST(SwitchLora, OptimizerWithoutSwitchesIsAdamWBitForBit) {
    Model m(small_config(), 3);
    LoraAdapters lora(m, lora_options(4), 1);
    const OptimizerConfig c = opt_config();
    SwitchLoraOptimizer ours(c, lora.tensors());
    AdamW plain(c, lora.tensors());
    Rng rng(6);
    std::vector<float> p0(lora.num_params()), g(lora.num_params());
    for (float& x : p0) x = 0.3f * rng.normal();
    std::vector<float> p1 = p0;
    for (int t = 0; t < 12; t++) {
        const float gscale = t % 3 == 0 ? 2.0f : 0.01f;  // some steps clip, some do not
        for (float& x : g) x = gscale * rng.normal();
        const float norm = plain.step(p1.data(), g.data(), g.size(), lora.tensors(), t);
        EXPECT_EQ(ours.step(p0.data(), g.data(), g.size(), t), norm);
    }
    EXPECT_EQ(std::memcmp(p0.data(), p1.data(), p0.size() * sizeof(float)), 0);
    EXPECT_EQ(ours.m(), plain.m());
    EXPECT_EQ(ours.v(), plain.v());
    EXPECT_EQ(ours.steps_of(3, LoraFactor::B, 2), 12);
}

TEST(SwitchLora, ResetVectorRestartsAfterItsFreeze) {
    Model m(small_config(), 3);
    LoraAdapters lora(m, lora_options(4), 1);
    OptimizerConfig c = opt_config();
    c.grad_clip = 0;  // the hand computation below needs no clip scale
    SwitchLoraOptimizer opt(c, lora.tensors());
    Rng rng(12);
    std::vector<float> p(lora.num_params()), g(p.size());
    for (float& x : p) x = 0.3f * rng.normal();
    auto new_grads = [&] { for (float& x : g) x = 0.1f * rng.normal(); };
    for (int t = 0; t < 3; t++) new_grads(), opt.step(p.data(), g.data(), g.size(), t);
    const size_t layer = 1, freeze = 5;
    const ParamTensor& B = lora.tensors()[2 * layer + 1];  // (out, 4): column 2 is B[o*4 + 2]
    const ParamTensor& A = lora.tensors()[2 * layer];       // (4, in): row 1
    opt.reset_and_freeze(layer, LoraFactor::B, 2, freeze);
    opt.reset_and_freeze(layer, LoraFactor::A, 1, freeze);
    auto b_at = [&](int o) { return B.offset + (size_t)o * 4 + 2; };
    auto a_at = [&](int j) { return A.offset + (size_t)A.shape[1] + j; };
    for (int o = 0; o < B.shape[0]; o++) EXPECT_EQ(opt.m()[b_at(o)] + opt.v()[b_at(o)], 0.0f);
    for (int j = 0; j < A.shape[1]; j++) EXPECT_EQ(opt.m()[a_at(j)] + opt.v()[a_at(j)], 0.0f);
    EXPECT_NE(opt.m()[b_at(0) + 1], 0.0f) << "column 3 keeps its moments";
    EXPECT_EQ(opt.steps_of(layer, LoraFactor::B, 2), 0);
    EXPECT_EQ(opt.frozen_of(layer, LoraFactor::B, 2), 5);
    const std::vector<float> frozen_start = p;
    for (size_t t = 3; t < 3 + freeze; t++) {
        new_grads();
        opt.step(p.data(), g.data(), g.size(), (int)t);
        for (int o = 0; o < B.shape[0]; o++) ASSERT_EQ(p[b_at(o)], frozen_start[b_at(o)]) << "frozen, even wd";
        for (int j = 0; j < A.shape[1]; j++) ASSERT_EQ(p[a_at(j)], frozen_start[a_at(j)]);
    }
    EXPECT_NE(p[b_at(0) + 1], frozen_start[b_at(0) + 1]) << "the neighbour column trained";
    EXPECT_EQ(opt.steps_of(layer, LoraFactor::B, 2), 5);  // the counter counted through the freeze
    EXPECT_EQ(opt.frozen_of(layer, LoraFactor::B, 2), 0);
    // the first real update: fresh moments, bias correction of t = freeze + 1 = 6, by hand in double
    new_grads();
    const int step = 3 + (int)freeze;
    const size_t i = b_at(5);
    const double b1 = c.beta1, b2 = c.beta2, gi = g[i], p_old = p[i], lr = lr_at_step(c, step);
    const double mh = (1 - b1) * gi / (1 - std::pow(b1, 6)), vh = (1 - b2) * gi * gi / (1 - std::pow(b2, 6));
    const double expect = p_old - lr * (mh / (std::sqrt(vh) + c.eps) + c.weight_decay * p_old);
    opt.step(p.data(), g.data(), g.size(), step);
    EXPECT_NEAR(p[i], expect, 1e-6 * std::fabs(expect));
    EXPECT_EQ(opt.steps_of(layer, LoraFactor::B, 2), 6);
    EXPECT_EQ(opt.steps_of(layer, LoraFactor::B, 3), 9);
}

TEST(SwitchLora, SerializedStateResumesBitIdentically) {
    const SwitchLoraOptions o = frequent_switches(16, 10.0f, 17);  // a switch nearly every step
    OptimizerConfig c = opt_config();
    c.total_steps = o.total_steps;
    const int k = 7;
    Model m(small_config(), 5);
    LoraAdapters lora(m, lora_options(4), 1);
    SwitchLora sl(lora, o, c);
    std::vector<uint8_t> saved;
    std::vector<float> saved_base, saved_adapters;
    int switched = 0;
    for (int t = 0; t < o.total_steps; t++) {
        if (t == k) {
            saved = sl.serialize();
            saved_base = copy_of(m.params(), m.num_params());
            saved_adapters = copy_of(lora.params(), lora.num_params());
        }
        real_grads(m, lora, 100 + t);
        switched += sl.switch_vectors(t);
        sl.step(t);
    }
    EXPECT_GT(switched, 10);
    // resume as a trainer would: build everything fresh, load base and adapters, then the state
    Model m2(small_config(), 5);
    LoraAdapters lora2(m2, lora_options(4), 1);
    SwitchLora sl2(lora2, o, c);
    std::copy(saved_base.begin(), saved_base.end(), m2.params());
    std::copy(saved_adapters.begin(), saved_adapters.end(), lora2.params());
    sl2.deserialize(saved.data(), saved.size(), "ckpt.bin");
    for (int t = k; t < o.total_steps; t++) {
        real_grads(m2, lora2, 100 + t);
        sl2.switch_vectors(t);
        sl2.step(t);
    }
    EXPECT_EQ(std::memcmp(m.params(), m2.params(), m.num_params() * sizeof(float)), 0);
    EXPECT_EQ(std::memcmp(lora.params(), lora2.params(), lora.num_params() * sizeof(float)), 0);
    EXPECT_EQ(sl.serialize(), sl2.serialize());
}

TEST(SwitchLora, DeserializeRefusesBadBytesAndChangesNothing) {
    Model m(small_config(), 5);
    LoraAdapters lora(m, lora_options(4), 1);
    const SwitchLoraOptions o = frequent_switches(10, 0.1f, 0);
    SwitchLora sl(lora, o, opt_config());
    const std::vector<uint8_t> good = sl.serialize();
    auto load = [&](std::vector<uint8_t> b) { sl.deserialize(b.data(), b.size(), "ckpt.bin"); };
    std::vector<uint8_t> b = good;
    b.pop_back();
    expect_error([&] { load(b); }, {"ckpt.bin", "truncated"});
    expect_error([&] { load(std::vector<uint8_t>(good.begin(), good.begin() + 10)); }, {"ckpt.bin", "truncated"});
    b = good, b[0] ^= 1;
    expect_error([&] { load(b); }, {"ckpt.bin", "magic"});
    b = good, b[4] = 9;
    expect_error([&] { load(b); }, {"ckpt.bin", "version 9"});
    b = good, b.push_back(0);
    expect_error([&] { load(b); }, {"ckpt.bin", "past its end"});
    b = good;  // header 16 bytes, rng 8: the first layer's (in, out, ...) at 24
    std::memset(b.data() + 28, 0x7f, 4);  // its `out`
    expect_error([&] { load(b); }, {"ckpt.bin", "q_proj"});
    // another rank
    Model m2(small_config(), 5);
    LoraAdapters lora2(m2, lora_options(2), 1);
    SwitchLora other(lora2, o, opt_config());
    const std::vector<uint8_t> wrong = other.serialize();
    expect_error([&] { load(wrong); }, {"ckpt.bin", "rank 2"});
    EXPECT_EQ(sl.serialize(), good) << "failed loads changed nothing";
    load(good);
    EXPECT_EQ(sl.serialize(), good);
}

TEST(SwitchLora, SwappedOutVectorsWaitInThePool) {
    Model m(small_config(), 13);
    LoraAdapters lora(m, lora_options(4), 1);
    const SwitchLoraOptions o = frequent_switches(40, 10.0f, 2);
    SwitchLora sl(lora, o, opt_config());
    // per layer, the sorted vectors of A's rows and the A pool (then B's columns and the B pool)
    auto vectors = [&](size_t l) {
        const ParamTensor &A = lora.tensors()[2 * l], &B = lora.tensors()[2 * l + 1];
        const int r = 4, in = A.shape[1], out = B.shape[0];
        std::vector<std::vector<float>> a, b;
        for (int i = 0; i < r; i++) a.push_back(copy_of(lora.params() + A.offset + (size_t)i * in, in));
        for (int p = 0; p < sl.pool_size(l); p++) a.push_back(copy_of(sl.pool_A(l).data() + (size_t)p * in, in));
        for (int j = 0; j < r; j++) {
            std::vector<float> col(out);
            for (int q = 0; q < out; q++) col[q] = lora.params()[B.offset + (size_t)q * r + j];
            b.push_back(col);
        }
        for (int p = 0; p < sl.pool_size(l); p++) b.push_back(copy_of(sl.pool_B(l).data() + (size_t)p * out, out));
        std::sort(a.begin(), a.end());
        std::sort(b.begin(), b.end());
        return std::make_pair(a, b);
    };
    Rng rng(3);
    int checked = 0;
    for (int t = 0; t < o.total_steps; t++) {
        random_grads(lora, rng);
        std::vector<std::pair<std::vector<std::vector<float>>, std::vector<std::vector<float>>>> before;
        for (size_t l = 0; l < sl.num_layers(); l++) before.push_back(vectors(l));
        const std::vector<float> adapters_before = copy_of(lora.params(), lora.num_params());
        if (sl.switch_vectors(t) > 0) {
            for (size_t l = 0; l < sl.num_layers(); l++)
                ASSERT_EQ(vectors(l), before[l]) << "layer " << l << " step " << t;
            EXPECT_NE(copy_of(lora.params(), lora.num_params()), adapters_before);
            checked++;
        }
        sl.step(t);
    }
    EXPECT_GT(checked, 20);
}
