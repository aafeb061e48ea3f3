// optimizer.cpp: the learning-rate schedule and AdamW over the model's parameter buffer, with global-norm
// clipping folded into the update's grad_scale (no pass rewriting the gradients). The update itself is
// kernels/adamw.h; weight decay is switched per tensor by ParamTensor::decay (2-D weights only).
#include "optimizer.h"

#include <cmath>

#include "../kernels/adamw.h"
#include "../kernels/common.h"

namespace llmq {

float lr_at_step(const OptimizerConfig& c, int step) {
    if (c.warmup_steps > 0 && step < c.warmup_steps) return c.lr * (float)(step + 1) / (float)c.warmup_steps;
    const int decay_steps = c.total_steps - c.warmup_steps;
    if (decay_steps <= 0) return c.lr * c.min_lr_ratio;  // schedule over: stay at the floor
    double progress = (double)(step - c.warmup_steps) / decay_steps;
    progress = progress < 0 ? 0 : progress > 1 ? 1 : progress;
    const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));  // 1 -> 0
    return (float)(c.lr * (c.min_lr_ratio + (1.0 - c.min_lr_ratio) * cosine));
}

AdamW::AdamW(const OptimizerConfig& config, size_t num_params)
    : config_(config), m_(num_params, 0.0f), v_(num_params, 0.0f) {
    LLMQ_CHECK(config.total_steps > 0, "optimizer: total_steps %d must be positive", config.total_steps);
    LLMQ_CHECK(config.warmup_steps >= 0, "optimizer: warmup_steps %d must not be negative", config.warmup_steps);
    LLMQ_CHECK(config.lr > 0, "optimizer: lr %g must be positive", config.lr);
    LLMQ_CHECK(config.min_lr_ratio >= 0 && config.min_lr_ratio <= 1, "optimizer: min_lr_ratio %g must lie in [0,1]",
               config.min_lr_ratio);
}

float AdamW::step(Model& model, int step) {
    LLMQ_CHECK(model.num_params() == m_.size(), "optimizer: built for %zu parameters, the model has %zu", m_.size(),
               model.num_params());
    const float norm = (float)std::sqrt(sum_squares_cpu(model.grads(), model.num_params()));
    LLMQ_CHECK(std::isfinite(norm), "optimizer: gradient norm is %g at step %d (non-finite gradients)", norm, step);
    const float clip_scale = (config_.grad_clip > 0 && norm > config_.grad_clip) ? config_.grad_clip / norm : 1.0f;
    const float lr = lr_at_step(config_, step);
    for (const ParamTensor& t : model.tensors()) {
        adamw_update_cpu(model.params() + t.offset, model.grads() + t.offset, m_.data() + t.offset,
                         v_.data() + t.offset, t.size, lr, config_.beta1, config_.beta2, config_.eps,
                         t.decay ? config_.weight_decay : 0.0f, t_ + 1, clip_scale);
    }
    t_++;
    return norm;
}

}  // namespace llmq
