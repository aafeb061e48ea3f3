// Tests of tools/checkpoint.h: an exact round trip of parameters, AdamW state, training state and flags;
// errors naming the file for bad magic, version, truncation, corruption and a model that does not match;
// and the atomic write (nothing under the final name when the write fails).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>

#include "../tools/checkpoint.h"
#include "train_test_util.h"

using namespace llmq;
using namespace llmq_test;

namespace {
ModelConfig small_config() {
    ModelConfig c = ModelConfig::preset("tiny", 64);
    c.dim = 32;
    c.ffn_dim = 64;
    c.n_layers = 1;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.max_seq_len = 32;
    c.validate();
    return c;
}

void fill_random(float* x, size_t n, Rng& rng) {
    for (size_t i = 0; i < n; i++) x[i] = rng.normal();
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

// A saved checkpoint with random parameters and optimizer state, and what went into it.
struct Saved {
    std::string dir = temp_dir("ckpt");
    std::string path = dir + "/latest.ckpt";
    ModelConfig config = small_config();
    Model model{config, 11};
    AdamW adam{OptimizerConfig{}, model.num_params()};
    TrainState state{1234, 3, 77, 0xDEADBEEFCAFEull};
    FlagValues flags{{"lr", "0.001"}, {"data", "some dir/with space"}, {"encoding", "gpt2"}};
    Saved() {
        Rng rng(5);
        fill_random(model.params(), model.num_params(), rng);
        fill_random(adam.m().data(), adam.m().size(), rng);
        for (float& v : adam.v()) v = rng.uniform() + 0.1f;
        adam.set_steps_taken(1234);
        save_checkpoint(path, model, &adam, state, flags);
    }
};
}  // namespace

TEST(Checkpoint, RoundTripIsExact) {
    Saved s;
    EXPECT_FALSE(file_exists(s.path + ".tmp"));
    CheckpointInfo info = read_checkpoint_info(s.path);
    EXPECT_EQ(info.version, kCheckpointVersion);
    EXPECT_EQ(info.config.dim, 32);
    EXPECT_EQ(info.config.n_kv_heads, 2);
    EXPECT_EQ(info.config.vocab_size, 64);
    EXPECT_EQ(info.num_params, s.model.num_params());
    EXPECT_TRUE(info.has_optimizer);
    EXPECT_EQ(info.state.step, 1234);
    EXPECT_EQ(info.state.data_epoch, 3u);
    EXPECT_EQ(info.state.data_index, 77u);
    EXPECT_EQ(info.state.rng_state, 0xDEADBEEFCAFEull);
    EXPECT_EQ(info.flags, s.flags);
    EXPECT_EQ(info.flag("data"), "some dir/with space");
    EXPECT_EQ(info.flag("absent", "x"), "x");

    Model other(s.config, 99);  // a different init, then overwritten
    AdamW adam(OptimizerConfig{}, other.num_params());
    std::fill(adam.m().begin(), adam.m().end(), NAN);
    std::fill(adam.v().begin(), adam.v().end(), NAN);
    load_checkpoint(s.path, other, &adam);
    size_t n = s.model.num_params();
    EXPECT_EQ(0, memcmp(other.params(), s.model.params(), n * 4));
    EXPECT_EQ(0, memcmp(adam.m().data(), s.adam.m().data(), n * 4));
    EXPECT_EQ(0, memcmp(adam.v().data(), s.adam.v().data(), n * 4));
    EXPECT_EQ(adam.steps_taken(), 1234);

    // weights only: no optimizer arrays, and loading it to resume training is refused
    std::string weights = s.dir + "/weights.ckpt";
    save_checkpoint(weights, s.model, nullptr, s.state, s.flags);
    EXPECT_FALSE(read_checkpoint_info(weights).has_optimizer);
    Model w(s.config, 3);
    load_checkpoint(weights, w, nullptr);
    EXPECT_EQ(0, memcmp(w.params(), s.model.params(), n * 4));
    std::string msg = error_of([&] { load_checkpoint(weights, w, &adam); });
    EXPECT_NE(msg.find("weights only"), std::string::npos) << msg;
}

TEST(Checkpoint, BadFilesAreRejectedNamingTheFile) {
    Saved s;
    std::string good = read_text(s.path);
    std::string bad = s.dir + "/bad.ckpt";
    auto expect_error = [&](const std::string& bytes, const char* what, bool full_load) {
        write_text(bad, bytes);
        Model m(s.config, 1);
        AdamW adam(OptimizerConfig{}, m.num_params());
        std::string msg = error_of([&] {
            if (full_load) load_checkpoint(bad, m, &adam);
            else read_checkpoint_info(bad);
        });
        EXPECT_NE(msg.find(bad), std::string::npos) << msg;
        EXPECT_NE(msg.find(what), std::string::npos) << "expected '" << what << "' in: " << msg;
    };
    std::string b = good;
    b[1] = 'X';
    expect_error(b, "bad magic", false);
    b = good;
    b[8] = 9;  // version
    expect_error(b, "version 9", false);
    expect_error(good.substr(0, good.size() - 100), "truncated", false);
    expect_error(good.substr(0, 12), "truncated", false);
    expect_error(good + "extra", "header promises", false);
    b = good;
    b[good.size() / 2] ^= 0x10;  // a flipped bit in the parameters
    expect_error(b, "checksum mismatch", true);
    b = good;
    b[good.size() - 3] ^= 0x10;  // the end marker
    expect_error(b, "end marker", true);
    expect_error("", "bad magic", false);
    std::string missing = s.dir + "/missing.ckpt";
    EXPECT_NE(error_of([&] { read_checkpoint_info(missing); }).find(missing), std::string::npos);
}

TEST(Checkpoint, ModelOfAnotherShapeIsRefused) {
    Saved s;
    ModelConfig c = s.config;
    c.n_layers = 2;
    Model m(c, 1);
    std::string msg = error_of([&] { load_checkpoint(s.path, m, nullptr); });
    EXPECT_NE(msg.find(s.path), std::string::npos) << msg;
    EXPECT_NE(msg.find("does not match"), std::string::npos) << msg;
}

TEST(Checkpoint, FailedWriteLeavesNothingUnderTheFinalName) {
    Saved s;
    // into a directory that does not exist
    std::string nowhere = s.dir + "/no/such/dir/latest.ckpt";
    std::string msg = error_of([&] { save_checkpoint(nowhere, s.model, &s.adam, s.state, s.flags); });
    EXPECT_NE(msg.find(nowhere), std::string::npos) << msg;
    EXPECT_FALSE(file_exists(nowhere));
    // over a good checkpoint whose temporary cannot be created: the old file stays intact and loadable
    std::string before = read_text(s.path);
    ASSERT_EQ(0, mkdir((s.path + ".tmp").c_str(), 0755));
    Model changed(s.config, 77);
    msg = error_of([&] { save_checkpoint(s.path, changed, &s.adam, s.state, s.flags); });
    EXPECT_NE(msg.find(s.path + ".tmp"), std::string::npos) << msg;
    EXPECT_EQ(read_text(s.path), before);
    rmdir((s.path + ".tmp").c_str());
    // a write that fails midway (a full device) removes its temporary and leaves the old file
    if (file_exists("/dev/full")) {
        std::string full_dir = temp_dir("ckpt_full");
        std::string target = full_dir + "/x.ckpt";
        ASSERT_EQ(0, symlink("/dev/full", (target + ".tmp").c_str()));
        msg = error_of([&] { save_checkpoint(target, s.model, &s.adam, s.state, s.flags); });
        EXPECT_NE(msg.find("write failed"), std::string::npos) << msg;
        EXPECT_FALSE(file_exists(target));
    }
}

TEST(Checkpoint, ResolvesResumeArguments) {
    Saved s;
    EXPECT_EQ(resolve_checkpoint_path(s.dir), s.dir + "/latest.ckpt");
    EXPECT_EQ(resolve_checkpoint_path(s.dir + "/latest"), s.dir + "/latest.ckpt");
    EXPECT_EQ(resolve_checkpoint_path(s.path), s.path);
}

// Methods' state sections come back byte for byte, in order; a corrupt section is caught by the checksum.
TEST(Checkpoint, StateSectionsRoundTrip) {
    Saved s;
    std::vector<StateSection> sections{{"wtacrs", {1, 2, 3, 250}}, {"empty", {}}, {"galore", std::vector<uint8_t>(999, 7)}};
    const std::string path = s.dir + "/sections.ckpt";
    save_checkpoint(path, s.model, &s.adam, s.state, s.flags, nullptr, sections);
    CheckpointInfo head = read_checkpoint_info(path);
    ASSERT_EQ(head.sections.size(), 3u);
    EXPECT_EQ(head.sections[2].bytes.size(), 999u);
    Model m(s.config, 1);
    AdamW adam(OptimizerConfig{}, m.num_params());
    CheckpointInfo info = load_checkpoint(path, m, &adam);
    ASSERT_EQ(info.sections.size(), 3u);
    for (size_t i = 0; i < 3; i++) {
        EXPECT_EQ(info.sections[i].name, sections[i].name);
        EXPECT_EQ(info.sections[i].bytes, sections[i].bytes);
    }
    ASSERT_NE(info.section("galore"), nullptr);
    EXPECT_EQ(info.section("absent"), nullptr);
    std::string bytes = read_text(path);
    bytes[bytes.size() - 16 - 500] ^= 1;  // inside the last section
    write_text(path, bytes);
    EXPECT_NE(error_of([&] { load_checkpoint(path, m, &adam); }).find("checksum mismatch"), std::string::npos);
}

// A version-1 file (written before state sections existed: no has_adapters byte, no section count) still loads.
TEST(Checkpoint, VersionOneFilesStillLoad) {
    Saved s;
    std::string v2 = read_text(s.path);
    uint32_t hbytes = 0;
    memcpy(&hbytes, &v2[12], 4);
    // v2's header ends with u8 has_adapters (0) and u32 n_sections (0): drop those 5 bytes
    std::string body = v2.substr(16 + hbytes, v2.size() - 16 - 16 - hbytes);
    std::string v1 = v2.substr(0, 8);
    const uint32_t version = 1, h1 = hbytes - 5;
    v1.append((const char*)&version, 4);
    v1.append((const char*)&h1, 4);
    v1 += v2.substr(16, h1);
    v1 += body;
    uint64_t hash = 0xcbf29ce484222325ull;  // FNV-1a 64, as checkpoint.cpp
    for (unsigned char c : v1) hash = (hash ^ c) * 0x100000001b3ull;
    v1.append((const char*)&hash, 8);
    v1 += v2.substr(v2.size() - 8);
    const std::string path = s.dir + "/v1.ckpt";
    write_text(path, v1);
    Model m(s.config, 1);
    AdamW adam(OptimizerConfig{}, m.num_params());
    CheckpointInfo info = load_checkpoint(path, m, &adam);
    EXPECT_EQ(info.version, 1u);
    EXPECT_TRUE(info.sections.empty());
    EXPECT_EQ(0, memcmp(m.params(), s.model.params(), m.num_params() * 4));
}
