// wtacrs: winner-take-all column-row sampling (WTA-CRS, arXiv 2305.15265) of a linear layer's weight gradient.
//
// dW = dY^T X (OC,C) is a sum of N = B*T outer products dY_i^T x_i. WTA-CRS keeps k of the N rows of X at
// forward time (k*C floats instead of N*C) and estimates the sum from them without bias:
//   p_i ~ ||x_i|| * g_i, where g_i guesses ||dY_i|| (dY does not exist yet at forward time);
//   the c most probable rows ("winners", C) are kept deterministically with weight 1, when that lowers the
//   variance bound: c = argmin_c (1 - P_c) / (k - c) over c = 0..k-1 (P_c: mass of the c largest p), used
//   only when the minimum is below 1/k (its value at c = 0); the other k - c rows are drawn with replacement
//   from p_j / (1 - P_C) over the non-winners, each weighted (1 - P_C) / ((k - c) p_j).
// Then E[sum_s w_s dY_{r_s}^T x_{r_s}] = dY^T X exactly, for any dY and any positive proxy g.
// Forward and dX are exact; only dW is sampled.
//
// The proxy g (our choice, the paper caches per-token ||dY|| from the previous epoch, which single-pass
// pretraining does not have): an exponential moving average of the observed ||dY_i|| per sequence POSITION
// t = i mod T (windows are shuffled, so the position in the sequence is the only thing a row keeps from one
// step to the next). Before any observation g = 1 (p ~ ||x_i||, still unbiased). g is floored at
// kProxyFloor * mean(g) so that no row with nonzero x gets p = 0 (that would bias the estimate); a row with
// x_i = 0 gets p = 0, and its contribution dY_i^T x_i is 0 anyway.
//
// Sharing: ./train gives the Linears that read one input one sampler and one SampledRows (layers/linear.h): q,k,v
// keep one sample of norm1's rows, gate,up one of norm2's, instead of three and two. Its p uses the norm of their
// concatenated output gradient, which is what p_i would be for the fused [q;k;v] (or [gate;up]) weight; each
// Linear's estimate stays unbiased, as the selection's guarantee holds for any dY.
//
// Memory: the Linear keeps only the k sampled rows (Linear::kept_sample_bytes), and the activation plan then
// does not keep the full input per layer when no other reader needs it (layers/activations.h): norm1 (q,k,v),
// norm2 (gate, up) and hidden (down) go to one shared one-layer buffer; att (o_proj) too, recomputed in the
// backward from the kept q, k, v, since attention's backward reads it. What stays is what other ops' backward
// needs: the residual stream, q/k/v, the SwiGLU pre-activations gate and up, the logits.
//
// LoRA + WTA-CRS: with a frozen base the sampled gradient is the adapter's dA = du^T X (du = s dY B), formed
// from the same kept rows; u = X A^T (N,r) is kept from the forward so dB and dX stay exact.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../kernels/common.h"
#include "linear.h"
#include "state_bytes.h"

namespace llmq {

// k = min(max(floor(N ratio), 10), N)
int wtacrs_k(int N, double ratio);

// The selection from probabilities p (N, non-negative, any positive sum: normalised here) for k draws:
// fills rows and weights (winners first, weight 1, then the residual draws). Unbiased:
// E[sum_s w_s [r_s == i]] = 1 for every i with p_i > 0. k >= N keeps every row once with weight 1 (exact).
// Returns the number of winners. All p zero: no rows.
template <typename Real>
int wtacrs_select(const std::vector<double>& p, int k, Rng& rng, std::vector<int>& rows, std::vector<Real>& weights);

template <typename Real>
class WtaCrsSampler : public RowSampler<Real> {
  public:
    static constexpr double kProxyFloor = 0.05;  // g >= this * mean(g)
    // ratio in (0,1]; period: the sequence length T (proxy per position i mod T; 0: per row i); decay of the EMA.
    WtaCrsSampler(double ratio, uint64_t seed, int period = 0, double decay = 0.9);

    // inp (N,C) -> rows (k), weights (k)
    void select(const Real* inp, int N, int C, std::vector<int>& rows, std::vector<Real>& weights) override;
    // sq_norms (N) = ||dY_i||^2: updates the proxy from ||dY_i||
    void observe_output_norms(const std::vector<double>& sq_norms) override;

    // The state a resumed run needs to draw the same rows: the Rng and the proxy. append_state adds it to out;
    // restore_state reads it back (Error naming the file when short or corrupt).
    void append_state(StateWriter& out) const;
    void restore_state(StateReader& in);

    double ratio() const { return ratio_; }
    int last_winners() const { return last_winners_; }
    const std::vector<double>& proxy() const { return proxy_; }  // (positions), 0: never observed
    Rng rng;

  private:
    double ratio_, decay_;
    int period_;
    std::vector<double> proxy_;  // EMA of ||dY|| per position
    std::vector<double> p_;      // (N) scratch
    int last_winners_ = 0;
};

// Every sampler of a run, by the name of its Linear, in checkpoint form (a "wtacrs" state section): u32 count,
// then per sampler str name (u32 length + bytes), u64 rng state, u32 proxy length, f64 proxy values.
using NamedSamplers = std::vector<std::pair<std::string, std::shared_ptr<WtaCrsSampler<float>>>>;
std::vector<uint8_t> wtacrs_state_bytes(const NamedSamplers& samplers);
// Restores them; Error naming `what` (the checkpoint) when the set of sampled Linears differs or the bytes are short.
void restore_wtacrs_state(const NamedSamplers& samplers, const std::vector<uint8_t>& bytes, const char* what);

}  // namespace llmq
