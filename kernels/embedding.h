// embedding: token ids to rows of the embedding table, and the scatter-add of its gradient.
#pragma once

namespace llmq {

// out (N,C) = wte[tokens[n]] ; wte is (V,C). Token ids must already be checked to lie in [0,V).
void embedding_forward_cpu(float* out, const int* tokens, const float* wte, int N, int C);
// dwte (V,C) += scatter of dout (N,C) by token id (deterministic: rows are summed in order n = 0..N-1)
void embedding_backward_cpu(float* dwte, const float* dout, const int* tokens, int N, int C);

}  // namespace llmq
