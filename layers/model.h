// model: the LLaMA-family decoder on the CPU reference backend (fp32).
//
//   x = embed(tokens)                                   (B,T,C)
//   for each layer:  x += o_proj(attn(rope(q(n1)), rope(k(n1)), v(n1))),  n1 = rmsnorm(x)
//                    x += down(silu(gate(n2)) * up(n2)),                  n2 = rmsnorm(x)
//   logits = lm_head(rmsnorm(x))                        (B,T,V)
//   loss = mean cross-entropy over targets != kIgnoreIndex
//
// Parameters live in one buffer carved into named tensors (HF LLaMA names), gradients in a second
// buffer of the same layout; activations in a third, planned for (B,T) at the first forward.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config.h"

namespace llmq {

constexpr int kIgnoreIndex = -100;

template <typename Real>
class ModelCore;  // model_core.h: the math, a template over the scalar type

struct ParamTensor {
    std::string name;        // e.g. "model.layers.0.self_attn.q_proj.weight"
    size_t offset = 0;       // into the parameter (and gradient) buffer, in floats
    std::vector<int> shape;  // e.g. {out, in} for linear weights
    size_t size = 0;
    bool decay = false;      // AdamW weight decay applies to 2-D weights only
};

// The parameter buffer's tensors in layout order (model_core.h lists it), shared by the CPU model and the GPU
// model (model_cuda.h), so a checkpoint means the same on both.
std::vector<ParamTensor> parameter_layout(const ModelConfig& config);

// Whether t is the weight of an attention or MLP Linear (model.layers.L.self_attn.{q,k,v,o}_proj.weight,
// model.layers.L.mlp.{gate,up,down}_proj.weight): what low-rank methods adapt, project or wrap; the rest
// (embeddings, norms, lm_head) they train in full or freeze.
bool is_attention_mlp_weight(const ParamTensor& t);

class Model {
  public:
    // Allocates and initialises (normal(0, init_std); norms to 1) from seed.
    Model(const ModelConfig& config, uint64_t seed);
    ~Model();
    Model(const Model&) = delete;
    Model& operator=(const Model&) = delete;

    const ModelConfig& config() const;
    const std::vector<ParamTensor>& tensors() const;
    const ParamTensor& tensor(const std::string& name) const;  // throws Error when absent
    size_t num_params() const;
    float* params();  // (num_params)
    float* grads();   // (num_params), laid out like params(); with --layerwise compact (ModelCore::grad_of)
    const float* params() const;
    const float* grads() const;

    // tokens, targets (B,T). Token ids are checked against the vocabulary (Error names the id and position).
    // Returns the mean loss over targets != kIgnoreIndex (or 0 with targets == nullptr: logits only).
    float forward(const int* tokens, const int* targets, int B, int T);
    // Logits (B,T,V) of the last forward with targets == nullptr (the classifier overwrites them otherwise).
    const float* logits() const;
    void zero_grad();
    // Accumulates loss_scale * d(mean loss of the last forward)/d(params) into grads().
    void backward(float loss_scale = 1.0f);

    size_t activation_bytes() const;  // bytes held for the last (B,T)
    // The activation bytes a forward/backward at (B,T) will hold, computed from the plan without allocating.
    static size_t activation_bytes_for(const ModelConfig& config, int B, int T);

    // The fp32 core (model_core.h): its layers' Linear views take adapters, quantized bases, samplers and
    // immediate-update callbacks; its activations() name every saved tensor.
    ModelCore<float>& core();
    const ModelCore<float>& core() const;

    struct Impl;

  private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace llmq
