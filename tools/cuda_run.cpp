// cuda_run.cpp: CudaRun (cuda_run.h), ./train's GPU step around layers/model_cuda.h.
#include "cuda_run.h"

#include <cmath>
#include <vector>

#include "../kernels/common.h"
#include "../layers/model_cuda.h"

namespace llmq {

namespace {

// the stochastic rounding seed of the update at 0-based step: a function of (--seed, step) only, so a resumed run
// can rebuild the bf16 weights the last update wrote
uint32_t rounding_seed(uint64_t seed, int64_t step) {
    return (uint32_t)Rng::mix(seed * Rng::kGamma + (uint64_t)step + 0x2545F4914F6CDD1Dull);
}

}  // namespace

std::string cuda_unsupported(const TrainOptions& o) {
    if (o.method != "full")
        return format("--method %s runs on the CPU backend only (the GPU backend trains --method full)", o.method.c_str());
    if (o.optimizer != "adamw")
        return format("--optimizer %s runs on the CPU backend only (the GPU backend steps fp32 AdamW)",
                      o.optimizer.c_str());
    if (o.wtacrs > 0) return "--wtacrs runs on the CPU backend only";
    if (o.recompute != "none") return format("--recompute %s runs on the CPU backend only", o.recompute.c_str());
    if (o.layerwise) return "--layerwise 1 runs on the CPU backend only";
    if (o.resume.empty() && o.init_from.empty()) {  // the preset's shape (a checkpoint's or HF's: the kernels check)
        ModelConfig c;
        try {
            c = model_config_for(o, 256);
        } catch (const Error&) {
            return "";  // a shape error: train() reports it, naming the flag
        }
        if (c.head_dim() != 32 && c.head_dim() != 64 && c.head_dim() != 128)
            return format("head_dim %d (dim %d / %d heads) is not one the GPU attention runs (32, 64, 128)",
                          c.head_dim(), c.dim, c.n_heads);
        if (c.dim % 8) return format("dim %d is not a multiple of 8 (the GPU RMSNorm's vector width)", c.dim);
    }
    return "";
}

CudaRun::CudaRun(Model& model, AdamW& opt, const TrainOptions& o, int64_t steps_done)
    : model_(model), opt_(opt), o_(o), gpu_(new ModelCuda(model.config(), model.params())) {
    updates_ = opt.steps_taken();
    if (steps_done > 0) {
        std::vector<float> m, v;
        opt.fp32_state_as_buffer(model.num_params(), m, v);
        gpu_->upload_state(model.params(), m.data(), v.data(), rounding_seed(o.seed, steps_done - 1));
    }
}

CudaRun::~CudaRun() = default;

float CudaRun::micro_batch(const int* inputs, const int* targets) {
    const float loss = gpu_->forward(inputs, targets, o_.batch, o_.seq);
    gpu_->backward();
    return loss;
}

void CudaRun::zero_grad() { gpu_->zero_grad(); }

float CudaRun::grad_norm() { return gpu_->grad_norm() / (float)o_.grad_accum; }

void CudaRun::apply_update(int64_t step, float lr, float norm) {
    const float clip = o_.grad_clip > 0 && norm > o_.grad_clip ? o_.grad_clip / norm : 1.0f;
    const OptimizerConfig& c = opt_.config();
    // the micro-batches' summed gradients: 1 / grad_accum makes them their mean
    gpu_->adamw_step(lr, c.beta1, c.beta2, c.eps, c.weight_decay, ++updates_, clip / (float)o_.grad_accum,
                     rounding_seed(o_.seed, step));
}

float CudaRun::evaluate_batch(const int* inputs, const int* targets) {
    return gpu_->forward(inputs, targets, o_.batch, o_.seq);
}

void CudaRun::sync_to_host() {
    const std::vector<float> params = gpu_->download_params();
    std::copy(params.begin(), params.end(), model_.params());
    std::vector<float> m, v;
    gpu_->download_optimizer_state(m, v);
    opt_.set_fp32_state_from_buffer(model_.num_params(), m.data(), v.data());
    opt_.set_steps_taken(updates_);
}

size_t CudaRun::weight_bytes() const { return gpu_->parameter_bytes(); }
size_t CudaRun::gradient_bytes() const { return gpu_->gradient_bytes(); }
size_t CudaRun::optimizer_bytes() const { return gpu_->optimizer_bytes(); }
size_t CudaRun::activation_bytes() const { return gpu_->activation_bytes(); }
size_t CudaRun::device_peak_bytes() const { return ModelCuda::device_bytes_peak(); }
std::string CudaRun::device_name() const { return ModelCuda::device_name(); }
void CudaRun::profiler_range(bool on) { ModelCuda::profiler_range(on); }

}  // namespace llmq
