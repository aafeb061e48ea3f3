// quantized_weight: a Linear's quantized base (layers/linear.h, slot 2) backed by one of quant/'s formats.
//
// QLoRA and LoQT keep every attention and MLP weight W (out,in) as NF4/FP4/INT codes (formats.h) and never
// train it; the Linear only needs W back as fp32 for its products. FormatQuantizedWeight holds the
// QuantizedTensor and dequantizes it on demand (dequantize_cpu): the Linear then runs its plain fp32 matmul
// on that copy, bitsandbytes' approach on the CPU. Fused products straight from the codes are the CUDA
// backend's business (issue: CUDA fused dequantizing matmuls), so fused_forward stays the default "none".
#pragma once

#include <memory>

#include "../layers/linear.h"
#include "../layers/state_bytes.h"
#include "formats.h"

namespace llmq {

class FormatQuantizedWeight : public QuantizedWeight {
  public:
    explicit FormatQuantizedWeight(QuantizedTensor q) : q_(std::move(q)) {}
    int rows() const override { return (int)q_.rows; }
    int cols() const override { return (int)q_.cols; }
    void dequantize(float* w) const override { dequantize_cpu(q_, w); }  // w (rows, cols)
    const QuantizedTensor& tensor() const { return q_; }

  private:
    QuantizedTensor q_;
};

// Quantizes w (out, in) with spec (check_spec's errors name the shape and block) into a Linear base.
std::shared_ptr<FormatQuantizedWeight> quantize_weight(const float* w, int out, int in, const QuantSpec& spec);

// Makes q the Linear's base (the `quant` slot) and freezes it (no weight gradient); returns the bytes q holds.
// The fp32 weight pointer stays (the model's buffer still holds W; the products use q).
size_t attach_quantized_base(Linear<float>& linear, QuantizedTensor q);

// A quantized tensor in a checkpoint's state section (LoQT's bases, an initialised QLoRA base): spec, shape and
// every buffer. get_quantized_tensor checks the spec against the shape and every buffer's size against it, with
// errors naming the file (r.what) and `name`.
void put_quantized_tensor(StateWriter& w, const QuantizedTensor& q);
QuantizedTensor get_quantized_tensor(StateReader& r, const std::string& name);

}  // namespace llmq
