// adam8bit_cuda.h: the fused blockwise 8-bit Adam step on the GPU (quant/adam8bit.cu; the CPU reference and
// the state's layout: adam8bit.h). The same bits as adam8bit_step_cpu: both run adam8bit_update.h's
// arithmetic and the same nearest-code search.
#pragma once

#include <cstdint>

#include "../kernels/cuda_common.h"
#include "adam8bit.h"

namespace llmq {

// The two 256-entry dynamic maps (dynamic_map.h) on the device, uploaded once.
struct Adam8bitMapsCuda {
    DeviceBuffer<float> signed_map, unsigned_map;  // (256) fp32 each
    Adam8bitMapsCuda();
};

// One step of an 8-bit state (adam8bit.h's layout; n >= 1, any n: the last block of 256 may be partial):
//   param, grad (n) fp32; m_codes, v_codes (n) uint8; m_absmax, v_absmax (ceil(n/256)) fp32; the maps (256)
// param, the codes and the absmax are updated in place. step is 1-based; grad_scale multiplies grad first.
// Errors as adam8bit_step_cpu's for step and hyper, and for n < 1 or a null pointer.
void adam8bit_step_cuda(float* param, const float* grad, uint8_t* m_codes, uint8_t* v_codes, float* m_absmax,
                        float* v_absmax, const float* signed_map, const float* unsigned_map, int64_t n,
                        const Adam8bitHyper& hyper, int step, float grad_scale = 1.0f, cudaStream_t stream = 0);

// One step of an fp32 state (the tensors under kAdam8bitMinSize elements): param, grad, m, v (n) fp32.
void adam8bit_step_fp32_cuda(float* param, const float* grad, float* m, float* v, int64_t n,
                             const Adam8bitHyper& hyper, int step, float grad_scale = 1.0f, cudaStream_t stream = 0);

}  // namespace llmq
