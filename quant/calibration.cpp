// calibration: linear-layer input statistics S = X^T X from forward passes over calibration text (calibration.h).
#include "calibration.h"

#include <algorithm>

#include "../kernels/common.h"
#include "../layers/model_core.h"
#include "../tools/dataloader.h"
#include "../tools/hf_peft.h"
#include "../tools/progress.h"

namespace llmq {

CalibrationSet load_calibration_set(const std::string& data, const std::string& split, int64_t tokens, int seq,
                                    uint64_t seed, int vocab_size) {
    LLMQ_CHECK(tokens > 0 && seq > 0, "calibration: %lld tokens in sequences of %d: both must be positive",
               (long long)tokens, seq);
    DataLoader loader(data, split, 1, seq, seed, /*shuffle=*/true);
    loader.set_vocab_limit(vocab_size);
    const int64_t n_seq = (tokens + seq - 1) / seq;
    LLMQ_CHECK((uint64_t)n_seq <= loader.num_windows(),
               "%s: %lld calibration tokens need %lld windows of %d tokens, the %s split has %llu (%s)", data.c_str(),
               (long long)tokens, (long long)n_seq, seq, split.c_str(), (unsigned long long)loader.num_windows(),
               loader.description().c_str());
    CalibrationSet set;
    std::vector<int> inputs(seq), targets(seq);
    for (int64_t s = 0; s < n_seq; s++) {
        loader.next_batch(inputs.data(), targets.data());
        const int64_t take = std::min<int64_t>(seq, tokens - set.tokens);
        set.sequences.emplace_back(inputs.begin(), inputs.begin() + take);
        set.tokens += take;
    }
    return set;
}

const HessianAccumulator& CalibrationHessians::at(const std::string& module) const {
    auto it = input_of.find(module);
    LLMQ_CHECK(it != input_of.end(), "calibration: module %s was not calibrated", module.c_str());
    return inputs[it->second];
}

std::vector<std::string> attention_mlp_modules(Model& model) {
    std::vector<std::string> names;
    for (auto& [name, linear] : named_linears(model))
        if (linear != &model.core().lm_head()) names.push_back(name);
    return names;
}

namespace {

// Which saved activation a Linear reads: layer (-1 for lm_head) and kind.
enum class InputKind { Norm1, Att, Norm2, Hidden, NormF };
struct InputSource {
    int layer;
    InputKind kind;
    bool operator<(const InputSource& o) const { return layer != o.layer ? layer < o.layer : kind < o.kind; }
};

InputSource source_of(Model& model, const Linear<float>* linear, const std::string& name) {
    auto& layers = model.core().layers();
    for (int l = 0; l < (int)layers.size(); l++) {
        const TransformerLayer<float>& L = layers[l];
        if (linear == &L.q || linear == &L.k || linear == &L.v) return {l, InputKind::Norm1};
        if (linear == &L.o) return {l, InputKind::Att};
        if (linear == &L.gate || linear == &L.up) return {l, InputKind::Norm2};
        if (linear == &L.down) return {l, InputKind::Hidden};
    }
    LLMQ_CHECK(linear == &model.core().lm_head(), "calibration: no activation is saved for the input of %s",
               name.c_str());
    return {-1, InputKind::NormF};
}

const float* rows_of(const Activations<float>& a, InputSource s) {
    switch (s.kind) {
        case InputKind::Norm1: return a.layers[s.layer].norm1;
        case InputKind::Att: return a.layers[s.layer].att;
        case InputKind::Norm2: return a.layers[s.layer].norm2;
        case InputKind::Hidden: return a.layers[s.layer].hidden;
        case InputKind::NormF: return a.normf;
    }
    return nullptr;
}

}  // namespace

CalibrationHessians calibrate_hessians(Model& model, const CalibrationSet& set, const std::vector<std::string>& modules,
                                       Progress* bar) {
    LLMQ_CHECK(set.tokens > 0 && !set.sequences.empty(), "calibration: the calibration set is empty");
    const std::vector<std::string> wanted = modules.empty() ? attention_mlp_modules(model) : modules;
    std::map<std::string, Linear<float>*> by_name;
    for (auto& [name, linear] : named_linears(model)) by_name[name] = linear;

    CalibrationHessians out;
    std::map<InputSource, size_t> slot;  // distinct inputs -> index into out.inputs
    std::vector<InputSource> sources;
    for (const std::string& name : wanted) {
        auto it = by_name.find(name);
        LLMQ_CHECK(it != by_name.end(), "calibration: unknown module %s (names as model.layers.0.self_attn.q_proj)",
                   name.c_str());
        const InputSource s = source_of(model, it->second, name);
        auto [pos, fresh] = slot.emplace(s, out.inputs.size());
        if (fresh) {
            out.inputs.emplace_back(it->second->in);
            sources.push_back(s);
        }
        out.input_of[name] = pos->second;
    }
    // the inputs are read from the saved activations after each forward: keep them all, for this pass only
    // (also when an error leaves the loop)
    struct KeepAllInputs {
        ModelCore<float>& core;
        explicit KeepAllInputs(ModelCore<float>& c) : core(c) { core.set_keep_all_inputs(true); }
        ~KeepAllInputs() { core.set_keep_all_inputs(false); }
    } keep_all(model.core());
    for (const std::vector<int>& seq : set.sequences) {
        const int T = (int)seq.size();
        model.forward(seq.data(), nullptr, 1, T);
        const Activations<float>& acts = model.core().activations();
        for (size_t i = 0; i < sources.size(); i++) out.inputs[i].add(rows_of(acts, sources[i]), T);
        out.tokens += T;
        if (bar) bar->add(T);
    }
    return out;
}

double calibrated_sq_norm(const HessianAccumulator& acc, const float* a, const float* b, int64_t rows, int64_t cols) {
    LLMQ_CHECK(acc.dim == cols, "calibrated_sq_norm: statistics of width %lld for a weight with %lld columns",
               (long long)acc.dim, (long long)cols);
    double total = 0;
#pragma omp parallel reduction(+ : total)
    {
        std::vector<double> d(cols);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t c = 0; c < cols; c++) d[c] = (double)a[r * cols + c] - (b ? (double)b[r * cols + c] : 0.0);
            // acc.sum holds the lower triangle: d^T S d = sum_a S_aa d_a^2 + 2 sum_{b<a} S_ab d_a d_b
            double row = 0;
            for (int64_t i = 0; i < cols; i++) {
                const double* s = &acc.sum[i * cols];
                double off = 0;
                for (int64_t j = 0; j < i; j++) off += s[j] * d[j];
                row += d[i] * (s[i] * d[i] + 2 * off);
            }
            total += row;
        }
    }
    return total;
}

double sq_distance(const float* a, const float* b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)a[i] - (b ? (double)b[i] : 0.0);
        s += d * d;
    }
    return s;
}

}  // namespace llmq
