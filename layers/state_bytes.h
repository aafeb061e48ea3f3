// state_bytes: the byte form of a method's own checkpoint state (a StateSection of tools/checkpoint.h: WTA-CRS's
// samplers, GaLore's projections and moments, LoQT's frozen factors and quantized bases, ...).
//
// Each method lays out its fields itself; these two helpers only append little-endian values and read them back
// with bounds checks, so a truncated or corrupt section is one clear Error naming the file and the state
// ("out/latest.ckpt: LoQT state is truncated (a field at byte 812 needs 8 bytes, 4 left)") instead of a crash.
// Arrays are written as u64 count + raw items, strings as u32 length + bytes.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "../kernels/common.h"

namespace llmq {

struct StateWriter {
    std::vector<uint8_t> bytes;

    void put_bytes(const void* p, size_t n) { bytes.insert(bytes.end(), (const uint8_t*)p, (const uint8_t*)p + n); }
    template <typename T>
    void put(T v) { put_bytes(&v, sizeof v); }
    // n items, no count: for arrays whose size the reader knows from the layout
    template <typename T>
    void put_array(const T* p, size_t n) { put_bytes(p, n * sizeof(T)); }
    template <typename T>
    void put_vec(const std::vector<T>& v) {
        put<uint64_t>(v.size());
        put_array(v.data(), v.size());
    }
    void put_str(const std::string& s) {
        put<uint32_t>((uint32_t)s.size());
        put_bytes(s.data(), s.size());
    }
};

struct StateReader {
    const uint8_t* data;
    size_t size;
    const char* what;   // the file, for errors
    const char* state;  // "LoQT state", for errors
    size_t pos = 0;

    StateReader(const uint8_t* data, size_t size, const char* what, const char* state)
        : data(data), size(size), what(what), state(state) {}
    StateReader(const std::vector<uint8_t>& bytes, const char* what, const char* state)
        : StateReader(bytes.data(), bytes.size(), what, state) {}

    size_t left() const { return size - pos; }
    void get_bytes(void* p, size_t n) {
        LLMQ_CHECK(n <= left(), "%s: %s is truncated (a field at byte %zu needs %zu bytes, %zu left)", what, state, pos,
                   n, left());
        if (n) std::memcpy(p, data + pos, n);
        pos += n;
    }
    template <typename T>
    T get() {
        T v;
        get_bytes(&v, sizeof v);
        return v;
    }
    template <typename T>
    void get_array(T* p, size_t n) {
        LLMQ_CHECK(n <= left() / sizeof(T), "%s: %s is truncated (an array of %zu at byte %zu)", what, state, n, pos);
        get_bytes(p, n * sizeof(T));
    }
    template <typename T>
    std::vector<T> get_vec() {
        const uint64_t n = get<uint64_t>();
        LLMQ_CHECK(n <= left() / sizeof(T), "%s: %s is truncated (an array of %llu at byte %zu)", what, state,
                   (unsigned long long)n, pos);
        std::vector<T> v(n);
        get_bytes(v.data(), n * sizeof(T));
        return v;
    }
    std::string get_str() {
        const uint32_t n = get<uint32_t>();
        LLMQ_CHECK(n <= left(), "%s: %s is truncated (a name of %u bytes at byte %zu)", what, state, n, pos);
        std::string s((const char*)data + pos, n);
        pos += n;
        return s;
    }
    // Error unless every byte was read.
    void expect_end() const {
        LLMQ_CHECK(pos == size, "%s: %s has %zu bytes past its end (written by another version or method?)", what,
                   state, size - pos);
    }
};

}  // namespace llmq
