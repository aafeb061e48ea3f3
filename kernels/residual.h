// residual: out = a + b, the skip connection. Its backward is the identity into both branches, so
// the model adds the incoming gradient into both (see layers/); no separate backward function.
#pragma once
#include <cstddef>

namespace llmq {

void residual_forward_cpu(float* out, const float* a, const float* b, size_t n);

}  // namespace llmq
