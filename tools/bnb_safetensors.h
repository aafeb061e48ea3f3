// bnb_safetensors: NF4/FP4 weights in the safetensors layout bitsandbytes and transformers write for a 4-bit
// model (Linear4bit's state dict), out and back in, so a model quantized by ./quantize loads where a bnb-quantized
// HF checkpoint loads, and a bnb checkpoint's 4-bit weights load into llmq as QuantizedTensors.
//
// Layout, as bitsandbytes defines it (checked against bitsandbytes/functional.py: QuantState.as_dict(packed=True)
// and quantize_4bit; bitsandbytes/nn/modules.py: Linear4bit._save_to_state_dict, which prefixes every entry of
// as_dict with "<module>.weight."; bitsandbytes/utils.py: pack_dict_to_tensor = json.dumps -> UTF-8 -> uint8).
// For a weight W (out, in) named P = "model.layers.0.self_attn.q_proj.weight":
//   P                                       U8  [out*in/2, 1]  the packed codes (Params4bit with quant_storage
//                                                              uint8), byte j = q[2j] << 4 | q[2j+1]
//   P.absmax                                F32 [blocks]       one per block of the flattened weight;
//                                           U8  [blocks]       with double quantization: codes into the
//                                                              nested map (absmax - offset)
//   P.quant_map                             F32 [16]           the 4-bit code table (NF4 or FP4)
//   P.nested_absmax                         F32 [ceil(blocks/256)]   double quantization only: scale per 256
//   P.nested_quant_map                      F32 [256]          double quantization only: the signed dynamic map
//   P.quant_state.bitsandbytes__nf4 (or __fp4)  U8 [bytes]     UTF-8 JSON as Python's json.dumps writes it:
//       {"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [out, in]}  and with double
//       quantization also "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": <mean absmax>
// "dtype" is the dtype the weight had before quantization (what bnb dequantizes back to): float32, bfloat16 or
// float16. These are exactly quant/formats.h's NF4/FP4 buffers (codes, absmax or absmax_codes/absmax_scales/
// absmax_offset), so writing and reading copy bytes and check sizes; nothing is re-quantized.
// bitsandbytes' CUDA kernels take blocks of 64..4096 (powers of two); the writer refuses others.
//
// Reading is strict, as tools/safetensors.h is: a missing key, a wrong dtype or shape, a quant_state whose type
// differs from its key, a code table or nested map other than ours (compared to 1e-6 relative: bnb builds the FP4
// table and the dynamic map in fp32 arithmetic, we round exact values once; the reader keeps our tables), a block
// size or shape that does not fit, or a stray "P.<key>" bnb does not define is one Error naming the file and key.
//
// The whole-model writer puts every other tensor (embeddings, norms, an untied lm_head) in the given dtype, the
// usual HF names (hf_llama.h); transformers additionally needs config.json with a quantization_config to load it.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "../layers/model.h"
#include "../quant/formats.h"
#include "safetensors.h"

namespace llmq {

// "quant_state.bitsandbytes__nf4" or "...__fp4"; Error for an INT format.
std::string bnb_quant_state_key(QuantFormat f);
// Error (naming `what`) unless spec is NF4/FP4 with a block bnb's kernels take (64..4096, a power of two).
void check_bnb_spec(const QuantSpec& spec, const std::string& what);
// "float32" | "bfloat16" | "float16" (torch's names, as the quant_state JSON holds them); Error otherwise.
const char* bnb_dtype_name(Dtype d);

// The buffers SafeTensorToWrite entries point at (a deque: growing it never moves what it holds).
struct BnbBuffers {
    std::deque<std::vector<uint8_t>> bytes;
    std::deque<std::vector<float>> floats;
};

// Appends the tensors of one quantized weight named `name` (e.g. "model.layers.0.mlp.up_proj.weight") to out;
// dtype: the weight's dtype before quantization. Error when q is not NF4/FP4 (check_bnb_spec) or malformed.
void append_bnb_weight(const std::string& name, const QuantizedTensor& q, Dtype dtype,
                       std::vector<SafeTensorToWrite>& out, BnbBuffers& keep);

// Reads the quantized weight `name` back (dtype, when given, receives the quant_state's "dtype").
QuantizedTensor read_bnb_weight(const SafeTensorsFile& f, const std::string& name, Dtype* dtype = nullptr);
// Every quantized weight of the file: each name P with a P.quant_state.bitsandbytes__* key.
std::map<std::string, QuantizedTensor> read_bnb_weights(const SafeTensorsFile& f);
// True when `key` belongs to a quantized weight's group (P or P.<bnb key>) for some P in `weights`.
bool is_bnb_key(const std::string& key, const std::map<std::string, QuantizedTensor>& weights);

// Writes path (metadata {"format": "pt"}): every parameter of model by its HF name, those in `quantized` (keyed by
// tensor name, "....q_proj.weight") in bnb's layout with quant_state dtype `dtype`, every other one in dtype
// (F32, BF16 or F16; narrowing rounds to nearest even); a tied lm_head is left out (it is the embedding table).
void save_bnb_model(const std::string& path, const Model& model, const std::map<std::string, QuantizedTensor>& quantized,
                    Dtype dtype);
// Reads such a file into model (whose config must fit its shapes): plain tensors into model.params(); each
// quantized weight becomes its Linear's quantized base (quant/quantized_weight.h), and its dequantized values
// are also written into model.params() so exporters see them. Every parameter must be present (Error naming the
// file and the missing key), no other tensor may be. Returns the number of quantized weights.
size_t load_bnb_model(const std::string& path, Model& model);

}  // namespace llmq
