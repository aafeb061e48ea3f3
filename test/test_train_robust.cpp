// Robustness and interop of ./train: --init-from a Hugging Face directory (the first loss is that model's),
// Ctrl-C (SIGINT / SIGTERM: finish the step, checkpoint, exit 130, resume continues), SIGKILL at any moment
// (the last checkpoint always loads), and NaN/inf reports that name the tensor. Programs run as child
// processes from the repository root after `make`, on tiny configs.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <functional>

#include "../layers/model.h"
#include "../tools/checkpoint.h"
#include "../tools/dataloader.h"
#include "../tools/hf_llama.h"
#include "../tools/trainer.h"
#include "train_test_util.h"

using namespace llmq;
using namespace llmq_test;

namespace {
const char* kSmall = " --encoding none --dim 32 --ffn-dim 64 --n-layers 1 --n-heads 2 --n-kv-heads 1"
                     " --max-seq-len 32 --batch 2 --seq 16 --threads 1 --sample-tokens 0 --val-batches 0";

// Starts `cmd` (through sh, exec'd so the pid is the program's) with stdout and stderr into log.
pid_t spawn(const std::string& cmd, const std::string& log) {
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), (char*)nullptr);
        _exit(127);
    }
    return pid;
}

int count_step_lines(const std::string& metrics_path) {
    std::string text = read_text(metrics_path);
    int n = 0;
    for (size_t p = text.find("\"loss\""); p != std::string::npos; p = text.find("\"loss\"", p + 1)) n++;
    return n;
}

// Polls until ready() (a guard of ~2 minutes against a hang, not a timing assertion).
bool wait_until(const std::function<bool()>& ready) {
    for (int i = 0; i < 60000; i++) {
        if (ready()) return true;
        usleep(2000);
    }
    return false;
}

// The checkpoint at path loads completely: header, size, checksum, parameters and AdamW state.
void expect_loads(const std::string& path) {
    SCOPED_TRACE(path);
    CheckpointInfo info = read_checkpoint_info(path);
    Model model(info.config, 0);
    AdamW adam(OptimizerConfig{}, model.num_params());
    EXPECT_NO_THROW(load_checkpoint(path, model, &adam));
    EXPECT_GE(info.state.step, 1);
}

struct TrainRobust : ::testing::Test {
    std::string data, out;
    void SetUp() override {
        ASSERT_TRUE(file_exists("./train")) << "./train is not built: run `make train` (tests run from the repo root)";
        data = temp_dir("robust_data");
        out = temp_dir("robust_out");
        Rng rng(29);
        std::vector<uint32_t> train = markov_tokens(rng, 600, 64);
        write_shard(data + "/syn_train_000000.bin", train.data(), train.size(), 64, 0);
    }
    std::string train_cmd(const std::string& flags) { return "./train --data " + data + " --out " + out + kSmall + " " + flags; }
};

ModelConfig hf_config(int vocab) {
    ModelConfig c;
    c.vocab_size = vocab;
    c.dim = 32;
    c.ffn_dim = 48;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.max_seq_len = 32;
    c.tied_embeddings = false;
    c.init_std = 0.2f;
    return c;
}
}  // namespace

TEST_F(TrainRobust, InitFromHfStartsFromThatModel) {
    const std::string hf = temp_dir("robust_hf");
    Model source(hf_config(64), 77);
    save_hf_llama(hf, source, Dtype::F32);

    TrainOptions o;
    o.data = data;
    o.encoding = "none";
    o.out = out;
    o.init_from = hf;
    o.steps = 1;
    o.batch = 2;
    o.seq = 16;
    o.threads = 1;
    o.sample_tokens = 0;
    o.val_batches = 0;
    FILE* log = fopen("/dev/null", "w");
    TrainResult r = train(o, log);
    fclose(log);
    ASSERT_EQ(r.losses.size(), 1u);

    // the same first batch through the HF model directly
    DataLoader dl(data, "train", 2, 16, o.seed, /*shuffle=*/true);
    std::vector<int> in(32), tg(32);
    dl.next_batch(in.data(), tg.data());
    HfModel loaded = load_hf_llama(hf);
    const float want = loaded.model->forward(in.data(), tg.data(), 2, 16);
    EXPECT_EQ(r.losses[0], want);
    CheckpointInfo info = read_checkpoint_info(out + "/latest.ckpt");
    EXPECT_EQ(info.config.n_layers, 2);
    EXPECT_EQ(info.config.ffn_dim, 48);

    // the program: it says so; --resume takes precedence (the HF directory is no longer needed)
    const std::string plain = " --encoding none --batch 2 --seq 16 --threads 1 --sample-tokens 0 --val-batches 0";
    RunResult cli = run_command("./train --data " + data + " --out " + out + plain + " --init-from " + hf + " --steps 1");
    ASSERT_EQ(cli.exit_code, 0) << cli.output;
    EXPECT_NE(cli.output.find("initialised from " + hf), std::string::npos) << cli.output;
    std::filesystem::remove_all(hf);
    cli = run_command("./train --resume " + out + " --steps 2");
    ASSERT_EQ(cli.exit_code, 0) << cli.output;
    EXPECT_NE(cli.output.find("resumed from " + out + "/latest.ckpt at step 1"), std::string::npos) << cli.output;

    // a model whose vocabulary is smaller than the data's: refused, naming the flag
    const std::string small = temp_dir("robust_hf_small");
    save_hf_llama(small, Model(hf_config(40), 5), Dtype::F32);
    cli = run_command("./train --data " + data + " --out " + out + plain + " --init-from " + small + " --steps 1");
    EXPECT_EQ(cli.exit_code, 1) << cli.output;
    EXPECT_NE(cli.output.find("error: --init-from " + small + ": the model's vocabulary has 40 tokens"),
              std::string::npos) << cli.output;

    // shape flags with --init-from, or changed on --resume of a preset run: refused, naming the flags
    cli = run_command(train_cmd("--init-from " + small + " --steps 1"));  // kSmall sets --dim and friends
    EXPECT_EQ(cli.exit_code, 1) << cli.output;
    EXPECT_NE(cli.output.find("error: --init-from " + small + ": the model's shape comes from its config.json; drop --dim"),
              std::string::npos) << cli.output;
    ASSERT_EQ(run_command(train_cmd("--steps 1")).exit_code, 0);
    cli = run_command("./train --resume " + out + " --steps 3 --dim 16");
    EXPECT_EQ(cli.exit_code, 1) << cli.output;
    EXPECT_NE(cli.output.find("error: --resume " + out + "/latest.ckpt: the checkpoint's model is tiny-custom: dim 32"),
              std::string::npos) << cli.output;
    EXPECT_NE(cli.output.find("but the flags describe tiny-custom: dim 16"), std::string::npos) << cli.output;
}

TEST_F(TrainRobust, InterruptCheckpointsExits130AndResumes) {
    for (int sig : {SIGINT, SIGTERM}) {
        SCOPED_TRACE(sig);
        std::filesystem::remove(out + "/metrics.jsonl");
        const std::string log = out + "/log.txt";
        pid_t pid = spawn(train_cmd("--steps 100000"), log);
        ASSERT_TRUE(wait_until([&] { return count_step_lines(out + "/metrics.jsonl") >= 3; })) << read_text(log);
        kill(pid, sig);
        int status = 0;
        ASSERT_EQ(waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFEXITED(status)) << read_text(log);
        EXPECT_EQ(WEXITSTATUS(status), 130) << read_text(log);
        const std::string text = read_text(log);
        const std::string key = "interrupted at step ";
        size_t at = text.find(key);
        ASSERT_NE(at, std::string::npos) << text;
        const long long n = atoll(text.c_str() + at + key.size());
        EXPECT_NE(text.find(format("interrupted at step %lld: checkpoint written to %s/latest.ckpt", n, out.c_str())),
                  std::string::npos) << text;
        EXPECT_GE(n, 3);
        EXPECT_EQ(read_checkpoint_info(out + "/latest.ckpt").state.step, n);
        expect_loads(out + "/latest.ckpt");
        if (sig != SIGINT) continue;
        RunResult r = run_command("./train --resume " + out + format(" --steps %lld", n + 2));
        ASSERT_EQ(r.exit_code, 0) << r.output;
        EXPECT_NE(r.output.find(format("resumed from %s/latest.ckpt at step %lld", out.c_str(), n)), std::string::npos)
            << r.output;
        EXPECT_NE(r.output.find(format("step %5lld/%lld | loss", n + 1, n + 2)), std::string::npos) << r.output;
        EXPECT_EQ(r.output.find(format("step %5lld/%lld | loss", n, n + 2)), std::string::npos) << r.output;
    }

    // a second Ctrl-C quits at once, still with 130 (whether or not the first got to its checkpoint), and
    // whatever checkpoint is there is whole
    std::filesystem::remove(out + "/metrics.jsonl");
    pid_t pid = spawn(train_cmd("--steps 100000"), out + "/log.txt");
    ASSERT_TRUE(wait_until([&] { return count_step_lines(out + "/metrics.jsonl") >= 3; }));
    kill(pid, SIGINT);
    kill(pid, SIGINT);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status)) << read_text(out + "/log.txt");
    EXPECT_EQ(WEXITSTATUS(status), 130);
    expect_loads(out + "/latest.ckpt");
}

TEST_F(TrainRobust, KillAtAnyMomentLeavesALoadableCheckpoint) {
    const std::string ckpt = out + "/latest.ckpt";
    for (int delay_us : {0, 700, 1900, 4300, 9100}) {
        SCOPED_TRACE(delay_us);
        std::filesystem::remove(ckpt);
        pid_t pid = spawn(train_cmd("--steps 100000 --ckpt-every 1"), out + "/log.txt");
        ASSERT_TRUE(wait_until([&] { return file_exists(ckpt); })) << read_text(out + "/log.txt");
        usleep(delay_us);
        kill(pid, SIGKILL);
        int status = 0;
        ASSERT_EQ(waitpid(pid, &status, 0), pid);
        EXPECT_TRUE(WIFSIGNALED(status));
        // every file under a checkpoint's final name is whole (a half-written one may only be a .tmp)
        int checkpoints = 0;
        for (const auto& e : std::filesystem::directory_iterator(out))
            if (e.path().extension() == ".ckpt") {
                expect_loads(e.path().string());
                checkpoints++;
            }
        EXPECT_EQ(checkpoints, 1);
    }
}

TEST_F(TrainRobust, NonFiniteReportNamesTheTensor) {
    ASSERT_EQ(run_command(train_cmd("--steps 2")).exit_code, 0);
    // one NaN weight in a known tensor, saved properly (valid checksum)
    const std::string ckpt = out + "/latest.ckpt";
    CheckpointInfo info = read_checkpoint_info(ckpt);
    Model model(info.config, 0);
    AdamW adam(OptimizerConfig{}, model.num_params());
    load_checkpoint(ckpt, model, &adam);
    model.params()[model.tensor("model.layers.0.mlp.down_proj.weight").offset + 5] = NAN;
    save_checkpoint(ckpt, model, &adam, info.state, info.flags);

    RunResult r = run_command("./train --resume " + ckpt + " --steps 4");
    EXPECT_EQ(r.exit_code, 1) << r.output;
    for (const char* s : {// the down projection's output lands in the residual stream after the (only) layer
                          "error: step 3: loss is nan (first non-finite activation: final.residual)",
                          "parameter model.layers.0.mlp.down_proj.weight is nan", "gradient of model.", "--on-nan skip"})
        EXPECT_NE(r.output.find(s), std::string::npos) << s << "\n" << r.output;
    r = run_command("./train --resume " + ckpt + " --steps 4 --on-nan skip");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("step 3: loss is nan"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("parameter model.layers.0.mlp.down_proj.weight is nan"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("skipped 2 steps"), std::string::npos) << r.output;
}

TEST(TrainNonFinite, DescribeNamesTheFirstBadGradientAndActivation) {
    Model m(hf_config(19), 3);
    Rng rng(11);
    std::vector<int> in(12), tg(12);
    for (int i = 0; i < 12; i++) in[i] = (int)rng.below(19), tg[i] = (int)rng.below(19);
    m.zero_grad();
    float loss = m.forward(in.data(), tg.data(), 2, 6);
    m.backward(1.0f);
    EXPECT_EQ(describe_non_finite(m, loss), "");
    m.grads()[m.tensor("model.layers.1.mlp.down_proj.weight").offset + 7] = INFINITY;
    EXPECT_EQ(describe_non_finite(m, loss), "gradient of model.layers.1.mlp.down_proj.weight is inf");
    m.grads()[m.tensor("model.layers.0.self_attn.k_proj.weight").offset + 2] = -INFINITY;
    EXPECT_EQ(describe_non_finite(m, loss), "gradient of model.layers.0.self_attn.k_proj.weight is -inf");

    // a NaN weight in layer 1's q_proj: the loss, the first bad activation (layer 1's q) and the weight
    m.params()[m.tensor("model.layers.1.self_attn.q_proj.weight").offset + 3] = NAN;
    m.zero_grad();
    loss = m.forward(in.data(), tg.data(), 2, 6);
    m.backward(1.0f);
    std::string d = describe_non_finite(m, loss);
    EXPECT_EQ(d.rfind("loss is nan (first non-finite activation: layers.1.q); "
                      "parameter model.layers.1.self_attn.q_proj.weight is nan; gradient of ", 0), 0u) << d;
}
