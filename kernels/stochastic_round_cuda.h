// stochastic_round_cuda.h: fp32 -> bf16 by stochastic rounding, reproducible from (seed, element index).
//
// The bf16 compute copy of a weight is written from its fp32 master after every optimizer step. Rounding to
// nearest would drop every update smaller than half a bf16 ulp of the weight, every time; stochastic rounding
// keeps them in expectation: x lies between two neighbouring bf16 values lo < |x| <= hi (in magnitude), and
// it rounds to hi with probability (|x| - lo) / (hi - lo), so E[round(x)] = x.
//
// bf16 is the top half of an fp32, so adding 16 uniform random bits r to the low half and truncating does
// exactly this: the carry into the top half happens for r >= 2^16 - low, i.e. with probability low / 2^16, and
// a carry out of the mantissa steps the exponent, which is the next bf16 up in magnitude (sign-magnitude, so
// negative values are unbiased too; subnormals are linear and work the same). x already a bf16 value: low = 0,
// never a carry. Inf and NaN are passed through rounding to nearest (adding bits to a NaN could make a number).
//
// The random bits are counter-based, no state: r = top 16 bits of splitmix64's mix(key + (i + 1) * gamma), the
// i-th draw of llmq::Rng(key), with key = stochastic_round_key(seed) mixed once per call on the host. Same seed
// and index, same bits, whatever the grid; different seeds give unrelated streams.
// Used by kernels/adamw.cu (and dev/adamw.cu); tested in test/test_adamw_cuda.cu.
#pragma once

#include "cuda_common.h"

namespace llmq {

// the per-call key of the streams: seed mixed once, so that consecutive seeds (steps) give unrelated keys
inline uint64_t stochastic_round_key(uint32_t seed) {
    return Rng::mix((uint64_t)seed * Rng::kGamma + 0x5851F42D4C957F2Dull);
}

// Rng::mix (common.h), callable on the device
__device__ inline uint64_t splitmix64_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// x rounded to one of its two bf16 neighbours, up in magnitude with probability equal to its fractional distance
__device__ inline bf16 stochastic_round_bf16(float x, uint64_t key, uint64_t index) {
    if (!isfinite(x)) return __float2bfloat16(x);
    const uint32_t r = (uint32_t)(splitmix64_mix(key + (index + 1) * Rng::kGamma) >> 48);
    // at most 0x7F7FFFFF + 0xFFFF (or the same with the sign bit): no wrap past 32 bits; the largest values may
    // carry into infinity, the bf16 neighbour above them
    return __ushort_as_bfloat16((unsigned short)((__float_as_uint(x) + r) >> 16));
}

}  // namespace llmq
