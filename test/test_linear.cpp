// Tests of layers/linear.h: the base product, LoRA adapters against finite differences (double), frozen and
// quantized bases, the sampled weight-gradient hook, and the immediate-update path against the usual step.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "../kernels/adamw.h"
#include "../kernels/common.h"
#include "../layers/linear.h"

using namespace llmq;

namespace {

template <typename Real>
std::vector<Real> randn(Rng& rng, size_t n, double std = 1.0) {
    std::vector<Real> v(n);
    for (Real& x : v) x = (Real)(std * rng.normal());
    return v;
}

template <typename Real>
std::vector<Real> poisoned(size_t n) {
    return std::vector<Real>(n, std::numeric_limits<Real>::quiet_NaN());
}

// A Linear<double> with two adapters on random weights; all four views live in vectors the test owns.
struct LoraFixture {
    int N = 4, in = 7, out = 5;
    std::vector<double> W, dW, x, A1, B1, A2, B2, dA1, dB1, dA2, dB2;
    Linear<double> lin;
    explicit LoraFixture(bool base_trained) {
        Rng rng(11);
        W = randn<double>(rng, out * in);
        x = randn<double>(rng, N * in);
        A1 = randn<double>(rng, 2 * in);
        B1 = randn<double>(rng, out * 2);  // non-zero B so that dA is not trivially zero
        A2 = randn<double>(rng, 3 * in);
        B2 = randn<double>(rng, out * 3);
        dW.assign(W.size(), 0);
        dA1.assign(A1.size(), 0);
        dB1.assign(B1.size(), 0);
        dA2.assign(A2.size(), 0);
        dB2.assign(B2.size(), 0);
        lin = Linear<double>(in, out, W.data(), base_trained ? dW.data() : nullptr);
        lin.adapters.push_back({2, 0.5, A1.data(), B1.data(), dA1.data(), dB1.data()});
        lin.adapters.push_back({3, -1.25, A2.data(), B2.data(), dA2.data(), dB2.data()});
    }
    // loss = sum(y * R), so dout = R
    double loss(const std::vector<double>& R) {
        std::vector<double> y = poisoned<double>(N * out);
        lin.forward(y.data(), x.data(), N);
        double s = 0;
        for (size_t i = 0; i < y.size(); i++) s += y[i] * R[i];
        return s;
    }
};


double rel_err(double a, double b) { return std::fabs(a - b) / std::max(std::fabs(a) + std::fabs(b), 1e-12); }

}  // namespace

namespace {
// f.lin's forward against the hand-computed y = x W^T + sum over adapters scale (drop(x) A^T) B^T, with the mask
// of the layer's dropout seed (none when the seed is 0).
void expect_forward_matches_hand_computation(LoraFixture& f) {
    std::vector<double> y = poisoned<double>(f.N * f.out);
    f.lin.forward(y.data(), f.x.data(), f.N);
    const double p = f.lin.adapter_dropout;
    auto adapter_input = [&](int n, int i) {
        const double x = f.x[n * f.in + i];
        if (f.lin.dropout_seed == 0) return x;
        return Rng::uniform_at(f.lin.dropout_seed, n * f.in + i) < (float)p ? 0.0 : x / (1 - p);
    };
    for (int n = 0; n < f.N; n++)
        for (int o = 0; o < f.out; o++) {
            double want = 0;
            for (int i = 0; i < f.in; i++) want += f.x[n * f.in + i] * f.W[o * f.in + i];
            for (const LoraAdapter<double>& a : f.lin.adapters)
                for (int r = 0; r < a.rank; r++) {
                    double u = 0;
                    for (int i = 0; i < f.in; i++) u += adapter_input(n, i) * a.A[r * f.in + i];
                    want += a.scale * u * a.B[o * a.rank + r];
                }
            EXPECT_NEAR(y[n * f.out + o], want, 1e-12 * (1 + std::fabs(want)));
        }
}
}  // namespace

TEST(Linear, ForwardWithAdaptersMatchesHandComputation) {
    LoraFixture f(true);
    expect_forward_matches_hand_computation(f);
}

namespace {
// The analytic gradients of f's loss sum(y * R) (x, W, A1, B1, A2, B2) against central differences.
void expect_lora_gradients_match_finite_differences(LoraFixture& f) {
    Rng rng(5);
    std::vector<double> R = randn<double>(rng, f.N * f.out);
    std::vector<double> dx(f.N * f.in, 0.0);
    f.loss(R);
    f.lin.backward(dx.data(), R.data(), f.x.data(), f.N);
    struct Check {
        std::vector<double>* value;
        std::vector<double>* grad;
    } checks[] = {{&f.x, &dx}, {&f.W, &f.dW}, {&f.A1, &f.dA1}, {&f.B1, &f.dB1}, {&f.A2, &f.dA2}, {&f.B2, &f.dB2}};
    // the loss is linear in each single coordinate (bilinear in A, B; a fixed dropout mask is linear too), so a
    // large step has no truncation error and keeps rounding (~1e-16 * |loss| / h) far below the tolerance
    const double h = 1e-3;
    for (const Check& c : checks)
        for (size_t i = 0; i < c.value->size(); i++) {
            double keep = (*c.value)[i];
            (*c.value)[i] = keep + h;
            double up = f.loss(R);
            (*c.value)[i] = keep - h;
            double down = f.loss(R);
            (*c.value)[i] = keep;
            double numeric = (up - down) / (2 * h);
            EXPECT_LT(rel_err((*c.grad)[i], numeric), 1e-7) << "coordinate " << i << ": " << (*c.grad)[i] << " vs " << numeric;
        }
}
}  // namespace

TEST(Linear, LoraBackwardMatchesFiniteDifferences) {
    LoraFixture f(true);
    expect_lora_gradients_match_finite_differences(f);
}

// Adapter dropout: a fixed seed fixes the mask, so the layer is an ordinary (linear) function whose gradients
// are checked like the plain one; the forward equals the hand-computed drop(x) product.
TEST(Linear, LoraDropoutMatchesHandComputationAndFiniteDifferences) {
    LoraFixture f(true);
    f.lin.adapter_dropout = 0.4f;
    f.lin.dropout_seed = 0xD809u;
    expect_forward_matches_hand_computation(f);
    int dropped = 0;
    for (int i = 0; i < f.N * f.in; i++) dropped += Rng::uniform_at(f.lin.dropout_seed, i) < 0.4f;
    EXPECT_GT(dropped, 3) << "the mask drops some inputs";
    EXPECT_LT(dropped, f.N * f.in - 3) << "and keeps some";
    expect_lora_gradients_match_finite_differences(f);
}

// drop(x) = x m / (1 - p) is unbiased: averaged over many seeds the output is the no-dropout output; seed 0 and
// p = 0 are exactly no dropout.
TEST(Linear, LoraDropoutIsUnbiasedAndOffWithSeedZero) {
    LoraFixture f(false);
    std::vector<double> plain(f.N * f.out), y(f.N * f.out), mean(f.N * f.out, 0.0);
    f.lin.forward(plain.data(), f.x.data(), f.N);
    f.lin.adapter_dropout = 0.3f;
    f.lin.forward(y.data(), f.x.data(), f.N);  // seed 0: off
    EXPECT_EQ(y, plain);
    const int draws = 20000;
    for (int d = 1; d <= draws; d++) {
        f.lin.dropout_seed = Rng::mix(d);
        f.lin.forward(y.data(), f.x.data(), f.N);
        for (size_t i = 0; i < y.size(); i++) mean[i] += y[i] / draws;
    }
    double worst = 0, scale = 0;
    for (size_t i = 0; i < y.size(); i++) worst = std::max(worst, std::fabs(mean[i] - plain[i])), scale += std::fabs(plain[i]) / y.size();
    // the adapter term has O(1) per-draw spread here; its mean over 20000 draws is within a few 1e-2 of the truth
    EXPECT_LT(worst, 0.05 * scale) << "mean over " << draws << " masks vs the no-dropout output";
    EXPECT_GT(worst, 0.0);
}

TEST(Linear, FrozenBaseGetsNoGradientButAdaptersDo) {
    LoraFixture frozen(false), trained(true);
    EXPECT_FALSE(frozen.lin.base_trained());
    EXPECT_TRUE(trained.lin.base_trained());
    Rng rng(6);
    std::vector<double> R = randn<double>(rng, frozen.N * frozen.out);
    std::vector<double> dx_f(frozen.N * frozen.in, 0.0), dx_t(dx_f);
    const std::vector<double> W_before = frozen.W;
    frozen.loss(R);
    frozen.lin.backward(dx_f.data(), R.data(), frozen.x.data(), frozen.N);
    trained.loss(R);
    trained.lin.backward(dx_t.data(), R.data(), trained.x.data(), trained.N);
    EXPECT_EQ(frozen.W, W_before);
    for (double g : frozen.dW) EXPECT_EQ(g, 0.0);  // untouched (the layer never saw this buffer)
    bool any_nonzero = false;
    for (double g : trained.dW) any_nonzero |= g != 0.0;
    EXPECT_TRUE(any_nonzero);
    // input and adapter gradients do not depend on whether the base trains
    EXPECT_EQ(dx_f, dx_t);
    EXPECT_EQ(frozen.dA1, trained.dA1);
    EXPECT_EQ(frozen.dB2, trained.dB2);
}

namespace {

// fp32 "quantization" that stores the weight as is: exercises the dequantize-then-matmul slot.
struct CopyQuantized : QuantizedWeight {
    int r, c;
    std::vector<float> w;
    mutable int dequantize_calls = 0;
    int rows() const override { return r; }
    int cols() const override { return c; }
    void dequantize(float* out) const override {
        dequantize_calls++;
        std::copy(w.begin(), w.end(), out);
    }
};

}  // namespace

TEST(Linear, QuantizedBaseDequantizesAndIsFrozen) {
    const int N = 3, in = 6, out = 4;
    Rng rng(9);
    std::vector<float> W = randn<float>(rng, out * in), x = randn<float>(rng, N * in), R = randn<float>(rng, N * out);
    auto q = std::make_shared<CopyQuantized>();
    q->r = out;
    q->c = in;
    q->w = W;
    Linear<float> plain(in, out, W.data(), nullptr), quant(in, out, nullptr, nullptr);
    quant.quant = q;
    std::vector<float> y1 = poisoned<float>(N * out), y2 = poisoned<float>(N * out);
    plain.forward(y1.data(), x.data(), N);
    quant.forward(y2.data(), x.data(), N);
    EXPECT_EQ(y1, y2);
    std::vector<float> dx1(N * in, 0.f), dx2(N * in, 0.f);
    plain.backward(dx1.data(), R.data(), x.data(), N);
    quant.backward(dx2.data(), R.data(), x.data(), N);
    EXPECT_EQ(dx1, dx2);
    EXPECT_EQ(q->dequantize_calls, 2);
    EXPECT_FALSE(quant.base_trained());
    std::vector<float> dW(out * in, 0.f);
    quant.dweight = dW.data();  // a gradient for a quantized base is refused
    EXPECT_THROW(quant.forward(y2.data(), x.data(), N), Error);
}

namespace {

// Picks each listed row with the given weight.
struct FixedSampler : RowSampler<float> {
    std::vector<int> rows;
    std::vector<float> weights;
    void select(const float*, int, int, std::vector<int>& r, std::vector<float>& w) override {
        r = rows;
        w = weights;
    }
};

}  // namespace

TEST(Linear, SampledWeightGradientIsTheWeightedSumOfKeptRows) {
    const int N = 5, in = 4, out = 3;
    Rng rng(21);
    std::vector<float> W = randn<float>(rng, out * in), x = randn<float>(rng, N * in), R = randn<float>(rng, N * out);
    auto sampler = std::make_shared<FixedSampler>();
    sampler->rows = {3, 0, 3};
    sampler->weights = {0.75f, 2.0f, 1.5f};
    std::vector<float> dW(out * in, 0.f), y(N * out), dx(N * in, 0.f), dx_exact(N * in, 0.f);
    Linear<float> lin(in, out, W.data(), dW.data());
    lin.sampler = sampler;
    lin.forward(y.data(), x.data(), N);
    std::vector<float> x_at_forward = x;
    for (float& v : x) v = 1e6f;  // the backward must use the rows kept at forward, not the live input
    lin.backward(dx.data(), R.data(), x.data(), N);
    for (int o = 0; o < out; o++)
        for (int i = 0; i < in; i++) {
            double want = 0;
            for (size_t s = 0; s < sampler->rows.size(); s++) {
                int r = sampler->rows[s];
                want += sampler->weights[s] * R[r * out + o] * x_at_forward[r * in + i];
            }
            EXPECT_NEAR(dW[o * in + i], want, 1e-5 * (1 + std::fabs(want)));
        }
    // the input gradient stays exact
    Linear<float> exact(in, out, W.data(), nullptr);
    exact.backward(dx_exact.data(), R.data(), x.data(), N);
    EXPECT_EQ(dx, dx_exact);
}

namespace {

// A two-layer chain x -> L1 (6->8) -> L2 (8->5), loss = sum(y * R); weights in one parameter buffer.
struct Chain {
    static constexpr int N = 4, D0 = 6, D1 = 8, D2 = 5;
    std::vector<float> params, grads, h, y, dh;
    Linear<float> l1, l2;
    Chain() : params(D1 * D0 + D2 * D1), grads(params.size(), 0.f), h(N * D1), y(N * D2), dh(N * D1) {
        Rng rng(3);
        for (float& p : params) p = 0.3f * rng.normal();
        l1 = Linear<float>(D0, D1, params.data(), grads.data());
        l2 = Linear<float>(D1, D2, params.data() + D1 * D0, grads.data() + D1 * D0);
    }
    void forward_backward(const std::vector<float>& x, const std::vector<float>& R) {
        l1.forward(h.data(), x.data(), N);
        l2.forward(y.data(), h.data(), N);
        std::fill(dh.begin(), dh.end(), 0.f);
        l2.backward(dh.data(), R.data(), h.data(), N);
        l1.backward(nullptr, dh.data(), x.data(), N);
    }
};

}  // namespace

// Per-layer updates inside the backward equal the usual backward-then-step, for SGD and AdamW, over steps.
TEST(Linear, ImmediateUpdateEqualsTheUsualStep) {
    for (bool adam : {false, true}) {
        Chain usual, immediate;
        const float lr = 0.05f;
        std::vector<float> m(usual.params.size(), 0.f), v(m), m2(m), v2(m);
        int t = 0;
        auto update = [&](float* param, const float* grad, size_t n, std::vector<float>& mm, std::vector<float>& vv,
                          size_t offset) {
            if (adam)
                adamw_update_cpu(param, grad, mm.data() + offset, vv.data() + offset, n, lr, 0.9f, 0.95f, 1e-8f,
                                 0.1f, t, 1.0f);
            else
                for (size_t i = 0; i < n; i++) param[i] -= lr * grad[i];
        };
        // the immediate chain: no gradient buffers, a callback per layer indexing the state by offset
        std::vector<float> scratch(Chain::D1 * Chain::D0);  // shared, the largest layer
        for (Linear<float>* l : {&immediate.l1, &immediate.l2}) {
            l->dweight = nullptr;
            l->immediate_scratch = scratch.data();
            l->on_weight_grad = [&](float* param, const float* grad, size_t n) {
                update(param, grad, n, m2, v2, param - immediate.params.data());
            };
        }
        Rng rng(17);
        const std::vector<float> start = usual.params;
        for (int step = 1; step <= 3; step++) {
            t = step;
            std::vector<float> x = randn<float>(rng, Chain::N * Chain::D0), R = randn<float>(rng, Chain::N * Chain::D2);
            std::fill(usual.grads.begin(), usual.grads.end(), 0.f);
            usual.forward_backward(x, R);
            update(usual.params.data(), usual.grads.data(), usual.params.size(), m, v, 0);
            immediate.forward_backward(x, R);
        }
        EXPECT_NE(usual.params, start);
        EXPECT_EQ(immediate.params, usual.params) << (adam ? "AdamW" : "SGD");
        for (float g : immediate.grads) EXPECT_EQ(g, 0.f);  // never written
    }
}
