// residual: out = a + b, the skip connection. Its backward is the identity into both branches, so
// the model adds the incoming gradient into both (see layers/); no separate backward function.
#pragma once
#include <cstddef>

namespace llmq {

// Every *_cpu function is a template over the scalar type Real, instantiated for float (the runtime) and
// double (the finite-difference gradient checks) in the .cpp beside this header.

template <typename Real>
void residual_forward_cpu(Real* out, const Real* a, const Real* b, size_t n);

}  // namespace llmq
