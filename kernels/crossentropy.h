// crossentropy: the fused classifier. Softmax, per-row loss and dlogits in one pass over each row,
// so the probabilities are never stored (on the GPU: chunked over the vocabulary, fp32 logits never
// kept whole). Rows whose target equals ignore_index contribute no loss and no gradient.
#pragma once

namespace llmq {

// Every *_cpu function is a template over the scalar type Real, instantiated for float (the runtime) and
// double (the finite-difference gradient checks) in the .cpp beside this header.

// logits (N,V), targets (N) -> losses (N) (0 for ignored rows);
// if dlogits (N,V) is not null: dlogits = grad_scale * (softmax(logits) - onehot(target)), zero rows
// for ignored targets. dlogits may equal logits (computed in place). Written, not accumulated.
template <typename Real>
void crossentropy_forward_backward_cpu(Real* losses, Real* dlogits, const Real* logits, const int* targets, int N,
                                       int V, int ignore_index, Real grad_scale);

}  // namespace llmq
