// Tests of ./train as a program (run from the repository root after `make` built it): a short run writes
// metrics.jsonl with the documented fields, loss.svg and a checkpoint; --help lists every flag; bad input
// exits non-zero with a message naming the file or flag; a non-finite loss stops (or is skipped).
#include <gtest/gtest.h>

#include <cmath>

#include "../tools/checkpoint.h"
#include "../tools/metrics.h"
#include "../tools/trainer.h"
#include "train_test_util.h"

using namespace llmq;
using namespace llmq_test;

namespace {
const char* kSmall = " --encoding none --dim 32 --ffn-dim 64 --n-layers 1 --n-heads 2 --n-kv-heads 1"
                     " --max-seq-len 32 --batch 2 --seq 16 --threads 1 --sample-tokens 0";

struct Fixture : ::testing::Test {
    std::string data, out;
    void SetUp() override {
        ASSERT_TRUE(file_exists("./train")) << "./train is not built: run `make train` (tests run from the repo root)";
        data = temp_dir("cli_data");
        out = temp_dir("cli_out");
        Rng rng(23);
        std::vector<uint32_t> train = markov_tokens(rng, 600, 64), val = markov_tokens(rng, 100, 64);
        write_shard(data + "/syn_train_000000.bin", train.data(), train.size(), 64, 0);
        write_shard(data + "/syn_val_000000.bin", val.data(), val.size(), 64, 0);
    }
    RunResult train(const std::string& flags) { return run_command("./train --data " + data + " --out " + out + kSmall + " " + flags); }
    // The run fails with exit code 1 and an "error: " line containing every one of `needles`.
    void expect_error(const RunResult& r, std::vector<std::string> needles) {
        EXPECT_EQ(r.exit_code, 1) << r.output;
        EXPECT_NE(r.output.find("error: "), std::string::npos) << r.output;
        for (const std::string& n : needles) EXPECT_NE(r.output.find(n), std::string::npos) << n << "\n" << r.output;
    }
};
using TrainCli = Fixture;
}  // namespace

TEST_F(TrainCli, ShortRunWritesMetricsPlotAndCheckpoint) {
    RunResult r = train("--steps 6 --eval-every 3 --val-batches 2 --out " + out);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("unigram entropy of val tokens: "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("step     6/6 | loss "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("final val loss "), std::string::npos) << r.output;
    std::string log = read_text(out + "/metrics.jsonl");
    int step_lines = 0, val_lines = 0;
    size_t start = 0;
    for (size_t end; (end = log.find('\n', start)) != std::string::npos; start = end + 1) {
        std::string line = log.substr(start, end - start);
        double v;
        if (json_number(line, "loss", &v)) {
            step_lines++;
            EXPECT_TRUE(std::isfinite(v) && v > 0) << line;
            for (const char* field : {"step", "lr", "grad_norm", "tokens_per_s", "mem_bytes"})
                EXPECT_TRUE(json_number(line, field, &v) && v > 0) << field << " in " << line;
        } else if (json_number(line, "val_loss", &v)) {
            val_lines++;
            EXPECT_TRUE(json_number(line, "step", &v)) << line;
        }
    }
    EXPECT_EQ(step_lines, 6);
    EXPECT_EQ(val_lines, 2);  // step 3 and the final one
    std::string svg = read_text(out + "/loss.svg");
    EXPECT_EQ(svg.find("<svg"), 0u);
    EXPECT_NE(svg.find("polyline"), std::string::npos);
    CheckpointInfo info = read_checkpoint_info(out + "/latest.ckpt");
    EXPECT_EQ(info.state.step, 6);
    EXPECT_EQ(info.config.dim, 32);

    // resuming from the directory continues with the stored flags
    r = run_command("./train --resume " + out + " --steps 8");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("resumed from " + out + "/latest.ckpt at step 6"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("step     8/8"), std::string::npos) << r.output;
}

TEST_F(TrainCli, HelpListsEveryFlagWithItsDefault) {
    RunResult r = run_command("./train --help");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    TrainOptions o;
    FlagSet flags;
    add_train_flags(flags, o);
    for (const auto& kv : flags.values()) EXPECT_NE(r.output.find("--" + kv.first + " "), std::string::npos) << kv.first;
    size_t defaults = 0;
    for (size_t p = r.output.find("(default: "); p != std::string::npos; p = r.output.find("(default: ", p + 1))
        defaults++;
    EXPECT_EQ(defaults, flags.values().size());
    r = run_command("./train sample --help");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("--temperature"), std::string::npos) << r.output;
}

TEST_F(TrainCli, BadFlagsAreNamed) {
    expect_error(train("--model huge"), {"--model", "huge"});
    expect_error(train("--steps abc"), {"--steps: 'abc' is not an integer"});
    expect_error(train("--steps 0"), {"--steps 0 must be positive"});
    expect_error(train("--frobnicate 3"), {"unknown flag --frobnicate"});
    expect_error(train("--on-nan maybe"), {"--on-nan"});
    expect_error(train("--seq 64"), {"--seq 64 is longer than the model's max_seq_len 32"});
    expect_error(train("--batch 100000000"), {"--batch 100000000", "lower --batch"});
    // what the GPU backend does not run is refused by name, GPU or not (no GPU: test_train_cuda.cu)
    expect_error(train("--device cuda --method lora --steps 1"),
                 {"--device cuda: --method lora runs on the CPU backend only", "use --device cpu"});
    expect_error(train("--device cuda --steps 1"), {"--device cuda: head_dim 16 (dim 32 / 2 heads)"});
    expect_error(train("--profile 3 --steps 1"), {"--profile 3 needs --device cuda"});
}

TEST_F(TrainCli, BadShardsAreNamed) {
    std::string missing = data + "/nowhere";
    expect_error(run_command("./train --data " + missing + " --out " + out + kSmall), {missing});
    std::string empty = temp_dir("cli_empty");
    expect_error(run_command("./train --data " + empty + " --out " + out + kSmall), {empty, "no train shards"});
    // a corrupt (truncated) shard, then one with a wrong magic
    std::string path = data + "/syn_train_000000.bin";
    std::string good = read_text(path);
    write_text(path, good.substr(0, good.size() - 7));
    expect_error(train("--steps 1"), {path, "corrupt shard"});
    std::string bad = good;
    bad[0] ^= 0x21;
    write_text(path, bad);
    expect_error(train("--steps 1"), {path, "not a token shard"});
    // a token id past the vocabulary (patched into the uint16 body)
    bad = good;
    for (size_t i = 5; i < 600; i += 16) {  // in every window, whichever the shuffle draws first
        bad[1024 + 2 * i] = (char)0xC8;       // id 200 >= 64
        bad[1024 + 2 * i + 1] = 0;
    }
    write_text(path, bad);
    expect_error(train("--steps 2"), {path, "token id 200", "past the vocabulary (64)"});
}

TEST_F(TrainCli, BadCheckpointsAreNamed) {
    ASSERT_EQ(train("--steps 2 --out " + out).exit_code, 0);
    std::string ckpt = out + "/latest.ckpt", copy = out + "/copy.ckpt";
    std::string good = read_text(ckpt);
    write_text(copy, good.substr(0, good.size() / 2));
    expect_error(run_command("./train --resume " + copy + " --steps 4"), {copy, "truncated"});
    std::string bad = good;
    bad[good.size() - 40] ^= 1;
    write_text(copy, bad);
    expect_error(run_command("./train --resume " + copy + " --steps 4"), {copy, "checksum"});
    expect_error(run_command("./train --resume " + out + "/absent.ckpt"), {out + "/absent.ckpt", "cannot open"});
    expect_error(run_command("./train --resume " + ckpt + " --seq 8"), {"--seq 8 differs"});
    expect_error(run_command("./train sample --ckpt " + copy), {copy});
    expect_error(run_command("./train sample"), {"--ckpt"});
}

TEST_F(TrainCli, NonFiniteLossStopsOrIsSkipped) {
    ASSERT_EQ(train("--steps 2 --out " + out).exit_code, 0);
    // a diverged checkpoint: NaN parameters, saved properly (valid checksum)
    std::string ckpt = out + "/latest.ckpt";
    CheckpointInfo info = read_checkpoint_info(ckpt);
    Model model(info.config, 0);
    AdamW adam(OptimizerConfig{}, model.num_params());
    load_checkpoint(ckpt, model, &adam);
    for (size_t i = 0; i < model.num_params(); i++) model.params()[i] = NAN;
    save_checkpoint(ckpt, model, &adam, info.state, info.flags);

    RunResult r = run_command("./train --resume " + ckpt + " --steps 4");
    expect_error(r, {"step 3: loss is nan", "--on-nan skip"});
    r = run_command("./train --resume " + ckpt + " --steps 4 --on-nan skip --val-batches 0");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("step 3: loss is nan"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("skipped 2 steps"), std::string::npos) << r.output;
}

TEST_F(TrainCli, SampleGeneratesReproducibleTextFromACheckpoint) {
    // shards in gpt2's vocabulary (ids drawn from a small range of it), so the gpt2 tokenizer decodes them
    std::string gdata = temp_dir("cli_gpt2");
    Rng rng(31);
    std::vector<uint32_t> ids = markov_tokens(rng, 300, 2000);
    write_shard(gdata + "/g_train_000000.bin", ids.data(), 250, 50257, 50256);
    write_shard(gdata + "/g_val_000000.bin", ids.data() + 250, 50, 50257, 50256);
    RunResult r = run_command("./train --data " + gdata + " --out " + out +
                              " --encoding gpt2 --dim 16 --ffn-dim 32 --n-layers 1 --n-heads 2 --n-kv-heads 1"
                              " --batch 1 --seq 8 --steps 2 --sample-tokens 3 --threads 1");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("tokenizer: gpt2, vocab 50257"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("sample at step 2:"), std::string::npos) << r.output;
    std::string cmd = "./train sample --ckpt " + out + " --prompt 'Hello there' --tokens 4 --seed 5 --threads 1";
    RunResult a = run_command(cmd), b = run_command(cmd);
    ASSERT_EQ(a.exit_code, 0) << a.output;
    EXPECT_EQ(a.output.rfind("Hello there", 0), 0u) << a.output;
    EXPECT_GT(a.output.size(), std::string("Hello there\n").size()) << a.output;
    EXPECT_EQ(a.output, b.output) << "the same seed gives the same sample";
    expect_error(run_command("./train sample --ckpt " + out + " --encoding cl100k_base"), {"cl100k_base", "50257"});
    // shards of one tokenizer, trained as if from another: refused, naming the flag
    expect_error(run_command("./train --data " + gdata + " --out " + out + " --encoding cl100k_base --steps 1 --batch 1 --seq 8 --dim 16 --n-layers 1"),
                 {"--encoding cl100k_base", "50257"});
}
