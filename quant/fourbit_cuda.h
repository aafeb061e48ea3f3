// fourbit_cuda.h: NF4/FP4 4-bit weights on the GPU (quant/fourbit.cu); the format and its CPU reference
// are quant/fourbit.h and quant/formats.h, which this follows to the bit.
//
//   DeviceQuantizedTensor       a 4-bit weight W (rows, cols) = (OC, C) on the device: packed codes (high
//                               nibble first), one fp32 absmax per block (double quantization undone on the
//                               host by block_absmax), and the 16-entry code table
//   dequantize_4bit_cuda        W as bf16: out = bf16(code[q] * absmax[block]), exactly dequantize_4bit_cpu
//                               rounded to bf16
//   quantize_4bit_cuda          fp32 W -> codes + absmax, bitwise equal to quantize_4bit_cpu (no double quant)
//   matmul_4bit_forward_cuda    out = inp @ W^T, and matmul_4bit_backward_input_cuda dinp (+)= dout @ W: fused,
//                               the dequantized W is built tile by tile in shared memory and never written to
//                               global memory
// Shapes follow the CPU matmul (kernels/matmul.h): inp (N,C), W (OC,C), out (N,OC).
#pragma once

#include "../kernels/cuda_common.h"
#include "fourbit.h"

namespace llmq {

struct DeviceQuantizedTensor {
    QuantFormat format = QuantFormat::NF4;
    int block = 64;              // elements per absmax, over the flattened (rows, cols) weight
    int64_t rows = 0, cols = 0;  // (out, in)
    DeviceBuffer<uint8_t> codes;  // (rows*cols/2) packed codes: byte j = q[2j] << 4 | q[2j+1]
    DeviceBuffer<float> absmax;   // (rows*cols/block) per-block absmax, as the dequantizer uses it
    DeviceBuffer<float> code;     // (16) the code values of `format` (kNF4Code or kFP4Code)

    DeviceQuantizedTensor() = default;
    // Buffers for a (rows, cols) weight; codes and absmax are undefined until quantize_4bit_cuda fills them.
    DeviceQuantizedTensor(QuantFormat format, int64_t rows, int64_t cols, int block = 64);
    // Uploads a CPU-quantized tensor (NF4/FP4, double-quantized or not: the absmax goes up as block_absmax(q)).
    explicit DeviceQuantizedTensor(const QuantizedTensor& q);

    int64_t numel() const { return rows * cols; }
    // The tensor as quantize_4bit_cpu would hold it without double quantization (codes and absmax).
    QuantizedTensor download() const;
};

// out (rows, cols) bf16 = code16[q] * absmax[k / block] for element k of the flattened weight; packed
// (rows*cols/2) codes, absmax (rows*cols/block) fp32 (already dequantized), code16 (16) fp32, all on the device.
// block: a power of two >= 16 dividing rows*cols. Any alignment (a scalar kernel covers unaligned pointers).
void dequantize_4bit_cuda(bf16* out, const uint8_t* packed, const float* absmax, const float* code16, int64_t rows,
                          int64_t cols, int block, cudaStream_t stream = 0);
void dequantize_4bit_cuda(bf16* out, const DeviceQuantizedTensor& w, cudaStream_t stream = 0);

// packed (rows*cols/2) uint8, absmax (rows*cols/block) fp32 <- w (rows, cols) fp32, all on the device;
// format NF4 or FP4, block a power of two >= 32 dividing rows*cols (check_spec's rule). Bitwise equal to
// quantize_4bit_cpu without double quantization. Weights must be finite (the CPU checks; the GPU does not).
void quantize_4bit_cuda(uint8_t* packed, float* absmax, const float* w, int64_t rows, int64_t cols,
                        QuantFormat format, int block, cudaStream_t stream = 0);
// fills q (its format, block and shape) from the device weight w (q.rows, q.cols) fp32
void quantize_4bit_cuda(DeviceQuantizedTensor& q, const float* w, cudaStream_t stream = 0);

// out (N,OC) bf16 = inp (N,C) bf16 @ dequant(w)(OC,C)^T, fp32 accumulation, overwritten.
// C and OC multiples of 16 (the tensor-core tile; so the 60m..7b shapes 512, 1376, 2736, 4096, 11008 all
// work); N any >= 0. inp and out 16-byte aligned (any cudaMalloc'd buffer).
void matmul_4bit_forward_cuda(bf16* out, const bf16* inp, const DeviceQuantizedTensor& w, int N, int C, int OC,
                              cudaStream_t stream = 0);
// dinp (N,C) bf16 = dout (N,OC) bf16 @ dequant(w)(OC,C), or += when accumulate (the sum in fp32, rounded to
// bf16 once). Same shape and alignment rules as the forward.
void matmul_4bit_backward_input_cuda(bf16* dinp, const bf16* dout, const DeviceQuantizedTensor& w, int N, int C,
                                     int OC, bool accumulate, cudaStream_t stream = 0);

}  // namespace llmq
