// lora: trainable low-rank adapters on a frozen (optionally quantized) base: LoRA and QLoRA.
//
//   y = x W^T + s (drop(x) A^T) B^T,   A (r, in), B (out, r), s = alpha / r     (peft's LoraLayer)
//
// drop is peft's lora_dropout on the adapters' input, in training forwards only (layers/linear.h: the mask is
// regenerated from a per-forward seed, never stored).
//
// Init as peft: A ~ kaiming_uniform(a = sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), B = 0, so training starts from
// the base model's outputs exactly. Every base weight is frozen: the Linears lose their gradient buffers (no
// weight gradient is formed at all), embeddings and norms are not updated (with train_rest the trainer updates
// them and lm_head, whose gradient is then kept). QLoRA (--weights nf4, ...) also
// replaces every attention and MLP weight by its quantized codes (quant/quantized_weight.h); the products
// then use the dequantized base, as bitsandbytes does. lm_head, embeddings and norms stay full precision.
//
// The adapters' parameters live in ONE buffer carved into named tensors in peft's naming
// (base_model.model.<module>.lora_A.weight / lora_B.weight), with a gradient buffer of the same layout, so the
// optimizer (layers/optimizer.h), checkpoints and the NaN report treat them like the model's own buffer; the
// Linears only point into it (layers/linear.h), which is why the buffer never reallocates after attach.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "../layers/linear.h"
#include "../layers/model.h"
#include "../quant/formats.h"

namespace llmq {

struct LoraOptions {
    int rank = 8;
    float alpha = 16.0f;                  // s = alpha / rank
    std::string targets = "all-linear";   // attn (q,k,v,o), mlp (gate,up,down), all-linear (both; never lm_head)
    float dropout = 0;                    // p of peft's lora_dropout, in [0, 1)
    bool train_rest = false;              // embeddings, norms and lm_head train too: lm_head keeps its gradient
};

// The short module names ("q_proj", ...) a --lora-targets value selects; Error naming the flag otherwise.
std::vector<std::string> lora_target_modules(const std::string& targets);

class LoraAdapters {
  public:
    // Freezes every base Linear of model and attaches one adapter per targeted module, A drawn from Rng(seed).
    LoraAdapters(Model& model, const LoraOptions& options, uint64_t seed);
    LoraAdapters(const LoraAdapters&) = delete;
    LoraAdapters& operator=(const LoraAdapters&) = delete;

    const std::vector<ParamTensor>& tensors() const { return tensors_; }
    size_t num_params() const { return params_.size(); }
    float* params() { return params_.data(); }
    float* grads() { return grads_.data(); }
    const float* params() const { return params_.data(); }
    const float* grads() const { return grads_.data(); }
    void zero_grad();
    const LoraOptions& options() const { return options_; }
    // The dropout masks of the next training forward (and its backward) come from seed; 0: no dropout
    // (evaluation, sampling). No effect with dropout 0.
    void set_dropout_seed(uint64_t seed);
    // The adapted modules (name, Linear), in tensor order: module i owns tensors()[2i] (A) and [2i+1] (B).
    const std::vector<std::pair<std::string, Linear<float>*>>& modules() const { return adapted_; }

    // A ~ U(-1/sqrt(in), 1/sqrt(in)) from Rng(seed), B = 0: the adapters add nothing until trained.
    void init_factors(uint64_t seed);
    // W += s B A for every adapted Linear (an fp32 base only; Error naming a quantized one), then the adapters
    // are re-initialised from seed: the model computes what it did (up to fp32 rounding), with fresh adapters.
    void merge_into_base_and_reinit(uint64_t seed);

  private:
    LoraOptions options_;
    std::vector<std::pair<std::string, Linear<float>*>> adapted_;  // the modules, in tensor order (A, B each)
    std::vector<ParamTensor> tensors_;
    std::vector<float> params_, grads_;
};

// QLoRA's base: every attention and MLP weight of model replaced by spec's codes (lm_head, embeddings and
// norms stay fp32). Returns the bytes the codes and their scales take. check_spec's errors name the shape.
size_t quantize_model_linears(Model& model, const QuantSpec& spec);
// The same with the codes of each module from quantize(name, linear) (adapters/lora_init.h picks them per layer).
// Error naming a module whose base is already quantized (the codes are formed from the fp32 weight).
using LinearQuantizer = std::function<QuantizedTensor(const std::string& name, Linear<float>& linear)>;
size_t quantize_model_linears(Model& model, const LinearQuantizer& quantize);

}  // namespace llmq
