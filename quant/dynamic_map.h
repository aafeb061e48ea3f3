// dynamic_map: bitsandbytes' dynamic 8-bit code (create_dynamic_map) and nearest-code quantization to it.
//
// The map spreads 256 values over seven decades so that small and large magnitudes both keep ~2 significant
// digits: for i = 0..6, take n = 2^i (signed) or 2^(i+1) (unsigned) values, the midpoints of
// linspace(0.1, 1, n+1) scaled by 10^(i-6); the signed map also adds their negatives; then 0 and 1.0 are
// appended and everything sorted. Signed: 127 positive + 127 negative + 0 + 1 = 256 values in
// [-0.99296875, 1] (the first moment of 8-bit Adam, and the double-quantized absmax). Unsigned: 254 positive
// + 0 + 1 = 256 values in [0, 1] (the second moment of 8-bit Adam).
//
// Values are computed in double and rounded once to fp32. Quantization is to the NEAREST map value by
// binary search over the 255 midpoints between neighbours (what a GPU kernel does with the map in shared
// memory); a value exactly on a midpoint goes to the LOWER index. Out-of-range inputs clamp to the ends.
// The midpoints are formed in double, where the sum of two floats and its half are exact, so the result is
// the exact nearest value; a GPU kernel comparing against fp32-rounded midpoints can differ only for x
// within one ulp of a midpoint.
#pragma once

#include <array>
#include <cstdint>

namespace llmq {

using DynamicMap = std::array<float, 256>;

DynamicMap create_dynamic_map(bool is_signed);
// The two maps, built once.
const DynamicMap& dynamic_map_signed();
const DynamicMap& dynamic_map_unsigned();

// Index of the map value nearest to x (ties to the lower index). NaN maps to index 0.
uint8_t quantize_to_map(const DynamicMap& map, float x);

}  // namespace llmq
