// tokenizer.cpp: the Tokenizer's tables, byte-pair merging, encode and decode (loaders: tokenizer_load.cpp).
//
// Merging follows tiktoken's byte_pair_merge exactly: start from single bytes; repeatedly merge the
// adjacent pair whose concatenation has the lowest rank (the leftmost pair on ties) until no adjacent
// pair is a token. Short pieces (almost all) use tiktoken's array scan; long ones a heap over a linked
// list, O(n log n) instead of O(n^2), with the same order of merges (heap key: rank, then position).
#include "tokenizer.h"

#include <algorithm>
#include <queue>

#include "../kernels/common.h"
#include "bpe_rank_table.h"

namespace llmq {

struct Tokenizer::Impl {
    std::string name;
    PretokenPattern pattern = PretokenPattern::GPT2;
    std::string arena;                              // the bytes of every token, ranked ones first
    std::vector<uint32_t> rank_offset, rank_length;  // rank r's bytes in arena
    std::vector<uint32_t> rank_to_id;
    BpeRankTable ranks;                             // bytes -> rank
    uint32_t byte_rank[256];                        // rank of each single byte
    std::vector<uint32_t> pair2_rank;               // rank of each 2-byte string (b0 | b1 << 8), or kNone
    std::vector<uint32_t> id_offset, id_length;      // id's bytes in arena; length kHole: no such token
    std::vector<std::pair<std::string, uint32_t>> specials;  // sorted by id
    bool special_first_byte[256] = {};
    uint32_t eot = kNoToken;

    static constexpr uint32_t kHole = 0xFFFFFFFFu;
    static constexpr size_t kSmallPiece = 128;  // longer pieces merge with a heap (bpe_large)

    void bpe(const unsigned char* piece, size_t n, std::vector<uint32_t>& out) const;
    void bpe_small(const unsigned char* piece, size_t n, std::vector<uint32_t>& out) const;
    void bpe_large(const unsigned char* piece, size_t n, std::vector<uint32_t>& out) const;
    void encode_ordinary(std::string_view text, std::vector<uint32_t>& out) const;
    // Longest special token starting at text[i], as an index into specials, or -1.
    int special_at(std::string_view text, size_t i) const;
};

// ---- building -------------------------------------------------------------------------------------

Tokenizer Tokenizer::from_spec(const TokenizerSpec& spec) {
    const char* name = spec.name.c_str();
    size_t n_ranked = spec.ranked_tokens.size();
    LLMQ_CHECK(n_ranked >= 256, "%s: only %zu mergeable tokens (the 256 single bytes at least are needed)", name, n_ranked);
    LLMQ_CHECK(n_ranked < 0x7FFFFFFF, "%s: too many tokens", name);
    LLMQ_CHECK(spec.ranked_ids.empty() || spec.ranked_ids.size() == n_ranked,
               "%s: %zu ids for %zu ranked tokens", name, spec.ranked_ids.size(), n_ranked);

    auto impl = std::make_shared<Impl>();
    impl->name = spec.name;
    impl->pattern = spec.pattern;

    uint32_t max_id = 0;
    auto id_of_rank = [&](size_t r) { return spec.ranked_ids.empty() ? (uint32_t)r : spec.ranked_ids[r]; };
    for (size_t r = 0; r < n_ranked; r++) max_id = std::max(max_id, id_of_rank(r));
    for (auto& t : spec.special_tokens) max_id = std::max(max_id, t.second);
    for (auto& t : spec.extra_tokens) max_id = std::max(max_id, t.second);
    LLMQ_CHECK(max_id < 0x7FFFFFFF, "%s: token id %u too large", name, max_id);
    uint32_t vocab = spec.vocab_size ? spec.vocab_size : max_id + 1;
    LLMQ_CHECK(vocab > max_id, "%s: vocabulary size %u but token id %u", name, vocab, max_id);

    impl->id_offset.assign(vocab, 0);
    impl->id_length.assign(vocab, Impl::kHole);
    auto add_id = [&](uint32_t id, uint32_t offset, uint32_t length, const std::string& bytes) {
        LLMQ_CHECK(impl->id_length[id] == Impl::kHole, "%s: token id %u given twice (again for \"%.60s\")", name, id, bytes.c_str());
        impl->id_offset[id] = offset;
        impl->id_length[id] = length;
    };
    for (size_t r = 0; r < n_ranked; r++) {
        const std::string& t = spec.ranked_tokens[r];
        LLMQ_CHECK(!t.empty(), "%s: token of rank %zu is empty", name, r);
        uint32_t offset = (uint32_t)impl->arena.size();
        impl->arena += t;
        impl->rank_offset.push_back(offset);
        impl->rank_length.push_back((uint32_t)t.size());
        impl->rank_to_id.push_back(id_of_rank(r));
        add_id(id_of_rank(r), offset, (uint32_t)t.size(), t);
    }
    impl->ranks.build(&impl->arena, &impl->rank_offset, &impl->rank_length);
    for (size_t r = 0; r < n_ranked; r++) {  // distinct bytes: each must find its own rank
        const unsigned char* p = (const unsigned char*)impl->arena.data() + impl->rank_offset[r];
        uint32_t found = impl->ranks.find(p, impl->rank_length[r]);
        LLMQ_CHECK(found == r, "%s: the bytes of rank %zu are also rank %u", name, r, found);
    }
    for (int b = 0; b < 256; b++) {
        unsigned char byte = (unsigned char)b;
        impl->byte_rank[b] = impl->ranks.find(&byte, 1);
        LLMQ_CHECK(impl->byte_rank[b] != BpeRankTable::kNone, "%s: no token for the single byte 0x%02x", name, b);
    }
    impl->pair2_rank.resize(65536);
    for (int pair = 0; pair < 65536; pair++) {
        unsigned char two[2] = {(unsigned char)pair, (unsigned char)(pair >> 8)};
        impl->pair2_rank[pair] = impl->ranks.find(two, 2);
    }
    for (auto& t : spec.extra_tokens) {
        uint32_t offset = (uint32_t)impl->arena.size();
        impl->arena += t.first;
        add_id(t.second, offset, (uint32_t)t.first.size(), t.first);
    }
    impl->specials = spec.special_tokens;
    std::sort(impl->specials.begin(), impl->specials.end(), [](auto& a, auto& b) { return a.second < b.second; });
    for (auto& t : impl->specials) {
        LLMQ_CHECK(!t.first.empty(), "%s: empty special token (id %u)", name, t.second);
        uint32_t offset = (uint32_t)impl->arena.size();
        impl->arena += t.first;
        add_id(t.second, offset, (uint32_t)t.first.size(), t.first);
        impl->special_first_byte[(unsigned char)t.first[0]] = true;
    }
    LLMQ_CHECK(impl->arena.size() < 0xFFFFFFFFu, "%s: vocabulary bytes exceed 4 GB", name);
    Tokenizer tok;
    tok.impl_ = impl;
    for (const char* eot : {"<|endoftext|>", "<|end_of_text|>", "</s>"})
        if ((impl->eot = tok.special_token_id(eot)) != kNoToken) break;
    return tok;
}

// ---- byte-pair merging ----------------------------------------------------------------------------

// tiktoken's scan for the lowest-rank pair, over a linked list of parts kept in small arrays: part i
// covers piece[i, next[i]); pair_rank[i] is the rank of part i joined with the part after it (kNone when
// that is no token, or i is the last part); token_rank[i] is part i's own rank.
void Tokenizer::Impl::bpe_small(const unsigned char* piece, size_t n, std::vector<uint32_t>& out) const {
    constexpr uint32_t kNone = BpeRankTable::kNone;
    uint8_t next[kSmallPiece + 1];
    uint32_t pair_rank[kSmallPiece], token_rank[kSmallPiece];
    for (size_t i = 0; i < n; i++) {
        next[i] = (uint8_t)(i + 1);
        token_rank[i] = byte_rank[piece[i]];
        pair_rank[i] = i + 1 < n ? pair2_rank[piece[i] | (piece[i + 1] << 8)] : kNone;
    }
    for (;;) {
        uint32_t best = kNone;
        size_t at = 0, before = 0, prev = 0;  // the best pair's left part, and the part before it
        for (size_t i = 0; i < n; prev = i, i = next[i])
            if (pair_rank[i] < best) { best = pair_rank[i]; at = i; before = prev; }
        if (best == kNone) break;
        size_t k = next[next[at]];  // merge part at with the next one; k is the part after them (or n)
        token_rank[at] = best;
        next[at] = (uint8_t)k;
        pair_rank[at] = k < n ? ranks.find(piece + at, next[k] - at) : kNone;
        if (at > 0) pair_rank[before] = ranks.find(piece + before, k - before);
    }
    for (size_t i = 0; i < n; i = next[i]) out.push_back(rank_to_id[token_rank[i]]);
}

// The same merges for long pieces: parts are a linked list keyed by their first byte's position; a heap
// holds (pair rank, position) candidates, stale ones are skipped when popped.
void Tokenizer::Impl::bpe_large(const unsigned char* piece, size_t n, std::vector<uint32_t>& out) const {
    constexpr uint32_t kNone = BpeRankTable::kNone;
    std::vector<uint32_t> next(n), prev(n), pair_rank(n), token_rank(n);
    std::vector<bool> alive(n, true);
    std::priority_queue<uint64_t, std::vector<uint64_t>, std::greater<uint64_t>> heap;
    for (size_t i = 0; i < n; i++) {
        next[i] = (uint32_t)(i + 1);
        prev[i] = (uint32_t)(i - 1);  // wraps for i == 0; never read there
        token_rank[i] = byte_rank[piece[i]];
        pair_rank[i] = i + 1 < n ? pair2_rank[piece[i] | (piece[i + 1] << 8)] : kNone;
        if (pair_rank[i] != kNone) heap.push(((uint64_t)pair_rank[i] << 32) | i);
    }
    auto rank_of_span = [&](uint32_t a, uint32_t b) { return ranks.find(piece + a, b - a); };
    while (!heap.empty()) {
        uint64_t top = heap.top();
        heap.pop();
        uint32_t i = (uint32_t)top, r = (uint32_t)(top >> 32);
        if (!alive[i] || pair_rank[i] != r) continue;  // stale: part i changed since this was pushed
        uint32_t j = next[i], k = next[j];           // merge parts i and j; k is the part after (or n)
        alive[j] = false;
        token_rank[i] = r;
        next[i] = k;
        if (k < n) prev[k] = i;
        pair_rank[i] = k < n ? rank_of_span(i, next[k]) : kNone;
        if (pair_rank[i] != kNone) heap.push(((uint64_t)pair_rank[i] << 32) | i);
        if (i > 0) {
            uint32_t p = prev[i];
            pair_rank[p] = rank_of_span(p, k);
            if (pair_rank[p] != kNone) heap.push(((uint64_t)pair_rank[p] << 32) | p);
        }
    }
    for (uint32_t i = 0; i < n; i = next[i]) out.push_back(rank_to_id[token_rank[i]]);
}

void Tokenizer::Impl::bpe(const unsigned char* piece, size_t n, std::vector<uint32_t>& out) const {
    if (n == 1) {
        out.push_back(rank_to_id[byte_rank[piece[0]]]);
        return;
    }
    uint32_t whole = ranks.find(piece, n);  // most pieces are one token
    if (whole != BpeRankTable::kNone) {
        out.push_back(rank_to_id[whole]);
        return;
    }
    if (n <= kSmallPiece) bpe_small(piece, n, out);
    else bpe_large(piece, n, out);
}

// ---- encode / decode ------------------------------------------------------------------------------

void Tokenizer::Impl::encode_ordinary(std::string_view text, std::vector<uint32_t>& out) const {
    pretokenize(pattern, text, [&](std::string_view piece) { bpe((const unsigned char*)piece.data(), piece.size(), out); });
}

int Tokenizer::Impl::special_at(std::string_view text, size_t i) const {
    int best = -1;
    size_t best_len = 0;
    for (size_t s = 0; s < specials.size(); s++) {
        const std::string& t = specials[s].first;
        if (t.size() > best_len && text.compare(i, t.size(), t) == 0) {
            best = (int)s;
            best_len = t.size();
        }
    }
    return best;
}

void Tokenizer::encode_into(std::string_view text, std::vector<uint32_t>& out, bool allow_special) const {
    const Impl& m = *impl_;
    if (!allow_special || m.specials.empty()) {
        m.encode_ordinary(text, out);
        return;
    }
    size_t done = 0;  // text[0, done) is encoded
    for (size_t i = 0; i < text.size(); i++) {
        if (!m.special_first_byte[(unsigned char)text[i]]) continue;
        int s = m.special_at(text, i);
        if (s < 0) continue;
        m.encode_ordinary(text.substr(done, i - done), out);
        out.push_back(m.specials[s].second);
        done = i + m.specials[s].first.size();
        i = done - 1;
    }
    m.encode_ordinary(text.substr(done), out);
}

std::vector<uint32_t> Tokenizer::encode(std::string_view text, bool allow_special) const {
    std::vector<uint32_t> out;
    out.reserve(text.size() / 4 + 16);
    encode_into(text, out, allow_special);
    return out;
}

std::string_view Tokenizer::token_bytes(uint32_t id) const {
    const Impl& m = *impl_;
    LLMQ_CHECK(id < m.id_length.size(), "%s: token id %u is past the vocabulary (size %zu)", m.name.c_str(), id, m.id_length.size());
    LLMQ_CHECK(m.id_length[id] != Impl::kHole, "%s: token id %u is not a token of this vocabulary", m.name.c_str(), id);
    return std::string_view(m.arena).substr(m.id_offset[id], m.id_length[id]);
}

std::string Tokenizer::decode(const uint32_t* ids, size_t n) const {
    std::string out;
    out.reserve(n * 4);
    for (size_t i = 0; i < n; i++) out += token_bytes(ids[i]);
    return out;
}

bool Tokenizer::is_token(uint32_t id) const { return id < impl_->id_length.size() && impl_->id_length[id] != Impl::kHole; }
uint32_t Tokenizer::vocab_size() const { return (uint32_t)impl_->id_length.size(); }
uint32_t Tokenizer::eot_id() const { return impl_->eot; }
const std::string& Tokenizer::name() const { return impl_->name; }
PretokenPattern Tokenizer::pattern() const { return impl_->pattern; }
const std::vector<std::pair<std::string, uint32_t>>& Tokenizer::special_tokens() const { return impl_->specials; }

TokenizerSpec Tokenizer::spec() const {
    const Impl& m = *impl_;
    TokenizerSpec spec;
    spec.name = m.name;
    spec.pattern = m.pattern;
    std::vector<bool> listed(m.id_length.size(), false);
    bool id_is_rank = true;
    for (size_t r = 0; r < m.rank_to_id.size(); r++) {
        spec.ranked_tokens.emplace_back(m.arena, m.rank_offset[r], m.rank_length[r]);
        listed[m.rank_to_id[r]] = true;
        id_is_rank = id_is_rank && m.rank_to_id[r] == r;
    }
    if (!id_is_rank) spec.ranked_ids = m.rank_to_id;
    spec.special_tokens = m.specials;
    for (auto& t : m.specials) listed[t.second] = true;
    for (uint32_t id = 0; id < m.id_length.size(); id++)
        if (!listed[id] && m.id_length[id] != Impl::kHole) spec.extra_tokens.emplace_back(std::string(token_bytes(id)), id);
    spec.vocab_size = vocab_size();
    return spec;
}

uint32_t Tokenizer::special_token_id(std::string_view text) const {
    for (auto& t : impl_->specials)
        if (t.first == text) return t.second;
    return kNoToken;
}

}  // namespace llmq
