// activations.cpp: carves the activation buffer and the backward scratch for (B,T) (layout in activations.h).
#include "activations.h"

#include <cmath>

#include "../kernels/common.h"
#include "../kernels/rope.h"
#include "model.h"

namespace llmq {

namespace {

// Collects (pointer, size) requests, then allocates once and points each at its slice.
template <typename Real>
struct Carver {
    struct Request {
        std::string name;
        Real** ptr;
        size_t size;
    };
    std::vector<Request> requests;
    void add(std::string name, Real** ptr, size_t size) { requests.push_back({std::move(name), ptr, size}); }
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
            if (names) names->push_back({r.name, offset, r.size});
            offset += r.size;
        }
    }
};

// Registers every tensor of the plan for (B,T): the forward's into fw, the backward scratch into bw,
// pointing at a's fields (a.residual and a.layers must already have their L+1 and L entries).
template <typename Real>
void request_all(Activations<Real>& a, const ModelConfig& c, int B, int T, Carver<Real>& fw, Carver<Real>& bw) {
    const size_t N = (size_t)B * T, C = c.dim, F = c.ffn_dim, V = c.vocab_size, hd = c.head_dim();
    const size_t QD = (size_t)c.n_heads * hd, KD = (size_t)c.n_kv_heads * hd;
    for (int l = 0; l < c.n_layers; l++) {
        LayerActivations<Real>& la = a.layers[l];
        const std::string p = "layers." + std::to_string(l) + ".";
        fw.add(p + "residual", &a.residual[l], N * C);
        fw.add(p + "rstd1", &la.rstd1, N);
        fw.add(p + "norm1", &la.norm1, N * C);
        fw.add(p + "q", &la.q, N * QD);
        fw.add(p + "k", &la.k, N * KD);
        fw.add(p + "v", &la.v, N * KD);
        fw.add(p + "att", &la.att, N * QD);
        fw.add(p + "lse", &la.lse, N * c.n_heads);
        fw.add(p + "mid", &la.mid, N * C);
        fw.add(p + "rstd2", &la.rstd2, N);
        fw.add(p + "norm2", &la.norm2, N * C);
        fw.add(p + "gate", &la.gate, N * F);
        fw.add(p + "up", &la.up, N * F);
        fw.add(p + "hidden", &la.hidden, N * F);
    }
    fw.add("final.residual", &a.residual[c.n_layers], N * C);
    fw.add("final.rstd", &a.rstdf, N);
    fw.add("final.norm", &a.normf, N * C);
    fw.add("logits", &a.logits, N * V);
    fw.add("losses", &a.losses, N);
    fw.add("rope.cos", &a.rope_cos, (size_t)T * hd / 2);
    fw.add("rope.sin", &a.rope_sin, (size_t)T * hd / 2);

    bw.add("dres", &a.dres, N * C);
    bw.add("dnorm", &a.dnorm, N * C);
    bw.add("datt", &a.datt, N * QD);
    bw.add("dq", &a.dq, N * QD);
    bw.add("dk", &a.dk, N * KD);
    bw.add("dv", &a.dv, N * KD);
    bw.add("dq_pre", &a.dq_pre, N * QD);
    bw.add("dk_pre", &a.dk_pre, N * KD);
    bw.add("dhidden", &a.dhidden, N * F);
    bw.add("dgate", &a.dgate, N * F);
    bw.add("dup", &a.dup, N * F);
}

}  // namespace

template <typename Real>
void Activations<Real>::plan(const ModelConfig& c, int B_, int T_) {
    if (B_ == B && T_ == T) return;
    B = B_;
    T = T_;
    tensors.clear();
    residual.assign(c.n_layers + 1, nullptr);
    layers.assign(c.n_layers, LayerActivations<Real>{});
    Carver<Real> fw, bw;
    request_all(*this, c, B, T, fw, bw);
    fw.carve(buffer, &tensors);
    bw.carve(grad_buffer, nullptr);
    tokens.assign((size_t)B * T, 0);
    targets.assign((size_t)B * T, kIgnoreIndex);
    rope_tables_cpu(rope_cos, rope_sin, T, c.head_dim(), (Real)c.rope_theta);
}

template <typename Real>
size_t Activations<Real>::bytes_for(const ModelConfig& c, int B, int T) {
    Activations<Real> a;  // only its fields' addresses are used: nothing is allocated
    a.residual.assign(c.n_layers + 1, nullptr);
    a.layers.assign(c.n_layers, LayerActivations<Real>{});
    Carver<Real> fw, bw;
    request_all(a, c, B, T, fw, bw);
    return sizeof(Real) * (fw.total() + bw.total()) + sizeof(int) * 2 * (size_t)B * T;
}

template <typename Real>
size_t Activations<Real>::bytes() const {
    return sizeof(Real) * (buffer.size() + grad_buffer.size()) + sizeof(int) * (tokens.size() + targets.size());
}

template struct Activations<float>;
template struct Activations<double>;

}  // namespace llmq
