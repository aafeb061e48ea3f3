// quantized_weight.cpp: see quantized_weight.h.
#include "quantized_weight.h"

#include "../kernels/common.h"

namespace llmq {

std::shared_ptr<FormatQuantizedWeight> quantize_weight(const float* w, int out, int in, const QuantSpec& spec) {
    return std::make_shared<FormatQuantizedWeight>(quantize_cpu(w, out, in, spec));
}

size_t attach_quantized_base(Linear<float>& linear, QuantizedTensor q) {
    LLMQ_CHECK(q.rows == linear.out && q.cols == linear.in, "a (%lld, %lld) quantized weight for a (%d, %d) Linear",
               (long long)q.rows, (long long)q.cols, linear.out, linear.in);
    const size_t bytes = tensor_bytes(q);
    linear.quant = std::make_shared<FormatQuantizedWeight>(std::move(q));
    linear.dweight = nullptr;
    return bytes;
}

}  // namespace llmq
