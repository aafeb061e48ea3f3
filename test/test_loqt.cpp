// adapters/loqt.h and ./train --method loqt|loqt-nq: the merge schedule (methods.md's 0, 100, 201, 302, ... and
// its count in 10k steps); a merge leaves the outputs unchanged (loqt-nq: to fp32 rounding; loqt: up to the NF4
// error, measured); error compensation never reconstructs worse than none; the projections are orthonormal;
// only the trained factor (and the unwrapped tensors) get gradients and move; resume is bit-identical across
// merges; a short run learns; a checkpoint's LoQT section is checked on load.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>

#include "../adapters/loqt.h"
#include "../adapters/svd.h"
#include "../kernels/adamw.h"
#include "../layers/model.h"
#include "../tools/checkpoint.h"
#include "../tools/train_method.h"
#include "../tools/trainer.h"
#include "train_test_util.h"

using namespace llmq;
using namespace llmq_test;

namespace {

ModelConfig small_config() {  // q,o (64,64); k,v (32,64) and down (64,128): out < in; gate, up (128,64)
    ModelConfig c = small_model_config(64);
    c.init_std = ModelConfig().init_std;
    return c;
}

LoqtOptions options(bool quantize_base, int ec_iters = 5) {
    LoqtOptions o;
    o.rank = 4;
    o.alpha = 0.5f;
    o.quantize_base = quantize_base;
    o.ec_iters = ec_iters;
    o.tau = 2;
    o.total_steps = 100;
    return o;
}

// One merge step as the trainer runs it: begin, forward + backward on a random batch, finish.
LoqtMergeReport merge_step(Model& m, LoqtAdapters& q, uint64_t seed) {
    Rng rng(seed);
    const int B = 2, T = 8, V = m.config().vocab_size;
    std::vector<int> tok(B * T), tgt(B * T);
    for (int i = 0; i < B * T; i++) tok[i] = (int)rng.below(V), tgt[i] = (int)rng.below(V);
    m.zero_grad();
    q.zero_grad();
    q.begin_merge();
    m.forward(tok.data(), tgt.data(), B, T);
    m.backward();
    return q.finish_merge();
}

void randomize_factors(LoqtAdapters& q, uint64_t seed, float scale) {
    Rng rng(seed);
    for (size_t i = 0; i < q.num_params(); i++) q.params()[i] = scale * rng.normal();
    for (size_t i = 0; i < q.num_frozen(); i++) q.frozen_params()[i] = scale * rng.normal();
}

std::vector<float> logits_of(Model& m) { return logits_on_random_tokens(m, 12, 5); }

float max_abs(const std::vector<float>& a) {
    float x = 0;
    for (float v : a) x = std::max(x, std::fabs(v));
    return x;
}

TrainOptions loqt_run(const std::string& data, const std::string& method) {
    TrainOptions o = adapter_test_run(data, temp_dir("loqt_out"));
    o.method = method;
    o.alpha = 0.5f;
    o.loqt_tau = 10;
    o.seed = 21;
    return o;
}

}  // namespace

TEST(Loqt, ScheduleIsTheReferencesAndItsCountIn10kSteps) {
    const std::vector<int> s = loqt_merge_schedule(100, 1.2f, 10000);
    ASSERT_GE(s.size(), 8u);
    const std::vector<int> head(s.begin(), s.begin() + 8);
    EXPECT_EQ(head, (std::vector<int>{0, 100, 201, 302, 403, 505, 607, 709}));
    EXPECT_EQ(s.size(), 40u) << "methods.md: 40 merges in 10k steps";
    EXPECT_EQ(s.back(), 9999);
    // the step loop also skips merges within the last tau steps (9999 + 100 >= 10000): 39 happen
    LoqtOptions o;
    o.total_steps = 10000;
    int count = 0;
    for (int step = 0; step < 10000; step++) count += loqt_merges_at(o, step);
    EXPECT_EQ(count, 39);
    o.tau = 2, o.total_steps = 8;  // the resume test's schedule: 0, 2, 5 (8 is past the end)
    std::vector<int> at;
    for (int step = 0; step < 8; step++)
        if (loqt_merges_at(o, step)) at.push_back(step);
    EXPECT_EQ(at, (std::vector<int>{0, 2, 5}));
}

TEST(Loqt, MergeKeepsTheOutputsExactlyOnAnFp32Base) {
    Model m(small_config(), 3);
    LoqtAdapters q(m, options(false));
    randomize_factors(q, 4, 0.2f);  // trained-looking factors
    const std::vector<float> before = logits_of(m);
    q.begin_merge();
    EXPECT_LT(max_abs_diff(logits_of(m), before), 2e-5f * max_abs(before));  // W += s B A, factors zeroed
    q.finish_merge();
    q.zero_grad();
    LoqtMergeReport r = merge_step(m, q, 9);  // and a whole merge step: T = 0, so the outputs stay
    EXPECT_EQ(r.layers, 14);
    randomize_factors(q, 5, 0.2f);
    const std::vector<float> again = logits_of(m);
    merge_step(m, q, 10);
    EXPECT_LT(max_abs_diff(logits_of(m), again), 2e-5f * max_abs(again));
}

TEST(Loqt, MergeOnNf4ChangesTheOutputsOnlyByTheMeasuredQuantizationError) {
    for (int iters : {0, 5}) {
        Model m(small_config(), 3), ref(small_config(), 3);
        LoqtAdapters q(m, options(true, iters));
        merge_step(m, q, 8);  // step 0: P from a gradient
        randomize_factors(q, 4, 0.05f);
        // trained factors only (P stays the orthonormal projection)
        Rng rng(6);
        for (size_t i = 0; i < q.num_params(); i++) q.params()[i] = 0.3f * rng.normal();
        const std::vector<float> before = logits_of(m);
        // the reference: the same model with the exact merged weights deq(W) + s B A in fp32
        LoqtAdapters exact(ref, options(false));
        std::memcpy(ref.params(), m.params(), 4 * m.num_params());  // the slots hold deq(W)
        std::memcpy(exact.params(), q.params(), 4 * q.num_params());
        std::memcpy(exact.frozen_params(), q.frozen_params(), 4 * q.num_frozen());
        EXPECT_LT(max_abs_diff(logits_of(ref), before), 1e-4f * max_abs(before));
        const LoqtMergeReport r = merge_step(m, q, 9);
        const float d = max_abs_diff(logits_of(m), before);
        printf("[ loqt ] NF4 merge, %d EC iterations: weight error %.3f%% of ||W|| (%.3f%% without EC), max logit "
               "change %.4g of max |logit| %.4g\n", iters, 100 * r.rel_error, 100 * r.rel_error_plain, d, max_abs(before));
        EXPECT_LE(r.rel_error, r.rel_error_plain + 1e-12);
        EXPECT_LT(r.rel_error_plain, 0.12) << "NF4 block 64 on Gaussian weights: ~10% relative error at most";
        EXPECT_GT(r.rel_error_plain, 0.01);
        if (iters == 0) {
            EXPECT_EQ(r.rel_error, r.rel_error_plain);
        }
        EXPECT_LT(d, 0.15f * max_abs(before)) << "the merge moved the outputs by more than the quantization error";
    }
}

TEST(Loqt, ErrorCompensationNeverReconstructsWorseThanNone) {
    const int out = 64, in = 128, r = 8;
    Rng rng(11);
    std::vector<float> W((size_t)out * in);
    for (float& x : W) x = 0.02f * rng.normal();
    // P: the top-r right singular vectors of a random "gradient" (A frozen, P (r,in)); and left ones (B frozen)
    std::vector<double> g((size_t)out * in);
    for (double& x : g) x = rng.normal();
    const Svd sv = svd_thin(g.data(), out, in, "test");
    std::vector<float> PA((size_t)r * in), PB((size_t)out * r);
    for (size_t i = 0; i < PA.size(); i++) PA[i] = (float)sv.Vt[i];
    for (int o = 0; o < out; o++)
        for (int j = 0; j < r; j++) PB[(size_t)o * r + j] = (float)sv.U[(size_t)o * sv.k + j];
    QuantSpec spec;
    std::vector<float> PAq(PA.size());
    dequantize_cpu(quantize_cpu(PA.data(), r, in, spec), PAq.data());  // --loqt-quant-p's P_hat
    for (const auto& [P, p_is_A] : {std::pair<const float*, bool>{PA.data(), true}, {PB.data(), false}, {PAq.data(), true}}) {
        const LoqtCompensation none = loqt_compensate(W.data(), out, in, P, r, p_is_A, 0.5f, spec, 0);
        const LoqtCompensation one = loqt_compensate(W.data(), out, in, P, r, p_is_A, 0.5f, spec, 1);
        const LoqtCompensation five = loqt_compensate(W.data(), out, in, P, r, p_is_A, 0.5f, spec, 5);
        EXPECT_EQ(none.error, none.error_plain);
        for (float t : none.trained) EXPECT_EQ(t, 0.0f);
        EXPECT_LT(one.error, none.error);  // the residual projected out of P's span
        EXPECT_LE(five.error, one.error);
        // the reported error is ||W - (deq Q + s T P)||_F, recomputed here by hand
        std::vector<float> deq(W.size());
        five.q->dequantize(deq.data());
        double e2 = 0;
        for (int o = 0; o < out; o++)
            for (int i = 0; i < in; i++) {
                double c = 0;
                for (int j = 0; j < r; j++)
                    c += p_is_A ? (double)five.trained[(size_t)o * r + j] * P[(size_t)j * in + i]
                                : (double)P[(size_t)o * r + j] * five.trained[(size_t)j * in + i];
                const double d = W[(size_t)o * in + i] - deq[(size_t)o * in + i] - 0.5 * c;
                e2 += d * d;
            }
        EXPECT_NEAR(std::sqrt(e2), five.error, 1e-4 * five.error);
        printf("[ loqt ] EC on a (64,128) weight, P %s: ||W - (deq Q + s T P)|| = %.5f (0 it), %.5f (1), %.5f (5)\n",
               p_is_A ? (P == PAq.data() ? "A, NF4" : "A") : "B", none.error, one.error, five.error);
    }
}

TEST(Loqt, ProjectionsAreOrthonormalAndOnlyTheTrainedFactorsLearn) {
    Model m(small_config(), 3);
    LoqtAdapters q(m, options(true));
    merge_step(m, q, 8);
    EXPECT_EQ(q.count_p_is_A(), 8);  // q, o, gate, up per layer; k, v, down have out < in: B frozen
    for (const ParamTensor& t : q.frozen_tensors()) {
        const bool is_A = t.name.find("lora_A") != std::string::npos;
        const int r = is_A ? t.shape[0] : t.shape[1], d = is_A ? t.shape[1] : t.shape[0];
        const float* P = q.frozen_params() + t.offset;
        for (int a = 0; a < r; a++)
            for (int b = 0; b < r; b++) {
                double dot = 0;
                for (int i = 0; i < d; i++)
                    dot += is_A ? (double)P[a * d + i] * P[b * d + i] : (double)P[i * r + a] * P[i * r + b];
                EXPECT_NEAR(dot, a == b ? 1.0 : 0.0, 1e-5) << t.name << " " << a << "," << b;
            }
    }
    for (const ParamTensor& t : q.tensors())  // the trained factor's name says which side it is
        EXPECT_EQ(t.name.find(t.shape[1] == 4 ? "lora_B" : "lora_A") != std::string::npos, true) << t.name;
    // a normal step: gradients reach the trained factors and the unwrapped tensors only
    Rng rng(3);
    std::vector<int> tok(16), tgt(16);
    for (int i = 0; i < 16; i++) tok[i] = (int)rng.below(48), tgt[i] = (int)rng.below(48);
    m.zero_grad();
    q.zero_grad();
    m.forward(tok.data(), tgt.data(), 2, 8);
    m.backward();
    for (const ParamTensor& t : q.tensors())
        EXPECT_GT(sum_squares_cpu(q.grads() + t.offset, t.size), 0.0) << t.name;
    for (const ParamTensor& t : m.tensors()) {
        bool trained = false;
        for (const ParamTensor& u : q.model_trained_tensors()) trained = trained || u.name == t.name;
        if (!trained) {
            EXPECT_EQ(sum_squares_cpu(m.grads() + t.offset, t.size), 0.0) << t.name;
        }
    }
    const std::vector<float> frozen(q.frozen_params(), q.frozen_params() + q.num_frozen());
    const std::vector<float> params(m.params(), m.params() + m.num_params());
    const std::vector<float> factors(q.params(), q.params() + q.num_params());
    OptimizerConfig oc;
    oc.lr = 1e-2f, oc.grad_clip = 0;
    AdamW fa(oc, q.tensors());
    std::unique_ptr<AdamW> ma = loqt_model_optimizer(q, oc);
    loqt_optimizer_step(q, m, fa, *ma, 1.0f, 0);
    EXPECT_EQ(frozen, std::vector<float>(q.frozen_params(), q.frozen_params() + q.num_frozen()));
    EXPECT_NE(factors, std::vector<float>(q.params(), q.params() + q.num_params()));
    for (const ParamTensor& t : m.tensors()) {
        bool trained = false;
        for (const ParamTensor& u : q.model_trained_tensors()) trained = trained || u.name == t.name;
        const bool same = std::equal(params.begin() + t.offset, params.begin() + t.offset + t.size, m.params() + t.offset);
        EXPECT_EQ(same, !trained) << t.name;
    }
}

TEST(Loqt, TrainLearnsAndMergesOnSchedule) {
    const std::string data = markov_corpus("loqt_data", 41, 6000, 1200, 64);
    for (const char* method : {"loqt", "loqt-nq"}) {
        TrainOptions o = loqt_run(data, method);
        TrainResult r;
        const std::string text = train_and_read_log(o, &r);
        const size_t merges = count_occurrences(text, "loqt merged");
        EXPECT_EQ(merges, 3u) << method;  // 0-based 0, 10, 21 (32 + 10 >= 40)
        EXPECT_NE(text.find("step 22: loqt merged"), std::string::npos) << text;
        EXPECT_NE(text.find("trains B (out,r) of 8 Linears"), std::string::npos) << text;
        ASSERT_EQ(r.losses.size(), 40u);
        double first = 0, last = 0;
        for (int i = 0; i < 5; i++) first += r.losses[i] / 5, last += r.losses[35 + i] / 5;
        EXPECT_LT(last, first - 0.3) << method << ": " << ::testing::PrintToString(r.losses);
    }
}

TEST(Loqt, ResumeIsBitIdenticalAcrossMerges) {
    const std::string data = markov_corpus("loqt_resume", 17, 3000, 600, 64);
    for (int variant = 0; variant < 3; variant++) {
        TrainOptions o = loqt_run(data, variant == 1 ? "loqt-nq" : "loqt");
        o.steps = 8, o.batch = 2, o.seq = 16, o.warmup = 2;
        o.loqt_tau = 2;  // merges at 0, 2, 5: before and after the resume at 4
        o.ckpt_keep_every = 4, o.eval_every = 0, o.val_batches = 2;
        if (variant == 2) o.optimizer = "adamw8bit", o.loqt_quant_p = 1, o.grad_accum = 2;
        SCOPED_TRACE("variant " + std::to_string(variant));
        expect_resume_bit_identical(o);
        CheckpointInfo info = read_checkpoint_info(o.out + "/ckpt_step_000008.ckpt");
        ASSERT_TRUE(info.section("loqt"));
        EXPECT_GT(info.section("loqt")->bytes.size(), 0u);
    }
}

TEST(Loqt, CheckpointSectionMismatchesAreErrors) {
    const std::string data = markov_corpus("loqt_ckpt", 5, 3000, 600, 64);
    TrainOptions o = loqt_run(data, "loqt");
    o.steps = 3, o.batch = 2, o.seq = 16, o.loqt_tau = 2;
    FILE* quiet = fopen("/dev/null", "w");
    train(o, quiet);
    const std::string path = o.out + "/latest.ckpt";
    CheckpointInfo info = read_checkpoint_info(path);
    Model m(info.config, 0);
    LoqtAdapters q(m, options(true));
    AdapterSection sec{q.params(), q.num_params(), nullptr};
    const CheckpointInfo loaded = load_checkpoint(path, m, nullptr, &sec);
    ASSERT_TRUE(loaded.section("loqt"));
    const StateSection ok = *loaded.section("loqt");
    q.deserialize(ok.bytes, path.c_str());
    std::vector<uint8_t> wrong = ok.bytes;
    wrong[0]++;  // the version comes first
    expect_error([&] { q.deserialize(wrong, path.c_str()); }, {"version 2", "version 1"});
    Model m2(info.config, 0);
    LoqtAdapters nq(m2, options(false));  // an fp32-base run cannot take an NF4 section
    expect_error([&] { nq.deserialize(ok.bytes, path.c_str()); }, {"NF4 base", "--method"});
    std::vector<uint8_t> cut(ok.bytes.begin(), ok.bytes.end() - 3);
    expect_error([&] { q.deserialize(cut, path.c_str()); }, {"truncated"});
    // resuming a loqt checkpoint as another method fails with a message naming the flag
    TrainOptions bad = o;
    bad.method = "lora", bad.steps = 6, bad.resume = path, bad.out = temp_dir("loqt_bad");
    expect_error([&] { train(bad, quiet); }, {"--method loqt", "--method lora"});
    // sampling and export rebuild the LoQT parts: the same logits as the LoQT model just loaded
    Model inference(info.config, 0);
    std::unique_ptr<TrainMethod> parts = load_checkpoint_for_inference(path, info, inference);
    ASSERT_TRUE(parts->has_adapters());
    std::vector<int> tokens(16);
    for (size_t i = 0; i < tokens.size(); i++) tokens[i] = (int)(i * 7 + 3) % info.config.vocab_size;
    inference.forward(tokens.data(), nullptr, 1, 16);
    std::vector<float> got(inference.logits(), inference.logits() + 16 * info.config.vocab_size);
    m.forward(tokens.data(), nullptr, 1, 16);
    for (size_t i = 0; i < got.size(); i++) ASSERT_EQ(got[i], m.logits()[i]) << i;
    fclose(quiet);
}
