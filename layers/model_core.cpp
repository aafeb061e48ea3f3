// model_core.cpp: parameter layout and initialisation, forward and backward of the LLaMA decoder
// (math in model.h, layout in model_core.h, activations in activations.h). Only kernels/ ops compute;
// this file only wires them. Instantiated for float (Model) and double (the gradient check).
#include "model_core.h"

#include <algorithm>
#include <cstdint>

#include "../kernels/attention.h"
#include "../kernels/common.h"
#include "../kernels/crossentropy.h"
#include "../kernels/embedding.h"
#include "../kernels/residual.h"
#include "../kernels/rmsnorm.h"
#include "../kernels/rope.h"
#include "../kernels/swiglu.h"

namespace llmq {

namespace {

template <typename Real>
void zero(Real* p, size_t n) {
    std::fill(p, p + n, Real(0));
}

// A Linear's saved input for its backward: null when the plan dropped it (the shared buffer then holds
// another layer's), so a Linear that would read it fails loudly instead of using the wrong rows.
template <typename Real>
const Real* kept(const Real* input, bool dropped) {
    return dropped ? nullptr : input;
}

}  // namespace

template <typename Real>
ModelCore<Real>::ModelCore(const ModelConfig& config, uint64_t seed) : config_(config) {
    config_.validate();
    const ModelConfig& c = config_;
    const int C = c.dim, F = c.ffn_dim, V = c.vocab_size, QD = c.n_heads * c.head_dim(),
              KD = c.n_kv_heads * c.head_dim();

    // 1. the layout (model.h parameter_layout)
    tensors_ = parameter_layout(c);
    const size_t offset = tensors_.empty() ? 0 : tensors_.back().offset + tensors_.back().size;
    params_.assign(offset, Real(0));
    grads_.assign(offset, Real(0));
    for (const ParamTensor& t : tensors_) grad_offset_.push_back(t.offset);

    // 2. initialisation: fp32 draws (the same numbers for float and double), layout order
    Rng rng(seed);
    for (const ParamTensor& t : tensors_) {
        Real* p = params_.data() + t.offset;
        for (size_t i = 0; i < t.size; i++) p[i] = t.shape.size() == 2 ? (Real)(c.init_std * rng.normal()) : Real(1);
    }

    // 3. views (the gradients' in point_gradient_views)
    auto P = [&](const std::string& name) { return params_.data() + tensor(name).offset; };
    embed_ = P("model.embed_tokens.weight");
    normf_ = P("model.norm.weight");
    layers_.resize(c.n_layers);
    for (int l = 0; l < c.n_layers; l++) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        TransformerLayer<Real>& L = layers_[l];
        L.ln1 = P(p + "input_layernorm.weight");
        L.ln2 = P(p + "post_attention_layernorm.weight");
        auto lin = [&](const std::string& name, int in, int out) {
            return Linear<Real>(in, out, P(p + name + ".weight"), nullptr);
        };
        L.q = lin("self_attn.q_proj", C, QD);
        L.k = lin("self_attn.k_proj", C, KD);
        L.v = lin("self_attn.v_proj", C, KD);
        L.o = lin("self_attn.o_proj", QD, C);
        L.gate = lin("mlp.gate_proj", C, F);
        L.up = lin("mlp.up_proj", C, F);
        L.down = lin("mlp.down_proj", F, C);
    }
    lm_head_ = Linear<Real>(C, V, P(head_name()), nullptr);
    point_gradient_views();
    // one scratch for every Linear's temporaries: they run one at a time (layers/linear.h LinearScratch)
    linear_scratch_ = std::make_shared<LinearScratch<Real>>();
    lm_head_.scratch = linear_scratch_;
    for (TransformerLayer<Real>& L : layers_)
        for (Linear<Real>* lin : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) lin->scratch = linear_scratch_;
}

// The layer Linears and their HF module names, in layout order.
template <typename Real>
static const std::pair<const char*, Linear<Real> TransformerLayer<Real>::*> kLayerLinears[7] = {
    {"self_attn.q_proj", &TransformerLayer<Real>::q},  {"self_attn.k_proj", &TransformerLayer<Real>::k},
    {"self_attn.v_proj", &TransformerLayer<Real>::v},  {"self_attn.o_proj", &TransformerLayer<Real>::o},
    {"mlp.gate_proj", &TransformerLayer<Real>::gate}, {"mlp.up_proj", &TransformerLayer<Real>::up},
    {"mlp.down_proj", &TransformerLayer<Real>::down}};

template <typename Real>
std::string ModelCore<Real>::head_name() const {
    return config_.tied_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
}

template <typename Real>
Real* ModelCore<Real>::grad_view(const std::string& name) {
    const size_t at = grad_offset_[tensor_index(name)];
    return at == SIZE_MAX ? nullptr : grads_.data() + at;
}

template <typename Real>
void ModelCore<Real>::point_gradient_views() {
    dembed_ = grad_view("model.embed_tokens.weight");
    dnormf_ = grad_view("model.norm.weight");
    lm_head_.dweight = grad_view(head_name());
    for (size_t l = 0; l < layers_.size(); l++) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        TransformerLayer<Real>& L = layers_[l];
        L.dln1 = grad_view(p + "input_layernorm.weight");
        L.dln2 = grad_view(p + "post_attention_layernorm.weight");
        for (const auto& [module, member] : kLayerLinears<Real>) (L.*member).dweight = grad_view(p + module + ".weight");
    }
}

template <typename Real>
void ModelCore<Real>::set_layerwise_update(TensorUpdateFn update) {
    LLMQ_CHECK(!layerwise_, "model: layer-wise updates are already set");
    layerwise_ = true;
    // the compact gradient buffer: every tensor but the layer Linears', in layout order
    size_t held = 0, largest = 0;
    for (size_t i = 0; i < tensors_.size(); i++) {
        const bool layer_linear = is_attention_mlp_weight(tensors_[i]);
        grad_offset_[i] = layer_linear ? SIZE_MAX : held;
        if (layer_linear) largest = std::max(largest, tensors_[i].size);
        else held += tensors_[i].size;
    }
    grads_.assign(held, Real(0));
    grads_.shrink_to_fit();
    layerwise_scratch_.assign(largest, Real(0));
    point_gradient_views();  // the layer Linears' dweight is now null: their gradients go to the callback
    for (size_t l = 0; l < layers_.size(); l++)
        for (const auto& [module, member] : kLayerLinears<Real>) {
            Linear<Real>& lin = layers_[l].*member;
            const size_t index = tensor_index("model.layers." + std::to_string(l) + "." + module + ".weight");
            lin.immediate_scratch = layerwise_scratch_.data();
            lin.on_weight_grad = [update, index](Real* w, const Real* g, size_t n) { update(index, w, g, n); };
        }
}

template <typename Real>
const Real* ModelCore<Real>::grad_of(size_t tensor) const {
    return grad_offset_.at(tensor) == SIZE_MAX ? nullptr : grads_.data() + grad_offset_[tensor];
}

template <typename Real>
size_t ModelCore<Real>::gradient_bytes() const {
    return sizeof(Real) * (grads_.capacity() + layerwise_scratch_.capacity());
}

template <typename Real>
size_t ModelCore<Real>::tensor_index(const std::string& name) const {
    for (size_t i = 0; i < tensors_.size(); i++)
        if (tensors_[i].name == name) return i;
    throw Error(format("model %s: no parameter tensor named '%s'", config_.name.c_str(), name.c_str()));
}

template <typename Real>
const ParamTensor& ModelCore<Real>::tensor(const std::string& name) const {
    return tensors_[tensor_index(name)];
}

template <typename Real>
void ModelCore<Real>::check_inputs(const int* tokens, const int* targets, int B, int T) const {
    LLMQ_CHECK(B > 0 && T > 0, "model forward: batch %d x sequence %d must be positive", B, T);
    LLMQ_CHECK(T <= config_.max_seq_len, "model forward: sequence length %d exceeds max_seq_len %d", T,
               config_.max_seq_len);
    const int V = config_.vocab_size;
    for (int i = 0; i < B * T; i++) {
        LLMQ_CHECK(tokens[i] >= 0 && tokens[i] < V,
                   "model forward: token id %d at position %d (sequence %d, t %d) is outside the vocabulary [0, %d)",
                   tokens[i], i, i / T, i % T, V);
        if (targets)
            LLMQ_CHECK(targets[i] == kIgnoreIndex || (targets[i] >= 0 && targets[i] < V),
                       "model forward: target id %d at position %d (sequence %d, t %d) is outside the vocabulary "
                       "[0, %d) and is not the ignore index %d",
                       targets[i], i, i / T, i % T, V, kIgnoreIndex);
    }
}

template <typename Real>
Real ModelCore<Real>::forward(const int* tokens, const int* targets, int B, int T) {
    check_inputs(tokens, targets, B, T);
    const ModelConfig& c = config_;
    const int N = B * T, C = c.dim, F = c.ffn_dim, hd = c.head_dim();
    acts_.plan(c, B, T, dropped_inputs(), targets ? classifier_chunk_ : 0);
    Activations<Real>& A = acts_;
    const Real eps = (Real)c.norm_eps;
    std::copy(tokens, tokens + N, A.tokens.begin());
    if (targets) std::copy(targets, targets + N, A.targets.begin());
    have_dlogits_ = false;

    embedding_forward_cpu(A.residual[0], tokens, embed_, N, C);
    for (int l = 0; l < c.n_layers; l++) {
        LayerActivations<Real>& a = A.layers[l];
        TransformerLayer<Real>& L = layers_[l];
        // attention block: mid = x + o(attn(rope(q n1), rope(k n1), v n1)), n1 = rmsnorm(x)
        rmsnorm_forward_cpu(a.norm1, a.rstd1, A.residual[l], L.ln1, N, C, eps);
        L.q.forward(a.q, a.norm1, N);
        L.k.forward(a.k, a.norm1, N);
        L.v.forward(a.v, a.norm1, N);
        rope_forward_cpu(a.q, a.q, A.rope_cos, A.rope_sin, B, T, c.n_heads, hd);
        rope_forward_cpu(a.k, a.k, A.rope_cos, A.rope_sin, B, T, c.n_kv_heads, hd);
        attention_forward_cpu(a.att, a.lse, a.q, a.k, a.v, B, T, c.n_heads, c.n_kv_heads, hd);
        L.o.forward(A.dnorm, a.att, N);  // dnorm: the forward's (N,C) temporary
        residual_forward_cpu(a.mid, A.residual[l], A.dnorm, (size_t)N * C);
        // MLP block: out = mid + down(silu(gate n2) * up n2), n2 = rmsnorm(mid)
        rmsnorm_forward_cpu(a.norm2, a.rstd2, a.mid, L.ln2, N, C, eps);
        L.gate.forward(a.gate, a.norm2, N);
        L.up.forward(a.up, a.norm2, N);
        swiglu_forward_cpu(a.hidden, a.gate, a.up, (size_t)N * F);
        L.down.forward(A.dnorm, a.hidden, N);
        residual_forward_cpu(A.residual[l + 1], a.mid, A.dnorm, (size_t)N * C);
    }
    rmsnorm_forward_cpu(A.normf, A.rstdf, A.residual[c.n_layers], normf_, N, C, eps);
    if (!targets) {
        lm_head_.forward(A.logits, A.normf, N);
        return Real(0);
    }

    valid_targets_ = 0;
    for (int i = 0; i < N; i++) valid_targets_ += targets[i] != kIgnoreIndex;
    // the fused classifier, chunk by chunk of rows: logits, losses, and dlogits (mean-loss gradient) in place of
    // the logits; the backward redoes it when the chunk is not the whole batch (classifier_rows)
    for (int r0 = 0; r0 < N; r0 += (int)A.logit_rows) classifier_rows(r0, (int)std::min<int64_t>(A.logit_rows, N - r0));
    have_dlogits_ = true;
    double sum = 0;
    for (int i = 0; i < N; i++) sum += A.losses[i];
    return valid_targets_ > 0 ? (Real)(sum / valid_targets_) : Real(0);
}

template <typename Real>
void ModelCore<Real>::classifier_rows(int r0, int R) {
    Activations<Real>& A = acts_;
    const int C = config_.dim, V = config_.vocab_size;
    const Real grad_scale = valid_targets_ > 0 ? Real(1) / valid_targets_ : Real(0);
    lm_head_.forward(A.logits, A.normf + (size_t)r0 * C, R);  // logits (R,V) of rows r0..r0+R
    crossentropy_forward_backward_cpu(A.losses + r0, A.logits, A.logits, A.targets.data() + r0, R, V, kIgnoreIndex,
                                      grad_scale);
}

template <typename Real>
void ModelCore<Real>::zero_grad() {
    zero(grads_.data(), grads_.size());
}

template <typename Real>
void ModelCore<Real>::backward(Real loss_scale) {
    LLMQ_CHECK(have_dlogits_, "model backward: needs a forward with targets since the last backward");
    have_dlogits_ = false;
    const ModelConfig& c = config_;
    Activations<Real>& A = acts_;
    const int B = A.B, T = A.T, N = B * T, C = c.dim, F = c.ffn_dim, V = c.vocab_size, hd = c.head_dim();
    const size_t NC = (size_t)N * C, NF = (size_t)N * F, NQ = (size_t)N * c.n_heads * hd,
                 NK = (size_t)N * c.n_kv_heads * hd;
    // classifier and final norm: dres = d(loss)/d(residual[L]); dlogits of each chunk of rows (all of them in
    // place from the forward when it ran as one chunk, else recomputed chunk by chunk)
    zero(A.dnorm, NC);
    for (int r0 = 0; r0 < N; r0 += (int)A.logit_rows) {
        const int R = (int)std::min<int64_t>(A.logit_rows, N - r0);
        if (A.logit_rows < N) classifier_rows(r0, R);
        Real* dlogits = A.logits;
        if (loss_scale != Real(1))
            for (size_t i = 0; i < (size_t)R * V; i++) dlogits[i] *= loss_scale;
        lm_head_.backward(A.dnorm + (size_t)r0 * C, dlogits, A.normf + (size_t)r0 * C, R);
    }
    zero(A.dres, NC);
    rmsnorm_backward_cpu(A.dres, dnormf_, A.dnorm, A.residual[c.n_layers], normf_, A.rstdf, N, C);

    for (int l = c.n_layers - 1; l >= 0; l--) {
        LayerActivations<Real>& a = A.layers[l];
        TransformerLayer<Real>& L = layers_[l];
        // MLP block. dres holds d/d(out), which is also the skip path's d/d(mid); the norm path adds to it.
        zero(A.dhidden, NF);
        L.down.backward(A.dhidden, A.dres, kept(a.hidden, A.dropped[l] & kDropHidden), N);
        if (A.dropped[l] & kDropGateUp) {  // recompute gate and up (and the norm2 they read, if dropped)
            if (A.dropped[l] & kDropNorm2) rmsnorm_forward_cpu(a.norm2, a.rstd2, a.mid, L.ln2, N, C, (Real)c.norm_eps);
            L.gate.recompute(a.gate, a.norm2, N);
            L.up.recompute(a.up, a.norm2, N);
        }
        // in place: dgate over gate, dup over up (the saved pre-activations are spent after this)
        swiglu_backward_cpu(a.gate, a.up, A.dhidden, a.gate, a.up, NF);
        Real *dgate = a.gate, *dup = a.up;
        zero(A.dnorm, NC);
        L.gate.backward(A.dnorm, dgate, kept(a.norm2, A.dropped[l] & kDropNorm2), N);
        L.up.backward(A.dnorm, dup, kept(a.norm2, A.dropped[l] & kDropNorm2), N);
        rmsnorm_backward_cpu(A.dres, L.dln2, A.dnorm, a.mid, L.ln2, a.rstd2, N, C);
        // attention block, the same way: dres now holds d/d(mid)
        zero(A.datt, NQ);
        L.o.backward(A.datt, A.dres, kept(a.att, A.dropped[l] & kDropAtt), N);
        // attention's backward reads its output: recompute a dropped one from the kept q, k, v (the same lse
        // comes out, bit for bit, so it may overwrite the kept one)
        if (A.dropped[l] & kDropAtt) attention_forward_cpu(a.att, a.lse, a.q, a.k, a.v, B, T, c.n_heads, c.n_kv_heads, hd);
        zero(A.dq, NQ);
        zero(A.dk, NK);
        zero(A.dv, NK);
        attention_backward_cpu(A.dq, A.dk, A.dv, A.datt, a.q, a.k, a.v, a.att, a.lse, B, T, c.n_heads, c.n_kv_heads,
                               hd);
        zero(A.dq_pre, NQ);  // (datt's place: spent)
        zero(A.dk_pre, NK);
        rope_backward_cpu(A.dq_pre, A.dq, A.rope_cos, A.rope_sin, B, T, c.n_heads, hd);
        rope_backward_cpu(A.dk_pre, A.dk, A.rope_cos, A.rope_sin, B, T, c.n_kv_heads, hd);
        zero(A.dnorm, NC);
        const Real* norm1 = kept(a.norm1, A.dropped[l] & kDropNorm1);
        L.q.backward(A.dnorm, A.dq_pre, norm1, N);
        L.k.backward(A.dnorm, A.dk_pre, norm1, N);
        L.v.backward(A.dnorm, A.dv, norm1, N);
        rmsnorm_backward_cpu(A.dres, L.dln1, A.dnorm, A.residual[l], L.ln1, a.rstd1, N, C);
    }
    embedding_backward_cpu(dembed_, A.dres, A.tokens.data(), N, C);
}

template <typename Real>
std::vector<uint8_t> ModelCore<Real>::dropped_inputs() const {
    std::vector<uint8_t> dropped(layers_.size(), 0);
    for (size_t l = 0; l < layers_.size() && !keep_all_inputs_; l++) {
        const TransformerLayer<Real>& L = layers_[l];
        auto unread = [](std::initializer_list<const Linear<Real>*> readers) {
            for (const Linear<Real>* r : readers)
                if (r->needs_input_in_backward()) return false;
            return true;
        };
        if (unread({&L.q, &L.k, &L.v})) dropped[l] |= kDropNorm1;
        // att is attention's backward input too: dropping it costs a recomputation, worth it only when o_proj
        // samples (WTA-CRS), not merely because o_proj forms no weight gradient
        if (L.o.sampled()) dropped[l] |= kDropAtt;
        if (unread({&L.gate, &L.up})) dropped[l] |= kDropNorm2;
        if (unread({&L.down})) dropped[l] |= kDropHidden;
    }
    if (recompute_mlp_)
        for (uint8_t& d : dropped) d |= kDropGateUp;
    return dropped;
}

template <typename Real>
size_t ModelCore<Real>::activation_bytes() const {
    size_t bytes = acts_.bytes() + lm_head_.scratch_bytes() + linear_scratch_->bytes();
    for (const TransformerLayer<Real>& L : layers_)
        for (const Linear<Real>* lin : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) bytes += lin->scratch_bytes();
    return bytes;
}

template class ModelCore<float>;
template class ModelCore<double>;

}  // namespace llmq
