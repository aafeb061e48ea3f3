// formats: the quantized weight formats of llmq, their exact memory layouts and storage formulas.
//
// A weight W is (out, in) fp32 row-major. Quantization replaces it by small integer codes plus per-block
// fp32 statistics; the layouts below are what the CPU references write and what the GPU dequantize/GEMM
// kernels will read, so they are specified to the bit.
//
// Two families:
//   NF4, FP4   (bitsandbytes semantics) blocks of `block` consecutive elements of the FLATTENED weight
//              (row-major, so a block may span rows when block > in); one fp32 absmax per block;
//              code = nearest entry of a 16-value table to x / absmax. Optional double quantization of
//              the absmax vector (see below).
//   INT4/3/2   (GPTQ semantics, round-to-nearest) groups of `block` consecutive elements along the input
//              dimension of one output row; one fp32 scale per group, and for asymmetric quantization one
//              uint8 integer zero point per group. dequant = scale * (q - zero), q in [0, 2^bits - 1];
//              symmetric uses the implicit zero 2^(bits-1).
//
// Packing (every format): the codes form one MSB-first bit stream over the flattened weight: element k
// occupies bits [k*b, (k+1)*b) counted from the most significant bit of byte 0. Concretely:
//   b = 4: byte j = q[2j] << 4 | q[2j+1]                  (first element in the high nibble, as bnb)
//   b = 2: byte j = q[4j] << 6 | q[4j+1] << 4 | q[4j+2] << 2 | q[4j+3]
//   b = 3: 8 codes in 3 bytes; w = q[8j] << 21 | q[8j+1] << 18 | ... | q[8j+7] (a 24-bit word),
//          bytes 3j, 3j+1, 3j+2 = w >> 16, (w >> 8) & 255, w & 255   (big-endian 24-bit word)
//          A GPU thread dequantizing 8 weights loads those 3 bytes; since block is a multiple of 8,
//          every group (and every row) starts on a whole 3-byte word: group g of row r starts at byte
//          (r * in + g * block) * 3 / 8.
//
// Double quantization (NF4/FP4 only, bnb's nested absmax): offset = mean(absmax) (fp32); the centred
// absmax (absmax - offset) is quantized in groups of 256 consecutive blocks with the signed dynamic 8-bit
// map (dynamic_map.h): one fp32 scale = max |absmax - offset| per group and one uint8 code per block.
// absmax[i] is then read back as dynamic_map_signed[absmax_code[i]] * absmax_scale[i / 256] + offset.
// The last group may be partial (the number of blocks need not be a multiple of 256).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace llmq {

enum class QuantFormat { NF4, FP4, INT4, INT3, INT2 };

constexpr int kDoubleQuantGroup = 256;  // absmax values per fp32 scale under double quantization

struct QuantSpec {
    QuantFormat format = QuantFormat::NF4;
    int block = 64;             // NF4/FP4: block over the flattened weight; INT: group along `in`, per row
    bool symmetric = true;      // INT only (NF4/FP4 are symmetric by construction)
    bool double_quant = false;  // NF4/FP4 only
};

struct QuantizedTensor {
    QuantSpec spec;
    int64_t rows = 0, cols = 0;  // the weight is (rows, cols) = (out, in)
    // packed codes, MSB-first stream (see above): rows * cols * bits / 8 bytes
    std::vector<uint8_t> codes;
    // NF4/FP4 without double quantization: (rows*cols / block) fp32 absmax, one per block
    std::vector<float> absmax;
    // NF4/FP4 with double quantization (absmax is then empty):
    std::vector<uint8_t> absmax_codes;   // (rows*cols / block) indices into the signed dynamic map
    std::vector<float> absmax_scales;    // ceil(num_blocks / 256) fp32 scales
    float absmax_offset = 0.0f;          // mean of the original absmax
    // INT formats: (rows, cols / block) row-major, one per group
    std::vector<float> scales;
    std::vector<uint8_t> zeros;          // asymmetric only: integer zero point in [0, 2^bits - 1]

    int64_t numel() const { return rows * cols; }
    int64_t num_blocks() const { return numel() / spec.block; }
};

const char* format_name(QuantFormat f);
// parses "nf4", "fp4", "int4", "int3", "int2" (case-sensitive); throws Error naming `what` otherwise
QuantFormat parse_format(const std::string& name, const char* what);
int code_bits(QuantFormat f);  // 4, 4, 4, 3, 2
bool is_int_format(QuantFormat f);

// Throws Error naming the block size and shape unless the spec fits a (rows, cols) weight:
// block a power of two >= 32; NF4/FP4: block divides rows*cols; INT: block divides cols;
// double_quant only with NF4/FP4.
void check_spec(const QuantSpec& spec, int64_t rows, int64_t cols);

// Average storage in bits per weight for a large tensor (the per-tensor fp32 offset of double
// quantization is negligible and left out). NF4 block 64: 4.5; with double quant 4 + 8/64 + 32/(64*256)
// = 4.127; INT4 sym group 64: 4.5; INT4 asym group 64: 4.625 (fp32 scale + uint8 zero).
double bits_per_weight(const QuantSpec& spec);
// Exact bytes of every buffer a QuantizedTensor of this spec and shape holds (codes, absmax or its
// double-quantized form including the 4-byte offset, scales, zeros). Checks the spec first.
size_t storage_bytes(const QuantSpec& spec, int64_t rows, int64_t cols);
// The bytes the tensor's buffers actually hold (equal to storage_bytes for a well-formed tensor).
size_t tensor_bytes(const QuantizedTensor& q);

// MSB-first bit-stream packing of b-bit codes (b in {2, 3, 4}); n*b must be a multiple of 8 (it always
// is: blocks are multiples of 32). packed has n*b/8 bytes; codes must fit in b bits.
void pack_codes(const uint8_t* codes, size_t n, int bits, uint8_t* packed);
void unpack_codes(const uint8_t* packed, size_t n, int bits, uint8_t* codes);
// One code without unpacking the rest (what a GPU thread does for element k).
inline uint8_t packed_code_at(const uint8_t* packed, size_t k, int bits) {
    size_t bit = k * (size_t)bits;  // position of the code's most significant bit in the stream
    // read the (up to) two bytes the code can straddle as a 16-bit big-endian window
    unsigned window = (unsigned)packed[bit / 8] << 8;
    if ((bit % 8) + bits > 8) window |= packed[bit / 8 + 1];
    return (uint8_t)((window >> (16 - (bit % 8) - bits)) & ((1u << bits) - 1));
}

// Quantize W (rows, cols) with spec; dispatches to quantize_4bit_cpu or quantize_int_cpu.
QuantizedTensor quantize_cpu(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec);
// out (rows, cols) = the dequantized weight.
void dequantize_cpu(const QuantizedTensor& q, float* out);

}  // namespace llmq
