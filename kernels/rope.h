// rope: rotary position embedding in the HF "rotate_half" convention: dim i pairs with i + hd/2,
// inv_freq[i] = theta^(-2i/hd); q' = q*cos + rotate_half(q)*sin, rotate_half(x) = cat(-x[hd/2:], x[:hd/2]).
// Positions are 0..T-1 within each sequence.
#pragma once

namespace llmq {

// Every *_cpu function is a template over the scalar type Real, instantiated for float (the runtime) and
// double (the finite-difference gradient checks) in the .cpp beside this header.

// cos, sin (T, hd/2): angle t * inv_freq[i], computed in double then rounded
template <typename Real>
void rope_tables_cpu(Real* cos, Real* sin, int T, int head_dim, Real theta);
// out, inp (B,T,NH,hd); out may equal inp (in place)
template <typename Real>
void rope_forward_cpu(Real* out, const Real* inp, const Real* cos, const Real* sin, int B, int T, int n_heads,
                      int head_dim);
// dinp (B,T,NH,hd) += R(t)^T dout: the inverse rotation. dinp must not alias dout.
template <typename Real>
void rope_backward_cpu(Real* dinp, const Real* dout, const Real* cos, const Real* sin, int B, int T,
                       int n_heads, int head_dim);

}  // namespace llmq
