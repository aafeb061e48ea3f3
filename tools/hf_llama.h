// hf_llama: Hugging Face LLaMA checkpoints in and out, so weights trained elsewhere load into llmq and ours
// open in transformers (LlamaForCausalLM.from_pretrained) unchanged.
//
// An HF directory holds config.json and either model.safetensors or model.safetensors.index.json, whose
// "weight_map" sends each tensor name to one of several shard files beside it. Tensor names are already
// ours (ParamTensor names are HF's); weights are BF16, F16 or F32 and are widened exactly to fp32.
//
// RoPE layout: llmq rotates pairs (i, i + hd/2) ("rotate_half", kernels/rope.h), as transformers does, so
// HF q_proj/k_proj rows load as they are. Meta's original checkpoints rotate interleaved pairs (2i, 2i+1);
// convert_llama_weights_to_hf.py reorders the rows of each head of q and k so that the two conventions give
// the same attention: permute_qk_meta_to_hf() is that reorder, permute_qk_hf_to_meta() its inverse.
//
// Loading is strict: every tensor of the config's model must be present with the exact shape, no unknown
// tensor may be present (a bias or another architecture would otherwise be silently ignored; rotary
// inv_freq buffers of old checkpoints are the one exception), and config fields whose meaning llmq does not
// implement (rope scaling, biases, another activation, a head_dim other than hidden/heads) are refused.
// Every error names the file and the key.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../layers/config.h"
#include "../layers/model.h"
#include "json.h"
#include "safetensors.h"

namespace llmq {

// ---- config.json

// Reads a transformers LlamaConfig: hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
// num_key_value_heads (default: heads), rms_norm_eps (default 1e-6), rope_theta at the top level or under
// "rope_parameters" (default 10000), vocab_size, tie_word_embeddings (default false),
// max_position_embeddings (default 2048). source names the file in errors.
ModelConfig parse_hf_config(const JsonValue& config, const std::string& source);
ModelConfig read_hf_config(const std::string& dir);  // dir/config.json
// The config.json text transformers reads back into the same model (LlamaForCausalLM, model_type llama).
// dtype: the weights' dtype (torch_dtype field).
std::string hf_config_json(const ModelConfig& config, Dtype dtype);

// ---- the weight files of a directory

struct HfWeightFiles {
    std::vector<SafeTensorsFile> files;         // model.safetensors, or each shard once
    std::map<std::string, size_t> where;        // tensor name -> index into files
    bool sharded = false;                       // read through model.safetensors.index.json
    const SafeTensorsFile* find(const std::string& name) const;  // nullptr when absent
};
// Opens dir/model.safetensors, or else the shards of dir/model.safetensors.index.json. Error when neither
// exists, a shard is missing, or the index lists a tensor its shard lacks.
HfWeightFiles open_hf_weights(const std::string& dir);

// ---- the q/k row permutation between Meta's interleaved and HF's rotate_half RoPE layouts

// w (n_heads*hd, cols), in place. Within each head, Meta row 2i+j (j = 0, 1) becomes HF row j*hd/2 + i,
// exactly `w.view(n_heads, hd/2, 2, cols).transpose(1, 2).reshape(n_heads*hd, cols)` of the HF script.
void permute_qk_meta_to_hf(float* w, int n_heads, int head_dim, int cols);
void permute_qk_hf_to_meta(float* w, int n_heads, int head_dim, int cols);  // the inverse

// ---- loading

enum class QkLayout { HF, Meta };  // Meta: the file's q/k rows are in Meta's layout; permute while loading

struct HfModel {
    std::unique_ptr<Model> model;
    Dtype dtype = Dtype::F32;  // the checkpoint's dtype (its embedding table's)
};
// Reads config.json and the weights of dir into a new Model.
HfModel load_hf_llama(const std::string& dir, QkLayout layout = QkLayout::HF);
// Loads the weights of dir into an existing model whose config must equal dir's (shapes, tying, rope_theta and
// rms_norm_eps; max_seq_len may differ).
void load_hf_weights(const std::string& dir, Model& model, QkLayout layout = QkLayout::HF);

// ---- export

// Writes dir/config.json and dir/model.safetensors (metadata {"format": "pt"}, as transformers writes) with
// every parameter in dtype (BF16, F16 or F32; narrowing rounds to nearest even); lm_head.weight is left out
// when the embeddings are tied. Creates dir if needed. tensors/params: a Model's layout and a buffer in it.
void save_hf_llama(const std::string& dir, const ModelConfig& config, const std::vector<ParamTensor>& tensors,
                   const float* params, Dtype dtype);
void save_hf_llama(const std::string& dir, const Model& model, Dtype dtype);

// "bf16" | "f16" | "f32" (also BF16, F32, ...) -> Dtype; Error naming flag otherwise.
Dtype parse_weight_dtype(const std::string& name, const std::string& flag);
// mkdir -p; Error naming the path.
void make_dirs(const std::string& dir);
// src (n) as the bytes of a dtype tensor (F32: src itself; BF16/F16: a rounded copy appended to keep, which
// must outlive the use). Error for another dtype.
const void* float_data_as(Dtype dtype, const float* src, size_t n, std::vector<std::vector<uint16_t>>& keep);
// Writes text to path atomically (path.tmp, then rename); Error naming the path.
void write_text_file(const std::string& path, const std::string& text);

}  // namespace llmq
