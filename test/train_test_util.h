// train_test_util.h: helpers shared by the trainer's tests (data loader, checkpoint, resume, CLI):
// scratch directories, synthetic shards, running a program and capturing its output.
#pragma once

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "../kernels/common.h"
#include "../tools/shard.h"
#include "../tools/trainer.h"
#include "test_util.h"

namespace llmq_test {

inline std::string temp_dir(const char* tag) {
    std::string tmpl = std::string("/tmp/llmq_") + tag + "_XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    const char* d = mkdtemp(buf.data());
    if (!d) throw llmq::Error("mkdtemp failed for " + tmpl);
    return d;
}

// The adapter methods' training run: the 2-layer GQA model of dim 64 (ffn 128, 32 positions) on `data` without a
// tokenizer, lr 1e-2, rank 4, into `out`: 40 steps of 4 x 32 with 4 of warmup and 4 val batches (a run that
// learns); no checkpoints but the final one.
inline llmq::TrainOptions adapter_test_run(const std::string& data, const std::string& out) {
    llmq::TrainOptions o;
    o.dim = 64, o.ffn_dim = 128, o.n_layers = 2, o.n_heads = 4, o.n_kv_heads = 2, o.max_seq_len = 32;
    o.data = data;
    o.encoding = "none";
    o.steps = 40, o.batch = 4, o.seq = 32, o.warmup = 4, o.lr = 1e-2f;
    o.eval_every = 0, o.val_batches = 4, o.ckpt_every = 0;
    o.rank = 4;
    o.out = out;
    return o;
}

// The same, shortened for resume tests: 8 steps of 2 x 16, 2 of warmup, 2 val batches, a checkpoint every 4.
inline llmq::TrainOptions adapter_resume_run(const std::string& data, const std::string& out) {
    llmq::TrainOptions o = adapter_test_run(data, out);
    o.steps = 8, o.batch = 2, o.seq = 16, o.warmup = 2;
    o.val_batches = 2, o.ckpt_keep_every = 4;
    return o;
}

// Runs o (8 steps, keeping a checkpoint every 4), then again from its step-4 checkpoint into o.out + "_resumed";
// expects the resumed run to start at step 4 with four losses and a final val loss bit-identical to the
// uninterrupted run's. Returns the resumed run's options (its out holds the second run's checkpoints) and, in
// *full, the uninterrupted run's result.
inline llmq::TrainOptions expect_resume_bit_identical(const llmq::TrainOptions& o, llmq::TrainResult* full_out = nullptr) {
    EXPECT_EQ(o.steps, 8);
    EXPECT_EQ(o.ckpt_keep_every, 4);
    FILE* quiet = fopen("/dev/null", "w");
    llmq::TrainResult full = llmq::train(o, quiet);
    llmq::TrainOptions resumed = o;
    resumed.resume = o.out + "/ckpt_step_000004.ckpt";
    resumed.out = o.out + "_resumed";
    llmq::TrainResult second = llmq::train(resumed, quiet);
    fclose(quiet);
    EXPECT_EQ(second.first_step, 4);
    EXPECT_EQ(full.losses.size(), 8u);
    EXPECT_EQ(second.losses.size(), 4u);
    if (full.losses.size() == 8 && second.losses.size() == 4) {
        EXPECT_EQ(0, memcmp(&full.losses[4], second.losses.data(), 4 * sizeof(float)))
            << o.method << ": " << ::testing::PrintToString(full.losses) << " vs "
            << ::testing::PrintToString(second.losses);
    }
    EXPECT_EQ(full.val_loss, second.val_loss);
    if (full_out) *full_out = full;
    return resumed;
}

// Trains o with its log going to o.out/log.txt; returns the log's text (and the result in *result).
inline std::string train_and_read_log(const llmq::TrainOptions& o, llmq::TrainResult* result = nullptr);

// How many times needle occurs in text.
inline size_t count_occurrences(const std::string& text, const std::string& needle) {
    size_t n = 0;
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) n++;
    return n;
}

inline bool file_exists(const std::string& p) {
    struct stat st;
    return stat(p.c_str(), &st) == 0;
}

inline std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

inline std::string train_and_read_log(const llmq::TrainOptions& o, llmq::TrainResult* result) {
    const std::string log_path = o.out + "/log.txt";
    FILE* log = fopen(log_path.c_str(), "w");
    llmq::TrainResult r = llmq::train(o, log);
    fclose(log);
    if (result) *result = r;
    return read_text(log_path);
}

// The last value of key in dir/metrics.jsonl (the run's last line that has it); NAN when none has it.
inline double last_metric(const std::string& dir, const std::string& key) {
    const std::string m = read_text(dir + "/metrics.jsonl"), tag = "\"" + key + "\":";
    const size_t at = m.rfind(tag);
    return at == std::string::npos ? NAN : std::stod(m.substr(at + tag.size()));
}

inline void write_text(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary);
    out << text;
}

// A shard of n ids drawn from a small Markov chain over vocab (next = (prev*7 + noise) % vocab), so a model
// has something to learn and the ids are never all equal.
inline std::vector<uint32_t> markov_tokens(llmq::Rng& rng, size_t n, uint32_t vocab) {
    std::vector<uint32_t> v(n);
    uint32_t prev = (uint32_t)rng.below(vocab);
    for (auto& x : v) {
        prev = (uint32_t)((prev * 7 + rng.below(3)) % vocab);
        x = prev;
    }
    return v;
}

// A scratch directory with one train and one val shard of Markov tokens (markov_tokens) over vocab.
inline std::string markov_corpus(const char* tag, uint64_t seed, size_t train_tokens, size_t val_tokens,
                                 uint32_t vocab) {
    std::string dir = temp_dir(tag);
    llmq::Rng rng(seed);
    std::vector<uint32_t> train = markov_tokens(rng, train_tokens, vocab), val = markov_tokens(rng, val_tokens, vocab);
    llmq::write_shard(dir + "/syn_train_000000.bin", train.data(), train.size(), vocab, 0);
    llmq::write_shard(dir + "/syn_val_000000.bin", val.data(), val.size(), vocab, 0);
    return dir;
}

struct RunResult {
    int exit_code;
    std::string output;  // stdout and stderr together
};

// Runs a shell command line, capturing stdout and stderr.
inline RunResult run_command(const std::string& cmd) {
    RunResult r{-1, ""};
    FILE* p = popen((cmd + " 2>&1").c_str(), "r");
    if (!p) return r;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
    int status = pclose(p);
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return r;
}

}  // namespace llmq_test
