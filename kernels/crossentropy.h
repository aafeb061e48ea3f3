// crossentropy: the fused classifier. Softmax, per-row loss and dlogits in one pass over each row,
// so the probabilities are never stored (on the GPU: chunked over the vocabulary, fp32 logits never
// kept whole). Rows whose target equals ignore_index contribute no loss and no gradient.
#pragma once

namespace llmq {

// logits (N,V), targets (N) -> losses (N) (0 for ignored rows);
// if dlogits (N,V) is not null: dlogits = grad_scale * (softmax(logits) - onehot(target)), zero rows
// for ignored targets. dlogits may equal logits (computed in place). Written, not accumulated.
void crossentropy_forward_backward_cpu(float* losses, float* dlogits, const float* logits, const int* targets, int N,
                                       int V, int ignore_index, float grad_scale);

}  // namespace llmq
