// Tests of tools/dataloader.h: windows and targets, the shuffled per-epoch order, exact resume from a
// position, the fixed val order, the ways to name shards, and errors naming the file.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <set>

#include "../tools/dataloader.h"
#include "train_test_util.h"

using namespace llmq;
using namespace llmq_test;

namespace {
// Two train shards whose ids are their global positions (so a window names itself) and one val shard.
struct Corpus {
    std::string dir = temp_dir("dataloader");
    static constexpr uint32_t kVocab = 1000;
    std::vector<uint32_t> shard0, shard1;
    Corpus() {
        for (uint32_t i = 0; i < 101; i++) shard0.push_back(1 + i);
        for (uint32_t i = 0; i < 60; i++) shard1.push_back(500 + i);
        write_shard(dir + "/c_train_000000.bin", shard0.data(), shard0.size(), kVocab, 0);
        write_shard(dir + "/c_train_000001.bin", shard1.data(), shard1.size(), kVocab, 0);
        std::vector<uint32_t> val;
        for (uint32_t i = 0; i < 50; i++) val.push_back(900 + i);
        write_shard(dir + "/c_val_000000.bin", val.data(), val.size(), kVocab, 0);
    }
};

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}
}  // namespace

TEST(DataLoader, EpochVisitsEveryWindowOnceWithShiftedTargets) {
    Corpus c;
    const int B = 3, T = 10;
    DataLoader dl(c.dir, "train", B, T, 42, true);
    // shard0: 101 tokens -> 10 windows; shard1: 60 tokens -> 5 windows (stride T, T+1 tokens each)
    ASSERT_EQ(dl.num_windows(), 15u);
    EXPECT_EQ(dl.vocab_size(), (int)Corpus::kVocab);
    std::vector<int> x(B * T, -7), y(B * T, -7);
    std::multiset<int> starts;
    for (int batch = 0; batch < 5; batch++) {
        dl.next_batch(x.data(), y.data());
        for (int b = 0; b < B; b++) {
            starts.insert(x[b * T]);
            for (int t = 0; t < T; t++) ASSERT_EQ(y[b * T + t], x[b * T + t] + 1) << "targets are inputs shifted";
        }
    }
    std::multiset<int> expected;
    for (int w = 0; w < 10; w++) expected.insert(1 + w * T);
    for (int w = 0; w < 5; w++) expected.insert(500 + w * T);
    EXPECT_EQ(starts, expected);
    EXPECT_EQ(dl.position().epoch, 0u);
    EXPECT_EQ(dl.position().index, 15u);
}

TEST(DataLoader, OrderDependsOnSeedAndEpochAndResumesExactly) {
    Corpus c;
    const int B = 2, T = 10;
    auto draw = [&](DataLoader& dl, int batches) {
        std::vector<int> all, x(B * T), y(B * T);
        for (int i = 0; i < batches; i++) {
            dl.next_batch(x.data(), y.data());
            all.insert(all.end(), x.begin(), x.end());
            all.insert(all.end(), y.begin(), y.end());
        }
        return all;
    };
    DataLoader a(c.dir, "train", B, T, 7, true), b(c.dir, "train", B, T, 7, true), other(c.dir, "train", B, T, 8, true);
    std::vector<int> first = draw(a, 7);  // 14 windows: crosses into epoch 1 on the next batch
    EXPECT_EQ(first, draw(b, 7));
    EXPECT_NE(first, draw(other, 7));
    DataPosition pos = a.position();
    std::vector<int> rest = draw(a, 9);  // runs through epoch 1 into epoch 2
    EXPECT_EQ(a.position().epoch, 2u);
    DataLoader resumed(c.dir, "train", B, T, 7, true);
    resumed.set_position(pos);
    EXPECT_EQ(draw(resumed, 9), rest);
    // epochs are permuted differently (15! orders; equal by chance with negligible probability)
    DataLoader e(c.dir, "train", 15, T, 7, true);
    std::vector<int> x(15 * T), y(15 * T), x2(15 * T);
    e.next_batch(x.data(), y.data());
    e.next_batch(x2.data(), y.data());
    EXPECT_NE(x, x2);
}

TEST(DataLoader, ValIsInFileOrder) {
    Corpus c;
    DataLoader val(c.dir, "val", 2, 8, 7, false);
    std::vector<int> x(16, -1), y(16, -1);
    val.next_batch(x.data(), y.data());
    EXPECT_EQ(x[0], 900);
    EXPECT_EQ(x[8], 908);
    EXPECT_EQ(y[15], 916);
    val.reset();
    std::vector<int> x2(16, -1);
    val.next_batch(x2.data(), y.data());
    EXPECT_EQ(x, x2);
}

TEST(DataLoader, FindsShardsByDirectoryGlobAndPrefix) {
    Corpus c;
    EXPECT_EQ(DataLoader::find_shards(c.dir, "train").size(), 2u);
    EXPECT_EQ(DataLoader::find_shards(c.dir + "/*.bin", "train").size(), 2u);
    EXPECT_EQ(DataLoader::find_shards(c.dir + "/c", "val").size(), 1u);
    EXPECT_EQ(DataLoader::find_shards(c.dir + "/c_train_000001.bin", "train").size(), 1u);
}

TEST(DataLoader, ErrorsNameTheFile) {
    Corpus c;
    std::string missing = c.dir + "/nope/";
    EXPECT_NE(error_of([&] { DataLoader(missing, "train", 1, 4, 1, true); }).find(missing), std::string::npos);
    std::string empty = temp_dir("dataloader_empty");
    std::string msg = error_of([&] { DataLoader(empty, "train", 1, 4, 1, true); });
    EXPECT_NE(msg.find(empty), std::string::npos) << msg;
    EXPECT_NE(msg.find("no train shards"), std::string::npos) << msg;
    // too short for one window
    msg = error_of([&] { DataLoader(c.dir, "val", 1, 50, 1, true); });
    EXPECT_NE(msg.find("too few"), std::string::npos) << msg;

    // truncated shard: the header promises more tokens than the file holds
    std::string bad = temp_dir("dataloader_bad");
    std::string path = bad + "/x_train_000000.bin";
    std::string bytes = read_text(c.dir + "/c_train_000000.bin");
    write_text(path, bytes.substr(0, bytes.size() - 10));
    msg = error_of([&] { DataLoader(bad, "train", 1, 4, 1, true); });
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("corrupt"), std::string::npos) << msg;
    // wrong magic
    bytes[0] ^= 0x55;
    write_text(path, bytes);
    msg = error_of([&] { DataLoader(bad, "train", 1, 4, 1, true); });
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("magic"), std::string::npos) << msg;
}

TEST(DataLoader, TokenPastTheVocabularyNamesFileAndId) {
    Corpus c;
    DataLoader dl(c.dir, "val", 1, 8, 1, false);
    dl.set_vocab_limit(905);  // the val shard holds 900..949
    std::vector<int> x(8), y(8);
    std::string msg = error_of([&] { dl.next_batch(x.data(), y.data()); });
    EXPECT_NE(msg.find("c_val_000000.bin"), std::string::npos) << msg;
    EXPECT_NE(msg.find("token id 905"), std::string::npos) << msg;
}
