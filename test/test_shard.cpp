// Tests of tools/shard.h: the shard file format, the streaming ShardWriter, and errors naming the file.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "../kernels/common.h"
#include "../tools/shard.h"

using namespace llmq;

namespace {
std::string temp_dir() {
    char tmpl[] = "/tmp/llmq_shard_test_XXXXXX";
    const char* d = mkdtemp(tmpl);
    EXPECT_TRUE(d);
    return d;
}
bool exists(const std::string& p) {
    struct stat st;
    return stat(p.c_str(), &st) == 0;
}
std::vector<uint32_t> random_ids(Rng& rng, size_t n, uint32_t vocab) {
    std::vector<uint32_t> v(n);
    for (auto& x : v) x = (uint32_t)rng.below(vocab);
    return v;
}
std::vector<int32_t> raw_header(const std::string& path) {
    std::vector<int32_t> h(kShardHeaderInts, -12345);
    FILE* f = fopen(path.c_str(), "rb");
    EXPECT_TRUE(f);
    EXPECT_EQ(fread(h.data(), 4, h.size(), f), h.size());
    fclose(f);
    return h;
}
void expect_error_naming(const std::string& path, const std::string& needle) {
    try {
        read_shard(path);
        ADD_FAILURE() << "no error reading " << path;
    } catch (const Error& e) {
        std::string msg = e.what();
        EXPECT_NE(msg.find(path), std::string::npos) << msg;
        EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    }
}
}  // namespace

TEST(Shard, RoundTripUint16HeaderFields) {
    std::string dir = temp_dir();
    Rng rng(11);
    auto ids = random_ids(rng, 5000, 50257);
    std::string path = dir + "/a.bin";
    write_shard(path, ids.data(), ids.size(), 50257, 50256);
    EXPECT_FALSE(exists(path + ".tmp"));
    auto h = raw_header(path);
    EXPECT_EQ(h[0], kShardMagic16);
    EXPECT_EQ(h[1], kShardVersion16);
    EXPECT_EQ(h[2], 5000);
    EXPECT_EQ(h[3], 2);
    EXPECT_EQ(h[4], 50257);
    EXPECT_EQ(h[5], 50256);
    for (int i = 6; i < kShardHeaderInts; i++) ASSERT_EQ(h[i], 0) << i;
    ShardHeader sh = read_shard_header(path);
    EXPECT_EQ(sh.num_tokens, 5000);
    EXPECT_EQ(sh.token_bytes, 2);
    EXPECT_EQ(read_shard(path), ids);
    struct stat st;
    ASSERT_EQ(stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_size, 1024 + 2 * 5000);
}

TEST(Shard, Uint32WhenVocabPast65536) {
    std::string dir = temp_dir();
    Rng rng(12);
    auto ids = random_ids(rng, 3000, 200019);
    ids[7] = 200018;  // an id that needs more than 16 bits
    std::string path = dir + "/b.bin";
    write_shard(path, ids.data(), ids.size(), 200019, 199999);
    auto h = raw_header(path);
    EXPECT_EQ(h[0], kShardMagic32);
    EXPECT_EQ(h[1], kShardVersion32);
    EXPECT_EQ(h[3], 4);
    EXPECT_EQ(read_shard(path), ids);
    EXPECT_EQ(shard_token_bytes_for_vocab(65536), 2);
    EXPECT_EQ(shard_token_bytes_for_vocab(65537), 4);
}

TEST(Shard, StreamingWriterEqualsOneShotWrite) {
    std::string dir = temp_dir();
    Rng rng(13);
    auto ids = random_ids(rng, 10000, 1000);
    write_shard(dir + "/one.bin", ids.data(), ids.size(), 1000, 999);
    {
        ShardWriter w(dir + "/stream.bin", 1000, 999);
        size_t pos = 0;
        while (pos < ids.size()) {  // uneven pieces, including empty ones
            size_t n = std::min<size_t>(rng.below(700), ids.size() - pos);
            w.append(ids.data() + pos, n);
            pos += n;
        }
        EXPECT_FALSE(exists(dir + "/stream.bin")) << "final name must not appear before close()";
        EXPECT_TRUE(exists(dir + "/stream.bin.tmp"));
        w.close();
        EXPECT_EQ(w.num_tokens(), 10000);
    }
    std::ifstream a(dir + "/one.bin", std::ios::binary), b(dir + "/stream.bin", std::ios::binary);
    std::string sa((std::istreambuf_iterator<char>(a)), {}), sb((std::istreambuf_iterator<char>(b)), {});
    EXPECT_EQ(sa.size(), 1024u + 20000u);
    EXPECT_EQ(sa, sb);
}

TEST(Shard, AbandonedWriterLeavesNothing) {
    std::string dir = temp_dir();
    std::vector<uint32_t> ids = {1, 2, 3};
    {
        ShardWriter w(dir + "/x.bin", 100, 99);
        w.append(ids);
    }  // destroyed without close(), as when an exception unwinds
    EXPECT_FALSE(exists(dir + "/x.bin"));
    EXPECT_FALSE(exists(dir + "/x.bin.tmp"));
    // an id past the vocabulary fails the write and removes the temporary file
    ShardWriter w(dir + "/y.bin", 100, 99);
    std::vector<uint32_t> bad = {5, 100};
    EXPECT_THROW(w.append(bad), Error);
    EXPECT_FALSE(exists(dir + "/y.bin.tmp"));
    EXPECT_FALSE(exists(dir + "/y.bin"));
}

TEST(Shard, UnwritableDirectoryIsAnErrorNamingTheFile) {
    std::string path = "/nonexistent_llmq_dir/s.bin";
    try {
        std::vector<uint32_t> ids = {1};
        write_shard(path, ids.data(), 1, 10, 9);
        FAIL() << "no error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
}

TEST(Shard, CorruptOrMissingShardIsAnErrorNamingTheFile) {
    std::string dir = temp_dir();
    expect_error_naming(dir + "/missing.bin", "cannot open");
    Rng rng(14);
    auto ids = random_ids(rng, 100, 500);
    std::string good = dir + "/good.bin";
    write_shard(good, ids.data(), ids.size(), 500, 499);
    std::ifstream in(good, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});

    auto write_bytes = [&](const std::string& name, const std::string& content) {
        std::ofstream(dir + "/" + name, std::ios::binary) << content;
        return dir + "/" + name;
    };
    expect_error_naming(write_bytes("short.bin", bytes.substr(0, 100)), "truncated");
    expect_error_naming(write_bytes("cut.bin", bytes.substr(0, bytes.size() - 2)), "corrupt");
    std::string bad_magic = bytes;
    bad_magic[0] ^= 0x55;
    expect_error_naming(write_bytes("magic.bin", bad_magic), "not a token shard");
    std::string bad_id = bytes;
    bad_id[1024] = (char)0xff;  // first token becomes >= 255, past the vocabulary of 500 once the high byte is set
    bad_id[1025] = (char)0xff;
    expect_error_naming(write_bytes("id.bin", bad_id), "past the vocabulary");
}
