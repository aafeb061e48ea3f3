// float16: exact conversions between fp32 and the two 16-bit float formats of checkpoints.
//
//   bf16: the top 16 bits of an fp32 (8-bit exponent, 7-bit mantissa); widening is a shift, exact.
//   f16:  IEEE binary16 (5-bit exponent bias 15, 10-bit mantissa, subnormals below 2^-14); every f16
//         value, subnormals, infinities and NaN payloads included, is exactly representable in fp32.
// Narrowing (fp32 -> 16 bit) rounds to nearest, ties to even, overflows to infinity and keeps NaNs NaN
// (quiet, sign kept), as torch's .to(bfloat16/float16) does.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace llmq {

inline uint32_t float_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float bits_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

inline float bf16_to_float(uint16_t h) { return bits_float((uint32_t)h << 16); }

inline uint16_t float_to_bf16(float f) {
    uint32_t u = float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  // NaN: stay NaN, quiet
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);                   // ties to even
}

inline float f16_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 31, mant = h & 0x3ff;
    if (exp == 31) return bits_float(sign | 0x7f800000u | mant << 13);               // inf, NaN (payload kept)
    if (exp == 0) {                                                                  // zero, subnormal
        float v = (float)mant * 5.9604644775390625e-8f;                              // mant * 2^-24, exact
        return sign ? -v : v;
    }
    return bits_float(sign | (exp + 112) << 23 | mant << 13);                        // rebias 15 -> 127
}

inline uint16_t float_to_f16(float f) {
    const uint32_t u = float_bits(f), sign = (u >> 16) & 0x8000, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00 | ((a >> 13) & 0x3ff));   // NaN, quiet
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);  // >= 65520 (halfway past 65504) -> inf
    if (a < 0x38800000u) {  // below 2^-14: subnormal f16 = round(|f| * 2^24), exact scaling, ties to even
        return (uint16_t)(sign | (uint32_t)std::nearbyint(bits_float(a) * 16777216.0f));
    }
    const uint32_t rebiased = a - (112u << 23);  // exponent bias 127 -> 15
    return (uint16_t)(sign | (rebiased + 0xfffu + ((rebiased >> 13) & 1)) >> 13);
}

}  // namespace llmq
