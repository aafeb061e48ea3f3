// activations: everything the model's forward keeps for its backward, planned once for (B,T) and held in
// ONE buffer carved into named tensors, plus the backward's scratch (one layer's worth, reused by every
// layer). Knowing the whole plan up front is what lets later work swap a tensor for a recomputation or a
// sampled copy (WTA-CRS) and see the saving in bytes().
//
// Per layer l (N = B*T rows, C dim, QD = n_heads*hd, KD = n_kv_heads*hd, F ffn):
//   residual[l]  (N,C)   the stream entering the layer = input of the first RMSNorm
//   rstd1        (N)     its 1/rms
//   norm1        (N,C)   input of q/k/v
//   q (N,QD), k (N,KD)   after RoPE; v (N,KD): what attention's backward reads
//   att (N,QD)           attention output = input of o_proj;  lse (B,NH,T)
//   mid          (N,C)   the stream after attention = input of the second RMSNorm
//   rstd2 (N), norm2 (N,C)  input of gate/up
//   gate, up     (N,F)   SwiGLU pre-activations (the backward overwrites them with their gradients);
//   hidden (N,F) = silu(gate)*up, input of down
// Then residual[L] (N,C) (input of the final norm), rstdf (N), normf (N,C) (input of lm_head),
// logits (R,V), losses (N), rope cos/sin (T,hd/2). R = logit_rows: N for a forward without targets (the caller
// reads every position's logits), else the classifier's chunk of rows (layers/model_core.h): the loss and, in the
// backward, dlogits are formed chunk by chunk from normf, so the (N,V) logits of a training step are never held
// (dlogits overwrite the chunk in place).
//
// Inputs the backward does not need. norm1, att, norm2 and hidden are saved only as Linear inputs (the
// norms' backward reads residual/mid and rstd; SwiGLU's reads gate and up) -- except att, which attention's
// backward reads too. When every Linear reading one of them has !needs_input_in_backward() (WTA-CRS keeps
// its sampled rows instead, or the layer forms no weight gradient), the plan does not keep it per layer:
// layer l's pointer leads into the one-layer workspace (below), which every such layer overwrites at its
// forward. att is then recomputed from the kept q, k, v by attention's forward in the backward, into its place
// in the workspace. dropped[l] holds the DroppedInput bits of layer l.
//
// Recomputation (ModelCore::set_recompute_mlp): gate and up (2F floats per row, the largest tensors a layer
// keeps) go to the workspace too, and the backward recomputes them with the gate/up products from norm2 --
// norm2 itself recomputed from mid by the RMSNorm forward when it was dropped -- at the cost of those two
// products once more. The recomputed values are the forward's bit for bit (same ops on the same inputs).
//
// The workspace (grad_buffer, after dres and dnorm): one layer's worth, reused layer after layer. The backward's
// MLP phase holds dhidden (N,F), and when recomputing gate, up (N,F) and norm2 (N,C); its attention phase holds
// datt (N,QD) (dq_pre takes its place once attention's backward has spent it), dq (N,QD), dk, dv, dk_pre (N,KD),
// and a recomputed att (N,QD). The two phases never live at once, so they share the space; and no forward value
// in the workspace is read by the backward (what it needs it recomputes there), so the forward's dropped tensors
// take places in it too: norm1 and norm2 norm2's, hidden dhidden's, gate and up theirs, att att's. Its width is
// the larger phase's: for tiny 448 floats per row with nothing dropped (separate buffers took 1632), 1184 with
// WTA-CRS on every Linear and --recompute mlp (the separate shared buffers and scratch took 1888).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "config.h"

namespace llmq {

// kDropGateUp is not an input: SwiGLU's backward reads gate and up, so dropping them (ModelCore::set_recompute_mlp)
// means recomputing them in the backward from norm2 (itself recomputed from mid when dropped), into the workspace.
enum DroppedInput : uint8_t { kDropNorm1 = 1, kDropAtt = 2, kDropNorm2 = 4, kDropHidden = 8, kDropGateUp = 16 };

template <typename Real>
struct LayerActivations {
    Real *rstd1, *norm1, *q, *k, *v, *att, *lse, *mid, *rstd2, *norm2, *gate, *up, *hidden;
};

struct ActivationTensor {
    std::string name;  // e.g. "layers.0.norm1"
    size_t offset = 0, size = 0;  // in elements of the buffer
    bool overwritten_by_backward = false;  // gate, up: they hold their gradients once a backward has run
};

template <typename Real>
struct Activations {
    int B = 0, T = 0;
    int64_t logit_rows = 0;                 // R: rows of logits held (N, or the classifier's chunk)
    std::vector<uint8_t> dropped;           // (L) DroppedInput bits per layer, as planned
    std::vector<Real> buffer;               // the forward's tensors
    std::vector<ActivationTensor> tensors;  // their names and places in buffer
    std::vector<Real*> residual;            // L+1 entries, (N,C) each
    std::vector<LayerActivations<Real>> layers;
    Real *rstdf = nullptr, *normf = nullptr, *logits = nullptr, *losses = nullptr;
    Real *rope_cos = nullptr, *rope_sin = nullptr;
    std::vector<int> tokens, targets;  // (N) copies of the last forward's inputs

    // the backward's scratch: dres (N,C), dnorm (N,C) (also the forward's temporary for o_proj/down outputs
    // before the residual add), and the workspace (above) with the block gradients in it. SwiGLU's backward writes
    // dgate and dup over gate and up, which nothing reads after it, so they need no place of their own.
    std::vector<Real> grad_buffer;
    Real *dres = nullptr, *dnorm = nullptr, *workspace = nullptr, *dhidden = nullptr;
    Real *datt = nullptr, *dq = nullptr, *dk = nullptr, *dv = nullptr;
    Real *dq_pre = nullptr, *dk_pre = nullptr;

    // (Re)allocates for (B,T), the dropped inputs (L entries, or empty: none) and logit_rows (0: all N) and
    // fills the RoPE tables; a no-op when nothing changed.
    void plan(const ModelConfig& c, int B, int T, const std::vector<uint8_t>& dropped = {}, int logit_rows = 0);
    size_t bytes() const;  // forward tensors + backward scratch + token copies
    // What plan(c, B, T, dropped, logit_rows) would hold, without allocating it (memory checks before the first
    // forward).
    static size_t bytes_for(const ModelConfig& c, int B, int T, const std::vector<uint8_t>& dropped = {},
                            int logit_rows = 0);
};

}  // namespace llmq
