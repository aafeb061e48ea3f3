// adapters/lora.h and ./train --method lora|qlora: a fresh adapter (B = 0) leaves the model's logits exactly
// as they were; the layout names peft's tensors for exactly the targeted modules; training moves only the
// adapters (the base, frozen, is bit-identical after a run, quantized or not), the loss falls, the adapters
// are exported for peft, and bad flags fail with a message naming them. (Bit-identical resume: test_resume.)
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>

#include "../adapters/lora.h"
#include "../layers/model.h"
#include "../tools/checkpoint.h"
#include "../tools/hf_llama.h"
#include "../tools/hf_peft.h"
#include "../tools/json.h"
#include "../tools/train_method.h"
#include "../tools/trainer.h"
#include "train_test_util.h"

using namespace llmq;
using namespace llmq_test;

namespace {

ModelConfig small_config() { return lora_test_config(); }


std::string make_corpus() { return markov_corpus("lora_data", 31, 6000, 1200, 64); }
std::vector<float> logits_of(Model& m) { return logits_on_random_tokens(m, 12, 5); }

TrainOptions lora_run(const std::string& data, const std::string& method) {
    TrainOptions o = adapter_test_run(data, temp_dir("lora_out"));
    o.method = method;
    o.alpha = 8;
    o.seed = 99;
    return o;
}

std::vector<float> checkpoint_params(const std::string& path, CheckpointInfo* info_out = nullptr) {
    CheckpointInfo info = read_checkpoint_info(path);
    Model m(info.config, 0);
    std::vector<float> adapter(info.adapter_params);
    AdamW adam(OptimizerConfig{}, adapter.size());
    AdapterSection sec{adapter.data(), adapter.size(), &adam};
    load_checkpoint(path, m, nullptr, info.adapter_params ? &sec : nullptr);
    if (info_out) *info_out = info;
    return std::vector<float>(m.params(), m.params() + m.num_params());
}


}  // namespace

TEST(Lora, FreshAdaptersLeaveTheLogitsExactlyAndFreezeTheBase) {
    Model base(small_config(), 7), m(small_config(), 7);
    LoraAdapters lora(m, LoraOptions{4, 8.0f, "all-linear"}, 1);
    EXPECT_EQ(logits_of(base), logits_of(m));  // B = 0: bit-identical
    // A is drawn, B is zero; 7 modules x 2 layers x (A, B)
    ASSERT_EQ(lora.tensors().size(), 28u);
    EXPECT_EQ(lora.tensors()[0].name, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
    EXPECT_EQ(lora.tensors()[1].name, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
    const float bound = 1.0f / std::sqrt(64.0f);
    for (size_t i = 0; i < lora.tensors().size(); i++) {
        const ParamTensor& t = lora.tensors()[i];
        float maxabs = 0;
        for (size_t j = 0; j < t.size; j++) maxabs = std::max(maxabs, std::fabs(lora.params()[t.offset + j]));
        if (i % 2 == 0) {
            EXPECT_GT(maxabs, 0.5f * bound) << t.name;
            EXPECT_LE(maxabs, 1.0f / std::sqrt((float)t.shape[1])) << t.name;
        } else {
            EXPECT_EQ(maxabs, 0.0f) << t.name;
        }
    }
    for (auto& [name, lin] : named_linears(m)) {
        EXPECT_EQ(lin->dweight, nullptr) << name;
        EXPECT_EQ(lin->adapters.size(), name == "lm_head" ? 0u : 1u) << name;
    }
    Model m2(small_config(), 7);
    LoraAdapters attn(m2, LoraOptions{2, 2.0f, "attn"}, 1);
    EXPECT_EQ(attn.tensors().size(), 16u);
    for (auto& [name, lin] : named_linears(m2))
        EXPECT_EQ(lin->adapters.size(), name.find("self_attn") != std::string::npos ? 1u : 0u) << name;
    expect_error([] { lora_target_modules("everything"); }, {"--lora-targets", "everything"});
    Model m3(small_config(), 7);
    expect_error([&] { LoraAdapters big(m3, LoraOptions{80, 8.0f, "all-linear"}, 1); }, {"--rank 80", "q_proj"});
}

TEST(Lora, TrainingMovesOnlyTheAdaptersAndLearns) {
    const std::string data = make_corpus();
    for (const char* method : {"lora", "qlora"}) {
        TrainOptions o = lora_run(data, method);
        FILE* quiet = fopen("/dev/null", "w");
        TrainResult r = train(o, quiet);
        fclose(quiet);
        ASSERT_EQ(r.losses.size(), 40u);
        double first = 0, last = 0;
        for (int i = 0; i < 5; i++) first += r.losses[i], last += r.losses[35 + i];
        EXPECT_LT(last, first - 0.25) << method << ": the adapters learn (mean loss of the last 5 steps vs the first 5)";
        // the base in the checkpoint is the initial model, bit for bit
        CheckpointInfo info;
        std::vector<float> base = checkpoint_params(o.out + "/latest.ckpt", &info);
        Model init(model_config_for(o, 64), o.seed);
        ASSERT_EQ(base.size(), init.num_params());
        EXPECT_EQ(0, memcmp(base.data(), init.params(), base.size() * 4)) << method << ": the frozen base changed";
        // the adapter directory, as peft reads it
        JsonValue cfg = parse_json_file(o.out + "/adapter/adapter_config.json");
        EXPECT_EQ(cfg.at("r").as_number(), 4);
        EXPECT_EQ(cfg.at("lora_alpha").as_number(), 8);
        EXPECT_TRUE(file_exists(o.out + "/adapter/adapter_model.safetensors"));
    }
}

TEST(Lora, AdapterCountsAndBadFlags) {
    const std::string data = make_corpus();
    TrainOptions o = lora_run(data, "lora");
    o.steps = 1;
    FILE* quiet = fopen("/dev/null", "w");
    train(o, quiet);
    CheckpointInfo info = read_checkpoint_info(o.out + "/latest.ckpt");
    // per layer: q (64->64), k, v (64->32), o (64->64), gate, up (64->128), down (128->64); r (in + out) each
    const uint64_t per_layer = 4ull * ((64 + 64) + 2 * (64 + 32) + (64 + 64) + 2 * (64 + 128) + (128 + 64));
    EXPECT_EQ(info.adapter_params, 2 * per_layer);

    TrainOptions bad = lora_run(data, "full");
    bad.weights = "nf4";
    expect_error([&] { train(bad, quiet); }, {"--weights nf4", "--method qlora"});
    bad = lora_run(data, "lora");
    bad.rank = 0;
    expect_error([&] { train(bad, quiet); }, {"--rank 0"});
    bad = lora_run(data, "qlora");
    bad.quant_block = 48;
    expect_error([&] { train(bad, quiet); }, {"48"});
    // resuming a LoRA checkpoint as a full run, and the other way round
    TrainOptions full = o;
    full.method = "full";
    full.resume = o.out;
    full.steps = 2;
    full.out = temp_dir("lora_out");
    expect_error([&] { train(full, quiet); }, {"latest.ckpt", "--method lora", "--method full"});
    fclose(quiet);
}

// What ./train sample does with a LoRA checkpoint: the flags stored in it rebuild the same adapters on the
// same quantized base, the checkpoint fills them, and the model computes with the trained adapters.
TEST(Lora, ACheckpointRebuildsItsAdaptersForSampling) {
    const std::string data = make_corpus();
    TrainOptions o = lora_run(data, "qlora");
    o.steps = 6;
    FILE* quiet = fopen("/dev/null", "w");
    train(o, quiet);
    fclose(quiet);
    CheckpointInfo info = read_checkpoint_info(o.out + "/latest.ckpt");
    const TrainOptions trained = options_of_checkpoint(info);
    EXPECT_EQ(trained.method, "qlora");
    EXPECT_EQ(trained.rank, 4);
    // without its adapters the checkpoint does not load
    Model plain(info.config, 0);
    expect_error([&] { load_checkpoint(o.out + "/latest.ckpt", plain, nullptr, nullptr); }, {"holds adapters"});
    Model sampled(info.config, 0), base(info.config, o.seed);  // base: the run's initial (= frozen) weights
    TrainMethod method(sampled, trained, nullptr);
    LoraAdapters* lora = method.lora();
    ASSERT_TRUE(lora);
    method.load(o.out + "/latest.ckpt");
    EXPECT_GT(method.memory().weights, 4 * sampled.num_params() + 4 * lora->num_params()) << "+ the quantized base";
    // B moved off zero, so the outputs are no longer the base model's
    float b_max = 0;
    for (size_t i = 1; i < lora->tensors().size(); i += 2)
        for (size_t j = 0; j < lora->tensors()[i].size; j++)
            b_max = std::max(b_max, std::fabs(lora->params()[lora->tensors()[i].offset + j]));
    EXPECT_GT(b_max, 1e-4f);
    EXPECT_GT(max_abs_diff(logits_of(sampled), logits_of(base)), 1e-3f);
}

// ./convert llmq-to-hf on an adapter checkpoint writes the merged model: its logits equal the adapter model's.
TEST(Lora, ConvertExportsAnAdapterCheckpointMerged) {
    const std::string data = make_corpus();
    TrainOptions o = lora_run(data, "qlora");
    o.steps = 4;
    FILE* quiet = fopen("/dev/null", "w");
    train(o, quiet);
    fclose(quiet);
    const std::string ckpt = o.out + "/latest.ckpt", dir = temp_dir("lora_hf");
    RunResult r = run_command("./convert llmq-to-hf " + ckpt + " " + dir);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    CheckpointInfo info = read_checkpoint_info(ckpt);
    Model adapted(info.config, 0);
    std::unique_ptr<TrainMethod> method = load_checkpoint_for_inference(ckpt, info, adapted);
    ASSERT_TRUE(method->lora());
    HfModel merged = load_hf_llama(dir);
    EXPECT_LT(max_abs_diff(logits_of(*merged.model), logits_of(adapted)), 1e-5f);
}
