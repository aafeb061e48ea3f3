// bpe_trainer.cpp: byte-level BPE training with incremental pair counts (see bpe_trainer.h).
#include "bpe_trainer.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <queue>
#include <thread>

#include "../kernels/common.h"
#include "ordered_pool.h"
#include "progress.h"
#include "tokenizer.h"

namespace llmq {

PretokenPattern pretoken_pattern_from_name(const std::string& name) {
    if (name == "gpt2") return PretokenPattern::GPT2;
    if (name == "cl100k_base") return PretokenPattern::CL100K;
    if (name == "o200k_base") return PretokenPattern::O200K;
    throw Error(format("--pattern: unknown pre-tokenizer pattern '%s' (expected gpt2, cl100k_base or o200k_base)",
                       name.c_str()));
}

std::string pretoken_pat_str(const std::string& name) { return pretoken_pattern_regex(pretoken_pattern_from_name(name)); }

std::unordered_map<std::string, int64_t> count_pieces(std::string_view text, const std::string& pattern,
                                                      int threads) {
    PretokenPattern pat = pretoken_pattern_from_name(pattern);
    // Blocks of ~1 MB ending just after a newline: where they fall depends on the text only.
    std::vector<std::string_view> blocks;
    const size_t block = 1 << 20;
    for (size_t pos = 0; pos < text.size();) {
        size_t end = pos + block >= text.size() ? text.size() : text.find('\n', pos + block);
        end = end == std::string_view::npos ? text.size() : std::min(text.size(), end + 1);
        blocks.push_back(text.substr(pos, end - pos));
        pos = end;
    }
    threads = std::min<int>(resolve_threads(threads), std::max<size_t>(blocks.size(), 1));
    std::vector<std::unordered_map<std::string, int64_t>> partial(threads);
    std::atomic<size_t> next{0};
    auto count = [&](int t) {
        std::unordered_map<std::string, int64_t>& counts = partial[t];
        for (size_t b; (b = next++) < blocks.size();) {
            pretokenize(pat, blocks[b], [&](std::string_view piece) { counts[std::string(piece)]++; });
        }
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; t++) pool.emplace_back(count, t);
    count(0);
    for (auto& th : pool) th.join();
    for (int t = 1; t < threads; t++)
        for (auto& [piece, n] : partial[t]) partial[0][piece] += n;
    return std::move(partial[0]);
}

namespace {

using Pair = uint64_t;  // (left id << 32) | right id
inline Pair make_pair_key(uint32_t a, uint32_t b) { return ((uint64_t)a << 32) | b; }
inline uint32_t left_of(Pair p) { return (uint32_t)(p >> 32); }
inline uint32_t right_of(Pair p) { return (uint32_t)p; }

struct Word {
    std::vector<uint32_t> symbols;
    int64_t count;
};

struct HeapEntry {
    int64_t count;
    Pair pair;
};

// The trainer's state: words as token sequences, pair counts, pair -> words index, and the heap.
class BpeTrainer {
  public:
    BpeTrainer(const std::unordered_map<std::string, int64_t>& pieces) : heap_(Better{&vocab_.tokens}) {
        for (int b = 0; b < 256; b++) vocab_.tokens.push_back(std::string(1, (char)b));
        for (int b = 0; b < 256; b++) id_of_bytes_[vocab_.tokens[b]] = b;
        // words in a fixed order (sorted by bytes), so everything below is independent of hash order
        std::vector<std::pair<std::string_view, int64_t>> sorted;
        for (auto& [piece, n] : pieces)
            if (piece.size() >= 2) sorted.emplace_back(piece, n);  // a single byte has no pair to merge
        std::sort(sorted.begin(), sorted.end());
        for (auto& [piece, n] : sorted) {
            Word w{{}, n};
            for (unsigned char c : piece) w.symbols.push_back(c);
            words_.push_back(std::move(w));
        }
        for (uint32_t w = 0; w < words_.size(); w++) {
            const auto& s = words_[w].symbols;
            for (size_t i = 0; i + 1 < s.size(); i++) {
                Pair p = make_pair_key(s[i], s[i + 1]);
                pair_counts_[p] += words_[w].count;
                auto& ws = where_[p];
                if (ws.empty() || ws.back() != w) ws.push_back(w);
            }
        }
        for (auto& [p, n] : pair_counts_) heap_.push({n, p});
    }

    // Performs one merge; false when no pair is left.
    bool merge_once() {
        for (;;) {
            if (heap_.empty()) return false;
            HeapEntry top = heap_.top();
            heap_.pop();
            auto it = pair_counts_.find(top.pair);
            int64_t actual = it == pair_counts_.end() ? 0 : it->second;
            if (actual <= 0) continue;  // merged already
            if (actual != top.count) {  // stale: counts only fall, so re-queue with the current count
                heap_.push({actual, top.pair});
                continue;
            }
            apply(top.pair);
            return true;
        }
    }

    BpeVocab take() { return std::move(vocab_); }
    size_t num_tokens() const { return vocab_.tokens.size(); }

  private:
    // Max-heap order: higher count first; on a tie, the lexicographically lower (left bytes, right bytes).
    struct Better {
        const std::vector<std::string>* tokens;
        bool operator()(const HeapEntry& x, const HeapEntry& y) const {  // true if x comes after y
            if (x.count != y.count) return x.count < y.count;
            const std::string &xl = (*tokens)[left_of(x.pair)], &yl = (*tokens)[left_of(y.pair)];
            int c = xl.compare(yl);
            if (c != 0) return c > 0;
            return (*tokens)[right_of(x.pair)] > (*tokens)[right_of(y.pair)];
        }
    };

    void apply(Pair pair) {
        uint32_t a = left_of(pair), b = right_of(pair);
        std::string bytes = vocab_.tokens[a] + vocab_.tokens[b];
        // Two different merges can spell the same bytes; tiktoken ranks are by bytes, so reuse the token.
        auto found = id_of_bytes_.find(bytes);
        uint32_t z;
        if (found != id_of_bytes_.end()) {
            z = found->second;
        } else {
            z = (uint32_t)vocab_.tokens.size();
            vocab_.tokens.push_back(bytes);
            id_of_bytes_.emplace(std::move(bytes), z);
        }
        vocab_.merges.emplace_back(a, b);

        std::vector<uint32_t> affected = std::move(where_[pair]);
        where_.erase(pair);
        std::sort(affected.begin(), affected.end());
        affected.erase(std::unique(affected.begin(), affected.end()), affected.end());
        std::vector<Pair> touched;  // pairs containing z whose count grew
        std::vector<uint32_t> merged;
        for (uint32_t w : affected) {
            Word& word = words_[w];
            std::vector<uint32_t>& s = word.symbols;
            merged.clear();
            bool any = false;
            for (size_t i = 0; i < s.size();) {
                if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
                    merged.push_back(z);
                    i += 2;
                    any = true;
                } else {
                    merged.push_back(s[i++]);
                }
            }
            if (!any) continue;  // the index is lazy: this word lost the pair in an earlier merge
            for (size_t i = 0; i + 1 < s.size(); i++) pair_counts_[make_pair_key(s[i], s[i + 1])] -= word.count;
            for (size_t i = 0; i + 1 < merged.size(); i++) {
                Pair p = make_pair_key(merged[i], merged[i + 1]);
                pair_counts_[p] += word.count;
                if (merged[i] == z || merged[i + 1] == z) {
                    auto& ws = where_[p];
                    if (ws.empty() || ws.back() != w) ws.push_back(w);
                    touched.push_back(p);
                }
            }
            s.swap(merged);
        }
        pair_counts_.erase(pair);
        std::sort(touched.begin(), touched.end());
        touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
        for (Pair p : touched) heap_.push({pair_counts_[p], p});
    }

    BpeVocab vocab_;
    std::unordered_map<std::string, uint32_t> id_of_bytes_;
    std::vector<Word> words_;
    std::unordered_map<Pair, int64_t> pair_counts_;
    std::unordered_map<Pair, std::vector<uint32_t>> where_;
    std::priority_queue<HeapEntry, std::vector<HeapEntry>, Better> heap_;
};

}  // namespace

BpeVocab train_bpe(const std::unordered_map<std::string, int64_t>& pieces, const BpeTrainOptions& opts) {
    LLMQ_CHECK(opts.vocab_size >= 257, "--size: %u is too small (at least 257: 256 bytes and <|endoftext|>)",
               opts.vocab_size);
    pretoken_pattern_from_name(opts.pattern);  // validates the name
    BpeTrainer trainer(pieces);
    const size_t target = opts.vocab_size - 1;  // tokens before <|endoftext|>
    std::unique_ptr<Progress> bar;
    if (opts.progress) bar = std::make_unique<Progress>("train-vocab", (double)(target - 256), Progress::Count, "tok");
    while (trainer.num_tokens() < target && trainer.merge_once())
        if (bar) bar->update((double)(trainer.num_tokens() - 256));
    if (bar) bar->finish();
    BpeVocab vocab = trainer.take();
    vocab.pattern = opts.pattern;
    return vocab;
}

BpeVocab train_bpe(std::string_view text, const BpeTrainOptions& opts) {
    return train_bpe(count_pieces(text, opts.pattern, opts.threads), opts);
}

void save_vocab(const BpeVocab& vocab, const std::string& path) {
    TokenizerSpec spec;
    spec.name = path;
    spec.pattern = pretoken_pattern_from_name(vocab.pattern);
    spec.ranked_tokens = vocab.tokens;  // id = rank
    spec.special_tokens = {{"<|endoftext|>", vocab.eot_id()}};
    spec.vocab_size = vocab.vocab_size();
    std::string tmp = path + ".tmp";  // written whole, then renamed: never a partial file under path
    try {
        write_tiktoken_json(spec, tmp);
    } catch (const Error&) {
        remove(tmp.c_str());
        throw;
    }
    if (rename(tmp.c_str(), path.c_str()) != 0) {
        std::string msg = format("%s: cannot rename %s into place: %s", path.c_str(), tmp.c_str(), strerror(errno));
        remove(tmp.c_str());
        throw Error(msg);
    }
}

}  // namespace llmq
