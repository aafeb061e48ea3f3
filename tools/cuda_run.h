// cuda_run: ./train --device cuda, the training step on the GPU model (layers/model_cuda.h).
//
// The run's CPU Model and its AdamW stay the host mirror of the GPU state: the data loader, the log and the
// metrics are the CPU run's; before a checkpoint or a sample the masters, m, v and the step count come down
// into them (sync_to_host), so checkpoints are the same files the CPU backend writes and resume on either
// backend. What the GPU backend trains today: --method full with fp32 AdamW (cuda_unsupported lists the rest).
//
// Determinism: the bf16 weights are rounded stochastically from the masters after each update with a seed from
// (--seed, step); a resumed run rebuilds them from the checkpoint's masters with the last step's seed, so it goes
// on bit for bit as if it had never stopped.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "../layers/model.h"
#include "../layers/optimizer.h"
#include "trainer.h"

namespace llmq {

class ModelCuda;

// "" when the GPU backend runs these flags, else one sentence naming the flag that it does not (yet) run.
std::string cuda_unsupported(const TrainOptions& o);

class CudaRun {
  public:
    // Uploads model's parameters; `steps_done` > 0 (a resumed run) also uploads opt's m, v and rebuilds the bf16
    // weights as step steps_done - 1 rounded them.
    CudaRun(Model& model, AdamW& opt, const TrainOptions& o, int64_t steps_done);
    ~CudaRun();

    // One micro-batch: forward with targets, backward accumulating into the gradients. Returns the mean loss.
    float micro_batch(const int* inputs, const int* targets);
    void zero_grad();
    // After the step's micro-batches: the gradient norm of their mean (the backward summed them).
    float grad_norm();
    // The AdamW update at lr of 0-based step, the gradients clipped by norm (grad_norm's) to --grad-clip.
    void apply_update(int64_t step, float lr, float norm);
    float evaluate_batch(const int* inputs, const int* targets);  // mean loss, nothing kept
    // The masters, m, v and AdamW's step count into the CPU model and optimizer.
    void sync_to_host();

    size_t weight_bytes() const;
    size_t gradient_bytes() const;
    size_t optimizer_bytes() const;
    size_t activation_bytes() const;
    size_t device_peak_bytes() const;  // everything this process holds on the GPU, at most so far
    std::string device_name() const;
    void profiler_range(bool on);

  private:
    Model& model_;
    AdamW& opt_;
    TrainOptions o_;
    std::unique_ptr<ModelCuda> gpu_;
    int updates_ = 0;  // AdamW updates applied (its bias correction's count)
};

}  // namespace llmq
