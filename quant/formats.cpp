// formats: names, spec validation, storage formulas and the shared MSB-first code packing (formats.h).
#include "formats.h"

#include "../kernels/common.h"
#include "fourbit.h"
#include "intq.h"

namespace llmq {

const char* format_name(QuantFormat f) {
    switch (f) {
        case QuantFormat::NF4: return "nf4";
        case QuantFormat::FP4: return "fp4";
        case QuantFormat::INT4: return "int4";
        case QuantFormat::INT3: return "int3";
        case QuantFormat::INT2: return "int2";
    }
    return "?";
}

QuantFormat parse_format(const std::string& name, const char* what) {
    for (QuantFormat f : {QuantFormat::NF4, QuantFormat::FP4, QuantFormat::INT4, QuantFormat::INT3, QuantFormat::INT2})
        if (name == format_name(f)) return f;
    throw Error(format("%s: unknown quantization format '%s' (expected nf4, fp4, int4, int3 or int2)", what,
                       name.c_str()));
}

int code_bits(QuantFormat f) {
    switch (f) {
        case QuantFormat::INT3: return 3;
        case QuantFormat::INT2: return 2;
        default: return 4;
    }
}

bool is_int_format(QuantFormat f) {
    return f == QuantFormat::INT4 || f == QuantFormat::INT3 || f == QuantFormat::INT2;
}

void check_spec(const QuantSpec& spec, int64_t rows, int64_t cols) {
    const char* name = format_name(spec.format);
    LLMQ_CHECK(rows > 0 && cols > 0, "quant %s: weight shape (%lld, %lld) must be positive", name, (long long)rows,
               (long long)cols);
    bool pow2 = spec.block > 0 && (spec.block & (spec.block - 1)) == 0;
    LLMQ_CHECK(pow2 && spec.block >= 32, "quant %s: block size %d must be a power of two >= 32", name, spec.block);
    if (is_int_format(spec.format)) {
        LLMQ_CHECK(cols % spec.block == 0,
                   "quant %s: group size %d does not divide the input dimension of weight shape (%lld, %lld)", name,
                   spec.block, (long long)rows, (long long)cols);
        LLMQ_CHECK(!spec.double_quant, "quant %s: double quantization applies to nf4/fp4 only", name);
    } else {
        LLMQ_CHECK((rows * cols) % spec.block == 0,
                   "quant %s: block size %d does not divide the %lld elements of weight shape (%lld, %lld)", name,
                   spec.block, (long long)(rows * cols), (long long)rows, (long long)cols);
    }
}

double bits_per_weight(const QuantSpec& spec) {
    double bits = code_bits(spec.format);
    if (is_int_format(spec.format)) return bits + (32.0 + (spec.symmetric ? 0.0 : 8.0)) / spec.block;
    if (spec.double_quant) return bits + 8.0 / spec.block + 32.0 / ((double)spec.block * kDoubleQuantGroup);
    return bits + 32.0 / spec.block;
}

size_t storage_bytes(const QuantSpec& spec, int64_t rows, int64_t cols) {
    check_spec(spec, rows, cols);
    size_t n = (size_t)(rows * cols), blocks = n / spec.block;
    size_t bytes = n * code_bits(spec.format) / 8;
    if (is_int_format(spec.format)) return bytes + blocks * (sizeof(float) + (spec.symmetric ? 0 : 1));
    if (!spec.double_quant) return bytes + blocks * sizeof(float);
    size_t groups = (blocks + kDoubleQuantGroup - 1) / kDoubleQuantGroup;
    return bytes + blocks * 1 + groups * sizeof(float) + sizeof(float);  // codes, scales, offset
}

size_t tensor_bytes(const QuantizedTensor& q) {
    size_t bytes = q.codes.size() + q.absmax.size() * sizeof(float) + q.absmax_codes.size() +
                   q.absmax_scales.size() * sizeof(float) + q.scales.size() * sizeof(float) + q.zeros.size();
    if (q.spec.double_quant) bytes += sizeof(float);  // absmax_offset
    return bytes;
}

void pack_codes(const uint8_t* codes, size_t n, int bits, uint8_t* packed) {
    LLMQ_CHECK(bits >= 2 && bits <= 4, "pack_codes: %d-bit codes are not supported (2, 3 or 4)", bits);
    LLMQ_CHECK((n * bits) % 8 == 0, "pack_codes: %zu codes of %d bits do not fill whole bytes", n, bits);
    // Groups of 8 codes fill exactly `bits` bytes, so each group is an independent big-endian word.
    for (size_t g = 0; g < n / 8; g++) {
        uint32_t word = 0;
        for (int k = 0; k < 8; k++) word = word << bits | (codes[g * 8 + k] & ((1u << bits) - 1));
        for (int b = 0; b < bits; b++) packed[g * bits + b] = (uint8_t)(word >> (8 * (bits - 1 - b)));
    }
    // 2- and 4-bit streams may end on a partial group of 8 (n a multiple of 4 or 2)
    size_t done = n / 8 * 8;
    for (size_t k = done; k < n; k += 8 / bits) {
        uint8_t byte = 0;
        for (int j = 0; j < 8 / bits; j++) byte = (uint8_t)(byte << bits | (codes[k + j] & ((1u << bits) - 1)));
        packed[k * bits / 8] = byte;
    }
}

void unpack_codes(const uint8_t* packed, size_t n, int bits, uint8_t* codes) {
    LLMQ_CHECK(bits >= 2 && bits <= 4, "unpack_codes: %d-bit codes are not supported (2, 3 or 4)", bits);
    for (size_t k = 0; k < n; k++) codes[k] = packed_code_at(packed, k, bits);
}

QuantizedTensor quantize_cpu(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec) {
    if (is_int_format(spec.format)) return quantize_int_cpu(w, rows, cols, spec);
    return quantize_4bit_cpu(w, rows, cols, spec);
}

void dequantize_cpu(const QuantizedTensor& q, float* out) {
    if (is_int_format(q.spec.format)) return dequantize_int_cpu(q, out);
    dequantize_4bit_cpu(q, out);
}

}  // namespace llmq
