// quantized_weight.cpp: see quantized_weight.h.
#include "quantized_weight.h"

namespace llmq {

std::shared_ptr<FormatQuantizedWeight> quantize_weight(const float* w, int out, int in, const QuantSpec& spec) {
    return std::make_shared<FormatQuantizedWeight>(quantize_cpu(w, out, in, spec));
}

}  // namespace llmq
