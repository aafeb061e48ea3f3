// lora.cpp: LoRA / QLoRA adapters on a frozen base (see lora.h).
#include "lora.h"

#include <cmath>

#include "../kernels/common.h"
#include "../kernels/matmul.h"
#include "../quant/quantized_weight.h"
#include "../tools/hf_peft.h"

namespace llmq {

std::vector<std::string> lora_target_modules(const std::string& targets) {
    if (targets == "attn") return {"q_proj", "k_proj", "v_proj", "o_proj"};
    if (targets == "mlp") return {"gate_proj", "up_proj", "down_proj"};
    if (targets == "all-linear") return {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    throw Error(format("--lora-targets: '%s' is not one of attn|mlp|all-linear", targets.c_str()));
}

namespace {
std::string short_name(const std::string& module) { return module.substr(module.rfind('.') + 1); }
}  // namespace

LoraAdapters::LoraAdapters(Model& model, const LoraOptions& o, uint64_t seed) : options_(o) {
    LLMQ_CHECK(o.rank > 0, "--rank %d must be positive", o.rank);
    LLMQ_CHECK(o.alpha > 0, "--alpha %g must be positive", o.alpha);
    const std::vector<std::string> targets = lora_target_modules(o.targets);
    auto linears = named_linears(model);
    // 1. layout: A then B of each targeted module, in the model's module order
    size_t offset = 0;
    auto add = [&](const std::string& name, int rows, int cols) {
        ParamTensor t;
        t.name = name;
        t.offset = offset;
        t.shape = {rows, cols};
        t.size = (size_t)rows * cols;
        t.decay = true;  // 2-D, so --weight-decay applies as to the model's matrices (HF Trainer's rule too)
        offset += t.size;
        tensors_.push_back(t);
    };
    for (auto& [name, lin] : linears) {
        bool want = false;
        for (const std::string& t : targets) want = want || short_name(name) == t;
        if (name == "lm_head" || !want) continue;
        LLMQ_CHECK(o.rank <= std::min(lin->in, lin->out), "--rank %d exceeds %s's smaller side (%d x %d)", o.rank,
                   name.c_str(), lin->out, lin->in);
        add("base_model.model." + name + ".lora_A.weight", o.rank, lin->in);
        add("base_model.model." + name + ".lora_B.weight", lin->out, o.rank);
        adapted_.emplace_back(name, lin);
    }
    params_.assign(offset, 0.0f);
    grads_.assign(offset, 0.0f);
    init_factors(seed);  // 2. A drawn, B = 0
    // 3. freeze every base weight (lm_head's stays trained with train_rest), attach the views
    for (auto& [name, lin] : linears)
        if (!(o.train_rest && name == "lm_head")) lin->dweight = nullptr;
    for (size_t i = 0; i < adapted_.size(); i++) {
        LoraAdapter<float> ad;
        ad.rank = o.rank;
        ad.scale = o.alpha / o.rank;
        ad.A = params_.data() + tensors_[2 * i].offset;
        ad.dA = grads_.data() + tensors_[2 * i].offset;
        ad.B = params_.data() + tensors_[2 * i + 1].offset;
        ad.dB = grads_.data() + tensors_[2 * i + 1].offset;
        adapted_[i].second->adapters.push_back(ad);
        adapted_[i].second->adapter_dropout = o.dropout;
    }
}

void LoraAdapters::set_dropout_seed(uint64_t seed) {
    for (size_t i = 0; i < adapted_.size(); i++)  // one mask stream per Linear; 0 stays "no dropout"
        adapted_[i].second->dropout_seed = seed ? Rng::mix(seed + (i + 1) * Rng::kGamma) | 1 : 0;
}

// A ~ U(-1/sqrt(in), 1/sqrt(in)) (peft's kaiming_uniform with a = sqrt(5)), B = 0
void LoraAdapters::init_factors(uint64_t seed) {
    Rng rng(seed);
    for (size_t i = 0; i < adapted_.size(); i++) {
        const ParamTensor &a = tensors_[2 * i], &b = tensors_[2 * i + 1];
        const float bound = 1.0f / std::sqrt((float)adapted_[i].second->in);
        for (size_t j = 0; j < a.size; j++) params_[a.offset + j] = bound * (2.0f * rng.uniform() - 1.0f);
        std::fill(params_.begin() + b.offset, params_.begin() + b.offset + b.size, 0.0f);
    }
}

void LoraAdapters::merge_into_base_and_reinit(uint64_t seed) {
    for (size_t i = 0; i < adapted_.size(); i++) {
        auto& [name, lin] = adapted_[i];
        LLMQ_CHECK(!lin->quant && lin->weight, "LoRA merge: %s has a quantized base; merging needs an fp32 one",
                   name.c_str());
        const LoraAdapter<float>& a = lin->adapters.back();  // ours: attached last, one per module
        // W (out,in) += scale B (out,r) A (r,in)
        gemm_cpu(false, false, lin->out, lin->in, a.rank, a.scale, a.B, a.rank, a.A, lin->in, 1.0f, lin->weight, lin->in);
    }
    init_factors(seed);
}

void LoraAdapters::zero_grad() { std::fill(grads_.begin(), grads_.end(), 0.0f); }

size_t quantize_model_linears(Model& model, const QuantSpec& spec) {
    return quantize_model_linears(model, [&](const std::string&, Linear<float>& lin) {
        return quantize_cpu(lin.weight, lin.out, lin.in, spec);
    });
}

size_t quantize_model_linears(Model& model, const LinearQuantizer& quantize) {
    size_t bytes = 0;
    for (auto& [name, lin] : named_linears(model)) {
        if (name == "lm_head") continue;
        LLMQ_CHECK(!lin->quant && lin->weight, "%s already has a quantized base; quantize from the fp32 model",
                   name.c_str());
        bytes += attach_quantized_base(*lin, quantize(name, *lin));
    }
    return bytes;
}

}  // namespace llmq
