// hf_peft: LoRA adapters in peft's on-disk layout, out and in, and the "merged" export.
//
// peft (PeftModel.save_pretrained / from_pretrained) keeps one adapter per module in a directory:
//   adapter_model.safetensors  base_model.model.<module>.lora_A.weight (r, in)
//                              base_model.model.<module>.lora_B.weight (out, r)
//                              <module> e.g. model.layers.0.self_attn.q_proj, or lm_head
//   adapter_config.json        peft_type "LORA", task_type "CAUSAL_LM", r, lora_alpha, target_modules,
//                              rank_pattern / alpha_pattern (per-module exceptions), bias "none", ...
// and adds scale * B A x to each module's output with scale = lora_alpha / r, exactly the LoraAdapter of
// layers/linear.h (y += scale (x A^T) B^T). So a Linear's adapter exports as it is, with lora_alpha =
// scale * r. peft holds one adapter per module, so a Linear with several adapters must be merged first.
//
// The merged export folds every adapter into its base weight (W + scale B A, in fp32) and writes a plain
// HF model (hf_llama.h): what an adapter-free runtime serves.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "../kernels/common.h"
#include "../layers/linear.h"
#include "../layers/model.h"
#include "safetensors.h"

namespace llmq {

// Every Linear of the model by its HF module name: model.layers.<i>.self_attn.{q,k,v,o}_proj,
// model.layers.<i>.mlp.{gate,up,down}_proj, lm_head; in that order.
std::vector<std::pair<std::string, Linear<float>*>> named_linears(Model& model);

// Owns adapter factors attached to a model's Linears (the Linears only point at them). Keep it alive as long as
// the adapters are attached.
struct AdapterStore {
    std::vector<std::vector<float>> buffers;  // each A or B, moved in (vector moves keep the data pointer)
    float* add(std::vector<float> values);
};

// Attaches one LoRA adapter (rank r, scale alpha / r) to each named module (HF module names, or short names
// such as "q_proj" meaning that module in every layer), A and B drawn normal(0, init_std) from rng: both
// nonzero, so tests and checks see the adapter's effect (training code initialises B = 0 itself).
// Factors are frozen (no gradient pointers). Error naming an unknown module.
void attach_random_lora(Model& model, const std::vector<std::string>& modules, int r, float alpha, float init_std,
                        Rng& rng, AdapterStore& store);

struct PeftExportOptions {
    std::string base_model_name_or_path;  // written to adapter_config.json (peft loads the base from here)
    Dtype dtype = Dtype::F32;             // adapter tensors: F32, BF16 or F16
};
// Writes dir/adapter_model.safetensors and dir/adapter_config.json from the adapters attached to model's
// Linears. Error when no Linear has an adapter, or one has several.
void save_peft_adapter(const std::string& dir, Model& model, const PeftExportOptions& options);

// Reads a peft LoRA directory (ours or peft's) and attaches its adapters to model (frozen), factors owned by
// store. Supports r / lora_alpha with rank_pattern / alpha_pattern (full module names or suffixes) and
// use_rslora (scale alpha / sqrt(r)); refuses DoRA, fan_in_fan_out, biases, modules_to_save, and any key,
// module or shape that does not fit the model, naming the file and key.
void load_peft_adapter(const std::string& dir, Model& model, AdapterStore& store);

// Writes dir as a plain HF model (hf_llama.h) whose weights are model's with every adapter folded in:
// W + scale B A, where W is the dequantized base for a quantized Linear (QLoRA, LoQT): the plain bf16 model
// that computes what the quantized model with adapters computes. The model itself is not changed. Error when an adapter sits on a tied lm_head (folding it
// would change the embedding table too).
void save_hf_llama_merged(const std::string& dir, Model& model, Dtype dtype);

}  // namespace llmq
