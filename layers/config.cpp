// config.cpp: the named model presets, their validation and parameter count (see config.h for the table).
//
// tiny ties its embeddings (CPU demo: the vocabulary dominates its size); the paper presets (60m..7b) keep a
// separate lm_head as the GaLore/LoQT/SwitchLoRA configs and LLaMA do, so 60m with vocab 32000 is 58.1M.
#include "config.h"

#include "../kernels/common.h"

namespace llmq {

namespace {

struct Preset {
    const char* name;
    int dim, ffn_dim, n_heads, n_kv_heads, n_layers;
    bool tied;
};

const Preset kPresets[] = {
    {"tiny", 128, 352, 4, 2, 4, true},
    {"60m", 512, 1376, 8, 8, 8, false},
    {"130m", 768, 2048, 12, 12, 12, false},
    {"350m", 1024, 2736, 16, 16, 24, false},
    {"1b", 2048, 5461, 32, 32, 24, false},
    {"7b", 4096, 11008, 32, 32, 32, false},
};

std::string preset_list() {
    std::string s;
    for (const Preset& p : kPresets) s += (s.empty() ? "" : ", ") + std::string(p.name);
    return s;
}

}  // namespace

ModelConfig ModelConfig::preset(const std::string& name, int vocab_size) {
    for (const Preset& p : kPresets) {
        if (name != p.name) continue;
        ModelConfig c;
        c.name = p.name;
        c.vocab_size = vocab_size;
        c.dim = p.dim;
        c.ffn_dim = p.ffn_dim;
        c.n_layers = p.n_layers;
        c.n_heads = p.n_heads;
        c.n_kv_heads = p.n_kv_heads;
        c.tied_embeddings = p.tied;
        c.validate();
        return c;
    }
    throw Error(format("model preset '%s' is unknown (presets: %s)", name.c_str(), preset_list().c_str()));
}

void ModelConfig::validate() const {
    const char* n = name.c_str();
    LLMQ_CHECK(vocab_size > 0, "model %s: vocab_size %d must be positive", n, vocab_size);
    LLMQ_CHECK(dim > 0, "model %s: dim %d must be positive", n, dim);
    LLMQ_CHECK(ffn_dim > 0, "model %s: ffn_dim %d must be positive", n, ffn_dim);
    LLMQ_CHECK(n_layers > 0, "model %s: n_layers %d must be positive", n, n_layers);
    LLMQ_CHECK(n_heads > 0, "model %s: n_heads %d must be positive", n, n_heads);
    LLMQ_CHECK(dim % n_heads == 0, "model %s: n_heads %d does not divide dim %d", n, n_heads, dim);
    LLMQ_CHECK(head_dim() % 2 == 0, "model %s: head_dim %d (dim / n_heads) must be even for RoPE", n, head_dim());
    LLMQ_CHECK(n_kv_heads > 0, "model %s: n_kv_heads %d must be positive", n, n_kv_heads);
    LLMQ_CHECK(n_heads % n_kv_heads == 0, "model %s: n_kv_heads %d does not divide n_heads %d", n, n_kv_heads,
               n_heads);
    LLMQ_CHECK(max_seq_len > 0, "model %s: max_seq_len %d must be positive", n, max_seq_len);
    LLMQ_CHECK(rope_theta > 0, "model %s: rope_theta %g must be positive", n, rope_theta);
    LLMQ_CHECK(norm_eps > 0, "model %s: norm_eps %g must be positive", n, norm_eps);
    LLMQ_CHECK(init_std > 0, "model %s: init_std %g must be positive", n, init_std);
}

size_t ModelConfig::num_params() const {
    const size_t C = dim, F = ffn_dim, V = vocab_size;
    const size_t q_dim = (size_t)n_heads * head_dim(), kv_dim = (size_t)n_kv_heads * head_dim();
    const size_t per_layer = 2 * C                        // input and post-attention RMSNorm
                             + q_dim * C + 2 * kv_dim * C  // q, k, v projections
                             + C * q_dim                   // o projection
                             + 3 * F * C;                  // gate, up, down
    return V * C * (tied_embeddings ? 1 : 2) + (size_t)n_layers * per_layer + C;  // + final norm
}

std::string ModelConfig::describe() const {
    const double p = (double)num_params();
    std::string count = p >= 1e9 ? format("%.2fB", p / 1e9) : format("%.1fM", p / 1e6);
    return format("%s: dim %d, %d layers, %d heads (%d kv), ffn %d, vocab %d, %s: %s params", name.c_str(), dim,
                  n_layers, n_heads, n_kv_heads, ffn_dim, vocab_size, tied_embeddings ? "tied" : "untied",
                  count.c_str());
}

}  // namespace llmq
