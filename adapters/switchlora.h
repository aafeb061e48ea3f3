// switchlora: SwitchLoRA (Zhou et al. 2024, "SwitchLoRA: Switched Low-Rank Adaptation Can Learn Full-Rank
// Information"): LoRA for pretraining whose adapter vectors are swapped, a few at a time, for vectors from a
// pool of candidates, so that over a run the adapters reach far more than r directions of each weight.
//
// Per adapted Linear W (m = out, n = in), y = x W^T + s (x A^T) B^T, A (r,n), B (m,r), s = 1/r (build the
// LoraAdapters with alpha = 1: s = alpha / r; the swaps use the adapter's own scale whatever it is, but the
// init below is sized for s = 1/r):
//   init   A, B ~ U(+-sqrt(3) std), std_A = ((sqrt(m) r) / n^1.5)^(1/4) sqrt(gain),
//          std_B = (r / sqrt(m n))^(1/4) sqrt(gain), gain = sqrt(1/3); the frozen base becomes W0 - s B A, so
//          the model computes what it did before (up to fp32 rounding).
//   pools  min(m,n) vectors per factor, drawn like A's rows (length n) and B's columns (length m): r of them
//          are A's rows / B's columns, the other min(m,n) - r wait in the pool (a layer with min(m,n) = r
//          has no candidates and never switches).
//   switch every optimizer step (after the gradients, before the update), per layer,
//          k = stochastic_round(r / interval(t)) rows of A and k columns of B are exchanged with random
//          pool vectors; the old vector goes back into the pool. Output-preserving:
//            A row i <- c:    W += s B[:,i] (A[i,:] - c)         then B's column i is reset and frozen;
//            B column j <- c: W += s (B[:,j] - c) A[j,:]         then A's row j is reset and frozen
//          ("reset" = Adam moments 0 and its own step counter 0; frozen = no update for freeze_steps steps;
//          switchlora_optimizer.h). The switched vector itself keeps its Adam state.
//   interval(t) = interval0 / growth^((t+1) / (descent T)): 40 at the start, x1/0.3 every 10% of training;
//          floored at 2 freeze_steps (a counterpart must thaw before its slot switches again) and the rate
//          growth^... at 1e-8.
//
// Followed the authors' code (switchlora/switch_lora.py, lora_utils.py): the init bounds, pool size, the
// exponential schedule with its 1e-8 floor, one stochastic rounding per layer and step used for both factors,
// round-robin slots (A's cursor starts at 0, B's at r/2, so the two sets switched in a step are disjoint and
// a frozen vector is not switched), the counterpart reset. Deviations: (1) the old vector goes back into the
// pool as trained (their default switch_drop = 0 skips the write-back, leaving the pool at its initial values;
// the paper and methods.md describe the write-back); (2) candidates are drawn uniformly (their weights are
// uniform unless a rank estimate is switched on); (3) an interval below 2 freeze_steps is clamped, where
// theirs raises; (4) a quantized base is refused (theirs re-quantizes after each swap).
//
// Checkpoints: serialize() holds the pools, cursors, Rng and the optimizer (moments, per-vector counters);
// the adapters' parameters and the changed base are the checkpoint's own sections. To resume, build the
// model, LoraAdapters and SwitchLora as for a fresh run (the constructor's init is then overwritten), load
// the base and adapter parameters, then deserialize().
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../kernels/common.h"
#include "lora.h"
#include "switchlora_optimizer.h"

namespace llmq {

struct SwitchLoraOptions {
    int total_steps = 1;      // T, the run's optimizer steps
    float interval0 = 40.0f;  // the switch interval before the first step
    float growth = 0.3f;      // the switching rate's factor every descent*T steps (interval x 1/growth)
    float descent = 0.1f;     // fraction of T per factor `growth` (the authors' switch_lora_descent_rate)
    int freeze_steps = 5;     // updates a reset counterpart vector sits out
    uint64_t seed = 0;        // init, pools, rounding, candidate choice
};

// interval(t) above for 0-based step t.
double switchlora_interval(const SwitchLoraOptions& options, int step);
// floor(x) + 1 with probability x - floor(x), else floor(x): E = x. x >= 0.
int stochastic_round(double x, Rng& rng);

class SwitchLora {
  public:
    // Re-initialises lora's A, B and every adapted base (fp32 only: Error naming a quantized one), draws the
    // pools, and builds the optimizer over lora's buffer with `optimizer` (its total_steps is the lr schedule's).
    SwitchLora(LoraAdapters& lora, const SwitchLoraOptions& options, const OptimizerConfig& optimizer);
    SwitchLora(const SwitchLora&) = delete;
    SwitchLora& operator=(const SwitchLora&) = delete;

    // The switches before the update of 0-based step: returns the vectors switched (A rows + B columns, all
    // layers). k per layer is capped by the slots free to switch (not frozen), which with interval >= 2
    // freeze_steps is rare.
    int switch_vectors(int step);
    // The update of step from lora's gradients (SwitchLoraOptimizer::step); returns the gradient norm.
    float step(int step) { return optimizer_.step(lora_, step); }
    SwitchLoraOptimizer& optimizer() { return optimizer_; }
    const SwitchLoraOptimizer& optimizer() const { return optimizer_; }

    size_t num_layers() const { return layers_.size(); }
    int pool_size(size_t layer) const { return layers_[layer].pool; }  // candidates waiting, per factor
    // (pool, in): the waiting candidates for A's rows; (pool, out): for B's columns, one column per row.
    const std::vector<float>& pool_A(size_t layer) const { return layers_[layer].pool_A; }
    const std::vector<float>& pool_B(size_t layer) const { return layers_[layer].pool_B; }

    // Checkpoint state (format v1, in switchlora.cpp). deserialize checks the magic, version, every shape
    // against this object and the exact size; errors name `what`. A failed load changes nothing.
    std::vector<uint8_t> serialize() const;
    void deserialize(const uint8_t* data, size_t size, const char* what);
    size_t state_bytes() const;  // pools + optimizer moments and counters
    size_t pool_bytes() const;   // the candidate pools alone
    std::string describe() const;

  private:
    struct Layer {
        std::string name;
        Linear<float>* linear = nullptr;
        float *A = nullptr, *B = nullptr;  // (r,in), (out,r) in lora's buffer
        float scale = 1;
        int in = 0, out = 0, pool = 0;
        std::vector<float> pool_A, pool_B;  // (pool,in), (pool,out)
        int cursor_A = 0, cursor_B = 0;     // round-robin slot cursors
    };
    void apply_switches(Layer& L, const std::vector<int>& rows, const std::vector<int>& cand_A,
                        const std::vector<int>& cols, const std::vector<int>& cand_B);

    LoraAdapters& lora_;
    SwitchLoraOptions options_;
    int rank_ = 0;
    std::vector<Layer> layers_;
    SwitchLoraOptimizer optimizer_;
    Rng rng_;
};

}  // namespace llmq
