// attention: causal scaled-dot-product attention with grouped-query heads (GQA): query head h reads
// key/value head h / (NH/NKV). The forward keeps only the per-row log-sum-exp of the scaled scores,
// never the (T,T) probabilities, so the backward recomputes them (the flash-attention contract the
// CUDA kernel follows too).
#pragma once

namespace llmq {

// Every *_cpu function is a template over the scalar type Real, instantiated for float (the runtime) and
// double (the finite-difference gradient checks) in the .cpp beside this header.

// q (B,T,NH,hd), k v (B,T,NKV,hd) -> out (B,T,NH,hd), lse (B,NH,T); scale 1/sqrt(hd)
template <typename Real>
void attention_forward_cpu(Real* out, Real* lse, const Real* q, const Real* k, const Real* v, int B, int T,
                           int n_heads, int n_kv_heads, int head_dim);
// dq (B,T,NH,hd) += ..., dk dv (B,T,NKV,hd) += ...; out and lse are the forward's
template <typename Real>
void attention_backward_cpu(Real* dq, Real* dk, Real* dv, const Real* dout, const Real* q, const Real* k,
                            const Real* v, const Real* out, const Real* lse, int B, int T, int n_heads,
                            int n_kv_heads, int head_dim);

}  // namespace llmq
