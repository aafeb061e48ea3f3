// bpe_rank_table: byte string -> BPE rank, the lookup at the heart of byte-pair merging.
//
// Open addressing with linear probing, at most half full. A slot (16 bytes) holds the key's length,
// its first 8 bytes (zero-padded) and rank + 1 (0 = empty), so for keys of up to 8 bytes (most
// tokens) a lookup touches one cache line and compares two integers; longer keys compare their rest
// against the arena that holds every token's bytes.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace llmq {

class BpeRankTable {
  public:
    static constexpr uint32_t kNone = 0xFFFFFFFFu;

    // Rank r's bytes are arena[offsets[r], offsets[r] + lengths[r]); all distinct (the caller checks
    // by finding each). The table keeps pointers to the three: they must outlive it and not move.
    void build(const std::string* arena, const std::vector<uint32_t>* offsets, const std::vector<uint32_t>* lengths) {
        arena_ = arena;
        offsets_ = offsets;
        size_t count = offsets->size();
        size_t capacity = 16;
        while (capacity < 2 * count) capacity *= 2;
        mask_ = capacity - 1;
        slots_.assign(capacity, Slot{0, 0, 0});
        for (uint32_t r = 0; r < count; r++) {
            const unsigned char* p = (const unsigned char*)arena->data() + (*offsets)[r];
            size_t n = (*lengths)[r];
            uint64_t head = head_of(p, n);
            size_t i = hash(p, n, head) & mask_;
            while (slots_[i].rank_plus1) i = (i + 1) & mask_;
            slots_[i] = Slot{head, (uint32_t)n, r + 1};
        }
    }

    // The rank of the byte string p[0..n), n >= 1, or kNone.
    uint32_t find(const unsigned char* p, size_t n) const {
        uint64_t head = head_of(p, n);
        for (size_t i = hash(p, n, head) & mask_;; i = (i + 1) & mask_) {
            const Slot& s = slots_[i];
            if (!s.rank_plus1) return kNone;
            if (s.head == head && s.len == n &&
                (n <= 8 || memcmp(arena_->data() + (*offsets_)[s.rank_plus1 - 1] + 8, p + 8, n - 8) == 0))
                return s.rank_plus1 - 1;
        }
    }

  private:
    struct Slot {
        uint64_t head;  // first min(n, 8) bytes, little-endian, zero-padded
        uint32_t len;
        uint32_t rank_plus1;
    };

    static uint64_t load8(const unsigned char* p) { uint64_t w; memcpy(&w, p, 8); return w; }
    static uint64_t load4(const unsigned char* p) { uint32_t w; memcpy(&w, p, 4); return w; }
    static uint64_t mix(uint64_t x, uint64_t k) {
        __uint128_t m = (__uint128_t)x * k;
        return (uint64_t)m ^ (uint64_t)(m >> 64);
    }
    // The first min(n, 8) bytes as an integer, read without touching memory past p[n-1]: two
    // overlapping 4-byte loads for n in 4..8, three single bytes (some repeated) for n in 1..3.
    static uint64_t head_of(const unsigned char* p, size_t n) {
        if (n >= 8) return load8(p);
        if (n >= 4) return load4(p) | (load4(p + n - 4) << (8 * (n - 4)));
        return (uint64_t)p[0] | ((uint64_t)p[n / 2] << (8 * (n / 2))) | ((uint64_t)p[n - 1] << (8 * (n - 1)));
    }
    static uint64_t hash(const unsigned char* p, size_t n, uint64_t head) {
        const uint64_t k1 = 0x9E3779B97F4A7C15ull, k2 = 0xBF58476D1CE4E5B9ull;
        uint64_t h = mix(head ^ (n * k1), k2);
        for (size_t i = 8; i < n; i += 8) {  // the rest in 8-byte words, the last one overlapping
            uint64_t w = i + 8 <= n ? load8(p + i) : load8(p + n - 8);
            h = mix(h ^ w, k1);
        }
        return h ^ (h >> 31);
    }

    const std::string* arena_ = nullptr;
    const std::vector<uint32_t>* offsets_ = nullptr;
    std::vector<Slot> slots_;
    size_t mask_ = 0;
};

}  // namespace llmq
