// bpe_rank_table: byte string -> BPE rank, the lookup at the heart of byte-pair merging.
//
// Open addressing with linear probing over one arena that holds every token's bytes. A slot is
// 64 bits: the upper 32 bits of the key's hash (a cheap filter before comparing bytes) and rank + 1
// (0 = empty slot). The table is at most half full, so a miss usually ends at the first empty slot.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace llmq {

class BpeRankTable {
  public:
    static constexpr uint32_t kNone = 0xFFFFFFFFu;

    // tokens[r] is the bytes of rank r; each must be distinct (the caller checks).
    // arena holds all bytes: rank r is arena[offsets[r], offsets[r] + lengths[r]).
    void build(const std::string* arena, const std::vector<uint32_t>* offsets, const std::vector<uint32_t>* lengths) {
        arena_ = arena;
        offsets_ = offsets;
        lengths_ = lengths;
        size_t count = offsets->size();
        size_t capacity = 16;
        while (capacity < 2 * count) capacity *= 2;
        mask_ = capacity - 1;
        slots_.assign(capacity, 0);
        for (uint32_t r = 0; r < count; r++) {
            const unsigned char* p = (const unsigned char*)arena->data() + (*offsets)[r];
            uint64_t h = hash(p, (*lengths)[r]);
            size_t i = h & mask_;
            while (slots_[i]) i = (i + 1) & mask_;
            slots_[i] = (h & 0xFFFFFFFF00000000ull) | (uint64_t)(r + 1);
        }
    }

    // The rank of the byte string p[0..n), or kNone.
    uint32_t find(const unsigned char* p, size_t n) const {
        uint64_t h = hash(p, n);
        uint64_t tag = h & 0xFFFFFFFF00000000ull;
        const char* arena = arena_->data();
        for (size_t i = h & mask_;; i = (i + 1) & mask_) {
            uint64_t slot = slots_[i];
            if (!slot) return kNone;
            if ((slot & 0xFFFFFFFF00000000ull) == tag) {
                uint32_t r = (uint32_t)slot - 1;
                if ((*lengths_)[r] == n && memcmp(arena + (*offsets_)[r], p, n) == 0) return r;
            }
        }
    }

    // A fast hash for short keys: 8-byte words, with the tail read as (possibly overlapping) words too.
    static uint64_t hash(const unsigned char* p, size_t n) {
        const uint64_t k1 = 0x9E3779B97F4A7C15ull, k2 = 0xBF58476D1CE4E5B9ull;
        uint64_t h = n * k1;
        while (n > 8) {
            h = mix(h ^ load8(p), k2);
            p += 8;
            n -= 8;
        }
        uint64_t w;
        if (n >= 4) w = ((uint64_t)load4(p) << 32) | load4(p + n - 4);
        else if (n > 0) w = ((uint64_t)p[0] << 16) | ((uint64_t)p[n / 2] << 8) | p[n - 1];
        else w = 0;
        h = mix(h ^ w ^ (n << 56), k1);
        return h ^ (h >> 29);
    }

  private:
    static uint64_t load8(const unsigned char* p) { uint64_t w; memcpy(&w, p, 8); return w; }
    static uint32_t load4(const unsigned char* p) { uint32_t w; memcpy(&w, p, 4); return w; }
    static uint64_t mix(uint64_t x, uint64_t k) {
        __uint128_t m = (__uint128_t)x * k;
        return (uint64_t)m ^ (uint64_t)(m >> 64);
    }

    const std::string* arena_ = nullptr;
    const std::vector<uint32_t>* offsets_ = nullptr;
    const std::vector<uint32_t>* lengths_ = nullptr;
    std::vector<uint64_t> slots_;
    size_t mask_ = 0;
};

}  // namespace llmq
