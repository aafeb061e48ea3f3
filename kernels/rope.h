// rope: rotary position embedding in the HF "rotate_half" convention: dim i pairs with i + hd/2,
// inv_freq[i] = theta^(-2i/hd); q' = q*cos + rotate_half(q)*sin, rotate_half(x) = cat(-x[hd/2:], x[:hd/2]).
// Positions are 0..T-1 within each sequence.
#pragma once

namespace llmq {

// cos, sin (T, hd/2): angle t * inv_freq[i], computed in double then rounded
void rope_tables_cpu(float* cos, float* sin, int T, int head_dim, float theta);
// out, inp (B,T,NH,hd); out may equal inp (in place)
void rope_forward_cpu(float* out, const float* inp, const float* cos, const float* sin, int B, int T, int n_heads,
                      int head_dim);
// dinp (B,T,NH,hd) += R(t)^T dout: the inverse rotation. dinp must not alias dout.
void rope_backward_cpu(float* dinp, const float* dout, const float* cos, const float* sin, int B, int T,
                       int n_heads, int head_dim);

}  // namespace llmq
