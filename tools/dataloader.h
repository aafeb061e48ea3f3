// dataloader: (B,T) batches of inputs and next-token targets from the token shards of one split.
//
// The shards of a split (<dir>/*_train_*.bin or *_val_*.bin, sorted by name) are memory-mapped; each
// shard is cut into windows of T+1 tokens with stride T (window w covers tokens [w*T, w*T+T], so every
// token but a shard's first is a target exactly once per epoch; windows never cross a shard boundary).
// A batch is B windows: inputs = window[0..T-1], targets = window[1..T].
//
// Order: with shuffle, epoch e visits all windows in the order of a permutation drawn by an Rng seeded
// from (seed, e); without shuffle (validation) in file order. (epoch, index of the next window) is the
// exact position: saving and restoring it resumes the same stream. A batch that runs past the end of an
// epoch continues into the next one.
//
// Token ids are checked against the vocabulary as windows are read (Error naming the file and position),
// so a huge corpus is never scanned up front.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace llmq {

struct DataPosition {
    uint64_t epoch = 0;
    uint64_t index = 0;  // next window within the epoch's order
};

class DataLoader {
  public:
    // data: a directory, a glob ("data/shards/*.bin") or a prefix ("data/shards/brown"); split: "train"
    // or "val". Throws Error naming the path when it is missing, holds no shard of the split, a shard is
    // corrupt, or the split is too short for one window of T+1 tokens.
    DataLoader(const std::string& data, const std::string& split, int B, int T, uint64_t seed, bool shuffle);
    ~DataLoader();
    DataLoader(const DataLoader&) = delete;
    DataLoader& operator=(const DataLoader&) = delete;

    // The shard files of a split, sorted (empty when there are none; Error when data does not exist).
    static std::vector<std::string> find_shards(const std::string& data, const std::string& split);

    // Ids >= vocab_size are rejected (Error naming the file). Default: the shard headers' vocab size.
    void set_vocab_limit(int vocab_size);
    // inputs, targets (B,T): the next batch; advances the position.
    void next_batch(int* inputs, int* targets);

    DataPosition position() const { return pos_; }
    void set_position(const DataPosition& pos);
    void reset() { set_position(DataPosition{}); }

    int B() const { return B_; }
    int T() const { return T_; }
    uint64_t num_windows() const { return total_windows_; }
    uint64_t num_tokens() const;
    int vocab_size() const { return vocab_size_; }  // from the shard headers (largest; 0 = unknown)
    int eot_id() const { return eot_id_; }          // from the first shard's header (-1 = none)
    const std::vector<std::string>& files() const { return files_; }
    const std::string& description() const { return description_; }  // "N shards, M tokens, W windows"

  private:
    struct Shard;
    void build_order(uint64_t epoch);
    void read_window(uint64_t window, int* inputs, int* targets) const;

    std::vector<std::string> files_;
    std::vector<std::unique_ptr<Shard>> shards_;
    std::vector<uint64_t> first_window_;  // (shards+1) prefix sums of windows per shard
    uint64_t total_windows_ = 0;
    int B_, T_;
    uint64_t seed_;
    bool shuffle_;
    int vocab_size_ = 0, vocab_limit_ = 0, eot_id_ = -1;
    DataPosition pos_;
    uint64_t order_epoch_ = UINT64_MAX;
    std::vector<uint64_t> order_;  // the current epoch's window order (shuffle only)
    std::string description_;
};

}  // namespace llmq
