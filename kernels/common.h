// common.h: what every op, layer and program of llmq shares.
//
//   llmq::Error           the one error type; its message names the file or flag and the problem.
//                         Library code throws it; each program's main() catches it, prints
//                         "error: <message>" and exits 1. Tests use EXPECT_THROW on it.
//   LLMQ_CHECK(cond, ...) throws Error with a printf-style message when cond is false.
//   llmq::Rng             deterministic random numbers (splitmix64 state, one uint64), so a
//                         checkpoint can save and restore it exactly.
//   llmq::now_seconds()   monotonic wall clock for throughput figures.
//
// Conventions used across the tree:
//   - tensors are fp32 row-major unless a name says otherwise; shapes are written in comments as
//     (B,T,C) with B batch, T sequence, C channels, N = B*T rows, V vocabulary, OC output channels;
//   - backward functions ACCUMULATE (+=) into every gradient buffer they are given, parameter and
//     activation gradients alike (llm.c's convention): the caller zeroes them once per step;
//   - a function named *_cpu is the plain fp32 reference of the op; a CUDA kernel of the same op
//     lives in <op>.cu beside it and is tested against it.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>

namespace llmq {

struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

inline std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
inline std::string format(const char* fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    char small[512];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    std::string out;
    if (n < (int)sizeof small) {
        out.assign(small, n < 0 ? 0 : n);
    } else {  // longer than the stack buffer: format again into a string of the exact size
        out.resize(n);
        vsnprintf(&out[0], n + 1, fmt, ap2);
    }
    va_end(ap2);
    return out;
}

// "1.5 MB": bytes in the largest binary unit (KB = 1024 B) that keeps the number at least 1, one decimal.
inline std::string human_bytes(double b) {
    const char* units[] = {"B", "KB", "MB", "GB", "TB"};
    int u = 0;
    while (b >= 1024 && u < 4) b /= 1024, u++;
    return format("%.1f %s", b, units[u]);
}

#define LLMQ_CHECK(cond, ...)                                          \
    do {                                                               \
        if (!(cond)) throw ::llmq::Error(::llmq::format(__VA_ARGS__)); \
    } while (0)

// splitmix64: tiny, fast, statistically good enough for initialisation, dropout and sampling,
// and its whole state is one integer (checkpointed as is).
struct Rng {
    uint64_t state;
    explicit Rng(uint64_t seed = 0) : state(seed) {}
    static constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ull;
    static uint64_t mix(uint64_t z) {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    uint64_t next_u64() { return mix(state += kGamma); }
    // The i-th (0-based) uniform in [0, 1) of the stream Rng(seed) would draw, without drawing the ones before:
    // counter-based, so a mask over N elements can be regenerated anywhere (adapter dropout's backward).
    static float uniform_at(uint64_t seed, uint64_t i) {
        return (mix(seed + (i + 1) * kGamma) >> 40) * (1.0f / 16777216.0f);
    }
    uint32_t next_u32() { return (uint32_t)(next_u64() >> 32); }
    // uniform in [0, 1) with 24 random bits, exactly representable in fp32
    float uniform() { return (next_u64() >> 40) * (1.0f / 16777216.0f); }
    // uniform integer in [0, n)
    uint64_t below(uint64_t n) { return next_u64() % n; }
    // standard normal (Box-Muller; one draw per call keeps the state trivially serialisable)
    float normal() {
        double u1 = ((next_u64() >> 11) + 1.0) * (1.0 / 9007199254740993.0);  // (0, 1]
        double u2 = (next_u64() >> 11) * (1.0 / 9007199254740992.0);          // [0, 1)
        return (float)(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
    }
};

inline double now_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace llmq
