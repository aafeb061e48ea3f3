// embedding: token ids to rows of the embedding table, and the scatter-add of its gradient.
#pragma once

namespace llmq {

// Every *_cpu function is a template over the scalar type Real, instantiated for float (the runtime) and
// double (the finite-difference gradient checks) in the .cpp beside this header.

// out (N,C) = wte[tokens[n]] ; wte is (V,C). Token ids must already be checked to lie in [0,V).
template <typename Real>
void embedding_forward_cpu(Real* out, const int* tokens, const Real* wte, int N, int C);
// dwte (V,C) += scatter of dout (N,C) by token id (deterministic: rows are summed in order n = 0..N-1)
template <typename Real>
void embedding_backward_cpu(Real* dwte, const Real* dout, const int* tokens, int N, int C);

}  // namespace llmq
