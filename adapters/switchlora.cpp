// switchlora.cpp: SwitchLoRA's init, schedule, output-preserving switches and checkpoint state
// (see switchlora.h; the optimizer is switchlora_optimizer.cpp).
#include "switchlora.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "../kernels/matmul.h"
#include "../layers/state_bytes.h"

namespace llmq {

double switchlora_interval(const SwitchLoraOptions& o, int step) {
    const double rate = std::pow((double)o.growth, (step + 1.0) / ((double)o.descent * o.total_steps));
    return std::max((double)o.interval0 / std::max(rate, 1e-8), 2.0 * o.freeze_steps);
}

int stochastic_round(double x, Rng& rng) {
    const double f = std::floor(x);
    return (int)f + ((double)rng.uniform() < x - f ? 1 : 0);
}

namespace {

void fill_uniform(float* x, size_t n, float bound, Rng& rng) {
    for (size_t i = 0; i < n; i++) x[i] = bound * (2.0f * rng.uniform() - 1.0f);
}

// Up to k of the r slots, round robin from cursor, skipping the blocked ones; the cursor moves past the last.
std::vector<int> pick_slots(int& cursor, int k, int r, const std::function<bool(int)>& blocked) {
    std::vector<int> slots;
    for (int n = 0; n < r && (int)slots.size() < k; n++) {
        const int i = (cursor + n) % r;
        if (blocked(i)) continue;
        slots.push_back(i);
        cursor = (i + 1) % r;
    }
    return slots;
}

// k distinct indices of [0, n), uniformly (a partial Fisher-Yates shuffle).
std::vector<int> distinct_below(int k, int n, Rng& rng) {
    std::vector<int> idx(n);
    for (int i = 0; i < n; i++) idx[i] = i;
    for (int i = 0; i < k; i++) std::swap(idx[i], idx[i + (int)rng.below((uint64_t)(n - i))]);
    idx.resize(k);
    return idx;
}

constexpr uint32_t kMagic = 0x524c5753;  // "SWLR" little-endian
constexpr uint32_t kVersion = 1;

}  // namespace

SwitchLora::SwitchLora(LoraAdapters& lora, const SwitchLoraOptions& o, const OptimizerConfig& opt)
    : lora_(lora), options_(o), rank_(lora.options().rank), optimizer_(opt, lora.tensors()), rng_(o.seed) {
    LLMQ_CHECK(o.total_steps > 0 && o.descent > 0 && o.growth > 0 && o.growth <= 1 && o.interval0 > 0,
               "switchlora: needs total_steps > 0, descent > 0, 0 < growth <= 1, interval0 > 0 (got %d, %g, %g, %g)",
               o.total_steps, o.descent, o.growth, o.interval0);
    LLMQ_CHECK(o.freeze_steps >= 0, "switchlora: freeze_steps %d must not be negative", o.freeze_steps);
    const int r = rank_;
    const float sqrt_gain = std::sqrt(std::sqrt(1.0f / 3.0f));  // gain = sqrt(1/3): kaiming, a = sqrt(5)
    for (size_t l = 0; l < lora.modules().size(); l++) {
        const auto& [name, lin] = lora.modules()[l];
        LLMQ_CHECK(!lin->quant && lin->weight, "switchlora: %s has a quantized base; switching needs an fp32 one",
                   name.c_str());
        Layer L;
        L.name = name;
        L.linear = lin;
        L.A = lora.params() + lora.tensors()[2 * l].offset;
        L.B = lora.params() + lora.tensors()[2 * l + 1].offset;
        L.scale = lin->adapters.back().scale;  // ours: LoraAdapters attaches one per module, last
        L.in = lin->in, L.out = lin->out;
        L.pool = std::min(L.in, L.out) - r;
        L.cursor_B = r / 2;
        const double m = L.out, n = L.in;
        const float bound_A = std::sqrt(3.0f) * (float)std::pow(std::sqrt(m) * r / std::pow(n, 1.5), 0.25) * sqrt_gain;
        const float bound_B = std::sqrt(3.0f) * (float)std::pow(r / std::sqrt(m * n), 0.25) * sqrt_gain;
        L.pool_A.resize((size_t)L.pool * L.in);
        L.pool_B.resize((size_t)L.pool * L.out);
        fill_uniform(L.A, (size_t)r * L.in, bound_A, rng_);
        fill_uniform(L.pool_A.data(), L.pool_A.size(), bound_A, rng_);
        fill_uniform(L.B, (size_t)L.out * r, bound_B, rng_);
        fill_uniform(L.pool_B.data(), L.pool_B.size(), bound_B, rng_);
        // W (out,in) -= s B (out,r) A (r,in): the model's output is what it was
        gemm_cpu(false, false, L.out, L.in, r, -L.scale, L.B, r, L.A, L.in, 1.0f, lin->weight, L.in);
        layers_.push_back(std::move(L));
    }
}

// The k switches of one layer folded into its base in one pass over W: W += s U V with, per switch q,
//   A row i <- c:     U[:,q] = B[:,i],      V[q,:] = A[i,:] - c
//   B column j <- c:  U[:,q] = B[:,j] - c,  V[q,:] = A[j,:]
// (the row and column slots are disjoint, so every term uses the pre-switch factors), then the exchanges:
// the old vectors wait in the pool where their replacements were.
void SwitchLora::apply_switches(Layer& L, const std::vector<int>& rows, const std::vector<int>& cand_A,
                                const std::vector<int>& cols, const std::vector<int>& cand_B) {
    const int K = (int)(rows.size() + cols.size()), r = rank_;
    std::vector<float> U((size_t)L.out * K), V((size_t)K * L.in);
    for (size_t q = 0; q < rows.size(); q++) {
        const float *a = L.A + (size_t)rows[q] * L.in, *c = L.pool_A.data() + (size_t)cand_A[q] * L.in;
        for (int o = 0; o < L.out; o++) U[(size_t)o * K + q] = L.B[(size_t)o * r + rows[q]];
        for (int j = 0; j < L.in; j++) V[q * L.in + j] = a[j] - c[j];
    }
    for (size_t q2 = 0; q2 < cols.size(); q2++) {
        const size_t q = rows.size() + q2;
        const float* c = L.pool_B.data() + (size_t)cand_B[q2] * L.out;
        for (int o = 0; o < L.out; o++) U[(size_t)o * K + q] = L.B[(size_t)o * r + cols[q2]] - c[o];
        std::copy_n(L.A + (size_t)cols[q2] * L.in, L.in, V.begin() + q * L.in);
    }
    // W (out,in) += s U (out,K) V (K,in)
    gemm_cpu(false, false, L.out, L.in, K, L.scale, U.data(), K, V.data(), L.in, 1.0f, L.linear->weight, L.in);
    for (size_t q = 0; q < rows.size(); q++) {
        float* a = L.A + (size_t)rows[q] * L.in;
        std::swap_ranges(a, a + L.in, L.pool_A.data() + (size_t)cand_A[q] * L.in);
    }
    for (size_t q = 0; q < cols.size(); q++) {
        float* c = L.pool_B.data() + (size_t)cand_B[q] * L.out;
        for (int o = 0; o < L.out; o++) std::swap(L.B[(size_t)o * r + cols[q]], c[o]);
    }
}

int SwitchLora::switch_vectors(int step) {
    const double per_layer = rank_ / switchlora_interval(options_, step);
    int switched = 0;
    for (size_t l = 0; l < layers_.size(); l++) {
        if (layers_[l].pool <= 0) continue;  // no candidates (min(m,n) = r)
        Layer& L = layers_[l];
        const int k = std::min(stochastic_round(per_layer, rng_), L.pool);
        if (k == 0) continue;
        const auto frozen = [&](LoraFactor f, int i) { return optimizer_.frozen_of(l, f, i) > 0; };
        const std::vector<int> rows = pick_slots(L.cursor_A, k, rank_, [&](int i) { return frozen(LoraFactor::A, i); });
        const std::vector<int> cols = pick_slots(L.cursor_B, k, rank_, [&](int j) {
            return frozen(LoraFactor::B, j) || std::find(rows.begin(), rows.end(), j) != rows.end();
        });
        const std::vector<int> cand_A = distinct_below((int)rows.size(), L.pool, rng_);
        const std::vector<int> cand_B = distinct_below((int)cols.size(), L.pool, rng_);
        apply_switches(L, rows, cand_A, cols, cand_B);
        for (int i : rows) optimizer_.reset_and_freeze(l, LoraFactor::B, i, options_.freeze_steps);
        for (int j : cols) optimizer_.reset_and_freeze(l, LoraFactor::A, j, options_.freeze_steps);
        switched += (int)(rows.size() + cols.size());
    }
    return switched;
}

// Format v1 (little-endian):
//   u32 magic "SWLR", u32 version, u32 layers, u32 rank, u64 rng state
//   per layer: u32 in, out, pool, cursor_A, cursor_B; f32 pool_A (pool,in), pool_B (pool,out)
//   u64 n; f32 m (n), v (n); i32 steps (layers,2,r), frozen (layers,2,r)
std::vector<uint8_t> SwitchLora::serialize() const {
    StateWriter out;
    const uint32_t head[4] = {kMagic, kVersion, (uint32_t)layers_.size(), (uint32_t)rank_};
    out.put_array(head, 4);
    out.put(rng_.state);
    for (const Layer& L : layers_) {
        const uint32_t shape[5] = {(uint32_t)L.in, (uint32_t)L.out, (uint32_t)L.pool, (uint32_t)L.cursor_A,
                                   (uint32_t)L.cursor_B};
        out.put_array(shape, 5);
        out.put_array(L.pool_A.data(), L.pool_A.size());
        out.put_array(L.pool_B.data(), L.pool_B.size());
    }
    const uint64_t n = optimizer_.m().size();
    out.put(n);
    out.put_array(optimizer_.m().data(), n);
    out.put_array(optimizer_.v().data(), n);
    out.put_array(optimizer_.vector_steps().data(), optimizer_.vector_steps().size());
    out.put_array(optimizer_.frozen().data(), optimizer_.frozen().size());
    return out.bytes;
}

void SwitchLora::deserialize(const uint8_t* data, size_t size, const char* what) {
    StateReader r(data, size, what, "SwitchLoRA state");
    uint32_t head[4];
    r.get_array(head, 4);
    LLMQ_CHECK(head[0] == kMagic, "%s: not a SwitchLoRA state (bad magic 0x%08x)", what, head[0]);
    LLMQ_CHECK(head[1] == kVersion, "%s: SwitchLoRA state version %u (this build reads %u)", what, head[1], kVersion);
    LLMQ_CHECK(head[2] == layers_.size() && (int)head[3] == rank_,
               "%s: SwitchLoRA state has %u layers of rank %u, this run %zu of rank %d", what, head[2], head[3],
               layers_.size(), rank_);
    const uint64_t rng_state = r.get<uint64_t>();
    std::vector<Layer> layers = layers_;  // committed only when everything has been read and checked
    for (Layer& L : layers) {
        uint32_t s[5];
        r.get_array(s, 5);
        LLMQ_CHECK((int)s[0] == L.in && (int)s[1] == L.out && (int)s[2] == L.pool && (int)s[3] < rank_ &&
                       (int)s[4] < rank_,
                   "%s: SwitchLoRA state of %s is %u x %u with %u candidates (cursors %u, %u), this run's is %d x %d "
                   "with %d (rank %d)", what, L.name.c_str(), s[1], s[0], s[2], s[3], s[4], L.out, L.in, L.pool, rank_);
        L.cursor_A = (int)s[3], L.cursor_B = (int)s[4];
        r.get_array(L.pool_A.data(), L.pool_A.size());
        r.get_array(L.pool_B.data(), L.pool_B.size());
    }
    const uint64_t n = r.get<uint64_t>();
    LLMQ_CHECK(n == optimizer_.m().size(), "%s: SwitchLoRA optimizer state of %llu parameters, the adapters have %zu",
               what, (unsigned long long)n, optimizer_.m().size());
    std::vector<float> m(n), v(n);
    std::vector<int32_t> steps(optimizer_.vector_steps().size()), frozen(steps.size());
    r.get_array(m.data(), n);
    r.get_array(v.data(), n);
    r.get_array(steps.data(), steps.size());
    r.get_array(frozen.data(), frozen.size());
    r.expect_end();
    for (size_t k = 0; k < steps.size(); k++)
        LLMQ_CHECK(steps[k] >= 0 && frozen[k] >= 0, "%s: SwitchLoRA state is corrupt (vector %zu: step %d, frozen %d)",
                   what, k, steps[k], frozen[k]);
    for (size_t l = 0; l < layers_.size(); l++) layers_[l] = std::move(layers[l]);
    rng_.state = rng_state;
    optimizer_.m() = std::move(m);
    optimizer_.v() = std::move(v);
    optimizer_.vector_steps() = std::move(steps);
    optimizer_.frozen() = std::move(frozen);
}

size_t SwitchLora::pool_bytes() const {
    size_t bytes = 0;
    for (const Layer& L : layers_) bytes += (L.pool_A.size() + L.pool_B.size()) * sizeof(float);
    return bytes;
}

size_t SwitchLora::state_bytes() const { return optimizer_.state_bytes() + pool_bytes(); }

std::string SwitchLora::describe() const {
    size_t candidates = 0;
    for (const Layer& L : layers_) candidates += 2 * (size_t)std::max(L.pool, 0);
    return format("switchlora: %zu layers, rank %d, %zu candidate vectors, state %.2f MB; interval %.1f at step 0, "
                  "%.1f at step %d; freeze %d steps", layers_.size(), rank_, candidates, state_bytes() / 1e6,
                  switchlora_interval(options_, 0), switchlora_interval(options_, options_.total_steps - 1),
                  options_.total_steps - 1, options_.freeze_steps);
}

}  // namespace llmq
