// optimizer: AdamW over a model's parameter buffer, global-norm clipping and the learning-rate schedule.
#pragma once

#include <cstdint>
#include <cstdio>
#include <vector>

#include "model.h"

namespace llmq {

struct OptimizerConfig {
    float lr = 3e-4f;
    float min_lr_ratio = 0.1f;  // the cosine decays to lr * min_lr_ratio
    int warmup_steps = 0;       // linear warmup from lr/warmup to lr
    int total_steps = 1;
    float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
    float weight_decay = 0.1f;  // 2-D weights only (ParamTensor::decay)
    float grad_clip = 1.0f;     // global-norm clipping; <= 0 disables
};

// The learning rate at 0-based step: linear warmup, then cosine from lr to lr*min_lr_ratio at total_steps.
float lr_at_step(const OptimizerConfig& c, int step);

class AdamW {
  public:
    AdamW(const OptimizerConfig& config, size_t num_params);
    // One update of model.params() from model.grads(): clip to grad_clip by global norm, then AdamW
    // at lr_at_step(step). Returns the gradient norm before clipping. step is 0-based. A non-finite gradient
    // norm throws Error naming the step (nothing is updated).
    float step(Model& model, int step);
    const std::vector<float>& m() const { return m_; }
    const std::vector<float>& v() const { return v_; }
    std::vector<float>& m() { return m_; }
    std::vector<float>& v() { return v_; }
    int steps_taken() const { return t_; }
    void set_steps_taken(int t) { t_ = t; }
    const OptimizerConfig& config() const { return config_; }

  private:
    OptimizerConfig config_;
    std::vector<float> m_, v_;
    int t_ = 0;  // number of updates applied (bias correction uses t_ + 1)
};

}  // namespace llmq
