// config: the shape of a LLaMA-family model and the named presets.
//
//   preset   dim   ffn    heads kv  layers   (vocab from the tokenizer; max_seq 1024 unless set)
//   tiny     128   352     4    2    4       CPU demo and tests; GQA on purpose
//   60m      512   1376    8    8    8       the seed papers' pretraining configs
//   130m     768   2048   12   12   12       (GaLore / LoQT / SwitchLoRA), ../shared/docs/methods.md
//   350m     1024  2736   16   16   24
//   1b       2048  5461   32   32   24
//   7b       4096  11008  32   32   32
// tiny ties lm_head to the embedding table (the vocabulary dominates a CPU demo); the paper presets keep a
// separate lm_head as their LLaMA configs do (60m with vocab 32000: 58.1M parameters).
#pragma once

#include <cstddef>
#include <string>

namespace llmq {

struct ModelConfig {
    std::string name = "custom";
    int vocab_size = 0;
    int dim = 0;         // hidden size C
    int ffn_dim = 0;     // SwiGLU inner size
    int n_layers = 0;
    int n_heads = 0;
    int n_kv_heads = 0;  // GQA: n_kv_heads divides n_heads
    int max_seq_len = 1024;
    float rope_theta = 10000.0f;
    float norm_eps = 1e-6f;
    bool tied_embeddings = true;  // lm_head shares the embedding table
    float init_std = 0.02f;

    int head_dim() const { return dim / n_heads; }
    // Throws Error naming the preset list when name is unknown.
    static ModelConfig preset(const std::string& name, int vocab_size);
    // Throws Error naming the offending field (e.g. "n_heads 5 does not divide dim 128").
    void validate() const;
    size_t num_params() const;  // every parameter, the embedding once when tied
    std::string describe() const;  // one line: name, shape, parameter count
};

}  // namespace llmq
