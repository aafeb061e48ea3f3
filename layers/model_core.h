// model_core: the math of the LLaMA model (model.h), once, as a template over the scalar type:
// ModelCore<float> is what Model runs; ModelCore<double> is what the whole-model gradient check runs.
// Same parameter layout, same initialisation (fp32 draws, widened for double), same ops from kernels/.
//
// Parameter buffer layout, in order (HF LLaMA names, shapes (out,in) for linear weights):
//   model.embed_tokens.weight (V,C)
//   per layer i, prefix model.layers.i.:
//     input_layernorm.weight (C); self_attn.{q,k,v,o}_proj.weight (QD,C) (KD,C) (KD,C) (C,QD);
//     post_attention_layernorm.weight (C); mlp.{gate,up,down}_proj.weight (F,C) (F,C) (C,F)
//   model.norm.weight (C); lm_head.weight (V,C) only when embeddings are untied.
// Initialisation: normal(0, init_std) for every matrix, in layout order from one Rng(seed); norms 1.
// No 1/sqrt(2L) scaling of the residual-output projections (o_proj, down_proj): the seed papers' LLaMA
// configs (and HF's LlamaPreTrainedModel) use plain std 0.02 everywhere, and we match them.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "activations.h"
#include "config.h"
#include "linear.h"
#include "model.h"

namespace llmq {

template <typename Real>
struct TransformerLayer {
    Real *ln1 = nullptr, *dln1 = nullptr;  // input_layernorm (C)
    Real *ln2 = nullptr, *dln2 = nullptr;  // post_attention_layernorm (C)
    Linear<Real> q, k, v, o, gate, up, down;
};

// Rows per classifier chunk by default (ModelCore::set_classifier_chunk): (256,V) logits at a time.
constexpr int kDefaultClassifierChunk = 256;

template <typename Real>
class ModelCore {
  public:
    ModelCore(const ModelConfig& config, uint64_t seed);
    ModelCore(const ModelCore&) = delete;
    ModelCore& operator=(const ModelCore&) = delete;

    const ModelConfig& config() const { return config_; }
    const std::vector<ParamTensor>& tensors() const { return tensors_; }
    const ParamTensor& tensor(const std::string& name) const;
    size_t num_params() const { return params_.size(); }
    Real* params() { return params_.data(); }
    Real* grads() { return grads_.data(); }
    const Real* params() const { return params_.data(); }
    const Real* grads() const { return grads_.data(); }

    // As Model::forward / backward (model.h).
    Real forward(const int* tokens, const int* targets, int B, int T);
    const Real* logits() const { return acts_.logits; }
    void zero_grad();
    void backward(Real loss_scale = Real(1));

    size_t activation_bytes() const;
    const Activations<Real>& activations() const { return acts_; }
    // Per layer, the DroppedInput bits the next forward will plan (activations.h), from the Linears' needs:
    // an input is dropped when no Linear reading it needs it in the backward (att: when o_proj samples).
    std::vector<uint8_t> dropped_inputs() const;
    // Keep every layer input whatever the Linears need (for readers of the saved activations after a forward:
    // calibration); off by default.
    void set_keep_all_inputs(bool keep) { keep_all_inputs_ = keep; }
    // Keep no gate/up per layer: the backward recomputes them (activations.h, "Recomputation"); off by default.
    // Losses and gradients are the same bit for bit (tested); the cost is the gate and up products once more.
    void set_recompute_mlp(bool on) { recompute_mlp_ = on; }
    // The classifier of a forward with targets runs over chunks of this many rows (0: the whole batch at once):
    // logits (rows,V) for the loss, recomputed in the backward for dlogits, so a training step never holds the
    // (N,V) logits (for a 32k vocabulary and 4096 tokens: 512 MB in fp32) at the cost of one more lm_head
    // product. Losses and gradients are the same math either way (tested); a forward without targets (sampling)
    // always keeps every row's logits.
    void set_classifier_chunk(int rows) { classifier_chunk_ = rows; }

    // Per-layer weight updates (LoQT's and GaLore's layer-wise trick, ./train --layerwise 1): from now on, each
    // layer Linear's weight gradient is formed during the backward in one scratch the size of the largest and
    // handed at once to update(tensor index, weight, gradient, size) (Linear's immediate path), so the gradient
    // buffer shrinks to the tensors that are not layer Linears: the embeddings (and lm_head), the norms. grads()
    // then holds those compactly; grad_of(i) finds one (null for a layer Linear's). Irreversible.
    using TensorUpdateFn = std::function<void(size_t tensor, Real* param, const Real* grad, size_t n)>;
    void set_layerwise_update(TensorUpdateFn update);
    bool layerwise() const { return layerwise_; }
    size_t num_grads() const { return grads_.size(); }  // num_params(), or the compact buffer's size
    const Real* grad_of(size_t tensor) const;           // tensor's gradient in grads(), or null when not held
    size_t gradient_bytes() const;  // the gradient buffer and (layer-wise) the shared scratch

    // The layers' Linear views, for attaching adapters, samplers, quantized bases, immediate updates.
    std::vector<TransformerLayer<Real>>& layers() { return layers_; }
    Linear<Real>& lm_head() { return lm_head_; }

  private:
    size_t tensor_index(const std::string& name) const;  // Error naming it when absent
    std::string head_name() const;                      // lm_head's weight: the embedding when tied
    Real* grad_view(const std::string& name);           // its gradient in grads_, null when not held
    // Points every gradient view (dembed_, the norms', the Linears' dweight, lm_head's) at grads_ by grad_offset_
    void point_gradient_views();
    void check_inputs(const int* tokens, const int* targets, int B, int T) const;
    // Rows r0..r0+R of the classifier: their logits into acts_.logits, their losses, then dlogits in place.
    void classifier_rows(int r0, int R);

    ModelConfig config_;
    bool keep_all_inputs_ = false, recompute_mlp_ = false, layerwise_ = false;
    std::vector<size_t> grad_offset_;     // per tensor: where its gradient lies in grads_ (SIZE_MAX: not held)
    std::vector<Real> layerwise_scratch_; // the immediate path's gradient, (largest layer Linear)
    int classifier_chunk_ = kDefaultClassifierChunk;
    std::vector<ParamTensor> tensors_;
    std::vector<Real> params_, grads_;
    Real *embed_ = nullptr, *dembed_ = nullptr, *normf_ = nullptr, *dnormf_ = nullptr;
    std::vector<TransformerLayer<Real>> layers_;
    Linear<Real> lm_head_;
    std::shared_ptr<LinearScratch<Real>> linear_scratch_;  // shared by every Linear above
    Activations<Real> acts_;
    int valid_targets_ = 0;      // non-ignored targets of the last forward
    bool have_dlogits_ = false;  // a forward with targets ran since the last backward
};

}  // namespace llmq
