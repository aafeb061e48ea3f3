// adapters/relora.h: a merge leaves the model's outputs unchanged (W += s B A, fresh A, B = 0), the optimizer
// state is pruned to the requested fraction, the lr re-warms in the jagged pattern, and ./train --method
// relora merges on schedule and refuses a quantized base. (Bit-identical resume across a merge: test_resume.)
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "../adapters/lora.h"
#include "../adapters/relora.h"
#include "../layers/model.h"
#include "../tools/hf_peft.h"
#include "../tools/trainer.h"
#include "train_test_util.h"

using namespace llmq;
using namespace llmq_test;

namespace {

ModelConfig small_config() { return small_model_config(); }


std::vector<float> logits_of(Model& m) { return logits_on_random_tokens(m, 10, 8); }

}  // namespace

TEST(Relora, MergeLeavesTheOutputsUnchangedAndRestartsTheAdapters) {
    Model m(small_config(), 3);
    LoraAdapters lora(m, LoraOptions{4, 8.0f, "all-linear"}, 1);
    Rng rng(4);  // trained-looking adapters: B off zero
    for (size_t i = 0; i < lora.num_params(); i++) lora.params()[i] = 0.2f * rng.normal();
    const std::vector<float> before = logits_of(m);
    const std::vector<float> base_before(m.params(), m.params() + m.num_params());
    const std::vector<float> adapters_before(lora.params(), lora.params() + lora.num_params());
    lora.merge_into_base_and_reinit(77);
    EXPECT_LT(max_abs_diff(logits_of(m), before), 1e-5f);
    EXPECT_GT(max_abs_diff(std::vector<float>(m.params(), m.params() + m.num_params()), base_before), 1e-2f)
        << "the base took the update";
    for (size_t i = 0; i < lora.tensors().size(); i++) {
        const ParamTensor& t = lora.tensors()[i];
        float maxabs = 0, changed = 0;
        for (size_t j = 0; j < t.size; j++) {
            maxabs = std::max(maxabs, std::fabs(lora.params()[t.offset + j]));
            changed = std::max(changed, std::fabs(lora.params()[t.offset + j] - adapters_before[t.offset + j]));
        }
        if (i % 2) EXPECT_EQ(maxabs, 0.0f) << t.name;  // B = 0
        else EXPECT_GT(changed, 0.0f) << t.name;        // A re-drawn
    }
    // a quantized base cannot take a merge
    Model q(small_config(), 3);
    LoraAdapters ql(q, LoraOptions{2, 2.0f, "attn"}, 1);
    QuantSpec spec;
    quantize_model_linears(q, spec);
    EXPECT_THROW(ql.merge_into_base_and_reinit(1), Error);
}

TEST(Relora, PruneKeepsTheLargestFractionPerTensor) {
    std::vector<ParamTensor> tensors(2);
    tensors[0].offset = 0, tensors[0].size = 1000, tensors[0].shape = {10, 100};
    tensors[1].offset = 1000, tensors[1].size = 3000, tensors[1].shape = {30, 100};
    AdamW adam(OptimizerConfig{}, tensors);
    Rng rng(5);
    for (float& x : adam.m()) x = rng.normal() * (1 + 10 * rng.uniform());
    // v large where |m| is (as trained moments are), so the joint rule (m zeroed with its v) keeps ~1% of both
    for (size_t i = 0; i < adam.v().size(); i++) adam.v()[i] = adam.m()[i] * adam.m()[i] + 1e-3f * rng.uniform();
    const std::vector<float> m0 = adam.m();
    adam.prune_state(0.99f);
    for (const ParamTensor& t : tensors) {
        size_t kept_m = 0, kept_v = 0;
        float smallest_kept = INFINITY, largest_zeroed = 0;
        for (size_t i = t.offset; i < t.offset + t.size; i++) {
            kept_m += adam.m()[i] != 0, kept_v += adam.v()[i] != 0;
            if (adam.m()[i] != 0) {
                smallest_kept = std::min(smallest_kept, std::fabs(adam.m()[i]));
                EXPECT_EQ(adam.m()[i], m0[i]);  // kept values are untouched
            } else {
                largest_zeroed = std::max(largest_zeroed, std::fabs(m0[i]));
            }
        }
        EXPECT_LE(kept_m, kept_v);
        EXPECT_NEAR((double)kept_m, 0.01 * t.size, 1.0);
        EXPECT_NEAR((double)kept_v, 0.01 * t.size, 1.0);
        EXPECT_GE(smallest_kept, largest_zeroed);
    }
}

TEST(Relora, JaggedScheduleRewarmsAfterEachMerge) {
    ReloraOptions o{10, 4, 0.99f};
    for (int s = 0; s < 10; s++) EXPECT_EQ(relora_lr_scale(o, s), 1.0f) << s;  // before the first merge
    EXPECT_FLOAT_EQ(relora_lr_scale(o, 10), 0.25f);  // the merge followed step 9
    EXPECT_FLOAT_EQ(relora_lr_scale(o, 11), 0.5f);
    EXPECT_FLOAT_EQ(relora_lr_scale(o, 13), 1.0f);
    EXPECT_FLOAT_EQ(relora_lr_scale(o, 19), 1.0f);
    EXPECT_FLOAT_EQ(relora_lr_scale(o, 20), 0.25f);
    EXPECT_TRUE(relora_merges_after(o, 9));
    EXPECT_FALSE(relora_merges_after(o, 10));
}

TEST(Relora, TrainMergesOnScheduleAndRefusesAQuantizedBase) {
    const std::string data = markov_corpus("relora_data", 41, 6000, 1200, 64);
    TrainOptions o = adapter_test_run(data, temp_dir("relora_out"));
    o.method = "relora";
    o.relora_every = 10, o.relora_rewarmup = 3;
    o.seed = 12;
    TrainResult r;
    const std::string text = train_and_read_log(o, &r);
    const size_t merges = count_occurrences(text, "relora merged");
    EXPECT_EQ(merges, 4u);
    EXPECT_NE(text.find("step 10: relora merged"), std::string::npos);
    ASSERT_EQ(r.losses.size(), 40u);
    double first = 0, last = 0;
    for (int i = 0; i < 5; i++) first += r.losses[i] / 5, last += r.losses[35 + i] / 5;
    EXPECT_LT(last, first - 0.05) << "it learns across merges: " << ::testing::PrintToString(r.losses);

    TrainOptions bad = o;
    bad.weights = "nf4";
    bad.out = temp_dir("relora_out");
    FILE* quiet = fopen("/dev/null", "w");
    try {
        train(bad, quiet);
        ADD_FAILURE() << "relora on an nf4 base must be refused";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("--weights nf4"), std::string::npos) << e.what();
    }
    fclose(quiet);
}
