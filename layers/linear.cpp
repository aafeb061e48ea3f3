// linear.cpp: the forward and backward of Linear (see linear.h for the design): base product, adapters,
// sampled and immediate weight gradients. Every product is a kernels/matmul.h call.
#include "linear.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "../kernels/common.h"
#include "../kernels/matmul.h"

namespace llmq {

template <typename Real>
void Linear<Real>::check() const {
    LLMQ_CHECK(in > 0 && out > 0, "Linear: shape (%d,%d) must be positive", out, in);
    if (quant) {
        LLMQ_CHECK((std::is_same<Real, float>::value), "Linear: a quantized base weight exists in fp32 only");
        LLMQ_CHECK(quant->rows() == out && quant->cols() == in,
                   "Linear: quantized weight is (%d,%d), the layer is (%d,%d)", quant->rows(), quant->cols(), out, in);
        LLMQ_CHECK(dweight == nullptr && !on_weight_grad, "Linear: a quantized base weight is frozen (no gradient)");
    } else {
        LLMQ_CHECK(weight != nullptr, "Linear: no base weight (neither weight nor quant is set)");
    }
    for (const LoraAdapter<Real>& a : adapters)
        LLMQ_CHECK(a.rank > 0 && a.A != nullptr && a.B != nullptr, "Linear: adapter needs rank > 0, A and B");
    LLMQ_CHECK(adapter_dropout >= 0 && adapter_dropout < 1, "Linear: adapter dropout %g must lie in [0, 1)",
               adapter_dropout);
    LLMQ_CHECK(!(dropping() && sampler), "Linear: adapter dropout with a WTA-CRS sampler is not supported");
}

template <typename Real>
const Real* Linear<Real>::adapter_input(const Real* inp, int N) {
    if (!dropping()) return inp;
    const size_t n = (size_t)N * in;
    const Real keep_scale = Real(1) / (Real(1) - (Real)adapter_dropout);
    std::vector<Real>& dropped = tmp().dropped;
    dropped.resize(n);
    for (size_t i = 0; i < n; i++)
        dropped[i] = Rng::uniform_at(dropout_seed, i) < adapter_dropout ? Real(0) : inp[i] * keep_scale;
    return dropped.data();
}

template <typename Real>
bool Linear<Real>::forms_input_weight_grad() const {
    if (base_trained()) return true;
    for (const LoraAdapter<Real>& a : adapters)
        if (a.dA) return true;
    return false;
}

template <typename Real>
bool Linear<Real>::needs_input_in_backward() const {
    if (sampled()) return false;
    if (forms_input_weight_grad()) return true;
    for (const LoraAdapter<Real>& a : adapters)
        if (a.dB) return true;  // u = x A^T is recomputed from the input
    return false;
}

template <typename Real>
LinearScratch<Real>& Linear<Real>::tmp() {
    if (!scratch) scratch = std::make_shared<LinearScratch<Real>>();
    return *scratch;
}

template <typename Real>
const Real* Linear<Real>::base_weight() {
    if (!quant) return weight;
    if constexpr (std::is_same<Real, float>::value) {
        std::vector<Real>& w = tmp().dequant;
        w.resize((size_t)out * in);
        quant->dequantize(w.data());
        return w.data();
    }
    return nullptr;  // unreachable: check() refuses quant for double
}

template <typename Real>
void Linear<Real>::product(Real* y, const Real* inp, int N, bool keep_u) {
    // base: y = x W^T
    bool fused = false;
    if constexpr (std::is_same<Real, float>::value) fused = quant && quant->fused_forward(y, inp, N);
    if (!fused) matmul_forward_cpu(y, inp, base_weight(), N, in, out);

    // adapters: y += scale * (x A^T) B^T (x: drop(x) with dropout); u = x A^T is kept for the backward only
    // when the input is not (keep_u: into adapter_u_kept_, sized by forward)
    const Real* ax = adapter_input(inp, N);  // inp itself unless dropping
    for (size_t j = 0; j < adapters.size(); j++) {
        const LoraAdapter<Real>& a = adapters[j];
        std::vector<Real>& u = keep_u ? adapter_u_kept_[j] : tmp().u;
        u.resize((size_t)N * a.rank);
        matmul_forward_cpu(u.data(), ax, a.A, N, in, a.rank);
        gemm_cpu(false, true, N, out, a.rank, a.scale, u.data(), a.rank, a.B, a.rank, Real(1), y, out);
    }
}

template <typename Real>
void Linear<Real>::recompute(Real* y, const Real* inp, int N) {
    check();
    product(y, inp, N, false);
}

template <typename Real>
void Linear<Real>::forward(Real* y, const Real* inp, int N) {
    check();
    const bool keep_u = sampled();
    adapter_u_kept_.resize(keep_u ? adapters.size() : 0);
    product(y, inp, N, keep_u);

    // sampled weight gradients: keep only the chosen rows of the input (the first reader of a shared input
    // selects them; the others reuse them)
    if (keep_u) {
        SampledRows<Real>& s = rows_kept();
        if (s.forwards == 0) {
            sampler->select(inp, N, in, s.rows, s.weights);
            LLMQ_CHECK(s.rows.size() == s.weights.size(), "Linear: sampler returned %zu rows and %zu weights",
                       s.rows.size(), s.weights.size());
            s.inp.resize(s.rows.size() * in);
            for (size_t i = 0; i < s.rows.size(); i++) {
                int r = s.rows[i];
                LLMQ_CHECK(r >= 0 && r < N, "Linear: sampler chose row %d of %d", r, N);
                std::memcpy(&s.inp[i * in], inp + (size_t)r * in, sizeof(Real) * in);
            }
            s.selector = this, s.source = inp, s.source_rows = N, s.source_cols = in;
        } else {
            LLMQ_CHECK(inp == s.source && N == s.source_rows && in == s.source_cols,
                       "Linear: the Linears sharing sampled rows must read one input (got another input or shape)");
        }
        s.forwards = (s.forwards + 1) % s.readers;
    }
}

template <typename Real>
SampledRows<Real>& Linear<Real>::rows_kept() {
    if (!kept_rows) kept_rows = std::make_shared<SampledRows<Real>>();
    return *kept_rows;
}

template <typename Real>
void Linear<Real>::backward(Real* dinp, const Real* dout, const Real* inp, int N) {
    check();
    LLMQ_CHECK(inp || !needs_input_in_backward(),
               "Linear backward: the input was not kept, but this layer forms an exact weight gradient from it");
    const bool from_sample = sampled();
    if (from_sample) {
        SampledRows<Real>& s = rows_kept();
        LLMQ_CHECK(adapter_u_kept_.size() == adapters.size() && s.selector && s.forwards == 0 && s.source_rows == N,
                   "Linear backward: no forward kept this layer's sample");
        // ||dY_i||^2, summed over the readers; the last of them hands the sums to the sampler
        if (s.backwards == 0) s.dout_sq.assign(N, 0.0);
        for (int i = 0; i < N; i++) {
            const Real* d = dout + (size_t)i * out;
            double sq = 0;
            for (int o = 0; o < out; o++) sq += (double)d[o] * d[o];
            s.dout_sq[i] += sq;
        }
        if (++s.backwards == s.readers) {
            sampler->observe_output_norms(s.dout_sq);
            s.backwards = 0;
        }
    }
    // sum_s w_s g[rows_s]^T x[rows_s] from the kept input rows: the sampled form of g^T X (into dw (g_cols,in))
    // (the weighted rows are a temporary of this call, not held between steps: k*g_cols per sampled Linear
    //  would otherwise add up to more than the kept inputs)
    auto sampled_weight_grad = [&](Real* dw, const Real* g, int g_cols) {
        const SampledRows<Real>& s = *kept_rows;
        const size_t k = s.rows.size();
        std::vector<Real> weighted(k * g_cols);
        for (size_t i = 0; i < k; i++) {
            const Real* src = g + (size_t)s.rows[i] * g_cols;
            for (int o = 0; o < g_cols; o++) weighted[i * g_cols + o] = s.weights[i] * src[o];
        }
        if (k > 0) matmul_backward_weight_cpu(dw, weighted.data(), s.inp.data(), (int)k, in, g_cols);
    };

    // 1. input gradient through the base, with the weight the forward used (before any immediate update)
    if (dinp) {
        bool fused = false;
        if constexpr (std::is_same<Real, float>::value) fused = quant && quant->fused_backward_input(dinp, dout, N);
        if (!fused) matmul_backward_input_cpu(dinp, dout, base_weight(), N, in, out);
    }

    // 2. adapters: u = x A^T (kept or recomputed), du = scale * dout B; dB += scale dout^T u (exact: u is small);
    //    dA += du^T x (from the sampled rows when sampled); dinp += du A. With dropout x is drop(x), regenerated
    //    from the seed, and dinp gets (du A) * m / (1 - p).
    const bool drop = dropping();
    const Real* ax = inp ? adapter_input(inp, N) : nullptr;
    for (size_t j = 0; j < adapters.size(); j++) {
        const LoraAdapter<Real>& a = adapters[j];
        const int r = a.rank;
        const Real* u = nullptr;
        if (from_sample) {
            u = adapter_u_kept_[j].data();
        } else {
            tmp().u.resize((size_t)N * r);
            if (inp) matmul_forward_cpu(tmp().u.data(), ax, a.A, N, in, r);  // else u is unused (no dB)
            u = tmp().u.data();
        }
        std::vector<Real>& du = tmp().du;
        du.resize((size_t)N * r);
        gemm_cpu(false, false, N, r, out, a.scale, dout, out, a.B, r, Real(0), du.data(), r);
        if (a.dB) gemm_cpu(true, false, out, r, N, a.scale, dout, out, u, r, Real(1), a.dB, r);
        if (a.dA) {
            if (from_sample) sampled_weight_grad(a.dA, du.data(), r);
            else matmul_backward_weight_cpu(a.dA, du.data(), ax, N, in, r);
        }
        if (dinp && !drop) matmul_backward_input_cpu(dinp, du.data(), a.A, N, in, r);
        if (dinp && drop) {  // drop(x)'s own backward: the mask and 1/(1-p) on du A (drop(x) is free by now)
            const size_t n = (size_t)N * in;
            const Real keep_scale = Real(1) / (Real(1) - (Real)adapter_dropout);
            std::vector<Real>& g = tmp().dropped;
            g.assign(n, Real(0));
            matmul_backward_input_cpu(g.data(), du.data(), a.A, N, in, r);
            for (size_t i = 0; i < n; i++)
                if (Rng::uniform_at(dropout_seed, i) >= adapter_dropout) dinp[i] += g[i] * keep_scale;
            if (j + 1 < adapters.size()) ax = adapter_input(inp, N);  // the next adapter reads drop(x) again
        }
    }

    // 3. base weight gradient, exact or from the sampled rows, accumulated or handed to the callback
    if (!base_trained()) return;
    Real* dw = dweight;
    const size_t n = (size_t)out * in;
    if (on_weight_grad) {
        if (!immediate_scratch) own_scratch_.resize(n);
        dw = immediate_scratch ? immediate_scratch : own_scratch_.data();
        std::fill(dw, dw + n, Real(0));
    }
    if (from_sample) sampled_weight_grad(dw, dout, out);
    else matmul_backward_weight_cpu(dw, dout, inp, N, in, out);
    if (on_weight_grad) on_weight_grad(weight, dw, n);
}

template <typename Real>
size_t Linear<Real>::kept_sample_bytes() const {
    size_t n = counts_rows() ? kept_rows->inp.size() : 0;
    for (const std::vector<Real>& u : adapter_u_kept_) n += u.size();
    return sizeof(Real) * n;
}

template <typename Real>
size_t Linear<Real>::scratch_bytes() const {
    size_t kept_u = 0;
    for (const std::vector<Real>& u : adapter_u_kept_) kept_u += u.capacity();
    return sizeof(Real) * (kept_u + own_scratch_.capacity()) + (counts_rows() ? kept_rows->bytes() : 0);
}

template class Linear<float>;
template class Linear<double>;

}  // namespace llmq
