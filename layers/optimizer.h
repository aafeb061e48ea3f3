// optimizer: AdamW over a model's parameter buffer, global-norm clipping and the learning-rate schedule.
//
// Two state formats, chosen by OptimizerConfig::eight_bit (./train --optimizer adamw|adamw8bit):
//   fp32   m, v (num_params) each, laid out like the parameter buffer: 8 bytes per parameter;
//   8-bit  one Adam8bitState per parameter tensor (quant/adam8bit.h): block-wise dynamic-map codes for
//          tensors of at least 4096 elements, fp32 for the small ones (norms): about 2.03 bytes per parameter.
// Both run the same schedule, clipping and decay rule (2-D tensors only); the 8-bit update is bitsandbytes'
// fused step (dequantize, update, requantize per block of 256).
#pragma once

#include <cstdint>
#include <cstdio>
#include <vector>

#include "../quant/adam8bit.h"
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
    bool eight_bit = false;     // 8-bit block-wise states (needs the tensor layout: the tensors constructor)
};

// The learning rate at 0-based step: linear warmup, then cosine from lr to lr*min_lr_ratio at total_steps.
float lr_at_step(const OptimizerConfig& c, int step);
// The global norm of grads (n), returned, and in *clip_scale the factor on the gradients that clips it to
// c.grad_clip (1 when under it or clipping is off). A non-finite norm throws Error naming the step.
// Shared by AdamW::step and GaloreOptimizer::step (adapters/galore.h).
float global_grad_norm(const OptimizerConfig& c, const float* grads, size_t n, int step, float* clip_scale);

class AdamW;

// One buffer's share of a joint step: its AdamW (built with grad_clip 0), params and grads (n), and the tensors
// of it that train.
struct StepPart {
    AdamW* opt;
    float* params;
    float* grads;
    size_t n;
    const std::vector<ParamTensor>* tensors;
};
// One update of several buffers as if they were one (adapters or LoQT's factors, plus the model's embeddings,
// norms and lm_head): the global gradient norm over every part's tensors, every gradient clipped by it to
// grad_clip (0: off), then each part's AdamW steps. Returns the norm before clipping; a non-finite one throws.
float joint_step(const std::vector<StepPart>& parts, float grad_clip, int step);
// joint_step's first half: the global norm over the parts' tensors and every gradient clipped by it (opt unused),
// for a step whose optimizers are not all AdamWs (SwitchLoRA's). Returns the norm before clipping.
float clip_jointly(const std::vector<StepPart>& parts, float grad_clip, int step);

class AdamW {
  public:
    // fp32 states for a buffer of num_params (config.eight_bit must be false).
    AdamW(const OptimizerConfig& config, size_t num_params);
    // fp32 or 8-bit states, as config.eight_bit says, for the given tensors of a buffer (all of a model's, or a
    // subset: LoQT's unwrapped tensors). fp32 states are held compactly, tensor after tensor, so a subset costs
    // only its own 8 bytes per parameter.
    AdamW(const OptimizerConfig& config, const std::vector<ParamTensor>& tensors);
    // One update of model.params() from model.grads(): clip to grad_clip by global norm, then AdamW
    // at lr_at_step(step). Returns the gradient norm before clipping. step is 0-based. A non-finite gradient
    // norm throws Error naming the step (nothing is updated).
    float step(Model& model, int step);
    // The same on any buffer: params (n) from grads (n) carved into tensors (the layout this AdamW was built for).
    float step(float* params, const float* grads, size_t n, const std::vector<ParamTensor>& tensors, int step);
    // Layer-wise steps (ModelCore::set_layerwise_update): the step's tensors one at a time as their gradients
    // appear, with no clipping (global-norm clipping needs every gradient first). update_tensor updates tensor i
    // of this AdamW's layout, param and grad pointing at that tensor's own values; end_step closes the step (the
    // bias correction's count). Together they give exactly step() with grad_clip 0 (tested).
    void update_tensor(size_t i, float* param, const float* grad, int step);
    void end_step() { t_++; }
    bool eight_bit() const { return config_.eight_bit; }
    // A factor on the schedule's lr for the next steps (ReLoRA's jagged re-warmup); 1 by default.
    void set_lr_scale(float s) { lr_scale_ = s; }
    // Zeroes every moment whose magnitude is below the `fraction` quantile of its tensor's (m and v apart; an
    // element whose v is zeroed loses its m too, so no step divides a kept m by a zero v):
    // ReLoRA's optimizer-state pruning at a reset. 8-bit states are reset whole (their blocks share scales).
    void prune_state(float fraction);
    size_t state_bytes() const;  // bytes of the moments as held in memory (8 per parameter in fp32)
    // The 8-bit states in checkpoint form (adam8bit_serialize per tensor, in layout order), and back. load
    // checks every state against the tensor it belongs to; errors name `what` (the checkpoint file).
    std::vector<uint8_t> serialize_8bit() const;
    void deserialize_8bit(const uint8_t* data, size_t size, const char* what);
    // fp32 states in the layout of the buffer they update (n floats each, 0 outside this AdamW's tensors):
    // the checkpoint's form, whatever is held in memory; and back (Error unless fp32 and n fits the layout).
    void fp32_state_as_buffer(size_t n, std::vector<float>& m, std::vector<float>& v) const;
    void set_fp32_state_from_buffer(size_t n, const float* m, const float* v);
    // fp32 states as held (empty in 8-bit mode), tensor after tensor; for a whole-model layout that is the
    // buffer's own layout
    const std::vector<float>& m() const { return m_; }
    const std::vector<float>& v() const { return v_; }
    std::vector<float>& m() { return m_; }
    std::vector<float>& v() { return v_; }
    int steps_taken() const { return t_; }
    void set_steps_taken(int t) { t_ = t; }
    const OptimizerConfig& config() const { return config_; }

  private:
    // AdamW on tensor i (its layout entry t) at lr, gradients scaled by clip_scale
    void update_one(size_t i, const ParamTensor& t, float* param, const float* grad, float lr, float clip_scale);
    OptimizerConfig config_;
    std::vector<float> m_, v_;            // fp32 mode
    std::vector<ParamTensor> tensors_;    // the layout (when built from one); 8-bit mode: one state per tensor
    std::vector<size_t> state_offset_;    // fp32 with a layout: where each tensor's m, v start in m_, v_
    std::vector<Adam8bitState> states_;
    int t_ = 0;  // number of updates applied (bias correction uses t_ + 1)
    float lr_scale_ = 1.0f;
};

}  // namespace llmq
