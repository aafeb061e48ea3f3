// adapters/galore.h and ./train --method galore:
//   - three updates of a left- and a right-projected weight equal projected Adam worked in double by hand,
//     across a projection refresh that keeps the moments (not reset); the other tensors get AdamW exactly;
//   - at full rank (r = min(m,n)), scale 1, GaLore equals AdamW where Adam's per-coordinate normalisation does
//     not see the basis: in its linear regime (eps >> sqrt(v)) for any gradients, and for any eps when the
//     projection is a signed permutation; with an ordinary eps and a rotated basis it does not (the projection
//     is lossless, Adam is not rotation-equivariant), which the last check shows;
//   - the memory formula r (2 max(m,n) + min(m,n)) floats per weight, and what ./train reports;
//   - a resumed run's losses, val loss, weights and GaLore state are bit-identical to an uninterrupted one's,
//     and mismatched resumes and --optimizer adamw8bit are refused with clear messages;
//   - a short training run learns.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>

#include "../adapters/galore.h"
#include "../adapters/lora.h"
#include "../adapters/svd.h"
#include "../kernels/adamw.h"
#include "../tools/train_method.h"
#include "../tools/trainer.h"
#include "train_test_util.h"

using namespace llmq;
using namespace llmq_test;

namespace {

ParamTensor tensor(const std::string& name, std::vector<int> shape, size_t offset) {
    ParamTensor t;
    t.name = name, t.shape = shape, t.offset = offset, t.size = 1;
    for (int d : shape) t.size *= (size_t)d;
    t.decay = shape.size() == 2;
    return t;
}

// q (6,4): m >= n, right projection; k (4,6): m < n, left; a norm (6): AdamW.
std::vector<ParamTensor> small_layout() {
    return {tensor("model.layers.0.self_attn.q_proj.weight", {6, 4}, 0),
            tensor("model.layers.0.self_attn.k_proj.weight", {4, 6}, 24),
            tensor("model.layers.0.input_layernorm.weight", {6}, 48)};
}

OptimizerConfig flat_config() {  // constant lr (no warmup, min ratio 1), no clipping, decay on
    OptimizerConfig c;
    c.lr = 0.01f, c.min_lr_ratio = 1.0f, c.warmup_steps = 0, c.total_steps = 100;
    c.beta1 = 0.9f, c.beta2 = 0.95f, c.eps = 1e-8f, c.weight_decay = 0.1f, c.grad_clip = 0;
    return c;
}

std::vector<float> randn(size_t n, Rng& rng, float scale = 1.0f) {
    std::vector<float> v(n);
    for (float& x : v) x = scale * rng.normal();
    return v;
}

// Projected Adam in double, from the formulas of galore.h (the official code's project / Adam / project_back).
struct RefSlot {
    int m, n, r;
    bool left;
    std::vector<double> P, M, V;  // P (m,r) left or Qt (r,n) right; M, V (r,n) or (m,r)
};

void ref_step(RefSlot& s, double* W, const float* Gf, int t, int every, const OptimizerConfig& c, double scale) {
    const int m = s.m, n = s.n, r = s.r;
    std::vector<double> G(Gf, Gf + (size_t)m * n);
    if (t % every == 0) {
        Svd d = svd_thin(G.data(), m, n, "ref");
        s.P.assign(s.left ? (size_t)m * r : (size_t)r * n, 0.0);
        for (int i = 0; i < (s.left ? m : r); i++)
            for (int j = 0; j < (s.left ? r : n); j++)
                s.P[(size_t)i * (s.left ? r : n) + j] = s.left ? (double)(float)d.U[(size_t)i * d.k + j]
                                                               : (double)(float)d.Vt[(size_t)i * n + j];
    }
    const int rows = s.left ? r : m, cols = s.left ? n : r;
    std::vector<double> R((size_t)rows * cols, 0.0), D((size_t)m * n, 0.0);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            for (int k = 0; k < (s.left ? m : n); k++)
                R[(size_t)i * cols + j] += s.left ? s.P[(size_t)k * r + i] * G[(size_t)k * n + j]   // P^T G
                                                  : G[(size_t)i * n + k] * s.P[(size_t)j * n + k];  // G Qt^T
    const double b1 = c.beta1, b2 = c.beta2, bc1 = 1 - std::pow(b1, t + 1), bc2 = 1 - std::pow(b2, t + 1);
    for (size_t i = 0; i < R.size(); i++) {
        s.M[i] = b1 * s.M[i] + (1 - b1) * R[i];
        s.V[i] = b2 * s.V[i] + (1 - b2) * R[i] * R[i];
        R[i] = (s.M[i] / bc1) / (std::sqrt(s.V[i] / bc2) + c.eps);
    }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            for (int k = 0; k < r; k++)
                D[(size_t)i * n + j] += s.left ? s.P[(size_t)i * r + k] * R[(size_t)k * n + j]   // P N
                                               : R[(size_t)i * r + k] * s.P[(size_t)k * n + j];  // N Qt
    for (size_t i = 0; i < D.size(); i++) W[i] -= c.lr * (scale * D[i] + c.weight_decay * W[i]);
}

// max |a - b| relative to max |b - from| (from null: to max |b|)
double max_rel_diff(const float* a, const double* b, size_t n, const float* from = nullptr) {
    double worst = 0, norm = 0;
    for (size_t i = 0; i < n; i++) norm = std::max(norm, std::fabs(b[i] - (from ? from[i] : 0.0)));
    for (size_t i = 0; i < n; i++) worst = std::max(worst, std::fabs(a[i] - b[i]) / norm);
    return worst;
}

// GaLore and AdamW from the same weights over the same gradients (one projected tensor, full rank, scale 1);
// returns the largest |difference| of the weights relative to the largest weight change.
double full_rank_gap(const OptimizerConfig& c, const std::vector<std::vector<float>>& grads, int m, int n) {
    std::vector<ParamTensor> layout = {tensor("model.layers.0.mlp.down_proj.weight", {m, n}, 0)};
    GaloreOptimizer galore(c, GaloreOptions{std::min(m, n), 1000, 1.0f}, layout);
    AdamW adam(c, layout);
    Rng rng(3);
    std::vector<float> w0 = randn((size_t)m * n, rng, 0.1f), wg = w0, wa = w0;
    for (size_t s = 0; s < grads.size(); s++) {
        galore.step(wg.data(), grads[s].data(), wg.size(), (int)s);
        adam.step(wa.data(), grads[s].data(), wa.size(), layout, (int)s);
    }
    double gap = 0, moved = 0;
    for (size_t i = 0; i < w0.size(); i++) {
        gap = std::max(gap, (double)std::fabs(wg[i] - wa[i]));
        moved = std::max(moved, (double)std::fabs(wa[i] - w0[i]));
    }
    EXPECT_GT(moved, 0.0);
    return gap / moved;
}

TrainOptions galore_run(const std::string& data, const std::string& out) {
    TrainOptions o = adapter_resume_run(data, out);
    o.eval_every = 3;
    o.method = "galore";
    o.galore_every = 3, o.galore_scale = 0.25f;  // refreshes after updates 0, 3, 6: around the resume at 4
    o.seed = 99;
    return o;
}

// The bytes of a checkpoint after its header and before its trailer: weights and optimizer state.
std::string checkpoint_body(const std::string& path) {
    std::string b = read_text(path);
    uint32_t hbytes = 0;
    memcpy(&hbytes, b.data() + 12, 4);
    return b.substr(16 + hbytes, b.size() - 16 - hbytes - 16);
}

}  // namespace

TEST(Galore, UpdatesEqualProjectedAdamByHandAcrossARefresh) {
    const OptimizerConfig c = flat_config();
    const int every = 2;
    const double scale = 0.25;
    std::vector<ParamTensor> layout = small_layout();
    GaloreOptimizer g(c, GaloreOptions{2, every, (float)scale}, layout);
    ASSERT_EQ(g.slots().size(), 3u);
    EXPECT_TRUE(g.slots()[0].projected && !g.slots()[0].left);
    EXPECT_TRUE(g.slots()[1].projected && g.slots()[1].left);
    EXPECT_FALSE(g.slots()[2].projected);
    Rng rng(11);
    std::vector<float> w = randn(54, rng, 0.5f);
    const std::vector<float> w0 = w;  // errors are measured against the weights' change
    std::vector<double> wq(w.begin(), w.begin() + 24), wk(w.begin() + 24, w.begin() + 48);
    std::vector<float> wn(w.begin() + 48, w.end()), mn(6, 0.0f), vn(6, 0.0f);
    RefSlot q{6, 4, 2, false, {}, std::vector<double>(12, 0.0), std::vector<double>(12, 0.0)};
    RefSlot k{4, 6, 2, true, {}, std::vector<double>(12, 0.0), std::vector<double>(12, 0.0)};
    std::vector<std::vector<float>> projections;
    for (int t = 0; t < 3; t++) {  // updates 0 and 2 refresh the projection, 1 keeps it
        std::vector<float> grad = randn(54, rng);
        g.step(w.data(), grad.data(), w.size(), t);
        ref_step(q, wq.data(), grad.data(), t, every, c, scale);
        ref_step(k, wk.data(), grad.data() + 24, t, every, c, scale);
        adamw_update_cpu<float>(wn.data(), grad.data() + 48, mn.data(), vn.data(), 6, c.lr, c.beta1, c.beta2, c.eps,
                                0.0f, t + 1, 1.0f);
        EXPECT_LT(max_rel_diff(w.data(), wq.data(), 24, w0.data()), 1e-4) << "q after update " << t;
        EXPECT_LT(max_rel_diff(w.data() + 24, wk.data(), 24, w0.data() + 24), 1e-4) << "k after update " << t;
        EXPECT_EQ(0, memcmp(w.data() + 48, wn.data(), 6 * sizeof(float))) << "the norm gets AdamW, bit for bit";
        EXPECT_LT(max_rel_diff(g.slots()[1].exp_avg.data(), k.M.data(), 12), 1e-5);
        EXPECT_LT(max_rel_diff(g.slots()[0].exp_avg_sq.data(), q.V.data(), 12), 1e-5);
        projections.push_back(g.slots()[1].proj);
        if (t == 2) {
            // not reset at the refresh: a fresh m would be (1 - beta1) R for this step's R alone
            std::vector<double> fresh(12, 0.0);
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 6; j++)
                    for (int l = 0; l < 4; l++)
                        fresh[i * 6 + j] += (1 - c.beta1) * k.P[l * 2 + i] * grad[24 + l * 6 + j];
            EXPECT_GT(max_rel_diff(g.slots()[1].exp_avg.data(), fresh.data(), 12), 0.05);
        }
    }
    EXPECT_EQ(projections[0], projections[1]) << "no refresh at update 1";
    EXPECT_NE(projections[1], projections[2]) << "refreshed at update 2";
    // P (4,2) has orthonormal columns
    const std::vector<float>& P = g.slots()[1].proj;
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) {
            double dot = 0;
            for (int i = 0; i < 4; i++) dot += (double)P[i * 2 + a] * P[i * 2 + b];
            EXPECT_NEAR(dot, a == b ? 1.0 : 0.0, 1e-6);
        }
    EXPECT_EQ(g.steps_taken(), 3);
}

TEST(Galore, FullRankScaleOneEqualsAdamWWhereAdamIgnoresTheBasis) {
    const int m = 6, n = 4;
    Rng rng(21);
    std::vector<std::vector<float>> random_grads;
    for (int s = 0; s < 4; s++) random_grads.push_back(randn((size_t)m * n, rng));
    // (a) eps >> sqrt(v): Adam is m / eps, linear, so a lossless rotation commutes with it (lr scaled to match)
    OptimizerConfig linear = flat_config();
    linear.eps = 1e6f, linear.lr = 1e4f;
    EXPECT_LT(full_rank_gap(linear, random_grads, m, n), 1e-5);
    EXPECT_LT(full_rank_gap(linear, random_grads, n, m), 1e-5);  // the left projection
    // (b) any eps, the first gradient's columns (rows) orthogonal: its singular vectors are a signed permutation
    // of the axes, which Adam's per-coordinate math commutes with, whatever the later gradients
    for (bool left : {false, true}) {
        const int rows = left ? n : m, cols = left ? m : n;
        std::vector<float> first((size_t)rows * cols, 0.0f);
        const int perm[4] = {2, 0, 3, 1};
        for (int i = 0; i < 4; i++) {
            const float value = (i % 2 ? -1.0f : 1.0f) * (4.0f - i);  // distinct singular values 4, 3, 2, 1
            if (left) first[(size_t)i * cols + perm[i]] = value;      // rows (4) orthogonal
            else first[(size_t)perm[i] * cols + i] = value;           // columns (4) orthogonal
        }
        std::vector<std::vector<float>> grads = {first};
        for (int s = 0; s < 3; s++) grads.push_back(randn((size_t)rows * cols, rng));
        EXPECT_LT(full_rank_gap(flat_config(), grads, rows, cols), 1e-5) << (left ? "left" : "right");
    }
    // (c) an ordinary eps and a rotated basis: the projection is still lossless, but Adam normalises each
    // coordinate of R = G Q, not of G, so the updates differ (the invariant needs (a) or (b))
    EXPECT_GT(full_rank_gap(flat_config(), random_grads, m, n), 0.05);
}

TEST(Galore, MemoryIsProjectionsPlusProjectedMoments) {
    ModelConfig c;
    c.vocab_size = 48, c.dim = 64, c.ffn_dim = 128, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2;
    c.max_seq_len = 16;
    Model model(c, 1);
    const int r = 8;
    GaloreOptimizer g(flat_config(), GaloreOptions{r, 200, 0.25f}, model.tensors());
    // per layer: q, o (64,64) right; k, v (32,64) left; gate, up (128,64) right; down (64,128) left:
    // r (2 max + min) floats each
    const size_t per_layer = r * ((2 * 64 + 64) * 2 + (2 * 64 + 32) * 2 + (2 * 128 + 64) * 3);
    const size_t linear_params = 2 * (64 * 64 * 2 + 32 * 64 * 2 + 128 * 64 * 3);
    const size_t want = 4 * (2 * per_layer) + 8 * (model.num_params() - linear_params);
    EXPECT_EQ(g.state_bytes(), want);
    EXPECT_EQ(GaloreOptimizer::state_bytes_for(model.tensors(), r), want);
    EXPECT_LT(g.state_bytes(), AdamW(flat_config(), model.tensors()).state_bytes());
    size_t projected = 0;
    for (const GaloreSlot& s : g.slots()) projected += s.projected;
    EXPECT_EQ(projected, 14u) << "the seven linears of both layers; embeddings and norms are not projected";
    // a rank above min(m,n) is capped there: the k projection (32,64) keeps r = 32
    GaloreOptimizer big(flat_config(), GaloreOptions{100, 200, 0.25f}, model.tensors());
    for (const GaloreSlot& s : big.slots())
        if (s.projected) {
            EXPECT_EQ(s.r, std::min(s.m, s.n)) << s.tensor.name;
        }
    EXPECT_EQ(big.state_bytes(), GaloreOptimizer::state_bytes_for(model.tensors(), 100));
}

TEST(Galore, ResumeIsBitIdenticalAndMismatchesAreRefused) {
    const std::string data = markov_corpus("galore_resume", 7, 900, 200, 64);
    const std::string root = temp_dir("galore_resume_out");
    TrainOptions o = galore_run(data, root + "/a");
    const TrainOptions resumed = expect_resume_bit_identical(o);
    FILE* quiet = fopen("/dev/null", "w");
    CheckpointInfo info = read_checkpoint_info(o.out + "/ckpt_step_000008.ckpt");
    const StateSection* galore_state = info.section("galore");
    ASSERT_TRUE(galore_state);
    EXPECT_FALSE(info.has_optimizer) << "GaLore's moments are its state section, not AdamW's arrays";
    const std::vector<ParamTensor> layout = Model(info.config, 0).tensors();
    const size_t blob = GaloreOptimizer(flat_config(), GaloreOptions{4, 3, 0.25f}, layout).serialize().size();
    EXPECT_EQ(galore_state->bytes.size(), blob);
    EXPECT_LT(blob - GaloreOptimizer::state_bytes_for(layout, 4), 4096u) << "the state plus names and shapes";
    EXPECT_TRUE(checkpoint_body(o.out + "/ckpt_step_000008.ckpt") ==
                checkpoint_body(resumed.out + "/ckpt_step_000008.ckpt"))
        << "weights, projections and moments differ after the resume";
    // sampling and export (load_checkpoint_for_inference) read the weights and skip the GaLore state
    Model inference(info.config, 0);
    EXPECT_FALSE(load_checkpoint_for_inference(o.out + "/ckpt_step_000008.ckpt", info, inference)->has_adapters());
    EXPECT_EQ(0, memcmp(inference.params(), checkpoint_body(o.out + "/ckpt_step_000008.ckpt").data(),
                        inference.num_params() * sizeof(float)));

    TrainOptions other_rank = resumed;
    other_rank.rank = 2, other_rank.out = root + "/c";
    expect_error([&] { train(other_rank, quiet); }, {"ckpt_step_000004.ckpt", "rank 4", "--rank 2"});
    TrainOptions as_full = resumed;
    as_full.method = "full", as_full.out = root + "/d";
    expect_error([&] { train(as_full, quiet); }, {"--method galore", "--method full"});
    TrainOptions from_full = o;  // a full run's checkpoint resumed with galore
    from_full.method = "full", from_full.out = root + "/e", from_full.steps = 4;
    train(from_full, quiet);
    TrainOptions into_galore = o;
    into_galore.resume = from_full.out, into_galore.out = root + "/f";
    expect_error([&] { train(into_galore, quiet); }, {"--method full", "--method galore"});
    TrainOptions eight = o;
    eight.optimizer = "adamw8bit", eight.out = root + "/g";
    expect_error([&] { train(eight, quiet); }, {"--method galore", "8-bit", "--optimizer adamw"});
    fclose(quiet);
}

TEST(Galore, TrainingLearnsAndReportsTheProjectedState) {
    const std::string data = markov_corpus("galore_data", 41, 6000, 1200, 64);
    TrainOptions o = galore_run(data, temp_dir("galore_out"));
    o.steps = 40, o.batch = 4, o.seq = 32, o.warmup = 4;
    o.eval_every = 0, o.val_batches = 4, o.ckpt_keep_every = 0;
    o.galore_every = 10;
    TrainResult r;
    const std::string text = train_and_read_log(o, &r);
    ASSERT_EQ(r.losses.size(), 40u);
    double first = 0, last = 0;
    for (int i = 0; i < 5; i++) first += r.losses[i] / 5, last += r.losses[35 + i] / 5;
    EXPECT_LT(last, first - 0.25) << ::testing::PrintToString(r.losses);
    EXPECT_LT(r.val_loss, r.unigram_entropy) << "beats the unigram model";
    EXPECT_NE(text.find("method galore: rank 4, projection refreshed every 10 steps, scale 0.25, on 14 weights"),
              std::string::npos) << text;
    // the reported optimizer state is the formula's
    ModelConfig cfg = read_checkpoint_info(o.out + "/latest.ckpt").config;
    const size_t want = GaloreOptimizer::state_bytes_for(Model(cfg, 0).tensors(), 4);
    const std::string metrics = read_text(o.out + "/metrics.jsonl");
    const size_t at = metrics.find("\"mem_optimizer\":");
    ASSERT_NE(at, std::string::npos);
    EXPECT_EQ(std::stod(metrics.substr(at + 16)), (double)want);
}
