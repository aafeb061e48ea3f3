// activations.cpp: carves the activation buffer and the backward scratch for (B,T) (layout in activations.h).
#include "activations.h"

#include <algorithm>
#include <cmath>

#include "../kernels/common.h"
#include "../kernels/rope.h"
#include "model.h"

namespace llmq {

namespace {

// Where the one-layer workspace (activations.h) puts each of its tensors, in floats from its start per row
// (times N for the offset): what the MLP's backward holds at once, then what the attention's holds at once; the
// forward's dropped tensors take places of the backward's, which is not running.
struct WorkspaceLayout {
    size_t dhidden = 0, gate = 0, up = 0, norm = 0;         // MLP phase; hidden (forward) in dhidden's place
    size_t datt = 0, dq = 0, dk = 0, dv = 0, dk_pre = 0, att = 0;  // attention phase; dq_pre in datt's place
    size_t width = 0;
    WorkspaceLayout(const ModelConfig& c, uint8_t any_dropped) {
        const size_t C = c.dim, F = c.ffn_dim, QD = (size_t)c.n_heads * c.head_dim(), KD = (size_t)c.n_kv_heads * c.head_dim();
        size_t mlp = F;  // dhidden
        if (any_dropped & kDropGateUp) gate = mlp, up = mlp + F, mlp += 2 * F;
        if (any_dropped & (kDropNorm1 | kDropNorm2)) norm = mlp, mlp += C;
        dq = QD, dk = 2 * QD, dv = dk + KD, dk_pre = dv + KD;
        size_t attention = dk_pre + KD;
        if (any_dropped & kDropAtt) att = attention, attention += QD;
        width = std::max(mlp, attention);
    }
};

// Points the workspace's tensors, and the dropped tensors of every layer, at their places in it.
template <typename Real>
void point_into_workspace(Activations<Real>& a, const ModelConfig& c) {
    uint8_t any_dropped = 0;  // (request_all has the same union)
    for (uint8_t d : a.dropped) any_dropped |= d;
    const WorkspaceLayout w(c, any_dropped);
    const size_t N = (size_t)a.B * a.T;
    Real* ws = a.workspace;
    a.dhidden = ws + N * w.dhidden;
    a.datt = a.dq_pre = ws + N * w.datt;
    a.dq = ws + N * w.dq, a.dk = ws + N * w.dk, a.dv = ws + N * w.dv, a.dk_pre = ws + N * w.dk_pre;
    for (size_t l = 0; l < a.layers.size(); l++) {
        LayerActivations<Real>& la = a.layers[l];
        const uint8_t d = a.dropped[l];
        if (d & kDropNorm1) la.norm1 = ws + N * w.norm;
        if (d & kDropNorm2) la.norm2 = ws + N * w.norm;
        if (d & kDropAtt) la.att = ws + N * w.att;
        if (d & kDropHidden) la.hidden = ws + N * w.dhidden;
        if (d & kDropGateUp) la.gate = ws + N * w.gate, la.up = ws + N * w.up;
    }
}

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
// a.dropped must already hold L entries. The dropped tensors are pointed into the workspace after carving
// (point_into_workspace).
template <typename Real>
void request_all(Activations<Real>& a, const ModelConfig& c, int B, int T, Carver<Real>& fw, Carver<Real>& bw) {
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
    fw.add("final.residual", &a.residual[c.n_layers], N * C);
    fw.add("final.rstd", &a.rstdf, N);
    fw.add("final.norm", &a.normf, N * C);
    fw.add("logits", &a.logits, (size_t)a.logit_rows * V);
    fw.add("losses", &a.losses, N);
    fw.add("rope.cos", &a.rope_cos, (size_t)T * hd / 2);
    fw.add("rope.sin", &a.rope_sin, (size_t)T * hd / 2);

    bw.add("dres", &a.dres, N * C);
    bw.add("dnorm", &a.dnorm, N * C);
    bw.add("workspace", &a.workspace, N * WorkspaceLayout(c, any_dropped).width);
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
    request_all(*this, c, B, T, fw, bw);
    fw.carve(buffer, &tensors);
    bw.carve(grad_buffer, nullptr);
    point_into_workspace(*this, c);
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
