// sampler: text generation from a model: temperature and top-k sampling of the next token, drawn with
// llmq::Rng so a seed reproduces a sample exactly.
//
// Generation re-runs the forward pass over the whole (sliding) context for each new token: there is no
// KV cache on the CPU reference backend, which is fine for the short samples a training run prints.
#pragma once

#include <cstdint>
#include <vector>

#include "../kernels/common.h"
#include "../layers/model.h"

namespace llmq {

struct SampleOptions {
    int tokens = 64;           // new tokens to generate
    float temperature = 0.8f;  // <= 0: greedy (argmax)
    int top_k = 40;            // <= 0: the whole vocabulary
    int max_context = 0;       // the forward pass sees at most this many tokens (0: the model's max_seq_len)
};

// logits (V) -> a token id: softmax(logits / temperature) restricted to the top_k largest, one Rng draw.
int sample_token(const float* logits, int V, float temperature, int top_k, Rng& rng);

// Continues prompt (at least one token) with opts.tokens new ids; returns only the new ids.
std::vector<uint32_t> generate(Model& model, const std::vector<uint32_t>& prompt, const SampleOptions& opts, Rng& rng);

}  // namespace llmq
