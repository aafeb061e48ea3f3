// Tests of ./train's wiring of the methods that live in their own state (tools/train_method.h): --method switchlora
// (its pools and per-vector optimizer in the "switchlora" section) and --init loftq|cloq / --quantizer gptq (a base
// whose codes cannot be re-derived, in the "quantized_base" section). Each: a run learns, its log says what it did,
// resuming is bit-identical, and sampling / export rebuild the same model from the checkpoint.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../layers/model.h"
#include "../quant/formats.h"
#include "../tools/hf_peft.h"
#include "../tools/checkpoint.h"
#include "../tools/train_method.h"
#include "../tools/trainer.h"
#include "test_util.h"
#include "train_test_util.h"

using namespace llmq;
using namespace llmq_test;

namespace {

TrainOptions small_run(const std::string& data, const std::string& tag) {
    TrainOptions o = adapter_resume_run(data, temp_dir(tag.c_str()));
    o.seed = 77;
    return o;
}

// The bytes of the named state section of a checkpoint file: the sections sit, in header order, right before the
// 16-byte trailer (tools/checkpoint.h).
std::string section_bytes(const std::string& path, const std::string& name) {
    const CheckpointInfo info = read_checkpoint_info(path);
    const std::string file = read_text(path);
    size_t total = 0;
    for (const StateSection& s : info.sections) total += s.bytes.size();
    size_t at = file.size() - 16 - total;
    for (const StateSection& s : info.sections) {
        if (s.name == name) return file.substr(at, s.bytes.size());
        at += s.bytes.size();
    }
    ADD_FAILURE() << path << " has no section " << name;
    return "";
}

// Runs o for its steps and again from its step-4 checkpoint; the last four losses, the final val loss and the
// named state section of the last checkpoint must be bit-identical.
void expect_resume_exact(const TrainOptions& o, const char* section) {
    const TrainOptions resumed = expect_resume_bit_identical(o);
    const std::string a = section_bytes(o.out + "/ckpt_step_000008.ckpt", section);
    EXPECT_GT(a.size(), 8u);
    EXPECT_TRUE(a == section_bytes(resumed.out + "/ckpt_step_000008.ckpt", section)) << section << " differs after the "
                                                                                        "resume";
}

// The logits, on fixed tokens, of the model a checkpoint rebuilds for inference (no optimizer: what sampling and
// export use) or for training (the method built with its optimizer, then loaded: what --resume uses).
std::vector<float> logits_after_load(const std::string& path, bool for_training) {
    const CheckpointInfo info = read_checkpoint_info(path);
    Model model(info.config, 0);
    std::unique_ptr<TrainMethod> parts;
    OptimizerConfig oc;
    if (for_training) {
        parts = std::make_unique<TrainMethod>(model, options_of_checkpoint(info), &oc);
        parts->load(path);
    } else {
        parts = load_checkpoint_for_inference(path, info, model);
    }
    return logits_on_random_tokens(model, 10, 8);
}

}  // namespace

TEST(TrainSwitchLora, LearnsResumesExactlyAndRebuildsForSampling) {
    const std::string data = markov_corpus("switchlora_train", 13, 3000, 600, 64);
    TrainOptions o = small_run(data, "switchlora_out");
    o.method = "switchlora";
    o.switch_interval = 12;  // small, so that 8 steps switch vectors before and after the resume
    o.lr = 2e-2f;
    TrainResult r;
    const std::string text = train_and_read_log(o, &r);
    EXPECT_NE(text.find("switchlora"), std::string::npos) << text;
    // the base itself changed (W0 - s B A, then every switch): a peft adapter for the original base would be wrong
    EXPECT_FALSE(file_exists(o.out + "/adapter/adapter_config.json"));
    EXPECT_NE(text.find("no peft adapter written"), std::string::npos) << text;
    EXPECT_LT(r.losses.back(), r.losses.front()) << ::testing::PrintToString(r.losses);
    expect_resume_exact(o, "switchlora");
    // the switches live in the base weights and adapters, so inference needs no SwitchLoRA state: the model
    // rebuilt without it computes what the resumable one (SwitchLoRA re-initialised, then overwritten) does
    const std::string ckpt = o.out + "/latest.ckpt";
    const std::vector<float> sampled = logits_after_load(ckpt, false);
    EXPECT_EQ(sampled, logits_after_load(ckpt, true));
    Model untrained(read_checkpoint_info(ckpt).config, o.seed);
    EXPECT_GT(max_abs_diff(sampled, logits_on_random_tokens(untrained, 10, 8)), 1e-4f);
    // refused combinations name the flag
    TrainOptions bad = o;
    bad.weights = "nf4", bad.out = temp_dir("switchlora_bad");
    expect_error([&] { train(bad, nullptr); }, {"--method switchlora", "--weights"});
}

TEST(TrainLoraInit, CloqLoftqAndGptqBasesAreLoggedResumedAndRebuilt) {
    const std::string data = markov_corpus("lora_init_train", 17, 4000, 800, 64);
    for (const char* init : {"cloq", "loftq", "plain"}) {
        TrainOptions o = small_run(data, (std::string("lora_init_") + init).c_str());
        o.method = "qlora", o.weights = "int3", o.init = init;
        o.quantizer = std::string(init) == "plain" ? "gptq" : "rtn";
        o.calib_tokens = 256, o.init_compare = 1;
        o.steps = 8;
        TrainResult r;
        const std::string text = train_and_read_log(o, &r);
        ASSERT_NE(text.find(std::string("init ") + init + " (" + o.quantizer + " int3, 256 calibration tokens)"),
                  std::string::npos) << text;
        // one line per attention/MLP linear (2 layers x 7), each with the three calibrated errors
        int lines = 0;
        double plain_sum = 0, loftq_sum = 0, cloq_sum = 0;
        for (size_t at = text.find("calibrated "); at != std::string::npos; at = text.find("calibrated ", at + 1)) {
            double p = 0, l = 0, c = 0;
            if (sscanf(text.c_str() + at, "calibrated %lf / %lf / %lf", &p, &l, &c) == 3) {
                lines++, plain_sum += p, loftq_sum += l, cloq_sum += c;
                EXPECT_LE(c, p * (1 + 1e-6)) << init << ": CLoQ's calibrated error above plain's on a layer";
            }
        }
        EXPECT_EQ(lines, 14) << text;
        // peft's adapter fits the original base only where the base is RTN(W): CLoQ; not LoftQ, not GPTQ
        EXPECT_EQ(file_exists(o.out + "/adapter/adapter_config.json"), std::string(init) == "cloq") << init;
        EXPECT_LT(cloq_sum, loftq_sum) << init;
        EXPECT_LT(loftq_sum, plain_sum) << init;
        EXPECT_TRUE(std::isfinite(r.val_loss));
        expect_resume_exact(o, "quantized_base");
        // sampling rebuilds the quantized base and adapters from the checkpoint alone, as a resume does; a base
        // re-quantized from the fp32 weights (what plain RTN QLoRA does) differs for LoftQ (Q = quant(W - s B A))
        // and GPTQ, and equals CLoQ's (Q = RTN(W))
        const std::string ckpt = o.out + "/latest.ckpt";
        const std::vector<float> sampled = logits_after_load(ckpt, false);
        EXPECT_EQ(sampled, logits_after_load(ckpt, true));
        TrainOptions rtn = options_of_checkpoint(read_checkpoint_info(ckpt));
        rtn.init = "plain", rtn.quantizer = "rtn";
        Model requantized(read_checkpoint_info(ckpt).config, 0);
        TrainMethod plain_parts(requantized, rtn, nullptr);
        plain_parts.load(ckpt);
        const float requantized_diff = max_abs_diff(sampled, logits_on_random_tokens(requantized, 10, 8));
        if (std::string(init) == "cloq") EXPECT_EQ(requantized_diff, 0.0f);
        else EXPECT_GT(requantized_diff, 1e-6f) << init;
    }
    TrainOptions bad = small_run(data, "lora_init_bad");
    bad.method = "lora", bad.init = "cloq";  // an unquantized base: nothing to compensate
    expect_error([&] { train(bad, nullptr); }, {"--init cloq", "quantized base"});
}

// The memory report's weights for a quantized base, per format: the fp32 buffer the CPU backend keeps, plus each
// attention/MLP Linear's codes and scales by the format's own formula (quant/formats.h storage_bytes, itself
// tested against the buffers), plus the adapters; gradients and optimizer state are the adapters' and the model's
// buffer.
TEST(TrainMemory, QuantizedBaseWeightsMatchTheFormulaForEveryFormat) {
    const std::string data = markov_corpus("memory_formats", 19, 3000, 600, 64);
    struct Case {
        const char* weights;
        int block, double_quant;
        QuantFormat format;
    } cases[] = {{"nf4", 64, 0, QuantFormat::NF4}, {"nf4", 64, 1, QuantFormat::NF4}, {"fp4", 128, 0, QuantFormat::FP4},
                 {"int4", 64, 0, QuantFormat::INT4}, {"int3", 32, 0, QuantFormat::INT3}, {"int2", 64, 0, QuantFormat::INT2}};
    for (const Case& k : cases) {
        TrainOptions o = small_run(data, "memory_formats_out");
        o.method = "qlora", o.weights = k.weights, o.quant_block = k.block, o.double_quant = k.double_quant;
        o.steps = 1, o.val_batches = 0, o.ckpt_keep_every = 0;
        FILE* quiet = fopen("/dev/null", "w");
        train(o, quiet);
        fclose(quiet);
        Model m(model_config_for(o, 64), 0);
        size_t codes = 0, adapters = 0;
        QuantSpec spec;
        spec.format = k.format, spec.block = k.block, spec.double_quant = k.double_quant != 0;
        for (auto& [name, lin] : named_linears(m)) {
            if (name == "lm_head") continue;
            codes += storage_bytes(spec, lin->out, lin->in);
            adapters += 4 * (size_t)o.rank * (lin->in + lin->out);
        }
        auto value = [&](const char* key) { return last_metric(o.out, key); };  // (one step: its only line)
        SCOPED_TRACE(std::string(k.weights) + " block " + std::to_string(k.block) + (k.double_quant ? " dq" : ""));
        EXPECT_EQ(value("mem_weights"), (double)(4 * m.num_params() + codes + adapters));
        EXPECT_EQ(value("mem_grads"), (double)(4 * m.num_params() + adapters));
        EXPECT_EQ(value("mem_optimizer"), (double)(2 * adapters));
    }
}

// --train-rest 1: a lora-family run (SwitchLoRA too) also trains the embeddings, norms and lm_head (one clipping norm with the
// adapters), the attention/MLP weights stay frozen, the run resumes exactly (the second AdamW is the checkpoint's
// model optimizer), and no peft adapter is written (it would miss the trained embeddings).
TEST(TrainLoraRest, TrainsEmbeddingsAndNormsBesideTheAdapters) {
    const std::string data = markov_corpus("train_rest", 23, 3000, 600, 64);
    for (const char* method : {"lora", "relora", "switchlora"}) {
        TrainOptions o = small_run(data, (std::string("train_rest_") + method).c_str());
        o.method = method, o.train_rest = 1, o.relora_every = 3, o.switch_interval = 12;
        const TrainOptions resumed = expect_resume_bit_identical(o);
        EXPECT_FALSE(file_exists(o.out + "/adapter/adapter_config.json"));
        const std::string ckpt = o.out + "/ckpt_step_000008.ckpt";
        const CheckpointInfo info = read_checkpoint_info(ckpt);
        EXPECT_TRUE(info.has_optimizer) << "the rest's AdamW";
        Model trained(info.config, 0), initial(info.config, o.seed);
        std::unique_ptr<TrainMethod> parts = load_checkpoint_for_inference(ckpt, info, trained);
        for (const ParamTensor& t : trained.tensors()) {
            bool moved = false;
            for (size_t i = 0; i < t.size && !moved; i++) moved = trained.params()[t.offset + i] != initial.params()[t.offset + i];
            if (std::string(method) == "lora" || !is_attention_mlp_weight(t)) {  // relora, switchlora change them
                EXPECT_EQ(moved, !is_attention_mlp_weight(t)) << method << " " << t.name;
            }
        }
    }
}
