// model_cuda: the LLaMA decoder of model.h on the GPU, for full training in bf16 mixed precision.
//
//   parameters   one fp32 master buffer in parameter_layout order (the CPU model's, so checkpoints and
//                HF names mean the same), one bf16 copy of it that every kernel reads, one fp32 gradient
//                buffer of the same layout, and AdamW's fp32 m and v
//   activations  bf16, planned for (B,T) at the first forward and kept for the backward: per layer the
//                residual stream, norm1, q (roped), k (roped), v, att, lse, mid, norm2, gate, up, hidden;
//                then normf and the (N,V) bf16 logits, which the fused classifier turns into dlogits in place
//   step         forward (loss), backward (gradients += ...), grad_norm, adamw_step (fp32 masters, bf16 copy
//                by stochastic rounding)
//
// The math is model_core.cpp's, op for op, through the kernels' CUDA versions (kernels/<op>.cu); the one
// fusion is the residual add with the RMSNorm that follows it (kernels/rmsnorm.cu). Every layer and op is an
// NVTX range. Deterministic: two runs from the same parameters and tokens give bitwise the same losses and
// gradients (no float atomics anywhere; test/test_model_cuda.cu checks it).
// This header names no CUDA type, so the trainer (plain C++) drives the GPU model through it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config.h"
#include "model.h"

namespace llmq {

struct ModelCudaBuffers;  // the device buffers (model_cuda.cu)

class ModelCuda {
  public:
    // Uploads params (num_params fp32, parameter_layout order: e.g. Model::params()) as the master weights.
    ModelCuda(const ModelConfig& config, const float* params);
    ~ModelCuda();
    ModelCuda(const ModelCuda&) = delete;
    ModelCuda& operator=(const ModelCuda&) = delete;

    const ModelConfig& config() const { return config_; }
    const std::vector<ParamTensor>& tensors() const { return tensors_; }
    size_t num_params() const { return num_params_; }

    // tokens, targets (B,T) on the host, checked against the vocabulary. Returns the mean loss over
    // targets != kIgnoreIndex, summed on the host in double from the per-row fp32 losses.
    float forward(const int* tokens, const int* targets, int B, int T);
    void zero_grad();
    // Accumulates d(mean loss of the last forward)/d(params) into the gradient buffer.
    void backward();
    // sqrt(sum of squares) of the whole gradient buffer (deterministic reduction).
    float grad_norm();
    // AdamW on every tensor (weight decay on 2-D tensors only, as the CPU AdamW), gradients times grad_scale;
    // step is 1-based (the bias correction's). The bf16 copy is rounded stochastically with seed's streams.
    void adamw_step(float lr, float beta1, float beta2, float eps, float weight_decay, int step, float grad_scale,
                    uint32_t seed);
    // Resuming: the masters and AdamW's m, v (num_params each) from a checkpoint, and the bf16 copy rebuilt as
    // the step with `seed` rounded it (so the run goes on bit for bit as if it had never stopped).
    void upload_state(const float* params, const float* m, const float* v, uint32_t seed);
    void download_optimizer_state(std::vector<float>& m, std::vector<float>& v) const;

    std::vector<float> download_params() const;  // the fp32 masters (num_params)
    std::vector<float> download_grads() const;   // (num_params)
    size_t parameter_bytes() const;   // masters + bf16 copy
    size_t gradient_bytes() const;
    size_t optimizer_bytes() const;   // m, v
    size_t activation_bytes() const;  // for the last (B,T), scratch included

    // What this process has allocated on the GPU now (cudaMemGetInfo: total - free, so it includes cuBLAS's
    // workspace and the CUDA context), and the most seen by any call of it so far.
    static size_t device_bytes_in_use();
    static size_t device_bytes_peak();
    static std::string device_name();
    // Nsight's capture range (cudaProfilerStart / Stop): ./train --profile brackets its steps with them.
    static void profiler_range(bool on);

  private:
    void plan(int B, int T);
    uint32_t tensor_seed(uint32_t seed, size_t tensor) const;  // (re)allocates the activations for (B,T)
    void forward_layer(int l);
    void backward_layer(int l);

    ModelConfig config_;
    std::vector<ParamTensor> tensors_;
    size_t num_params_ = 0;
    int B_ = 0, T_ = 0, valid_targets_ = 0;
    bool have_dlogits_ = false;
    std::unique_ptr<ModelCudaBuffers> d_;
};

}  // namespace llmq
