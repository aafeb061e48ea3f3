// test_util: helpers every kind of test uses: expecting an llmq::Error with given words, the logits of a
// model on a fixed random sequence, a random batch, small model configs.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../kernels/common.h"
#include "../layers/model.h"

namespace llmq_test {

// Runs f, expecting an llmq::Error whose message contains every one of `parts`.
template <typename F>
void expect_error(F&& f, std::initializer_list<std::string> parts) {
    try {
        f();
        ADD_FAILURE() << "no llmq::Error thrown; expected one with '" << *parts.begin() << "'";
    } catch (const llmq::Error& e) {
        for (const std::string& p : parts)
            EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << "message '" << e.what() << "' lacks '" << p << "'";
    }
}

// Logits (T, V) of model on T tokens drawn from Rng(seed): the same sequence for every model of a test.
inline std::vector<float> logits_on_random_tokens(llmq::Model& m, int T, uint64_t seed) {
    const int V = m.config().vocab_size;
    llmq::Rng rng(seed);
    std::vector<int> tokens(T);
    for (int& t : tokens) t = (int)rng.below(V);
    m.forward(tokens.data(), nullptr, 1, T);
    return std::vector<float>(m.logits(), m.logits() + (size_t)T * V);
}

// A two-layer model small enough for tests that run many forwards: vocab 48, dim (ffn 2 dim), 4 heads, 2 kv heads,
// 16 positions, init std 0.1 (weights large enough that adapter changes show in the logits).
// A (B,T) batch of uniform random tokens and targets below V, drawn from Rng(seed), token then target per position.
struct RandomBatch {
    int B, T;
    std::vector<int> tokens, targets;
    RandomBatch(int V, uint64_t seed, int batch = 2, int seq = 12) : B(batch), T(seq) {
        llmq::Rng rng(seed);
        for (int i = 0; i < B * T; i++) tokens.push_back((int)rng.below(V)), targets.push_back((int)rng.below(V));
    }
};

inline llmq::ModelConfig small_model_config(int dim = 32) {
    llmq::ModelConfig c;
    c.vocab_size = 48;
    c.dim = dim;
    c.ffn_dim = 2 * dim;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.max_seq_len = 16;
    c.init_std = 0.1f;
    return c;
}

// The 2-layer GQA model (vocab 64, dim 64, ffn 128, seq 32, the default init) the adapter tests attach LoRA to.
inline llmq::ModelConfig lora_test_config() {
    llmq::ModelConfig c = small_model_config(64);
    c.vocab_size = 64, c.max_seq_len = 32, c.init_std = llmq::ModelConfig().init_std;
    return c;
}

inline float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    float d = 0;
    for (size_t i = 0; i < a.size() && i < b.size(); i++) d = std::max(d, std::fabs(a[i] - b[i]));
    return d;
}

}  // namespace llmq_test
