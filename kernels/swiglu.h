// swiglu: the gate of LLaMA's MLP, out = silu(gate) * up, silu(x) = x * sigmoid(x), elementwise.
#pragma once
#include <cstddef>

namespace llmq {

// out, gate, up (n)
void swiglu_forward_cpu(float* out, const float* gate, const float* up, size_t n);
// dgate, dup (n) += ...
void swiglu_backward_cpu(float* dgate, float* dup, const float* dout, const float* gate, const float* up, size_t n);

}  // namespace llmq
