// optimizer.cpp: the learning-rate schedule and AdamW over the model's parameter buffer, with global-norm
// clipping folded into the update's grad_scale (no pass rewriting the gradients). The update itself is
// kernels/adamw.h; weight decay is switched per tensor by ParamTensor::decay (2-D weights only).
#include "optimizer.h"

#include <algorithm>
#include <cmath>

#include "../kernels/adamw.h"
#include "../kernels/common.h"

namespace llmq {

namespace {
OptimizerConfig fp32_config(OptimizerConfig c) {  // for the fp32 constructor, which refuses eight_bit
    c.eight_bit = false;
    return c;
}

size_t num_params_of(const std::vector<ParamTensor>& tensors) {
    size_t n = 0;
    for (const ParamTensor& t : tensors) n += t.size;
    return n;
}
}  // namespace

float lr_at_step(const OptimizerConfig& c, int step) {
    if (c.warmup_steps > 0 && step < c.warmup_steps) return c.lr * (float)(step + 1) / (float)c.warmup_steps;
    const int decay_steps = c.total_steps - c.warmup_steps;
    if (decay_steps <= 0) return c.lr * c.min_lr_ratio;  // schedule over: stay at the floor
    double progress = (double)(step - c.warmup_steps) / decay_steps;
    progress = progress < 0 ? 0 : progress > 1 ? 1 : progress;
    const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));  // 1 -> 0
    return (float)(c.lr * (c.min_lr_ratio + (1.0 - c.min_lr_ratio) * cosine));
}

float global_grad_norm(const OptimizerConfig& c, const float* grads, size_t n, int step, float* clip_scale) {
    const float norm = (float)std::sqrt(sum_squares_cpu(grads, n));
    LLMQ_CHECK(std::isfinite(norm), "optimizer: gradient norm is %g at step %d (non-finite gradients)", norm, step);
    *clip_scale = (c.grad_clip > 0 && norm > c.grad_clip) ? c.grad_clip / norm : 1.0f;
    return norm;
}

AdamW::AdamW(const OptimizerConfig& config, size_t num_params)
    : config_(config), m_(num_params, 0.0f), v_(num_params, 0.0f) {
    LLMQ_CHECK(!config.eight_bit, "optimizer: 8-bit AdamW needs the tensor layout (AdamW(config, tensors))");
    LLMQ_CHECK(config.total_steps > 0, "optimizer: total_steps %d must be positive", config.total_steps);
    LLMQ_CHECK(config.warmup_steps >= 0, "optimizer: warmup_steps %d must not be negative", config.warmup_steps);
    LLMQ_CHECK(config.lr > 0, "optimizer: lr %g must be positive", config.lr);
    LLMQ_CHECK(config.min_lr_ratio >= 0 && config.min_lr_ratio <= 1, "optimizer: min_lr_ratio %g must lie in [0,1]",
               config.min_lr_ratio);
}

AdamW::AdamW(const OptimizerConfig& config, const std::vector<ParamTensor>& tensors)
    : AdamW(fp32_config(config), config.eight_bit ? 0 : num_params_of(tensors)) {
    config_.eight_bit = config.eight_bit;
    tensors_ = tensors;
    size_t at = 0;
    for (const ParamTensor& t : tensors) state_offset_.push_back(at), at += config.eight_bit ? 0 : t.size;
    if (!config.eight_bit) return;
    for (const ParamTensor& t : tensors) states_.push_back(adam8bit_init((int64_t)t.size));
}

void AdamW::prune_state(float fraction) {
    LLMQ_CHECK(fraction >= 0 && fraction <= 1, "optimizer: prune fraction %g must lie in [0, 1]", fraction);
    if (config_.eight_bit) {
        for (Adam8bitState& s : states_) s = adam8bit_init(s.n);
        return;
    }
    if (fraction <= 0) return;
    // one threshold per tensor (the whole buffer when built from a count, without a layout)
    auto prune = [fraction](float* x, size_t n) {
        if (n == 0) return;
        std::vector<float> mag(x, x + n);
        for (float& v : mag) v = std::fabs(v);
        const size_t k = std::min(n - 1, (size_t)(fraction * n));
        std::nth_element(mag.begin(), mag.begin() + k, mag.end());
        const float threshold = mag[k];
        for (size_t i = 0; i < n; i++)
            if (std::fabs(x[i]) < threshold || fraction >= 1) x[i] = 0.0f;
    };
    auto prune_tensor = [&](size_t offset, size_t n) {
        prune(m_.data() + offset, n);
        prune(v_.data() + offset, n);
        // an element whose v was zeroed must not keep its m: m / (sqrt(v) + eps) would step by m / eps
        for (size_t i = offset; i < offset + n; i++)
            if (v_[i] == 0.0f) m_[i] = 0.0f;
    };
    if (tensors_.empty()) prune_tensor(0, m_.size());
    for (size_t i = 0; i < tensors_.size(); i++) prune_tensor(state_offset_[i], tensors_[i].size);
}

void AdamW::fp32_state_as_buffer(size_t n, std::vector<float>& m, std::vector<float>& v) const {
    LLMQ_CHECK(!config_.eight_bit, "optimizer: fp32_state_as_buffer on 8-bit AdamW");
    if (tensors_.empty()) {
        LLMQ_CHECK(n == m_.size(), "optimizer: state of %zu values for a buffer of %zu", m_.size(), n);
        m = m_, v = v_;
        return;
    }
    m.assign(n, 0.0f), v.assign(n, 0.0f);
    for (size_t i = 0; i < tensors_.size(); i++) {
        const ParamTensor& t = tensors_[i];
        LLMQ_CHECK(t.offset + t.size <= n, "optimizer: tensor %s lies past a buffer of %zu", t.name.c_str(), n);
        std::copy(m_.begin() + state_offset_[i], m_.begin() + state_offset_[i] + t.size, m.begin() + t.offset);
        std::copy(v_.begin() + state_offset_[i], v_.begin() + state_offset_[i] + t.size, v.begin() + t.offset);
    }
}

void AdamW::set_fp32_state_from_buffer(size_t n, const float* m, const float* v) {
    LLMQ_CHECK(!config_.eight_bit, "optimizer: set_fp32_state_from_buffer on 8-bit AdamW");
    if (tensors_.empty()) {
        LLMQ_CHECK(n == m_.size(), "optimizer: state of %zu values for a buffer of %zu", m_.size(), n);
        std::copy(m, m + n, m_.begin()), std::copy(v, v + n, v_.begin());
        return;
    }
    for (size_t i = 0; i < tensors_.size(); i++) {
        const ParamTensor& t = tensors_[i];
        LLMQ_CHECK(t.offset + t.size <= n, "optimizer: tensor %s lies past a buffer of %zu", t.name.c_str(), n);
        std::copy(m + t.offset, m + t.offset + t.size, m_.begin() + state_offset_[i]);
        std::copy(v + t.offset, v + t.offset + t.size, v_.begin() + state_offset_[i]);
    }
}

size_t AdamW::state_bytes() const {
    size_t bytes = (m_.size() + v_.size()) * sizeof(float);
    for (const Adam8bitState& s : states_) bytes += s.state_bytes();
    return bytes;
}

std::vector<uint8_t> AdamW::serialize_8bit() const {
    LLMQ_CHECK(config_.eight_bit, "optimizer: serialize_8bit on fp32 AdamW");
    std::vector<uint8_t> out;
    for (const Adam8bitState& s : states_) adam8bit_serialize(s, out);
    return out;
}

void AdamW::deserialize_8bit(const uint8_t* data, size_t size, const char* what) {
    LLMQ_CHECK(config_.eight_bit, "%s: 8-bit AdamW state, but the optimizer is fp32 AdamW", what);
    size_t offset = 0;
    for (size_t i = 0; i < tensors_.size(); i++) {
        Adam8bitState s = adam8bit_deserialize(data, size, &offset, what);
        LLMQ_CHECK(s.n == (int64_t)tensors_[i].size && s.eight_bit == states_[i].eight_bit,
                   "%s: 8-bit AdamW state of %s holds %lld %s values, the tensor has %zu", what,
                   tensors_[i].name.c_str(), (long long)s.n, s.eight_bit ? "8-bit" : "fp32", tensors_[i].size);
        states_[i] = std::move(s);
    }
    LLMQ_CHECK(offset == size, "%s: 8-bit AdamW state has %zu bytes past the last tensor", what, size - offset);
}

float joint_step(const std::vector<StepPart>& parts, float grad_clip, int step) {
    const float norm = clip_jointly(parts, grad_clip, step);
    for (const StepPart& p : parts) p.opt->step(p.params, p.grads, p.n, *p.tensors, step);
    return norm;
}

float clip_jointly(const std::vector<StepPart>& parts, float grad_clip, int step) {
    double ss = 0;
    for (const StepPart& p : parts)
        for (const ParamTensor& t : *p.tensors) ss += sum_squares_cpu(p.grads + t.offset, t.size);
    const float norm = (float)std::sqrt(ss);
    LLMQ_CHECK(std::isfinite(norm), "optimizer: gradient norm is %g at step %d (non-finite gradients)", norm, step);
    if (grad_clip > 0 && norm > grad_clip) {
        const float k = grad_clip / norm;
        for (const StepPart& p : parts)
            for (const ParamTensor& t : *p.tensors)
                for (size_t i = 0; i < t.size; i++) p.grads[t.offset + i] *= k;
    }
    return norm;
}

float AdamW::step(Model& model, int step) {
    return this->step(model.params(), model.grads(), model.num_params(), model.tensors(), step);
}

float AdamW::step(float* params, const float* grads, size_t n, const std::vector<ParamTensor>& tensors, int step) {
    LLMQ_CHECK(tensors_.empty() ? n == m_.size() : tensors.size() == tensors_.size(),
               "optimizer: built for another parameter layout than the buffer's (%zu parameters)", n);
    float clip_scale = 1.0f;
    const float norm = global_grad_norm(config_, grads, n, step, &clip_scale);
    const float lr = lr_at_step(config_, step) * lr_scale_;
    for (size_t i = 0; i < tensors.size(); i++)
        update_one(i, tensors[i], params + tensors[i].offset, grads + tensors[i].offset, lr, clip_scale);
    t_++;
    return norm;
}

void AdamW::update_tensor(size_t i, float* param, const float* grad, int step) {
    LLMQ_CHECK(i < tensors_.size(), "optimizer: update_tensor %zu needs a layout with that tensor (%zu tensors)", i,
               tensors_.size());
    update_one(i, tensors_[i], param, grad, lr_at_step(config_, step) * lr_scale_, 1.0f);
}

void AdamW::update_one(size_t i, const ParamTensor& t, float* param, const float* grad, float lr, float clip_scale) {
    const float wd = t.decay ? config_.weight_decay : 0.0f;
    if (config_.eight_bit) {
        Adam8bitHyper h{lr, config_.beta1, config_.beta2, config_.eps, wd};
        adam8bit_step_cpu(param, grad, states_[i], h, t_ + 1, clip_scale);
    } else {
        const size_t s = tensors_.empty() ? t.offset : state_offset_[i];
        LLMQ_CHECK(s + t.size <= m_.size(), "optimizer: tensor %s past the state (%zu values)", t.name.c_str(),
                   m_.size());
        adamw_update_cpu(param, grad, m_.data() + s, v_.data() + s, t.size, lr, config_.beta1, config_.beta2,
                         config_.eps, wd, t_ + 1, clip_scale);
    }
}

}  // namespace llmq
