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

#include "formats.h"

namespace llmq {

QuantizedTensor quantize_int_cpu(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec);
void dequantize_int_cpu(const QuantizedTensor& q, float* out);

}  // namespace llmq
