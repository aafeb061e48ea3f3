// Resume exactness: a run checkpointed halfway and resumed must produce BIT-identical per-step losses and
// final val loss to a run that never stopped (same data order, same optimizer state, same schedule).
#include <gtest/gtest.h>

#include <cstring>

#include "../tools/trainer.h"
#include "train_test_util.h"

using namespace llmq;
using namespace llmq_test;

namespace {
// A small synthetic corpus (vocab 64) and a model small enough to train in milliseconds.
TrainOptions small_run(const std::string& data, const std::string& out) {
    TrainOptions o;
    o.model = "tiny";
    o.dim = 32, o.ffn_dim = 64, o.n_layers = 2, o.n_heads = 4, o.n_kv_heads = 2, o.max_seq_len = 32;
    o.data = data;
    o.encoding = "none";
    o.steps = 8, o.batch = 2, o.seq = 16, o.warmup = 2, o.lr = 3e-3f;
    o.eval_every = 3, o.val_batches = 2;
    o.ckpt_every = 0, o.ckpt_keep_every = 4;
    o.out = out;
    o.seed = 4242;
    return o;
}

std::string make_corpus() {
    std::string dir = temp_dir("resume_data");
    Rng rng(17);
    std::vector<uint32_t> train = markov_tokens(rng, 900, 64), val = markov_tokens(rng, 200, 64);
    write_shard(dir + "/syn_train_000000.bin", train.data(), 500, 64, 0);
    write_shard(dir + "/syn_train_000001.bin", train.data() + 500, 400, 64, 0);  // two shards
    write_shard(dir + "/syn_val_000000.bin", val.data(), val.size(), 64, 0);
    return dir;
}

void expect_resume_exact(TrainOptions o) {
    TrainResult full;
    const TrainOptions resumed = expect_resume_bit_identical(o, &full);
    ASSERT_EQ(full.losses.size(), 8u);
    EXPECT_LT(full.losses.back(), full.losses.front()) << "the run learns something";
    // the final checkpoints hold the same parameters
    auto final_state = [](const std::string& path) {
        CheckpointInfo info = read_checkpoint_info(path);
        Model m(info.config, 0);
        OptimizerConfig oc;
        oc.eight_bit = info.optimizer_8bit;
        AdamW adam(oc, m.tensors());
        // a LoRA run: the adapters and their fp32 AdamW state (the 8-bit case is covered by the base's)
        std::vector<float> adapter(info.adapter_params);
        AdamW adapter_adam(OptimizerConfig{}, adapter.size());
        AdapterSection section{adapter.data(), adapter.size(), &adapter_adam};
        if (info.adapter_params) {
            load_checkpoint(path, m, nullptr, &section);
            std::vector<float> all = adapter;
            all.insert(all.end(), adapter_adam.m().begin(), adapter_adam.m().end());
            all.insert(all.end(), adapter_adam.v().begin(), adapter_adam.v().end());
            return all;
        }
        load_checkpoint(path, m, &adam);
        std::vector<float> all(m.params(), m.params() + m.num_params());
        all.insert(all.end(), adam.m().begin(), adam.m().end());
        all.insert(all.end(), adam.v().begin(), adam.v().end());
        if (adam.eight_bit()) {  // the serialized 8-bit states, as floats' worth of bytes
            std::vector<uint8_t> blob = adam.serialize_8bit();
            blob.resize((blob.size() + 3) / 4 * 4, 0);
            const size_t at = all.size();
            all.resize(at + blob.size() / 4);
            memcpy(all.data() + at, blob.data(), blob.size());
        }
        return all;
    };
    std::vector<float> a = final_state(o.out + "/ckpt_step_000008.ckpt");
    std::vector<float> b = final_state(resumed.out + "/ckpt_step_000008.ckpt");
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(0, memcmp(a.data(), b.data(), a.size() * 4)) << "parameters and AdamW state differ";
}
}  // namespace

TEST(Resume, LossesAreBitIdenticalToAnUninterruptedRun) {
    std::string data = make_corpus();
    expect_resume_exact(small_run(data, temp_dir("resume_out") + "/a"));
}

TEST(Resume, BitIdenticalWithGradAccumAndAcrossEpochs) {
    std::string data = make_corpus();
    TrainOptions o = small_run(data, temp_dir("resume_out") + "/b");
    o.grad_accum = 3;
    o.batch = 4;  // 8 steps x 12 windows > the 55 train windows: epochs turn over before and after the resume
    expect_resume_exact(o);
}

TEST(Resume, BitIdenticalWith8bitAdamW) {
    std::string data = make_corpus();
    TrainOptions o = small_run(data, temp_dir("resume_out") + "/c");
    o.optimizer = "adamw8bit";
    o.dim = 64, o.ffn_dim = 128;  // tensors of >= 4096 elements, so the states really are 8-bit
    expect_resume_exact(o);
    CheckpointInfo info = read_checkpoint_info(o.out + "/ckpt_step_000008.ckpt");
    EXPECT_TRUE(info.optimizer_8bit);
    EXPECT_GT(info.optimizer_8bit_bytes, 0u);
}

TEST(Resume, BitIdenticalWithLoraQloraAndRelora) {
    std::string data = make_corpus();
    for (const char* method : {"lora", "qlora", "relora"}) {
        TrainOptions o = small_run(data, temp_dir("resume_out") + "/" + method);
        o.method = method;
        o.rank = 4;
        o.lr = 2e-2f;
        o.relora_every = 3;  // merges after steps 3 and 6: one before the resume at 4, one after
        expect_resume_exact(o);
        EXPECT_GT(read_checkpoint_info(o.out + "/ckpt_step_000008.ckpt").adapter_params, 0u);
    }
}

// --lora-dropout draws its masks from the checkpointed training Rng: the resumed run drops the same inputs. The
// dropout is really on (the losses differ from a run without it), and the peft export records it.
TEST(Resume, BitIdenticalWithLoraDropout) {
    std::string data = make_corpus();
    TrainOptions o = small_run(data, temp_dir("resume_out") + "/lora_dropout");
    o.method = "lora", o.rank = 4, o.lr = 2e-2f;
    o.lora_dropout = 0.25f;
    expect_resume_exact(o);
    TrainOptions plain = o;
    plain.lora_dropout = 0, plain.out = o.out + "_plain", plain.resume.clear();
    FILE* quiet = fopen("/dev/null", "w");
    TrainResult with = train(o, quiet), without = train(plain, quiet);
    fclose(quiet);
    EXPECT_EQ(with.losses[0], without.losses[0]) << "B = 0 at the start: dropout on the adapters changes nothing yet";
    EXPECT_NE(with.losses.back(), without.losses.back());
    EXPECT_NE(read_text(o.out + "/adapter/adapter_config.json").find("\"lora_dropout\": 0.25,"), std::string::npos);
}

// WTA-CRS: the samplers' Rng and ||dY|| proxy travel in the checkpoint, so the resumed run draws the same rows;
// full training and LoRA + WTA-CRS. A checkpoint written without samplers cannot resume a sampled run.
TEST(Resume, BitIdenticalWithWtaCrs) {
    std::string data = make_corpus();
    for (const char* method : {"full", "lora"}) {
        TrainOptions o = small_run(data, temp_dir("resume_out") + "/wtacrs_" + method);
        o.method = method;
        o.rank = 4;
        o.wtacrs = 0.3f;
        o.wtacrs_layers = "all";
        expect_resume_exact(o);
        CheckpointInfo info = read_checkpoint_info(o.out + "/ckpt_step_000004.ckpt");
        ASSERT_NE(info.section("wtacrs"), nullptr);
        EXPECT_GT(info.section("wtacrs")->bytes.size(), 4u);
    }
    TrainOptions plain = small_run(data, temp_dir("resume_out") + "/plain");
    FILE* quiet = fopen("/dev/null", "w");
    train(plain, quiet);
    plain.resume = plain.out + "/ckpt_step_000004.ckpt";
    plain.out += "_resumed";
    plain.wtacrs = 0.3f;
    llmq_test::expect_error([&] { train(plain, quiet); }, {"ckpt_step_000004.ckpt", "no WTA-CRS sampler state"});
    fclose(quiet);
}
