// adam8bit: blockwise 8-bit Adam (Dettmers et al. 2021, bitsandbytes' Adam8bit with block 256), the fused
// CPU reference step and the state's serialisation.
//
// State of a tensor of n parameters (n >= min_8bit_size, 4096 by default):
//   m_codes (n) uint8   first moment, indices into the SIGNED dynamic map   (dynamic_map.h)
//   v_codes (n) uint8   second moment, indices into the UNSIGNED dynamic map
//   m_absmax, v_absmax (ceil(n / 256)) fp32, one per block of 256 consecutive elements (last may be partial)
//   m[i] = signed_map[m_codes[i]] * m_absmax[i / 256], v[i] = unsigned_map[v_codes[i]] * v_absmax[i / 256]
// = 2 + 8/256 = 2.03125 bytes per parameter instead of 8. Smaller tensors keep fp32 m32, v32 (n each)
// as bitsandbytes does (their 8 bytes/param are negligible and quantization noise would hurt most there).
//
// One fused step, per block (what the GPU kernel does with one thread block per 256 elements):
//   dequantize m, v; g = grad * grad_scale;
//   if g is finite: v = b2 v + (1-b2) g^2;  m = b1 m + (1-b1) g;
//                   p -= lr (m / c1) / (sqrt(v / c2) + eps)  with c1 = 1 - b1^t, c2 = 1 - b2^t;
//                   p *= 1 - lr wd                            (decoupled weight decay)
//   else the element's m, v and p are left as they were (bnb instead zeroes that element's m and v);
//   new absmax = max |m|, max |v| over the block; requantize m / absmax, v / absmax to the nearest map
//   value (binary search, ties to the lower index, no stochastic rounding). An all-zero block stores
//   absmax 0 and the code of 0.0.
// The fp32 path runs the same update without the quantization.
// The per-element arithmetic is adam8bit_update.h's, shared with the GPU kernel (adam8bit.cu) so both give the
// same bits: one rounding per operation, the moment updates and the decay factor as explicit fmas.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace llmq {

constexpr int kAdam8bitBlock = 256;
constexpr int64_t kAdam8bitMinSize = 4096;  // tensors with fewer elements keep fp32 states

struct Adam8bitHyper {
    float lr = 1e-3f;
    float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
    float weight_decay = 0.0f;
};

struct Adam8bitState {
    int64_t n = 0;
    bool eight_bit = false;
    std::vector<uint8_t> m_codes, v_codes;  // (n) when eight_bit
    std::vector<float> m_absmax, v_absmax;  // (ceil(n / 256)) when eight_bit
    std::vector<float> m32, v32;            // (n) when !eight_bit

    int64_t num_blocks() const { return (n + kAdam8bitBlock - 1) / kAdam8bitBlock; }
    size_t state_bytes() const;  // bytes of the buffers above
};

// Zero state for a tensor of n elements: 8-bit when n >= min_8bit_size.
Adam8bitState adam8bit_init(int64_t n, int64_t min_8bit_size = kAdam8bitMinSize);

// One step on param (n) from grad (n). step is 1-based (bias corrections use beta^step); grad_scale folds in
// clipping / loss scaling. Throws Error for step < 1 or a non-positive lr/eps or betas outside [0, 1).
void adam8bit_step_cpu(float* param, const float* grad, Adam8bitState& state, const Adam8bitHyper& hyper, int step,
                       float grad_scale = 1.0f);

// The moments as fp32 (n), dequantized in the 8-bit case.
std::vector<float> adam8bit_m(const Adam8bitState& state);
std::vector<float> adam8bit_v(const Adam8bitState& state);

// Checkpoint form: appended to out as plain little-endian arrays:
//   uint32 magic 'A8S1' | int64 n | uint32 eight_bit | uint32 block (256)
//   then m_codes[n] u8, v_codes[n] u8, m_absmax[nb] f32, v_absmax[nb] f32      (eight_bit)
//   or   m32[n] f32, v32[n] f32                                               (fp32)
void adam8bit_serialize(const Adam8bitState& state, std::vector<uint8_t>& out);
size_t adam8bit_serialized_bytes(const Adam8bitState& state);
// Reads one state from data[*offset, size), advancing *offset. Errors name `what` (e.g. the checkpoint
// file) and the problem: bad magic, truncation, unsupported block size.
Adam8bitState adam8bit_deserialize(const uint8_t* data, size_t size, size_t* offset, const char* what);

}  // namespace llmq
