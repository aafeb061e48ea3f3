// attention: causal scaled-dot-product attention with grouped-query heads (GQA): query head h reads
// key/value head h / (NH/NKV). The forward keeps only the per-row log-sum-exp of the scaled scores,
// never the (T,T) probabilities, so the backward recomputes them (the flash-attention contract the
// CUDA kernel follows too).
#pragma once

namespace llmq {

// q (B,T,NH,hd), k v (B,T,NKV,hd) -> out (B,T,NH,hd), lse (B,NH,T); scale 1/sqrt(hd)
void attention_forward_cpu(float* out, float* lse, const float* q, const float* k, const float* v, int B, int T,
                           int n_heads, int n_kv_heads, int head_dim);
// dq (B,T,NH,hd) += ..., dk dv (B,T,NKV,hd) += ...; out and lse are the forward's
void attention_backward_cpu(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                            const float* v, const float* out, const float* lse, int B, int T, int n_heads,
                            int n_kv_heads, int head_dim);

}  // namespace llmq
