// ./train --optimizer adamw8bit: the 8-bit run learns as well as fp32 AdamW (final val loss within 1%), its
// state takes the bytes of the formula (2 codes + 2 fp32 absmax per block of 256 for tensors >= 4096
// elements, fp32 m and v below), which the log and metrics.jsonl report per component, and a checkpoint's
// optimizer kind must match the run that resumes it. (Bit-identical resume: test_resume.cpp.)
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "../quant/adam8bit.h"
#include "../tools/json.h"
#include "../tools/trainer.h"
#include "train_test_util.h"

using namespace llmq;
using namespace llmq_test;

namespace {

std::string make_corpus() { return markov_corpus("a8_data", 29, 6000, 1200, 64); }

TrainOptions run_with(const std::string& data, const std::string& optimizer) {
    TrainOptions o;
    o.model = "tiny";
    o.dim = 64, o.ffn_dim = 128, o.n_layers = 2, o.n_heads = 4, o.n_kv_heads = 2, o.max_seq_len = 32;
    o.data = data;
    o.encoding = "none";
    o.steps = 60, o.batch = 4, o.seq = 32, o.warmup = 5, o.lr = 3e-3f;
    o.eval_every = 0, o.val_batches = 8, o.ckpt_every = 0;
    o.optimizer = optimizer;
    o.out = temp_dir("a8_out");
    o.seed = 77;
    return o;
}

// The formula of quant/adam8bit.h, per tensor.
size_t expected_state_bytes(const ModelConfig& c) {
    Model m(c, 0);
    size_t bytes = 0;
    for (const ParamTensor& t : m.tensors()) {
        const size_t n = t.size, blocks = (n + 255) / 256;
        bytes += n >= 4096 ? 2 * n + 2 * 4 * blocks : 8 * n;
    }
    return bytes;
}

}  // namespace

TEST(TrainAdam8bit, FinalValLossWithinOnePercentOfFp32AdamW) {
    const std::string data = make_corpus();
    FILE* quiet = fopen("/dev/null", "w");
    TrainResult fp32 = train(run_with(data, "adamw"), quiet);
    TrainResult q8 = train(run_with(data, "adamw8bit"), quiet);
    fclose(quiet);
    ASSERT_TRUE(std::isfinite(fp32.val_loss) && std::isfinite(q8.val_loss));
    EXPECT_LT(fp32.val_loss, fp32.unigram_entropy - 0.5) << "the fp32 run must learn for the comparison to mean anything";
    const double rel = std::fabs(q8.val_loss - fp32.val_loss) / fp32.val_loss;
    printf("[          ] val loss fp32 AdamW %.4f, 8-bit AdamW %.4f: %.3f%% apart\n", fp32.val_loss, q8.val_loss,
           100 * rel);
    EXPECT_LT(rel, 0.01);
    EXPECT_NE(fp32.losses, q8.losses) << "the two optimizers must differ (8-bit states are really used)";
}

TEST(TrainAdam8bit, MemoryReportMatchesTheFormula) {
    const std::string data = make_corpus();
    for (const char* opt : {"adamw", "adamw8bit"}) {
        TrainOptions o = run_with(data, opt);
        o.steps = 2;
        FILE* quiet = fopen("/dev/null", "w");
        train(o, quiet);
        fclose(quiet);
        const ModelConfig c = model_config_for(o, 64);
        const size_t n = c.num_params();
        const size_t want_opt = std::string(opt) == "adamw" ? 8 * n : expected_state_bytes(c);
        // metrics.jsonl: the first step line carries the split
        std::string first = read_text(o.out + "/metrics.jsonl");
        first = first.substr(0, first.find('\n'));
        JsonValue j = parse_json(first, "metrics.jsonl");
        EXPECT_EQ((size_t)j.at("mem_weights").as_number(), 4 * n) << opt;
        EXPECT_EQ((size_t)j.at("mem_grads").as_number(), 4 * n) << opt;
        EXPECT_EQ((size_t)j.at("mem_optimizer").as_number(), want_opt) << opt;
        EXPECT_GT(j.at("mem_activations").as_number(), 0) << opt;
        EXPECT_EQ(j.at("mem_bytes").as_number(), j.at("mem_weights").as_number() + j.at("mem_grads").as_number() +
                                                     j.at("mem_optimizer").as_number() +
                                                     j.at("mem_activations").as_number())
            << opt;
        if (std::string(opt) == "adamw8bit") {  // ~4x on big tensors; this model's norms keep fp32 states
            EXPECT_LT(want_opt * 5, 8 * n * 2) << "8-bit states are over 2.5x smaller";
        }
    }
}

TEST(TrainAdam8bit, ResumingWithTheOtherOptimizerIsRefused) {
    const std::string data = make_corpus();
    TrainOptions o = run_with(data, "adamw8bit");
    o.steps = 2;
    FILE* quiet = fopen("/dev/null", "w");
    train(o, quiet);
    TrainOptions r = o;
    r.resume = o.out;
    r.steps = 4;
    r.optimizer = "adamw";
    try {
        train(r, quiet);
        ADD_FAILURE() << "resuming 8-bit state with fp32 AdamW must fail";
    } catch (const Error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("8-bit AdamW state"), std::string::npos) << msg;
        EXPECT_NE(msg.find("--optimizer adamw8bit"), std::string::npos) << msg;
        EXPECT_NE(msg.find("latest.ckpt"), std::string::npos) << msg;
    }
    fclose(quiet);
}
