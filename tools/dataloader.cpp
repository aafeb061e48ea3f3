// dataloader.cpp: finding, mapping and windowing token shards; the shuffled, resumable batch order.
#include "dataloader.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "../kernels/common.h"
#include "shard.h"

namespace llmq {

// One memory-mapped shard; tokens are read in place (uint16 or uint32).
struct DataLoader::Shard {
    std::string path;
    ShardHeader header;
    void* map = nullptr;
    size_t map_bytes = 0;
    const unsigned char* tokens = nullptr;

    explicit Shard(const std::string& p) : path(p) {
        header = read_shard_header(path);  // validates magic, version, width and size
        int fd = open(path.c_str(), O_RDONLY);
        LLMQ_CHECK(fd >= 0, "%s: cannot open shard: %s", path.c_str(), strerror(errno));
        map_bytes = (size_t)kShardHeaderInts * 4 + (size_t)header.num_tokens * header.token_bytes;
        map = mmap(nullptr, map_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
        int saved = errno;
        close(fd);
        LLMQ_CHECK(map != MAP_FAILED, "%s: cannot mmap shard: %s", path.c_str(), strerror(saved));
        tokens = (const unsigned char*)map + kShardHeaderInts * 4;
    }
    ~Shard() {
        if (map && map != MAP_FAILED) munmap(map, map_bytes);
    }
    uint32_t token(int64_t i) const {
        if (header.token_bytes == 2) {
            uint16_t t;
            memcpy(&t, tokens + 2 * i, 2);
            return t;
        }
        uint32_t t;
        memcpy(&t, tokens + 4 * i, 4);
        return t;
    }
};

static bool is_directory(const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

static std::vector<std::string> glob_files(const std::string& pattern) {
    std::vector<std::string> out;
    glob_t g;
    if (glob(pattern.c_str(), 0, nullptr, &g) == 0)
        for (size_t i = 0; i < g.gl_pathc; i++) out.push_back(g.gl_pathv[i]);
    globfree(&g);
    return out;
}

std::vector<std::string> DataLoader::find_shards(const std::string& data, const std::string& split) {
    LLMQ_CHECK(!data.empty(), "--data: no shard directory given");
    std::string tag = "_" + split + "_";
    std::vector<std::string> files;
    if (is_directory(data)) {
        files = glob_files(data + "/*" + tag + "*.bin");
    } else if (data.find_first_of("*?[") != std::string::npos || access(data.c_str(), F_OK) == 0) {
        for (const std::string& f : glob_files(data))  // a glob, or one shard file
            if (f.find(tag) != std::string::npos) files.push_back(f);
    } else {
        files = glob_files(data + tag + "*.bin");
        LLMQ_CHECK(!files.empty() || !glob_files(data + "_*.bin").empty(),
                   "%s: no such shard directory or prefix (--data)", data.c_str());
    }
    std::sort(files.begin(), files.end());
    return files;
}

DataLoader::DataLoader(const std::string& data, const std::string& split, int B, int T, uint64_t seed, bool shuffle)
    : B_(B), T_(T), seed_(seed), shuffle_(shuffle) {
    LLMQ_CHECK(B > 0 && T > 0, "%s: batch %d and sequence %d must be positive", data.c_str(), B, T);
    files_ = find_shards(data, split);
    LLMQ_CHECK(!files_.empty(), "%s: no %s shards (*_%s_*.bin) found (--data)", data.c_str(), split.c_str(),
               split.c_str());
    first_window_.push_back(0);
    uint64_t tokens = 0;
    for (const std::string& f : files_) {
        shards_.push_back(std::make_unique<Shard>(f));
        const ShardHeader& h = shards_.back()->header;
        if (shards_.size() == 1) eot_id_ = h.eot_id;
        vocab_size_ = std::max(vocab_size_, (int)h.vocab_size);
        uint64_t windows = h.num_tokens > T ? (uint64_t)(h.num_tokens - 1) / T : 0;
        first_window_.push_back(first_window_.back() + windows);
        tokens += h.num_tokens;
    }
    total_windows_ = first_window_.back();
    LLMQ_CHECK(total_windows_ > 0, "%s: the %s shards hold %llu tokens in all, too few for one window of --seq %d + 1",
               data.c_str(), split.c_str(), (unsigned long long)tokens, T);
    vocab_limit_ = vocab_size_;
    description_ = format("%zu %s shard%s, %llu tokens, %llu windows of %d", files_.size(), split.c_str(),
                          files_.size() == 1 ? "" : "s", (unsigned long long)tokens,
                          (unsigned long long)total_windows_, T + 1);
}

DataLoader::~DataLoader() = default;

uint64_t DataLoader::num_tokens() const {
    uint64_t n = 0;
    for (const auto& s : shards_) n += s->header.num_tokens;
    return n;
}

void DataLoader::set_vocab_limit(int vocab_size) { vocab_limit_ = vocab_size; }

void DataLoader::set_position(const DataPosition& pos) {
    LLMQ_CHECK(pos.index <= total_windows_, "data position %llu is past the %llu windows of %s (different data or --seq?)",
               (unsigned long long)pos.index, (unsigned long long)total_windows_, files_[0].c_str());
    pos_ = pos;
}

// A permutation of the windows drawn from (seed, epoch) alone, so any position can be rebuilt.
void DataLoader::build_order(uint64_t epoch) {
    if (order_epoch_ == epoch) return;
    order_.resize(total_windows_);
    for (uint64_t i = 0; i < total_windows_; i++) order_[i] = i;
    Rng rng(seed_ * 0x9E3779B97F4A7C15ull ^ (epoch + 1) * 0xD1B54A32D192ED03ull);
    for (uint64_t i = total_windows_; i > 1; i--) std::swap(order_[i - 1], order_[rng.below(i)]);
    order_epoch_ = epoch;
}

void DataLoader::read_window(uint64_t window, int* inputs, int* targets) const {
    size_t s = std::upper_bound(first_window_.begin(), first_window_.end(), window) - first_window_.begin() - 1;
    const Shard& shard = *shards_[s];
    int64_t start = (int64_t)(window - first_window_[s]) * T_;
    for (int t = 0; t <= T_; t++) {
        uint32_t id = shard.token(start + t);
        if (vocab_limit_ > 0 && id >= (uint32_t)vocab_limit_)
            throw Error(format("%s: token id %u at position %lld is past the vocabulary (%d)", shard.path.c_str(), id,
                               (long long)(start + t), vocab_limit_));
        if (t < T_) inputs[t] = (int)id;
        if (t > 0) targets[t - 1] = (int)id;
    }
}

void DataLoader::next_batch(int* inputs, int* targets) {
    for (int b = 0; b < B_; b++) {
        if (pos_.index >= total_windows_) {
            pos_.epoch++;
            pos_.index = 0;
        }
        uint64_t window = pos_.index;
        if (shuffle_) {
            build_order(pos_.epoch);
            window = order_[pos_.index];
        }
        read_window(window, inputs + (size_t)b * T_, targets + (size_t)b * T_);
        pos_.index++;
    }
}

}  // namespace llmq
