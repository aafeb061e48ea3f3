// shard.cpp: reading and writing the token shard format described in shard.h.
#include "shard.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <memory>

#include "../kernels/common.h"

namespace llmq {

namespace {
struct FileCloser {
    void operator()(FILE* f) const { if (f) fclose(f); }
};
using File = std::unique_ptr<FILE, FileCloser>;

ShardHeader parse_header(const int32_t* h, const std::string& path) {
    ShardHeader sh;
    if (h[0] == kShardMagic16) {
        LLMQ_CHECK(h[1] == kShardVersion16, "%s: shard version %d, expected %d for uint16 tokens", path.c_str(), h[1],
                   kShardVersion16);
        sh.token_bytes = 2;
    } else if (h[0] == kShardMagic32) {
        LLMQ_CHECK(h[1] == kShardVersion32, "%s: shard version %d, expected %d for uint32 tokens", path.c_str(), h[1],
                   kShardVersion32);
        sh.token_bytes = 4;
    } else {
        throw Error(format("%s: not a token shard (magic %d, expected %d or %d)", path.c_str(), h[0], kShardMagic16,
                           kShardMagic32));
    }
    LLMQ_CHECK(h[2] >= 0, "%s: negative token count %d", path.c_str(), h[2]);
    LLMQ_CHECK(h[3] == 0 || h[3] == sh.token_bytes, "%s: header says %d-byte tokens but magic says %d", path.c_str(),
               h[3], sh.token_bytes);
    sh.num_tokens = h[2];
    sh.vocab_size = h[4];
    sh.eot_id = h[3] == 0 ? -1 : h[5];  // llm.c's own shards leave [3..5] zero
    return sh;
}
}  // namespace

ShardHeader read_shard_header(const std::string& path) {
    File f(fopen(path.c_str(), "rb"));
    LLMQ_CHECK(f, "%s: cannot open shard: %s", path.c_str(), strerror(errno));
    int32_t h[kShardHeaderInts];
    LLMQ_CHECK(fread(h, sizeof h, 1, f.get()) == 1, "%s: truncated shard header (file shorter than %zu bytes)",
               path.c_str(), sizeof h);
    ShardHeader sh = parse_header(h, path);
    LLMQ_CHECK(fseek(f.get(), 0, SEEK_END) == 0, "%s: cannot seek", path.c_str());
    long size = ftell(f.get());
    long expected = (long)sizeof h + (long)sh.num_tokens * sh.token_bytes;
    LLMQ_CHECK(size == expected, "%s: corrupt shard: %ld bytes, header promises %lld tokens (%ld bytes)",
               path.c_str(), size, (long long)sh.num_tokens, expected);
    return sh;
}

std::vector<uint32_t> read_shard(const std::string& path) {
    ShardHeader sh = read_shard_header(path);
    File f(fopen(path.c_str(), "rb"));
    LLMQ_CHECK(f, "%s: cannot open shard: %s", path.c_str(), strerror(errno));
    fseek(f.get(), kShardHeaderInts * 4, SEEK_SET);
    std::vector<uint32_t> tokens(sh.num_tokens);
    if (sh.token_bytes == 2) {
        std::vector<uint16_t> raw(sh.num_tokens);
        LLMQ_CHECK(fread(raw.data(), 2, raw.size(), f.get()) == raw.size(), "%s: truncated shard", path.c_str());
        for (size_t i = 0; i < raw.size(); i++) tokens[i] = raw[i];
    } else {
        LLMQ_CHECK(fread(tokens.data(), 4, tokens.size(), f.get()) == tokens.size(), "%s: truncated shard",
                   path.c_str());
    }
    if (sh.vocab_size > 0) {
        for (size_t i = 0; i < tokens.size(); i++)
            LLMQ_CHECK(tokens[i] < (uint32_t)sh.vocab_size, "%s: token id %u at position %zu is past the vocabulary (%d)",
                       path.c_str(), tokens[i], i, sh.vocab_size);
    }
    return tokens;
}

namespace {
void fill_header(int32_t* h, int64_t n, int width, uint32_t vocab_size, int32_t eot_id) {
    std::fill(h, h + kShardHeaderInts, 0);
    h[0] = width == 2 ? kShardMagic16 : kShardMagic32;
    h[1] = width == 2 ? kShardVersion16 : kShardVersion32;
    h[2] = (int32_t)n;
    h[3] = width;
    h[4] = (int32_t)vocab_size;
    h[5] = eot_id;
}
}  // namespace

ShardWriter::ShardWriter(const std::string& path, uint32_t vocab_size, int32_t eot_id)
    : path_(path), tmp_(path + ".tmp"), vocab_size_(vocab_size), eot_id_(eot_id),
      width_(shard_token_bytes_for_vocab(vocab_size)) {
    file_ = fopen(tmp_.c_str(), "wb");
    LLMQ_CHECK(file_, "%s: cannot create: %s", tmp_.c_str(), strerror(errno));
    int32_t h[kShardHeaderInts];
    fill_header(h, 0, width_, vocab_size_, eot_id_);  // count patched by close()
    if (fwrite(h, sizeof h, 1, file_) != 1) fail("write failed");
}

ShardWriter::~ShardWriter() { abandon(); }

void ShardWriter::abandon() {
    if (!file_) return;
    fclose(file_);
    file_ = nullptr;
    remove(tmp_.c_str());
}

void ShardWriter::fail(const std::string& what) {
    std::string msg = format("%s: %s: %s", tmp_.c_str(), what.c_str(), strerror(errno));
    abandon();
    throw Error(msg);
}

void ShardWriter::append(const uint32_t* tokens, size_t n) {
    LLMQ_CHECK(file_, "%s: append after close", path_.c_str());
    if ((uint64_t)num_tokens_ + n > 0x7fffffffu) {
        abandon();
        throw Error(format("%s: %lld tokens do not fit one shard (at most 2^31-1)", path_.c_str(),
                           (long long)(num_tokens_ + n)));
    }
    if (vocab_size_ > 0) {
        for (size_t i = 0; i < n; i++) {
            if (tokens[i] >= vocab_size_) {
                abandon();
                throw Error(format("%s: token id %u is past the vocabulary (%u)", path_.c_str(), tokens[i], vocab_size_));
            }
        }
    }
    bool ok;
    if (width_ == 2) {
        narrow_.resize(n);
        for (size_t i = 0; i < n; i++) narrow_[i] = (uint16_t)tokens[i];
        ok = fwrite(narrow_.data(), 2, n, file_) == n;
    } else {
        ok = fwrite(tokens, 4, n, file_) == n;
    }
    if (!ok) fail("write failed");
    num_tokens_ += n;
}

void ShardWriter::close() {
    LLMQ_CHECK(file_, "%s: closed twice", path_.c_str());
    int32_t h[kShardHeaderInts];
    fill_header(h, num_tokens_, width_, vocab_size_, eot_id_);
    if (fflush(file_) != 0) fail("write failed");
    if (fseek(file_, 0, SEEK_SET) != 0 || fwrite(h, sizeof h, 1, file_) != 1) fail("cannot patch the header");
    FILE* f = file_;
    file_ = nullptr;
    if (fclose(f) != 0) {
        std::string msg = format("%s: write failed: %s", tmp_.c_str(), strerror(errno));
        remove(tmp_.c_str());
        throw Error(msg);
    }
    if (rename(tmp_.c_str(), path_.c_str()) != 0) {
        std::string msg = format("%s: cannot rename %s into place: %s", path_.c_str(), tmp_.c_str(), strerror(errno));
        remove(tmp_.c_str());
        throw Error(msg);
    }
}

void write_shard(const std::string& path, const uint32_t* tokens, size_t n, uint32_t vocab_size, int32_t eot_id) {
    LLMQ_CHECK(n <= 0x7fffffffu, "%s: %zu tokens do not fit one shard (at most 2^31-1)", path.c_str(), n);
    ShardWriter w(path, vocab_size, eot_id);
    w.append(tokens, n);
    w.close();
}

}  // namespace llmq
