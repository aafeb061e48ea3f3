// swiglu: the gate of LLaMA's MLP, out = silu(gate) * up, silu(x) = x * sigmoid(x), elementwise.
#pragma once
#include <cstddef>

namespace llmq {

// Every *_cpu function is a template over the scalar type Real, instantiated for float (the runtime) and
// double (the finite-difference gradient checks) in the .cpp beside this header.

// out, gate, up (n)
template <typename Real>
void swiglu_forward_cpu(Real* out, const Real* gate, const Real* up, size_t n);
// dgate, dup (n) = d(out)/d(gate), d(out)/d(up) times dout (overwrites). In place is allowed: dgate may equal
// gate and dup may equal up (the model's backward writes them over the saved pre-activations, which nothing
// reads after it, so the MLP's backward needs no (N,F) scratch for them).
template <typename Real>
void swiglu_backward_cpu(Real* dgate, Real* dup, const Real* dout, const Real* gate, const Real* up, size_t n);

}  // namespace llmq
