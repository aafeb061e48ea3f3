// activations.cpp: carves the activation buffer and the backward scratch for (B,T) (layout in activations.h).
#include "activations.h"

#include <algorithm>
#include <cmath>

#include "../kernels/common.h"
#include "../kernels/rope.h"
#include "model.h"

namespace llmq {

namespace {

// The one-layer buffers of the dropped inputs (activations.h), shared by every layer that drops them.
template <typename Real>
struct SharedInputs {
    Real *norm1 = nullptr, *att = nullptr, *norm2 = nullptr, *hidden = nullptr, *gate = nullptr, *up = nullptr;
    void point_dropped_at_shared(Activations<Real>& a) const {
        for (size_t l = 0; l < a.layers.size(); l++) {
            LayerActivations<Real>& la = a.layers[l];
            if (a.dropped[l] & kDropNorm1) la.norm1 = norm1;
            if (a.dropped[l] & kDropAtt) la.att = att;
            if (a.dropped[l] & kDropNorm2) la.norm2 = norm2;
            if (a.dropped[l] & kDropHidden) la.hidden = hidden;
            if (a.dropped[l] & kDropGateUp) la.gate = gate, la.up = up;
        }
    }
};

// Collects (pointer, size) requests, then allocates once and points each at its slice.
template <typename Real>
struct Carver {
    struct Request {
        std::string name;
        Real** ptr;
        size_t size;
        bool overwritten_by_backward;
    };
    std::vector<Request> requests;
    void add(std::string name, Real** ptr, size_t size, bool overwritten_by_backward = false) {
        requests.push_back({std::move(name), ptr, size, overwritten_by_backward});
    }
    size_t total() const {
        size_t t = 0;
        for (const Request& r : requests) t += r.size;
        return t;
    }
    void carve(std::vector<Real>& buffer, std::vector<ActivationTensor>* names) {
        buffer.assign(total(), Real(0));
        size_t offset = 0;
        for (const Request& r : requests) {
            *r.ptr = buffer.data() + offset;
            if (names) names->push_back({r.name, offset, r.size, r.overwritten_by_backward});
            offset += r.size;
        }
    }
};

// Registers every tensor of the plan for (B,T): the forward's into fw, the backward scratch into bw,
// pointing at a's fields (a.residual and a.layers must already have their L+1 and L entries).
// a.dropped must already hold L entries. The layers that drop an input are pointed at its shared
// buffer after carving (point_dropped_at_shared).
template <typename Real>
void request_all(Activations<Real>& a, const ModelConfig& c, int B, int T, Carver<Real>& fw, Carver<Real>& bw,
                 SharedInputs<Real>& shared) {
    const size_t N = (size_t)B * T, C = c.dim, F = c.ffn_dim, V = c.vocab_size, hd = c.head_dim();
    const size_t QD = (size_t)c.n_heads * hd, KD = (size_t)c.n_kv_heads * hd;
    uint8_t any_dropped = 0;
    for (int l = 0; l < c.n_layers; l++) {
        LayerActivations<Real>& la = a.layers[l];
        const uint8_t drop = a.dropped[l];
        any_dropped |= drop;
        const std::string p = "layers." + std::to_string(l) + ".";
        fw.add(p + "residual", &a.residual[l], N * C);
        fw.add(p + "rstd1", &la.rstd1, N);
        if (!(drop & kDropNorm1)) fw.add(p + "norm1", &la.norm1, N * C);
        fw.add(p + "q", &la.q, N * QD);
        fw.add(p + "k", &la.k, N * KD);
        fw.add(p + "v", &la.v, N * KD);
        if (!(drop & kDropAtt)) fw.add(p + "att", &la.att, N * QD);
        fw.add(p + "lse", &la.lse, N * c.n_heads);
        fw.add(p + "mid", &la.mid, N * C);
        fw.add(p + "rstd2", &la.rstd2, N);
        if (!(drop & kDropNorm2)) fw.add(p + "norm2", &la.norm2, N * C);
        if (!(drop & kDropGateUp)) {
            fw.add(p + "gate", &la.gate, N * F, true);
            fw.add(p + "up", &la.up, N * F, true);
        }
        if (!(drop & kDropHidden)) fw.add(p + "hidden", &la.hidden, N * F);
    }
    if (any_dropped & kDropNorm1) fw.add("shared.norm1", &shared.norm1, N * C);
    if (any_dropped & kDropAtt) fw.add("shared.att", &shared.att, N * QD);
    if (any_dropped & kDropNorm2) fw.add("shared.norm2", &shared.norm2, N * C);
    if (any_dropped & kDropHidden) fw.add("shared.hidden", &shared.hidden, N * F);
    if (any_dropped & kDropGateUp) {
        fw.add("shared.gate", &shared.gate, N * F, true);
        fw.add("shared.up", &shared.up, N * F, true);
    }
    fw.add("final.residual", &a.residual[c.n_layers], N * C);
    fw.add("final.rstd", &a.rstdf, N);
    fw.add("final.norm", &a.normf, N * C);
    fw.add("logits", &a.logits, (size_t)a.logit_rows * V);
    fw.add("losses", &a.losses, N);
    fw.add("rope.cos", &a.rope_cos, (size_t)T * hd / 2);
    fw.add("rope.sin", &a.rope_sin, (size_t)T * hd / 2);

    bw.add("dres", &a.dres, N * C);
    bw.add("dnorm", &a.dnorm, N * C);
    bw.add("dblock", &a.dblock, N * std::max(F, 2 * QD + 3 * KD));
}

// The block gradients inside dblock (activations.h: the MLP's and the attention's never live at once).
template <typename Real>
void point_block_gradients(Activations<Real>& a, const ModelConfig& c) {
    const size_t N = (size_t)a.B * a.T, hd = c.head_dim(), QD = (size_t)c.n_heads * hd, KD = (size_t)c.n_kv_heads * hd;
    a.dhidden = a.dblock;                 // MLP: (N,F)
    a.datt = a.dq_pre = a.dblock;         // attention: (N,QD), dq_pre once datt is spent
    a.dq = a.dblock + N * QD;             // (N,QD)
    a.dk = a.dq + N * QD;                 // (N,KD)
    a.dv = a.dk + N * KD;                 // (N,KD)
    a.dk_pre = a.dv + N * KD;             // (N,KD)
}

}  // namespace

// L entries: dropped as given, or none dropped when it is empty.
static std::vector<uint8_t> dropped_per_layer(const ModelConfig& c, const std::vector<uint8_t>& dropped) {
    LLMQ_CHECK(dropped.empty() || dropped.size() == (size_t)c.n_layers,
               "activation plan: %zu dropped-input entries for %d layers", dropped.size(), c.n_layers);
    return dropped.empty() ? std::vector<uint8_t>(c.n_layers, 0) : dropped;
}

template <typename Real>
void Activations<Real>::plan(const ModelConfig& c, int B_, int T_, const std::vector<uint8_t>& dropped_,
                             int logit_rows_) {
    std::vector<uint8_t> want = dropped_per_layer(c, dropped_);
    const int64_t N = (int64_t)B_ * T_, rows = logit_rows_ > 0 && logit_rows_ < N ? logit_rows_ : N;
    if (B_ == B && T_ == T && want == dropped && rows == logit_rows) return;
    B = B_;
    T = T_;
    logit_rows = rows;
    dropped = std::move(want);
    tensors.clear();
    residual.assign(c.n_layers + 1, nullptr);
    layers.assign(c.n_layers, LayerActivations<Real>{});
    Carver<Real> fw, bw;
    SharedInputs<Real> shared;
    request_all(*this, c, B, T, fw, bw, shared);
    fw.carve(buffer, &tensors);
    bw.carve(grad_buffer, nullptr);
    shared.point_dropped_at_shared(*this);
    point_block_gradients(*this, c);
    tokens.assign((size_t)B * T, 0);
    targets.assign((size_t)B * T, kIgnoreIndex);
    rope_tables_cpu(rope_cos, rope_sin, T, c.head_dim(), (Real)c.rope_theta);
}

template <typename Real>
size_t Activations<Real>::bytes_for(const ModelConfig& c, int B, int T, const std::vector<uint8_t>& dropped,
                                    int logit_rows) {
    Activations<Real> a;  // only its fields' addresses are used: nothing is allocated
    a.dropped = dropped_per_layer(c, dropped);
    const int64_t N = (int64_t)B * T;  // (a memory check may ask about a batch far past int)
    a.logit_rows = logit_rows > 0 && logit_rows < N ? logit_rows : N;
    a.residual.assign(c.n_layers + 1, nullptr);
    a.layers.assign(c.n_layers, LayerActivations<Real>{});
    Carver<Real> fw, bw;
    SharedInputs<Real> shared;
    request_all(a, c, B, T, fw, bw, shared);
    return sizeof(Real) * (fw.total() + bw.total()) + sizeof(int) * 2 * (size_t)B * T;
}

template <typename Real>
size_t Activations<Real>::bytes() const {
    return sizeof(Real) * (buffer.size() + grad_buffer.size()) + sizeof(int) * (tokens.size() + targets.size());
}

template struct Activations<float>;
template struct Activations<double>;

}  // namespace llmq
