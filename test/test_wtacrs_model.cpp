// Tests of WTA-CRS inside the model (layers/activations.h, layers/model_core.cpp, layers/linear.cpp): the
// inputs that only sampled Linears read are really not kept (the plan's tensors and bytes say so), the
// model's gradients stay exact where they must (every input gradient, hence every non-sampled weight), a
// sampler that keeps every row reproduces the exact gradients, LoRA + WTA-CRS keeps dB exact and dA unbiased,
// and a Linear asked for an input it needs but was not given says so.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "../layers/model_core.h"
#include "../layers/wtacrs.h"
#include "test_util.h"

using namespace llmq;

namespace {

ModelConfig small_config() {
    ModelConfig c;
    c.name = "wtacrs-small";
    c.vocab_size = 41;
    c.dim = 16;
    c.ffn_dim = 24;
    c.n_layers = 3;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.max_seq_len = 16;
    c.tied_embeddings = false;
    c.init_std = 0.3f;
    return c;
}

using Batch = llmq_test::RandomBatch;  // (2,12)

enum Which { kAttnOutMlp, kAll, kAllShared };
// One sampler per chosen Linear of every layer (o, gate, up, down; plus q, k, v for kAll), or (kAllShared) one per
// input as ./train attaches them: q,k,v share one sampler and its rows, gate,up another, o and down their own.
void attach_samplers(ModelCore<double>& m, double ratio, Which which, uint64_t seed) {
    for (TransformerLayer<double>& L : m.layers()) {
        std::vector<std::vector<Linear<double>*>> groups = {{&L.o}, {&L.gate}, {&L.up}, {&L.down}};
        if (which == kAll) groups.insert(groups.end(), {{&L.q}, {&L.k}, {&L.v}});
        if (which == kAllShared) groups = {{&L.q, &L.k, &L.v}, {&L.o}, {&L.gate, &L.up}, {&L.down}};
        for (const std::vector<Linear<double>*>& group : groups) {
            auto sampler = std::make_shared<WtaCrsSampler<double>>(ratio, seed++, 12);
            auto rows = std::make_shared<SampledRows<double>>();
            rows->readers = (int)group.size();
            for (Linear<double>* lin : group) lin->sampler = sampler, lin->kept_rows = rows;
        }
    }
}

std::vector<double> gradients(ModelCore<double>& m, const Batch& b) {
    m.zero_grad();
    m.forward(b.tokens.data(), b.targets.data(), b.B, b.T);
    m.backward(1.0);
    return std::vector<double>(m.grads(), m.grads() + m.num_params());
}

bool has_tensor(const ModelCore<double>& m, const std::string& name) {
    for (const ActivationTensor& t : m.activations().tensors)
        if (t.name == name) return true;
    return false;
}

// Whether a tensor of the plan lives in the one-layer workspace of the backward scratch (activations.h).
bool in_workspace(const ModelCore<double>& m, const double* p) {
    const std::vector<double>& g = m.activations().grad_buffer;
    return p >= m.activations().workspace && p < g.data() + g.size();
}

bool is_sampled_weight(const std::string& name, Which which) {
    for (const char* s : {"o_proj", "gate_proj", "up_proj", "down_proj"})
        if (name.find(s) != std::string::npos) return true;
    if (which != kAttnOutMlp)
        for (const char* s : {"q_proj", "k_proj", "v_proj"})
            if (name.find(s) != std::string::npos) return true;
    return false;
}

}  // namespace

// The plan drops exactly the inputs only sampled Linears read, and the bytes fall by exactly their size.
TEST(WtaCrsModel, SampledInputsAreNotKept) {
    const ModelConfig c = small_config();
    Batch batch(c.vocab_size, 3);
    const size_t N = (size_t)batch.B * batch.T, C = c.dim, F = c.ffn_dim, QD = (size_t)c.n_heads * c.head_dim();
    ModelCore<double> exact(c, 11), mlp(c, 11), all(c, 11);
    attach_samplers(mlp, 0.3, kAttnOutMlp, 5);
    attach_samplers(all, 0.3, kAll, 5);
    for (ModelCore<double>* m : {&exact, &mlp, &all}) gradients(*m, batch);

    for (int l = 0; l < c.n_layers; l++) {
        const std::string p = "layers." + std::to_string(l) + ".";
        for (const char* t : {"norm1", "att", "norm2", "hidden", "q", "gate", "up"}) EXPECT_TRUE(has_tensor(exact, p + t));
        EXPECT_TRUE(has_tensor(mlp, p + "norm1"));  // q, k, v are exact: they read it
        for (const char* t : {"att", "norm2", "hidden"}) EXPECT_FALSE(has_tensor(mlp, p + t)) << t;
        for (const char* t : {"norm1", "att", "norm2", "hidden"}) EXPECT_FALSE(has_tensor(all, p + t)) << t;
        for (const char* t : {"q", "k", "v", "gate", "up", "mid", "residual"}) EXPECT_TRUE(has_tensor(all, p + t)) << t;
    }
    const LayerActivations<double> &e0 = exact.activations().layers[0], &m0 = mlp.activations().layers[0],
                                   &m1 = mlp.activations().layers[1], &a0 = all.activations().layers[0];
    EXPECT_FALSE(in_workspace(exact, e0.att) || in_workspace(exact, e0.norm1) || in_workspace(exact, e0.hidden));
    EXPECT_TRUE(in_workspace(mlp, m0.att) && in_workspace(mlp, m0.norm2) && in_workspace(mlp, m0.hidden));
    EXPECT_TRUE(m0.att == m1.att && m0.norm2 == m1.norm2 && m0.hidden == m1.hidden);  // every layer's in one place
    EXPECT_FALSE(in_workspace(mlp, m0.norm1));
    EXPECT_TRUE(in_workspace(all, a0.norm1) && a0.norm1 == a0.norm2);  // norm1 and norm2 share their place
    // L per-layer copies leave; the workspace grows from max(F, 2QD + 3KD) = 56 floats per row to
    // max(F + C, 2QD + 3KD + QD) = 72 (dhidden + a norm; the attention's gradients + a recomputed att)
    const size_t L = c.n_layers, d = sizeof(double);
    EXPECT_EQ(exact.activations().bytes() - mlp.activations().bytes(), d * N * (L * (QD + C + F) - (72 - 56)));
    EXPECT_EQ(exact.activations().bytes() - all.activations().bytes(), d * N * (L * (C + QD + C + F) - (72 - 56)));
    EXPECT_EQ(Activations<double>::bytes_for(c, batch.B, batch.T, all.dropped_inputs()), all.activations().bytes());
}

// Input gradients are exact, so every weight that is not sampled gets exactly the exact gradient; the sampled
// ones differ. With every row kept (ratio 1: k = N, weight 1) the sampled ones are exact too, and a dropped
// att (recomputed in the backward) changes nothing.
TEST(WtaCrsModel, GradientsExactOutsideTheSampledWeights) {
    const ModelConfig c = small_config();
    Batch batch(c.vocab_size, 8);
    ModelCore<double> exact(c, 21);
    const std::vector<double> g0 = gradients(exact, batch);
    for (Which which : {kAttnOutMlp, kAll, kAllShared}) {
        ModelCore<double> sampled(c, 21), every_row(c, 21);
        attach_samplers(sampled, 0.3, which, 9);
        attach_samplers(every_row, 1.0, which, 9);
        const std::vector<double> g = gradients(sampled, batch), g1 = gradients(every_row, batch);
        for (const ParamTensor& t : exact.tensors()) {
            double diff = 0, diff1 = 0, norm = 0;
            for (size_t i = t.offset; i < t.offset + t.size; i++) {
                diff = std::max(diff, std::fabs(g[i] - g0[i]));
                diff1 = std::max(diff1, std::fabs(g1[i] - g0[i]));
                norm = std::max(norm, std::fabs(g0[i]));
            }
            ASSERT_GT(norm, 0) << t.name;
            if (is_sampled_weight(t.name, which)) EXPECT_GT(diff, 1e-6 * norm) << t.name << " is sampled";
            else EXPECT_LE(diff, 1e-12 * norm) << t.name << " must stay exact";
            EXPECT_LE(diff1, 1e-12 * norm) << t.name << " with every row kept";
        }
    }
}

// Recomputing gate and up in the backward (set_recompute_mlp) gives the same loss and gradients bit for bit, with
// exact gradients and with WTA-CRS (where norm2 is dropped and recomputed too: the selection happens only at the
// forward, so the same rows are drawn), and the plan holds one shared gate/up instead of L.
TEST(WtaCrsModel, RecomputedMlpGivesTheSameGradients) {
    const ModelConfig c = small_config();
    Batch batch(c.vocab_size, 13);
    const size_t N = (size_t)batch.B * batch.T, L = c.n_layers, F = c.ffn_dim;
    for (bool sampled : {false, true}) {
        ModelCore<double> kept(c, 31), recomputed(c, 31);
        recomputed.set_recompute_mlp(true);
        if (sampled) attach_samplers(kept, 0.3, kAllShared, 4), attach_samplers(recomputed, 0.3, kAllShared, 4);
        const std::vector<double> g0 = gradients(kept, batch), g1 = gradients(recomputed, batch);
        for (size_t i = 0; i < N; i++) ASSERT_EQ(kept.activations().losses[i], recomputed.activations().losses[i]);
        for (size_t i = 0; i < g0.size(); i++) ASSERT_EQ(g0[i], g1[i]) << "parameter " << i << (sampled ? " (sampled)" : "");
        EXPECT_FALSE(has_tensor(recomputed, "layers.0.gate") || has_tensor(recomputed, "layers.0.up"));
        const LayerActivations<double>& r0 = recomputed.activations().layers[0];
        EXPECT_TRUE(in_workspace(recomputed, r0.gate) && in_workspace(recomputed, r0.up));
        EXPECT_EQ(sampled, !has_tensor(recomputed, "layers.0.norm2"));
        // L gate/up pairs leave; the workspace's MLP phase grows by 2F: from 56 floats per row (exact: the
        // attention's 2QD + 3KD is wider than F) to F + 2F = 72, and (sampled) from 72 to F + 2F + C = 88
        EXPECT_EQ(kept.activations().bytes() - recomputed.activations().bytes(),
                  sizeof(double) * N * (L * 2 * F - (sampled ? 88 - 72 : 72 - 56)));
        EXPECT_EQ(Activations<double>::bytes_for(c, batch.B, batch.T, recomputed.dropped_inputs()),
                  recomputed.activations().bytes());
    }
}

// LoRA + WTA-CRS on a frozen base: u = x A^T is kept from the forward, so dB and dX are exact, dA comes from
// the sampled rows and is unbiased over many draws; the layer keeps k rows and u instead of its input.
TEST(WtaCrsModel, LoraAdapterWithSamplerExactDbUnbiasedDa) {
    Rng rng(17);
    const int N = 40, in = 6, out = 5, r = 3;
    std::vector<double> W((size_t)out * in), x((size_t)N * in), dy((size_t)N * out), A((size_t)r * in), B((size_t)out * r);
    for (auto* v : {&W, &x, &dy, &A, &B})
        for (double& e : *v) e = rng.normal();
    for (int i = 0; i < N; i++)  // heavy-tailed rows, as activations are
        for (int k = 0; k < in; k++) x[(size_t)i * in + k] *= std::exp(1.2 * std::sin(3.0 * i));
    auto run = [&](Linear<double>& lin, std::vector<double>& dA, std::vector<double>& dB, std::vector<double>& dx,
                   bool pass_input) {
        std::fill(dA.begin(), dA.end(), 0.0), std::fill(dB.begin(), dB.end(), 0.0), std::fill(dx.begin(), dx.end(), 0.0);
        std::vector<double> y((size_t)N * out);
        lin.forward(y.data(), x.data(), N);
        lin.backward(dx.data(), dy.data(), pass_input ? x.data() : nullptr, N);
    };
    std::vector<double> dA0(A.size()), dB0(B.size()), dx0(x.size()), dA(A.size()), dB(B.size()), dx(x.size());
    Linear<double> exact(in, out, W.data(), nullptr);
    exact.adapters.push_back({r, 0.5, A.data(), B.data(), dA0.data(), dB0.data()});
    EXPECT_TRUE(exact.needs_input_in_backward());
    run(exact, dA0, dB0, dx0, true);
    Linear<double> lin(in, out, W.data(), nullptr);
    lin.adapters.push_back({r, 0.5, A.data(), B.data(), dA.data(), dB.data()});
    lin.sampler = std::make_shared<WtaCrsSampler<double>>(0.3, 3, 0);
    EXPECT_TRUE(lin.sampled());
    EXPECT_FALSE(lin.needs_input_in_backward());
    std::vector<double> mean(A.size(), 0.0);
    const int draws = 3000;
    for (int d = 0; d < draws; d++) {
        run(lin, dA, dB, dx, false);
        if (d == 0) {
            EXPECT_EQ(lin.kept_sample_bytes(), sizeof(double) * ((size_t)wtacrs_k(N, 0.3) * in + (size_t)N * r));
            for (size_t i = 0; i < dB.size(); i++) ASSERT_NEAR(dB[i], dB0[i], 1e-12 * (1 + std::fabs(dB0[i])));
            for (size_t i = 0; i < dx.size(); i++) ASSERT_NEAR(dx[i], dx0[i], 1e-12 * (1 + std::fabs(dx0[i])));
            double diff = 0;
            for (size_t i = 0; i < dA.size(); i++) diff += std::fabs(dA[i] - dA0[i]);
            EXPECT_GT(diff, 1e-6);  // dA is sampled
        }
        for (size_t i = 0; i < dA.size(); i++) mean[i] += dA[i] / draws;
    }
    double num = 0, den = 0;
    for (size_t i = 0; i < dA.size(); i++) num += std::pow(mean[i] - dA0[i], 2), den += std::pow(dA0[i], 2);
    EXPECT_LT(std::sqrt(num / den), 0.05);
}

// LoRA on the attention only: the MLP's Linears form no gradient at all, so their inputs are not kept either
// (no sampler involved); a Linear that needs its input and is not given it fails with a message.
TEST(WtaCrsModel, FrozenLinearsKeepNoInputAndMissingInputIsAnError) {
    const ModelConfig c = small_config();
    ModelCore<double> m(c, 4);
    const int r = 2;
    std::vector<double> A((size_t)r * c.dim, 0.1), B((size_t)c.dim * r, 0.1), dA(A.size()), dB(B.size());
    for (TransformerLayer<double>& L : m.layers())
        for (Linear<double>* lin : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) lin->dweight = nullptr;
    m.layers()[0].q.adapters.push_back({r, 1.0, A.data(), B.data(), dA.data(), dB.data()});
    Batch batch(c.vocab_size, 1);
    gradients(m, batch);
    EXPECT_TRUE(has_tensor(m, "layers.0.norm1"));   // q's adapter recomputes u from it
    EXPECT_FALSE(has_tensor(m, "layers.1.norm1"));  // nothing reads it in layer 1
    for (int l = 0; l < c.n_layers; l++) {
        const std::string p = "layers." + std::to_string(l) + ".";
        EXPECT_TRUE(has_tensor(m, p + "att"));  // attention's backward reads it
        EXPECT_FALSE(has_tensor(m, p + "norm2"));
        EXPECT_FALSE(has_tensor(m, p + "hidden"));
    }
    std::vector<double> W(12, 1.0), dW(12), x(8, 1.0), y(6), dy(6, 1.0), dx(8);
    Linear<double> lin(4, 3, W.data(), dW.data());
    lin.forward(y.data(), x.data(), 2);
    llmq_test::expect_error([&] { lin.backward(dx.data(), dy.data(), nullptr, 2); }, {"input was not kept"});
}
