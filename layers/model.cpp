// model.cpp: Model (model.h), the fp32 runtime face of ModelCore<float> (model_core.h).
#include "model.h"

#include <cstring>

#include "model_core.h"

namespace llmq {

struct Model::Impl {
    ModelCore<float> core;
    Impl(const ModelConfig& config, uint64_t seed) : core(config, seed) {}
};

Model::Model(const ModelConfig& config, uint64_t seed) : impl_(new Impl(config, seed)) {}
Model::~Model() = default;

const ModelConfig& Model::config() const { return impl_->core.config(); }
const std::vector<ParamTensor>& Model::tensors() const { return impl_->core.tensors(); }
const ParamTensor& Model::tensor(const std::string& name) const { return impl_->core.tensor(name); }
size_t Model::num_params() const { return impl_->core.num_params(); }
float* Model::params() { return impl_->core.params(); }
float* Model::grads() { return impl_->core.grads(); }
const float* Model::params() const { return impl_->core.params(); }
const float* Model::grads() const { return impl_->core.grads(); }
float Model::forward(const int* tokens, const int* targets, int B, int T) {
    return impl_->core.forward(tokens, targets, B, T);
}
const float* Model::logits() const { return impl_->core.logits(); }
void Model::zero_grad() { impl_->core.zero_grad(); }
void Model::backward(float loss_scale) { impl_->core.backward(loss_scale); }
size_t Model::activation_bytes() const { return impl_->core.activation_bytes(); }
size_t Model::activation_bytes_for(const ModelConfig& config, int B, int T) {
    return Activations<float>::bytes_for(config, B, T);
}
ModelCore<float>& Model::core() { return impl_->core; }
const ModelCore<float>& Model::core() const { return impl_->core; }

std::vector<ParamTensor> parameter_layout(const ModelConfig& c) {
    const int C = c.dim, F = c.ffn_dim, V = c.vocab_size, QD = c.n_heads * c.head_dim(),
              KD = c.n_kv_heads * c.head_dim();
    std::vector<ParamTensor> tensors;
    size_t offset = 0;
    auto add = [&](const std::string& name, std::vector<int> shape) {
        ParamTensor t;
        t.name = name;
        t.offset = offset;
        t.size = 1;
        for (int d : shape) t.size *= (size_t)d;
        t.shape = std::move(shape);
        t.decay = t.shape.size() == 2;
        offset += t.size;
        tensors.push_back(t);
    };
    add("model.embed_tokens.weight", {V, C});
    for (int l = 0; l < c.n_layers; l++) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        add(p + "input_layernorm.weight", {C});
        add(p + "self_attn.q_proj.weight", {QD, C});
        add(p + "self_attn.k_proj.weight", {KD, C});
        add(p + "self_attn.v_proj.weight", {KD, C});
        add(p + "self_attn.o_proj.weight", {C, QD});
        add(p + "post_attention_layernorm.weight", {C});
        add(p + "mlp.gate_proj.weight", {F, C});
        add(p + "mlp.up_proj.weight", {F, C});
        add(p + "mlp.down_proj.weight", {C, F});
    }
    add("model.norm.weight", {C});
    if (!c.tied_embeddings) add("lm_head.weight", {V, C});
    return tensors;
}

bool is_attention_mlp_weight(const ParamTensor& t) {
    if (t.shape.size() != 2 || t.name.rfind("model.layers.", 0) != 0) return false;
    for (const char* module : {".self_attn.q_proj.weight", ".self_attn.k_proj.weight", ".self_attn.v_proj.weight",
                               ".self_attn.o_proj.weight", ".mlp.gate_proj.weight", ".mlp.up_proj.weight",
                               ".mlp.down_proj.weight"}) {
        const size_t n = strlen(module);
        if (t.name.size() >= n && t.name.compare(t.name.size() - n, n, module) == 0) return true;
    }
    return false;
}

}  // namespace llmq
