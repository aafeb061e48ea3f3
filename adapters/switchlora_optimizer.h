// switchlora_optimizer: AdamW over a LoraAdapters buffer with one step counter per adapter VECTOR (each row of
// A (r,in), each column of B (out,r)), as SwitchLoRA (Zhou et al. 2024, adapters/switchlora.h) needs: when a
// row of A is switched for a candidate, the counterpart column of B restarts (moments zeroed, step counter 0)
// and is frozen for a few updates, so its bias correction must restart on its own.
//
// Per vector k with counter t_k, at every step:
//   t_k += 1;
//   frozen (freeze counter > 0):  counter -= 1; the vector is left as it is (no Adam step, no weight decay);
//   otherwise:                    the AdamW element update of kernels/adamw.h with bias corrections
//                                 1 - beta1^t_k, 1 - beta2^t_k (clipping, lr schedule and decoupled decay as
//                                 layers/optimizer.h's AdamW).
// With no reset every t_k is the global step count, so this is plain AdamW on the buffer, bit for bit.
//
// Followed: the authors' code (switchlora/optimizer.py, switch_lora.py with --zero_switch_state
// --zero_switch_step_state as their run scripts use): per-element step tensors; a frozen vector's gradient is
// zeroed after clipping, so its moments stay 0 while its counter keeps counting, and its first real update
// uses t = freeze_steps + 1 (a damped first step). Deviation: their frozen vectors still get the decoupled
// weight decay (p *= 1 - lr wd); here frozen means untouched (their runs use wd 0, where both agree).
#pragma once

#include <cstdint>
#include <vector>

#include "../layers/optimizer.h"
#include "lora.h"

namespace llmq {

enum class LoraFactor { A = 0, B = 1 };

class SwitchLoraOptimizer {
  public:
    // fp32 states for a LoraAdapters layout: tensors in (A (r,in), B (out,r)) pairs of one rank r.
    // config.eight_bit is refused (Error).
    SwitchLoraOptimizer(const OptimizerConfig& config, const std::vector<ParamTensor>& tensors);
    // One update of params (n) from grads (n): clip by global norm (every gradient counts, frozen ones too),
    // then the per-vector AdamW above at lr_at_step(step). Returns the norm before clipping; a non-finite norm
    // throws Error naming the step (nothing updated). step is 0-based.
    float step(float* params, const float* grads, size_t n, int step);
    float step(LoraAdapters& lora, int step) {
        return this->step(lora.params(), lora.grads(), lora.num_params(), step);
    }

    // Vector `index` (A: a row, B: a column) of adapted module `layer`: moments zeroed, step counter 0,
    // frozen for the next `freeze_steps` updates.
    void reset_and_freeze(size_t layer, LoraFactor f, int index, int freeze_steps);

    size_t num_layers() const { return tensors_.size() / 2; }
    int rank() const { return rank_; }
    // Index of a vector into vector_steps() / frozen(): (layer * 2 + factor) * rank + index.
    size_t vector_index(size_t layer, LoraFactor f, int index) const {
        return (layer * 2 + (size_t)f) * (size_t)rank_ + (size_t)index;
    }
    int steps_of(size_t layer, LoraFactor f, int index) const { return steps_[vector_index(layer, f, index)]; }
    int frozen_of(size_t layer, LoraFactor f, int index) const { return frozen_[vector_index(layer, f, index)]; }

    // The state, laid out like the buffer (m, v) and per vector (steps, frozen): for checkpoints and tests.
    std::vector<float>& m() { return m_; }
    std::vector<float>& v() { return v_; }
    std::vector<int32_t>& vector_steps() { return steps_; }
    std::vector<int32_t>& frozen() { return frozen_; }
    const std::vector<float>& m() const { return m_; }
    const std::vector<float>& v() const { return v_; }
    const std::vector<int32_t>& vector_steps() const { return steps_; }
    const std::vector<int32_t>& frozen() const { return frozen_; }
    size_t state_bytes() const;  // moments (8 per parameter) and the two counters per vector
    const OptimizerConfig& config() const { return config_; }

  private:
    OptimizerConfig config_;
    std::vector<ParamTensor> tensors_;
    int rank_ = 0;
    std::vector<float> m_, v_;             // (n) each
    std::vector<int32_t> steps_, frozen_;  // (layers, 2, r)
};

}  // namespace llmq
