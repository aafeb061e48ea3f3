// Tests of ./train --device cuda (tools/cuda_run.h): on a GPU, the training loop on the GPU model follows the CPU
// run's loss curve, two runs are bitwise identical, a resumed run continues bit for bit, and the memory report
// holds the GPU's buffers; without a GPU, --device cuda fails with one clear message.
#include <cmath>
#include <cstring>

#include "../tools/trainer.h"
#include "gpu_test_util.h"
#include "train_test_util.h"

using namespace llmq;
using namespace llmq_test;

namespace {

struct TrainCudaFixture : ::testing::Test {
    std::string data, out;
    void SetUp() override {
        data = temp_dir("cuda_data");
        out = temp_dir("cuda_out");
        Rng rng(31);
        std::vector<uint32_t> train = markov_tokens(rng, 4000, 96), val = markov_tokens(rng, 600, 96);
        write_shard(data + "/syn_train_000000.bin", train.data(), train.size(), 96, 0);
        write_shard(data + "/syn_val_000000.bin", val.data(), val.size(), 96, 0);
    }
    // 2 layers of dim 64, 2 heads of 32 (GQA 2:1), 4 x 32 tokens per step, lr 1e-2: a run that learns in 30 steps
    TrainOptions run(const std::string& device, int steps) const {
        TrainOptions o;
        o.dim = 64, o.ffn_dim = 176, o.n_layers = 2, o.n_heads = 2, o.n_kv_heads = 1, o.max_seq_len = 32;
        o.data = data, o.encoding = "none", o.device = device;
        o.steps = steps, o.batch = 4, o.seq = 32, o.warmup = 3, o.lr = 1e-2f;
        o.eval_every = 0, o.val_batches = 2, o.ckpt_every = 0, o.sample_tokens = 0;
        o.out = out + "/" + device;
        return o;
    }
};
using TrainCuda = TrainCudaFixture;
using TrainCudaLong = TrainCudaFixture;

}  // namespace

TEST_F(TrainCuda, WithoutAGpuTheRunFailsWithOneMessage) {
    std::string why;
    if (cuda_device_count(&why) > 0) GTEST_SKIP() << "a GPU is present: nothing to refuse";
    expect_error([&] {
        FILE* quiet = fopen("/dev/null", "w");
        try {
            train(run("cuda", 1), quiet);
        } catch (...) {
            fclose(quiet);
            throw;
        }
        fclose(quiet);
    }, {"--device cuda: no CUDA GPU"});
}

TEST_F(TrainCudaLong, LossCurveFollowsTheCpuRun) {
    LLMQ_REQUIRE_GPU();
    FILE* quiet = fopen("/dev/null", "w");
    const TrainResult cpu = train(run("cpu", 30), quiet), gpu = train(run("cuda", 30), quiet);
    fclose(quiet);
    ASSERT_EQ(gpu.losses.size(), 30u);
    for (size_t i = 0; i < 30; i++) EXPECT_NEAR(gpu.losses[i], cpu.losses[i], 0.03 * cpu.losses[i]) << "step " << i + 1;
    EXPECT_LT(gpu.losses.back(), 0.8f * gpu.losses.front()) << "the run must learn for the comparison to mean anything";
    EXPECT_NEAR(gpu.val_loss, cpu.val_loss, 0.03 * cpu.val_loss);
}

TEST_F(TrainCuda, TwoRunsAreBitwiseIdenticalAndResumeContinuesBitForBit) {
    LLMQ_REQUIRE_GPU();
    TrainOptions o = run("cuda", 8);
    o.ckpt_keep_every = 4;
    FILE* quiet = fopen("/dev/null", "w");
    const TrainResult again = train(o, quiet);
    fclose(quiet);
    TrainResult first;
    expect_resume_bit_identical(o, &first);
    ASSERT_EQ(first.losses.size(), again.losses.size());
    EXPECT_EQ(0, memcmp(first.losses.data(), again.losses.data(), first.losses.size() * sizeof(float)));
}

TEST_F(TrainCuda, MemoryReportHoldsTheGpuBuffers) {
    LLMQ_REQUIRE_GPU();
    const TrainOptions o = run("cuda", 2);
    std::string log = train_and_read_log(o);
    EXPECT_NE(log.find("device: cuda, "), std::string::npos) << log;
    EXPECT_NE(log.find("GPU peak "), std::string::npos) << log;
    // masters fp32 + bf16 copy, gradients fp32, AdamW m and v fp32 over every parameter
    const double params = (double)model_config_for(o, 96).num_params();
    EXPECT_EQ(last_metric(o.out, "mem_weights"), 6 * params);
    EXPECT_EQ(last_metric(o.out, "mem_grads"), 4 * params);
    EXPECT_EQ(last_metric(o.out, "mem_optimizer"), 8 * params);
    EXPECT_GT(last_metric(o.out, "device_mem_peak"), 18 * params);
}
