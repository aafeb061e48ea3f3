// intq: INT4/INT3/INT2 group-wise round-to-nearest weights with GPTQ's grid (the quantizer CLoQ and
// GPTQ build on; GPTQ's error-compensating column updates are a separate, later step).
//
// Groups: `block` consecutive elements along the input dimension of one output row, so the (out, in)
// weight has (out, in / block) groups, stored row-major. With maxq = 2^bits - 1:
//   asymmetric: lo = min(min x, 0), hi = max(max x, 0) (the grid always contains 0);
//               scale = (hi - lo) / maxq, zero = round(-lo / scale) in [0, maxq] (stored as uint8)
//   symmetric:  scale = 2 max|x| / maxq, zero = 2^(bits-1) (implicit, not stored)
//   an all-zero group uses lo = -1, hi = 1 (as GPTQ) so the scale is never 0; it dequantizes to zeros.
//   q = clamp(round(x / scale) + zero, 0, maxq);  dequant = scale * (q - zero)
// round() is round-half-to-even (torch.round, std::nearbyint). Every element is within scale/2 of its
// dequantized value. Codes are packed MSB-first (formats.h: INT4 two per byte high nibble first,
// INT2 four per byte, INT3 eight per 3 bytes as a big-endian 24-bit word). Weights must be finite.
#pragma once

#include <algorithm>
#include <cmath>

#include "formats.h"

namespace llmq {

// One group's grid, as stored: scale and the zero point (integral, held as a float).
struct IntGrid {
    float scale, zero;
};

// The grid of the n values x[0..n) by the rules above (shared by round-to-nearest and GPTQ, so the two
// agree to the bit wherever GPTQ's error updates are zero).
inline IntGrid int_grid(const float* x, int64_t n, int bits, bool symmetric) {
    const int maxq = (1 << bits) - 1;
    float lo = 0.0f, hi = 0.0f;
    for (int64_t i = 0; i < n; i++) lo = std::fmin(lo, x[i]), hi = std::fmax(hi, x[i]);
    if (lo == hi) lo = -1.0f, hi = 1.0f;  // all zero
    if (symmetric) return {2.0f * std::fmax(-lo, hi) / maxq, (float)(1 << (bits - 1))};
    float scale = (hi - lo) / maxq;
    return {scale, std::nearbyint(-lo / scale)};
}

// q = clamp(round(x / scale) + zero, 0, 2^bits - 1)
inline uint8_t int_code(float x, IntGrid g, int bits) {
    return (uint8_t)std::clamp(std::nearbyint(x / g.scale) + g.zero, 0.0f, (float)((1 << bits) - 1));
}
inline float int_dequant(uint8_t code, IntGrid g) { return g.scale * ((float)code - g.zero); }

QuantizedTensor quantize_int_cpu(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec);
void dequantize_int_cpu(const QuantizedTensor& q, float* out);

}  // namespace llmq
