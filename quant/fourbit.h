// fourbit: NF4 and FP4 blockwise 4-bit weights with bitsandbytes semantics (layouts in formats.h).
//
// Per block of `block` consecutive elements of the flattened (out, in) weight:
//   absmax = max |x|;  q = nearest code value to x * (1 / absmax)   (bnb multiplies by the reciprocal)
//   dequant = code[q] * absmax
// Ties (x exactly halfway between two code values, compared in double so the midpoint is exact):
//   NF4 goes to the LOWER code value (bnb's decision tree tests x > midpoint);
//   FP4 goes to the SMALLER magnitude, the sign bit set when x < 0 (bnb's dQuantizeFP4).
// An all-zero block has absmax 0 and every element gets the code of 0.0 (NF4 7, FP4 0), so it
// dequantizes to exact zeros. Weights must be finite.
#pragma once

#include <cstdint>
#include <vector>

#include "formats.h"

namespace llmq {

// The 16 code values, indexed by the 4-bit code (NF4 sorted ascending; FP4: bit 3 sign, bits 0-2 select
// magnitude {0, 1/192, 2/3, 1, 1/3, 1/2, 1/6, 1/4}, as bnb's literals).
extern const float kNF4Code[16];
extern const float kFP4Code[16];
const float* fourbit_code(QuantFormat f);  // NF4 or FP4; throws for INT formats

// The 4-bit code of a value already divided by its block absmax (nominally in [-1, 1]).
uint8_t quantize_4bit_value(QuantFormat f, float normalized);

// W (rows, cols) -> codes + absmax (or double-quantized absmax). spec.format is NF4 or FP4.
QuantizedTensor quantize_4bit_cpu(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec);
// out (rows, cols) = code[q] * absmax(block), with the double-quantized absmax when spec.double_quant.
void dequantize_4bit_cpu(const QuantizedTensor& q, float* out);
// The per-block absmax as the dequantizer uses it: q.absmax, or map[code] * scale[i / 256] + offset.
std::vector<float> block_absmax(const QuantizedTensor& q);

}  // namespace llmq
