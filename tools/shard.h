// shard: the token shard file format, shared by the tokenizer (writer) and the trainer (reader).
//
// A shard is a 1024-byte header of 256 little-endian int32, then the tokens:
//   header[0] magic        20240520 for uint16 tokens, 20240801 for uint32 tokens (llm.c's values, so
//   header[1] version      1 for uint16, 7 for uint32                               llm.c reads ours)
//   header[2] token count  (int32; a shard holds at most 2^31-1 tokens)
//   header[3] token width  in bytes, 2 or 4 (redundant with magic/version; checked)
//   header[4] vocab size   of the tokenizer that wrote it (0 = unknown); every id must be below it
//   header[5] eot id       the document separator (<|endoftext|>), -1 = none
//   the rest  zero
// The width is chosen from the vocabulary: uint16 when vocab_size <= 65536, else uint32.
// Files are named <prefix>_train_NNNNNN.bin and <prefix>_val_NNNNNN.bin.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace llmq {

constexpr int kShardHeaderInts = 256;
constexpr int32_t kShardMagic16 = 20240520, kShardVersion16 = 1;
constexpr int32_t kShardMagic32 = 20240801, kShardVersion32 = 7;

struct ShardHeader {
    int64_t num_tokens = 0;
    int token_bytes = 2;  // 2 or 4
    int32_t vocab_size = 0;
    int32_t eot_id = -1;
};

inline int shard_token_bytes_for_vocab(uint32_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

// Reads and validates the header of path (throws Error naming the file: missing, short, wrong magic,
// width that does not match, size that does not match the token count).
ShardHeader read_shard_header(const std::string& path);
// Reads the whole shard, widening to uint32; checks every id against the header's vocab size.
std::vector<uint32_t> read_shard(const std::string& path);
// Writes tokens to path atomically: to path + ".tmp", then rename. Throws Error on a failed write
// (the temporary file is removed, nothing is left under the final name). One ShardWriter does it.
void write_shard(const std::string& path, const uint32_t* tokens, size_t n, uint32_t vocab_size, int32_t eot_id);

// Streams one shard of unknown length to disk: opens path + ".tmp" with a placeholder header, appends
// tokens (narrowed to uint16 when the vocabulary allows), and on close() patches the header's token count
// and renames the file into place (no fsync: a shard is cheap to remake). On any failure, and when
// destroyed without close(), the temporary file is removed, so a reader never sees a partial shard under
// the final name. Errors are llmq::Error naming the file.
class ShardWriter {
  public:
    ShardWriter(const std::string& path, uint32_t vocab_size, int32_t eot_id);
    ~ShardWriter();
    ShardWriter(const ShardWriter&) = delete;
    ShardWriter& operator=(const ShardWriter&) = delete;

    // Every id must be below vocab_size; the shard may not pass 2^31-1 tokens.
    void append(const uint32_t* tokens, size_t n);
    void append(const std::vector<uint32_t>& tokens) { append(tokens.data(), tokens.size()); }
    void close();

    int64_t num_tokens() const { return num_tokens_; }
    const std::string& path() const { return path_; }

  private:
    [[noreturn]] void fail(const std::string& what);
    void abandon();  // closes and removes the temporary file

    std::string path_, tmp_;
    FILE* file_ = nullptr;
    uint32_t vocab_size_;
    int32_t eot_id_;
    int width_;
    int64_t num_tokens_ = 0;
    std::vector<uint16_t> narrow_;  // reused buffer for uint16 shards
};

}  // namespace llmq
