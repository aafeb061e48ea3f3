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
    void carve(std::vector<Real>& buffer, std::vector<ActivationTensor>* names) {
        size_t total = 0;
        for (const Request& r : requests) total += r.size;
        buffer.assign(total, Real(0));
        size_t offset = 0;
        for (const Request& r : requests) {
            *r.ptr = buffer.data() + offset;
            if (names) names->push_back({r.name, offset, r.size});
            offset += r.size;
        }
    }
};

}  // namespace

template <typename Real>
void Activations<Real>::plan(const ModelConfig& c, int B_, int T_) {
    if (B_ == B && T_ == T) return;
    const size_t N = (size_t)B_ * T_, C = c.dim, F = c.ffn_dim, V = c.vocab_size, hd = c.head_dim();
    const size_t QD = (size_t)c.n_heads * hd, KD = (size_t)c.n_kv_heads * hd;
    B = B_;
    T = T_;
    tensors.clear();
    residual.assign(c.n_layers + 1, nullptr);
    layers.assign(c.n_layers, LayerActivations<Real>{});

    Carver<Real> fw;
    for (int l = 0; l < c.n_layers; l++) {
        LayerActivations<Real>& a = layers[l];
        const std::string p = "layers." + std::to_string(l) + ".";
        fw.add(p + "residual", &residual[l], N * C);
        fw.add(p + "rstd1", &a.rstd1, N);
        fw.add(p + "norm1", &a.norm1, N * C);
        fw.add(p + "q", &a.q, N * QD);
        fw.add(p + "k", &a.k, N * KD);
        fw.add(p + "v", &a.v, N * KD);
        fw.add(p + "att", &a.att, N * QD);
        fw.add(p + "lse", &a.lse, N * c.n_heads);
        fw.add(p + "mid", &a.mid, N * C);
        fw.add(p + "rstd2", &a.rstd2, N);
        fw.add(p + "norm2", &a.norm2, N * C);
        fw.add(p + "gate", &a.gate, N * F);
        fw.add(p + "up", &a.up, N * F);
        fw.add(p + "hidden", &a.hidden, N * F);
    }
    fw.add("final.residual", &residual[c.n_layers], N * C);
    fw.add("final.rstd", &rstdf, N);
    fw.add("final.norm", &normf, N * C);
    fw.add("logits", &logits, N * V);
    fw.add("losses", &losses, N);
    fw.add("rope.cos", &rope_cos, (size_t)T * hd / 2);
    fw.add("rope.sin", &rope_sin, (size_t)T * hd / 2);
    fw.carve(buffer, &tensors);

    Carver<Real> bw;
    bw.add("dres", &dres, N * C);
    bw.add("dnorm", &dnorm, N * C);
    bw.add("datt", &datt, N * QD);
    bw.add("dq", &dq, N * QD);
    bw.add("dk", &dk, N * KD);
    bw.add("dv", &dv, N * KD);
    bw.add("dq_pre", &dq_pre, N * QD);
    bw.add("dk_pre", &dk_pre, N * KD);
    bw.add("dhidden", &dhidden, N * F);
    bw.add("dgate", &dgate, N * F);
    bw.add("dup", &dup, N * F);
    bw.carve(grad_buffer, nullptr);

    tokens.assign(N, 0);
    targets.assign(N, kIgnoreIndex);
    rope_tables_cpu(rope_cos, rope_sin, T, (int)hd, (Real)c.rope_theta);
}

template <typename Real>
size_t Activations<Real>::bytes() const {
    return sizeof(Real) * (buffer.size() + grad_buffer.size()) + sizeof(int) * (tokens.size() + targets.size());
}

template struct Activations<float>;
template struct Activations<double>;

}  // namespace llmq
