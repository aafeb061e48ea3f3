// Tests of layers/config.h, layers/model.h and layers/model_core.h: presets and parameter counts, layout,
// the whole model's gradient against central finite differences in DOUBLE (tied and untied), float vs
// double agreement, loss_scale accumulation, causality, and input errors.
#include <gtest/gtest.h>


#include <cmath>
#include <string>
#include <vector>

#include "../kernels/common.h"
#include "../layers/config.h"
#include "../layers/model.h"
#include "../layers/model_core.h"
#include "test_util.h"

using namespace llmq;

namespace {

// The tiny preset's structure (GQA, SwiGLU, RoPE) shrunk to finite-difference size.
ModelConfig small_config(bool tied) {
    ModelConfig c;
    c.name = tied ? "small-tied" : "small-untied";
    c.vocab_size = 37;
    c.dim = 16;
    c.ffn_dim = 24;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.max_seq_len = 8;
    c.tied_embeddings = tied;
    c.init_std = 0.3f;  // larger than 0.02 so every path (softmax, silu, norms) is well inside its nonlinearity
    return c;
}

struct Batch : llmq_test::RandomBatch {  // (2,5), position 3 ignored
    Batch(int V, uint64_t seed) : RandomBatch(V, seed, 2, 5) { targets[3] = kIgnoreIndex; }
};


void check_gradient_against_finite_differences(bool tied) {
    const ModelConfig c = small_config(tied);
    ModelCore<double> model(c, 1234);
    Batch batch(c.vocab_size, 99);
    auto loss = [&] { return model.forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T); };
    model.zero_grad();
    loss();
    model.backward(1.0);
    const std::vector<double> grad(model.grads(), model.grads() + model.num_params());

    Rng pick(7);
    const double h = 1e-5;
    int checked = 0, significant = 0;
    for (const ParamTensor& t : model.tensors()) {
        const int samples = (int)std::min<size_t>(t.size, 24);
        double worst = 0;
        for (int s = 0; s < samples; s++) {
            const size_t i = t.offset + (t.size <= 24 ? (size_t)s : (size_t)pick.below(t.size));
            double& p = model.params()[i];
            const double keep = p;
            p = keep + h;
            const double up = loss();
            p = keep - h;
            const double down = loss();
            p = keep;
            const double numeric = (up - down) / (2 * h);
            const double err = std::fabs(grad[i] - numeric) / std::max({std::fabs(grad[i]), std::fabs(numeric), 1e-3});
            worst = std::max(worst, err);
            EXPECT_LE(err, 1e-5) << t.name << " [" << i - t.offset << "]: analytic " << grad[i] << " numeric "
                                 << numeric;
            checked++;
            significant += std::fabs(grad[i]) > 1e-3;
        }
        EXPECT_GT(worst, 0.0) << t.name;  // the comparison really happened in floating point
    }
    // the check is meaningful: most sampled coordinates carry a real gradient
    EXPECT_GT(significant, checked / 2) << significant << " of " << checked;
}

}  // namespace

TEST(ModelConfig, PresetsMatchTheTable) {
    struct Row {
        const char* name;
        int dim, ffn, heads, kv, layers;
    } rows[] = {{"tiny", 128, 352, 4, 2, 4},        {"60m", 512, 1376, 8, 8, 8},     {"130m", 768, 2048, 12, 12, 12},
                {"350m", 1024, 2736, 16, 16, 24}, {"1b", 2048, 5461, 32, 32, 24}, {"7b", 4096, 11008, 32, 32, 32}};
    for (const Row& r : rows) {
        ModelConfig c = ModelConfig::preset(r.name, 32000);
        EXPECT_EQ(c.name, r.name);
        EXPECT_EQ(c.vocab_size, 32000);
        EXPECT_EQ(c.dim, r.dim);
        EXPECT_EQ(c.ffn_dim, r.ffn);
        EXPECT_EQ(c.n_heads, r.heads);
        EXPECT_EQ(c.n_kv_heads, r.kv);
        EXPECT_EQ(c.n_layers, r.layers);
        EXPECT_EQ(c.max_seq_len, 1024);
        EXPECT_EQ(c.tied_embeddings, std::string(r.name) == "tiny");
        // hand formula: embeddings (+ lm_head), per layer 2 norms + q,o (C,C) + k,v (C*kv/heads, C) + 3 (F,C)
        const size_t C = r.dim, F = r.ffn, V = 32000, KD = C * r.kv / r.heads;
        const size_t want = V * C * (c.tied_embeddings ? 1 : 2) + r.layers * (2 * C + 2 * C * C + 2 * KD * C + 3 * F * C) + C;
        EXPECT_EQ(c.num_params(), want) << r.name;
    }
    EXPECT_EQ(ModelConfig::preset("60m", 32000).num_params(), 58073600u);  // ~58M, the GaLore/LoQT "60M"
    EXPECT_EQ(ModelConfig::preset("7b", 32000).num_params(), 6738415616u);  // LLaMA-7B
    EXPECT_EQ(ModelConfig::preset("tiny", 50257).describe(),
              "tiny: dim 128, 4 layers, 4 heads (2 kv), ffn 352, vocab 50257, tied: 7.2M params");
    EXPECT_EQ(ModelConfig::preset("1b", 32000).describe(),
              "1b: dim 2048, 24 layers, 32 heads (32 kv), ffn 5461, vocab 32000, untied: 1.34B params");
}

TEST(ModelConfig, ErrorsNameTheField) {
    auto message = [](const ModelConfig& c) -> std::string {
        try {
            c.validate();
        } catch (const Error& e) {
            return e.what();
        }
        return "no error";
    };
    ModelConfig c = ModelConfig::preset("tiny", 100);
    c.n_heads = 5;
    EXPECT_NE(message(c).find("n_heads 5 does not divide dim 128"), std::string::npos) << message(c);
    c = ModelConfig::preset("tiny", 100);
    c.n_kv_heads = 3;
    EXPECT_NE(message(c).find("n_kv_heads 3"), std::string::npos) << message(c);
    c = ModelConfig::preset("tiny", 100);
    c.vocab_size = 0;
    EXPECT_NE(message(c).find("vocab_size"), std::string::npos) << message(c);
    c = ModelConfig::preset("tiny", 100);
    c.dim = 132;  // head_dim 33: odd, RoPE pairs dims
    EXPECT_NE(message(c).find("head_dim"), std::string::npos) << message(c);
    try {
        ModelConfig::preset("70b", 100);
        FAIL() << "unknown preset accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("tiny, 60m, 130m, 350m, 1b, 7b"), std::string::npos) << e.what();
    }
}

TEST(Model, LayoutCoversTheBufferAndInitialisesDeterministically) {
    for (bool tied : {true, false}) {
        const ModelConfig c = small_config(tied);
        Model a(c, 5), b(c, 5), other(c, 6);
        size_t sum = 0, expected_offset = 0;
        for (const ParamTensor& t : a.tensors()) {
            EXPECT_EQ(t.offset, expected_offset) << t.name;
            expected_offset += t.size;
            sum += t.size;
            EXPECT_EQ(t.decay, t.shape.size() == 2) << t.name;
        }
        EXPECT_EQ(sum, a.num_params());
        EXPECT_EQ(a.num_params(), c.num_params());
        EXPECT_EQ(a.tensors().size(), 1 + 9 * 2 + 1 + (tied ? 0 : 1));
        EXPECT_EQ(a.tensor("model.layers.1.self_attn.k_proj.weight").shape, (std::vector<int>{8, 16}));
        EXPECT_THROW(a.tensor("lm_head.weight.missing"), Error);
        EXPECT_EQ(std::vector<float>(a.params(), a.params() + a.num_params()),
                  std::vector<float>(b.params(), b.params() + b.num_params()));
        EXPECT_NE(std::vector<float>(a.params(), a.params() + a.num_params()),
                  std::vector<float>(other.params(), other.params() + other.num_params()));
        const ParamTensor& norm = a.tensor("model.norm.weight");
        for (size_t i = 0; i < norm.size; i++) EXPECT_EQ(a.params()[norm.offset + i], 1.0f);
        const ParamTensor& q = a.tensor("model.layers.0.self_attn.q_proj.weight");
        double s2 = 0;
        for (size_t i = 0; i < q.size; i++) s2 += (double)a.params()[q.offset + i] * a.params()[q.offset + i];
        EXPECT_NEAR(std::sqrt(s2 / q.size), c.init_std, 0.25 * c.init_std);
    }
}

TEST(Model, GradientMatchesFiniteDifferencesTied) { check_gradient_against_finite_differences(true); }
TEST(Model, GradientMatchesFiniteDifferencesUntied) { check_gradient_against_finite_differences(false); }

TEST(Model, FloatMatchesDoubleAndLossScaleAccumulates) {
    const ModelConfig c = small_config(false);
    Model f(c, 42);
    ModelCore<double> d(c, 42);
    Batch batch(c.vocab_size, 3);
    f.zero_grad();
    d.zero_grad();
    const float lf = f.forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
    const double ld = d.forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
    EXPECT_NEAR(lf, ld, 1e-5 * ld);
    EXPECT_GT(ld, 1.0);  // a real loss, not zero
    f.backward(1.0f);
    d.backward(1.0);
    double max_diff = 0, max_grad = 0;
    for (size_t i = 0; i < f.num_params(); i++) {
        max_diff = std::max(max_diff, std::fabs(f.grads()[i] - d.grads()[i]));
        max_grad = std::max(max_grad, std::fabs(d.grads()[i]));
    }
    EXPECT_LT(max_diff, 1e-4 * max_grad);
    // a second forward/backward with loss_scale 2.5 accumulates: grads become 3.5x
    const std::vector<double> once(d.grads(), d.grads() + d.num_params());
    d.forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
    d.backward(2.5);
    for (size_t i = 0; i < d.num_params(); i++) ASSERT_NEAR(d.grads()[i], 3.5 * once[i], 1e-12 + 1e-10 * std::fabs(once[i]));
    // backward needs a fresh forward with targets
    EXPECT_THROW(d.backward(1.0), Error);
    d.forward(batch.tokens.data(), nullptr, batch.B, batch.T);
    EXPECT_THROW(d.backward(1.0), Error);
}

TEST(Model, IgnoredTargetsDoNotCount) {
    const ModelConfig c = small_config(true);
    ModelCore<double> m(c, 8);
    Batch batch(c.vocab_size, 4);
    // the mean over the 9 valid targets equals the mean of per-position losses computed one target at a time
    const double mean = m.forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
    double sum = 0;
    int valid = 0;
    for (int i = 0; i < batch.B * batch.T; i++) {
        if (batch.targets[i] == kIgnoreIndex) continue;
        std::vector<int> only(batch.targets.size(), kIgnoreIndex);
        only[i] = batch.targets[i];
        sum += m.forward(batch.tokens.data(), only.data(), batch.B, batch.T);
        valid++;
    }
    EXPECT_EQ(valid, 9);
    EXPECT_NEAR(mean, sum / valid, 1e-12);
    std::vector<int> none(batch.targets.size(), kIgnoreIndex);
    EXPECT_EQ(m.forward(batch.tokens.data(), none.data(), batch.B, batch.T), 0.0);
}

TEST(Model, IsCausal) {
    const ModelConfig c = small_config(true);
    Model m(c, 77);
    const int B = 2, T = 7, V = c.vocab_size, changed_t = 3;
    Batch batch(V, 12);
    std::vector<int> tokens(B * T);
    Rng rng(1);
    for (int& t : tokens) t = (int)rng.below(V);
    m.forward(tokens.data(), nullptr, B, T);
    const std::vector<float> before(m.logits(), m.logits() + (size_t)B * T * V);
    tokens[changed_t] = (tokens[changed_t] + 1) % V;  // sequence 0, position 3
    m.forward(tokens.data(), nullptr, B, T);
    const float* after = m.logits();
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            bool same = true;
            for (int v = 0; v < V; v++) same &= before[((size_t)b * T + t) * V + v] == after[((size_t)b * T + t) * V + v];
            const bool should_change = b == 0 && t >= changed_t;
            EXPECT_EQ(same, !should_change) << "sequence " << b << " position " << t;
        }
}

TEST(Model, BadInputsAreErrors) {
    const ModelConfig c = small_config(true);
    Model m(c, 1);
    Batch batch(c.vocab_size, 2);
    auto message = [&](const std::vector<int>& tokens, const int* targets, int T) -> std::string {
        try {
            m.forward(tokens.data(), targets, (int)tokens.size() / T, T);
        } catch (const Error& e) {
            return e.what();
        }
        return "no error";
    };
    std::vector<int> bad = batch.tokens;
    bad[7] = 37;
    EXPECT_NE(message(bad, nullptr, 5).find("token id 37 at position 7 (sequence 1, t 2)"), std::string::npos)
        << message(bad, nullptr, 5);
    bad[7] = -1;
    EXPECT_NE(message(bad, nullptr, 5).find("token id -1 at position 7"), std::string::npos);
    std::vector<int> targets = batch.targets;
    targets[2] = 40;
    EXPECT_NE(message(batch.tokens, targets.data(), 5).find("target id 40 at position 2"), std::string::npos);
    std::vector<int> long_seq(9, 1);  // max_seq_len 8
    EXPECT_NE(message(long_seq, nullptr, 9).find("exceeds max_seq_len 8"), std::string::npos);
}

TEST(Model, ActivationsArePlannedPerShape) {
    const ModelConfig c = small_config(true);
    Model m(c, 1);
    Batch batch(c.vocab_size, 2);
    m.forward(batch.tokens.data(), nullptr, 2, 5);
    const size_t bytes_10 = m.activation_bytes();
    m.forward(batch.tokens.data(), nullptr, 1, 5);
    const size_t bytes_5 = m.activation_bytes();
    EXPECT_GT(bytes_10, bytes_5);
    // everything but the RoPE tables scales with N = B*T
    const size_t rope = 2 * sizeof(float) * 5 * c.head_dim() / 2;
    EXPECT_EQ(bytes_10 - rope, 2 * (bytes_5 - rope));
    EXPECT_EQ(Model::activation_bytes_for(c, 1, 5), bytes_5);  // the plan, without allocating
    EXPECT_EQ(Model::activation_bytes_for(c, 2, 5), bytes_10);
    bool has_q = false;
    for (const ActivationTensor& t : m.core().activations().tensors) has_q |= t.name == "layers.1.q";
    EXPECT_TRUE(has_q);
}

// The Linear views are live: a LoRA adapter on a frozen q_proj of the double model gets the right gradient
// (finite differences) and the frozen base none.
TEST(Model, AdapterOnAFrozenProjectionTrainsThroughTheWholeModel) {
    const ModelConfig c = small_config(true);
    ModelCore<double> model(c, 31);
    Batch batch(c.vocab_size, 5);
    const int r = 3, C = c.dim;
    Rng rng(4);
    std::vector<double> A(r * C), Bm(C * r), dA(r * C, 0.0), dB(C * r, 0.0);
    for (double& x : A) x = 0.3 * rng.normal();
    for (double& x : Bm) x = 0.3 * rng.normal();
    Linear<double>& q = model.layers()[1].q;
    q.dweight = nullptr;  // frozen base
    q.adapters.push_back({r, 0.75, A.data(), Bm.data(), dA.data(), dB.data()});
    auto loss = [&] { return model.forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T); };
    model.zero_grad();
    loss();
    model.backward(1.0);
    const ParamTensor& qt = model.tensor("model.layers.1.self_attn.q_proj.weight");
    for (size_t i = 0; i < qt.size; i++) ASSERT_EQ(model.grads()[qt.offset + i], 0.0);
    const double h = 1e-5;
    for (auto [value, grad] : {std::make_pair(&A, &dA), std::make_pair(&Bm, &dB)})
        for (size_t i = 0; i < value->size(); i += 5) {
            const double keep = (*value)[i];
            (*value)[i] = keep + h;
            const double up = loss();
            (*value)[i] = keep - h;
            const double down = loss();
            (*value)[i] = keep;
            const double numeric = (up - down) / (2 * h);
            EXPECT_LE(std::fabs((*grad)[i] - numeric) / std::max({std::fabs((*grad)[i]), std::fabs(numeric), 1e-3}), 1e-5)
                << i << ": " << (*grad)[i] << " vs " << numeric;
            EXPECT_GT(std::fabs(numeric), 1e-6);
        }
}

// The classifier in chunks of rows (uneven: 10 rows in chunks of 3) gives the same per-row losses, bit for bit,
// and the same gradients up to summation order as the whole batch at once, with some targets ignored; its plan
// holds (3,V) logits instead of (10,V); a forward without targets still returns every row's logits.
TEST(Model, ChunkedClassifierEqualsTheWholeBatch) {
    const ModelConfig c = small_config(false);
    ModelCore<double> whole(c, 5), chunked(c, 5);
    whole.set_classifier_chunk(0);
    chunked.set_classifier_chunk(3);
    Batch batch(c.vocab_size, 21);
    batch.targets[4] = kIgnoreIndex, batch.targets[7] = kIgnoreIndex;
    const int N = batch.B * batch.T;
    for (ModelCore<double>* m : {&whole, &chunked}) {
        m->zero_grad();
        m->forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
        m->backward(0.5);
    }
    for (int i = 0; i < N; i++) EXPECT_EQ(whole.activations().losses[i], chunked.activations().losses[i]) << i;
    double worst = 0, scale = 0;
    for (size_t i = 0; i < whole.num_params(); i++) {
        worst = std::max(worst, std::fabs(whole.grads()[i] - chunked.grads()[i]));
        scale = std::max(scale, std::fabs(whole.grads()[i]));
    }
    EXPECT_GT(scale, 0.0);
    EXPECT_LT(worst, 1e-12 * scale);
    EXPECT_EQ(chunked.activations().logit_rows, 3);
    EXPECT_EQ(whole.activations().bytes() - chunked.activations().bytes(), sizeof(double) * (N - 3) * c.vocab_size);
    EXPECT_EQ(Activations<double>::bytes_for(c, batch.B, batch.T, {}, 3), chunked.activations().bytes());
    whole.forward(batch.tokens.data(), nullptr, batch.B, batch.T);
    chunked.forward(batch.tokens.data(), nullptr, batch.B, batch.T);
    EXPECT_EQ(chunked.activations().logit_rows, N);
    for (size_t i = 0; i < (size_t)N * c.vocab_size; i++) ASSERT_EQ(whole.logits()[i], chunked.logits()[i]) << i;
}
