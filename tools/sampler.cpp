// sampler.cpp: top-k / temperature sampling and the generation loop (see sampler.h).
#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace llmq {

int sample_token(const float* logits, int V, float temperature, int top_k, Rng& rng) {
    if (temperature <= 0.0f) return (int)(std::max_element(logits, logits + V) - logits);
    int k = top_k > 0 && top_k < V ? top_k : V;
    std::vector<int> ids(V);
    std::iota(ids.begin(), ids.end(), 0);
    // the k largest first; ties broken by id so the choice does not depend on the sort's internals
    auto larger = [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
    if (k < V) std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), larger);
    double max_logit = logits[*std::max_element(ids.begin(), ids.begin() + k, [&](int a, int b) { return larger(b, a); })];
    std::vector<double> p(k);
    double sum = 0;
    for (int i = 0; i < k; i++) sum += p[i] = std::exp((logits[ids[i]] - max_logit) / temperature);
    double u = rng.uniform() * sum, acc = 0;
    for (int i = 0; i < k; i++) {
        acc += p[i];
        if (u < acc) return ids[i];
    }
    return ids[k - 1];
}

std::vector<uint32_t> generate(Model& model, const std::vector<uint32_t>& prompt, const SampleOptions& opts,
                               Rng& rng) {
    LLMQ_CHECK(!prompt.empty(), "generate: the prompt must hold at least one token");
    const int V = model.config().vocab_size;
    const int max_ctx = opts.max_context > 0 ? opts.max_context : model.config().max_seq_len;
    std::vector<int> seq(prompt.begin(), prompt.end());
    std::vector<uint32_t> out;
    for (int i = 0; i < opts.tokens; i++) {
        int t = std::min((int)seq.size(), max_ctx);
        const int* context = seq.data() + seq.size() - t;  // (1,t): the last t tokens
        model.forward(context, nullptr, 1, t);
        const float* last = model.logits() + (size_t)(t - 1) * V;
        int next = sample_token(last, V, opts.temperature, opts.top_k, rng);
        seq.push_back(next);
        out.push_back((uint32_t)next);
    }
    return out;
}

}  // namespace llmq
