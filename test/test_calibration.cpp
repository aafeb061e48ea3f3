// Tests of quant/calibration.h: the calibration set drawn from shards (exact token count, vocabulary check), the
// per-module statistics S = X^T X equal to the sums formed by hand from each Linear's actual input (recorded by a
// RowSampler hook, itself checked against RMSNorm(embedding) computed by hand for layer 0), the sharing of inputs
// (q/k/v, gate/up), tr(D S D^T) against ||X D^T||^2 formed directly, GPTQ's output error at most round-to-nearest's
// on real model layers, and bad input.
#include <gtest/gtest.h>

#include <cmath>

#include "../layers/model_core.h"
#include "../quant/calibration.h"
#include "../quant/gptq.h"
#include "../tools/hf_peft.h"
#include "train_test_util.h"

using namespace llmq;
using namespace llmq_test;

namespace {

ModelConfig calib_config() {
    ModelConfig c;
    c.vocab_size = 32;
    c.dim = 32;
    c.ffn_dim = 64;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.max_seq_len = 16;
    c.tied_embeddings = false;
    return c;
}

// Keeps every row a Linear's forward saw (all rows chosen, weight 1: the layer's output is unchanged).
struct InputRecorder : RowSampler<float> {
    std::vector<float> x;  // (rows, C) appended forward after forward
    int C = 0;
    void select(const float* inp, int N, int C_, std::vector<int>& rows, std::vector<float>& weights) override {
        C = C_;
        x.insert(x.end(), inp, inp + (size_t)N * C_);
        rows.resize(N);
        weights.assign(N, 1.0f);
        for (int i = 0; i < N; i++) rows[i] = i;
    }
};

struct Calibration : ::testing::Test {
    std::string data;
    void SetUp() override { data = markov_corpus("calib", 5, 2000, 200, 32); }
};

}  // namespace

TEST_F(Calibration, SetHasExactlyTheTokensAskedFor) {
    CalibrationSet set = load_calibration_set(data, "train", 40, 16, 3, 32);
    EXPECT_EQ(set.tokens, 40);
    ASSERT_EQ(set.sequences.size(), 3u);
    EXPECT_EQ(set.sequences[0].size(), 16u);
    EXPECT_EQ(set.sequences[2].size(), 8u);
    // the same seed draws the same windows; another seed others
    EXPECT_EQ(load_calibration_set(data, "train", 40, 16, 3, 32).sequences, set.sequences);
    EXPECT_NE(load_calibration_set(data, "train", 40, 16, 4, 32).sequences, set.sequences);
}

TEST_F(Calibration, HessiansAreXtXOfEachLinearsInput) {
    Model model(calib_config(), 7);
    std::map<std::string, std::shared_ptr<InputRecorder>> rec;
    for (auto& [name, linear] : named_linears(model)) {
        rec[name] = std::make_shared<InputRecorder>();
        linear->sampler = rec[name];
    }
    CalibrationSet set = load_calibration_set(data, "train", 40, 16, 3, 32);
    CalibrationHessians h = calibrate_hessians(model, set);
    EXPECT_EQ(h.tokens, 40);
    EXPECT_FALSE(h.has("lm_head"));  // not asked for by default
    EXPECT_EQ(h.input_of.size(), 14u);
    EXPECT_EQ(h.inputs.size(), 8u);  // norm1, att, norm2, hidden per layer
    for (int l = 0; l < 2; l++) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        EXPECT_EQ(h.input_of.at(p + "self_attn.q_proj"), h.input_of.at(p + "self_attn.v_proj"));
        EXPECT_EQ(h.input_of.at(p + "self_attn.k_proj"), h.input_of.at(p + "self_attn.v_proj"));
        EXPECT_EQ(h.input_of.at(p + "mlp.gate_proj"), h.input_of.at(p + "mlp.up_proj"));
        EXPECT_NE(h.input_of.at(p + "self_attn.o_proj"), h.input_of.at(p + "self_attn.q_proj"));
        EXPECT_NE(h.input_of.at(p + "mlp.down_proj"), h.input_of.at(p + "mlp.up_proj"));
    }

    // layer 0's q_proj input by hand: RMSNorm of the embedding row of the first token, times the norm weight
    {
        const ModelConfig& c = model.config();
        const float* emb = model.params() + model.tensor("model.embed_tokens.weight").offset;
        const float* g = model.params() + model.tensor("model.layers.0.input_layernorm.weight").offset;
        const float* x = emb + (size_t)set.sequences[0][0] * c.dim;
        double ms = 0;
        for (int i = 0; i < c.dim; i++) ms += (double)x[i] * x[i];
        const double rstd = 1.0 / std::sqrt(ms / c.dim + c.norm_eps);
        const std::vector<float>& seen = rec.at("model.layers.0.self_attn.q_proj")->x;
        for (int i = 0; i < c.dim; i++) EXPECT_NEAR(seen[i], x[i] * rstd * g[i], 1e-5) << i;
    }
    // every module's S is X^T X of the rows its Linear saw, summed in the same order: bit-identical (the products of
    // two floats are exact in double)
    for (auto& [name, r] : rec) {
        if (name == "lm_head") continue;
        const HessianAccumulator& acc = h.at(name);
        const int64_t C = r->C, n = (int64_t)r->x.size() / C;
        ASSERT_EQ(acc.dim, C) << name;
        ASSERT_EQ(acc.samples, 40) << name;
        ASSERT_EQ(n, 40) << name;
        for (int64_t a = 0; a < C; a++)
            for (int64_t b = 0; b <= a; b++) {
                double s = 0;
                for (int64_t i = 0; i < n; i++) s += (double)r->x[i * C + a] * r->x[i * C + b];
                ASSERT_EQ(acc.sum[a * C + b], s) << name << " (" << a << ", " << b << ")";
            }
    }
    // lm_head only when named
    CalibrationHessians head = calibrate_hessians(model, set, {"lm_head"});
    EXPECT_EQ(head.at("lm_head").dim, 32);
}

TEST_F(Calibration, CalibratedNormIsTheOutputErrorOfTheRows) {
    Rng rng(2);
    const int64_t n = 50, in = 24, out = 5;
    std::vector<float> x(n * in), a(out * in), b(out * in);
    for (float& v : x) v = rng.normal();
    for (float& v : a) v = rng.normal();
    for (float& v : b) v = rng.normal();
    HessianAccumulator acc(in);
    acc.add(x.data(), n);
    double direct = 0, plain = 0;
    for (int64_t s = 0; s < n; s++)
        for (int64_t r = 0; r < out; r++) {
            double y = 0, z = 0;
            for (int64_t c = 0; c < in; c++) {
                y += (double)x[s * in + c] * ((double)a[r * in + c] - b[r * in + c]);
                z += (double)x[s * in + c] * a[r * in + c];
            }
            direct += y * y, plain += z * z;
        }
    EXPECT_NEAR(calibrated_sq_norm(acc, a.data(), b.data(), out, in), direct, 1e-9 * direct);
    EXPECT_NEAR(calibrated_sq_norm(acc, a.data(), nullptr, out, in), plain, 1e-9 * plain);
    expect_error([&] { calibrated_sq_norm(acc, a.data(), nullptr, in, out); }, {"width 24", "5 columns"});
}

TEST_F(Calibration, GptqOutputErrorIsAtMostRoundToNearestsOnModelLayers) {
    ModelConfig c = calib_config();
    c.dim = 64, c.ffn_dim = 128, c.n_layers = 1, c.max_seq_len = 32;
    Model model(c, 11);
    CalibrationSet set = load_calibration_set(data, "train", 512, 32, 1, 32);
    CalibrationHessians h = calibrate_hessians(model, set);
    for (QuantSpec spec : {QuantSpec{QuantFormat::INT4, 32, true}, QuantSpec{QuantFormat::INT3, 32, false},
                           QuantSpec{QuantFormat::NF4, 64, true}}) {
        for (auto& [name, linear] : named_linears(model)) {
            if (!h.has(name)) continue;
            const HessianAccumulator& acc = h.at(name);
            const int64_t out = linear->out, in = linear->in;
            std::vector<float> rtn(out * in), gptq(out * in);
            dequantize_cpu(quantize_cpu(linear->weight, out, in, spec), rtn.data());
            dequantize_cpu(gptq_quantize_cpu(linear->weight, out, in, acc.hessian(), spec), gptq.data());
            const double e_rtn = calibrated_sq_norm(acc, linear->weight, rtn.data(), out, in);
            const double e_gptq = calibrated_sq_norm(acc, linear->weight, gptq.data(), out, in);
            EXPECT_LE(e_gptq, e_rtn) << format_name(spec.format) << " " << name;
            EXPECT_GT(e_gptq, 0) << name;
        }
    }
}

TEST_F(Calibration, BadInputNamesTheProblem) {
    Model model(calib_config(), 7);
    CalibrationSet set = load_calibration_set(data, "train", 16, 16, 3, 32);
    expect_error([&] { calibrate_hessians(model, set, {"model.layers.0.self_attn.x_proj"}); },
                 {"unknown module", "x_proj"});
    expect_error([&] { calibrate_hessians(model, CalibrationSet{}); }, {"empty"});
    expect_error([&] { CalibrationHessians().at("q_proj"); }, {"q_proj", "not calibrated"});
    // the train split has 2000 tokens: 124 windows of 16
    expect_error([&] { load_calibration_set(data, "train", 16 * 200, 16, 3, 32); }, {data, "3200 calibration tokens",
                                                                                    "200 windows"});
    expect_error([&] { load_calibration_set(data, "train", 0, 16, 3, 32); }, {"positive"});
    expect_error([&] { load_calibration_set(data + "/missing", "train", 16, 16, 3, 32); }, {"no such shard directory"});
    expect_error([&] { load_calibration_set(data, "train", 64, 16, 3, 8); }, {"past the vocabulary"});
}
