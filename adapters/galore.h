// galore: GaLore (Zhao et al. 2024, arXiv 2403.03507), gradient low-rank projection: full-parameter training
// whose Adam moments live in a rank-r subspace of each weight's gradient, so the optimizer state of a (m,n)
// weight is r (2 max(m,n) + min(m,n)) floats instead of 2 m n.
//
// For every 2-D weight W (m,n) of the attention and MLP linears (q,k,v,o,gate,up,down; embeddings, norms and
// lm_head get plain AdamW, as in the paper's setup), with G (m,n) its (clipped) gradient:
//   every `every` updates (at the first one too): SVD of G = U S V^T, then
//     m <  n  ("left")   P  = U[:, :r]    (m,r)     R = P^T G   (r,n)     back(N) = P N     (m,n)
//     m >= n  ("right")  Qt = V^T[:r, :]  (r,n)     R = G Qt^T  (m,r)     back(N) = N Qt    (m,n)
//   Adam on R: m_R, v_R (shape of R) updated, N = mhat / (sqrt(vhat) + eps); the moments are NOT reset when the
//   projection changes (they carry over into the new subspace, as in the official code);
//   W -= lr * (scale * back(N) + weight_decay * W)     (scale 0.25 by default: the paper's alpha)
// r is min(rank, m, n).
//
// Semantics follow the official code (github.com/jiaweizzhao/GaLore, galore_torch/galore_projector.py,
// GaLoreProjector.project / project_back / get_orthogonal_matrix with proj_type 'std', and galore_torch/adamw.py,
// AdamW.step), with these differences:
//   - bias correction: the code folds it into the step size, lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps);
//     here it is AdamW's own (kernels/adamw.h) mhat / (sqrt(vhat) + eps), so the two differ only where sqrt(vhat)
//     is near eps, and GaLore shares the element math of the rest of the optimizer;
//   - weight decay: the code decays the already-updated W by lr wd after the step; here W -= lr (dir + wd W) on the
//     W before the step, the same decoupled decay as layers/optimizer.h;
//   - the refresh counter is the update count t (the code's state["step"] before its increment: t % every == 0),
//     so a skipped (--on-nan skip) step does not move it, and a resumed run refreshes where the original did;
//   - the SVD is LAPACK's in double (adapters/svd.h) of the gradient already scaled by global-norm clipping
//     (a positive factor: the same singular vectors; the code clips in torchrun_main.py before the step too).
// The singular vectors' signs are LAPACK's; as in the official code, the moments are not rotated into a new
// subspace, so a refresh mixes old coordinates into new directions (the paper's stated trade-off).
//
// State in memory (state_bytes): per projected weight P or Qt (fp32) and m_R, v_R (fp32); per other tensor AdamW's
// m, v. A step also uses transient scratch of R's and W's size (not state: like the layers' scratch, it is
// reused, never kept across steps). 8-bit GaLore states are not implemented (./train refuses the combination).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../layers/model.h"
#include "../layers/optimizer.h"

namespace llmq {

struct GaloreOptions {
    int rank = 8;          // r (the trainer's --rank)
    int every = 200;       // updates between projection refreshes (the code's update_proj_gap)
    float scale = 0.25f;   // the factor on the projected-back update (the code's scale, the paper's alpha)
};

// Whether GaLore projects tensor t: the 2-D weights of the attention and MLP linears, by their HF names
// (model.layers.L.self_attn.{q,k,v,o}_proj.weight, model.layers.L.mlp.{gate,up,down}_proj.weight).
bool galore_projects(const ParamTensor& t);

// One tensor's optimizer state.
struct GaloreSlot {
    ParamTensor tensor;        // where it lives in the parameter buffer
    bool projected = false;    // false: plain AdamW (m, v of tensor.size)
    bool left = false;         // projected with P (m,r) on the left (m < n); else Qt (r,n) on the right
    int m = 0, n = 0, r = 0;   // the weight's shape and the effective rank
    std::vector<float> proj;   // P (m,r) or Qt (r,n) row-major; zero until the first update computes it
    std::vector<float> exp_avg, exp_avg_sq;  // (r,n) or (m,r) when projected, else (tensor.size)
    size_t moment_size() const { return exp_avg.size(); }
};

class GaloreOptimizer {
  public:
    // config.eight_bit must be false; rank >= 1, every >= 1, scale > 0.
    GaloreOptimizer(const OptimizerConfig& config, const GaloreOptions& options,
                    const std::vector<ParamTensor>& tensors);
    // One update of model.params() from model.grads(): global-norm clipping, then GaLore / AdamW per tensor at
    // lr_at_step(step) (0-based). Returns the gradient norm before clipping; a non-finite norm throws Error.
    float step(Model& model, int step);
    // The same on any buffer of the layout this optimizer was built for: params, grads (n).
    float step(float* params, const float* grads, size_t n, int step);

    // Bytes held between steps: projections and projected moments, plus the other tensors' AdamW moments.
    size_t state_bytes() const;
    // The same, from the layout alone (without building the state): the memory formula
    //   sum over projected (m,n): 4 r (2 max(m,n) + min(m,n)),  r = min(rank, m, n);   others: 8 size
    static size_t state_bytes_for(const std::vector<ParamTensor>& tensors, int rank);
    // "galore: rank 8, projection refreshed every 200 steps, scale 0.25 on 14 weights (q,k,v,o,gate,up,down) ..."
    std::string describe() const;

    // Checkpoint form (versioned; see galore.cpp) and back: load checks the version, the rank and every tensor's
    // shape against this optimizer's, with errors naming `what` (the checkpoint file) and the tensor.
    std::vector<uint8_t> serialize() const;
    void deserialize(const uint8_t* data, size_t size, const char* what);

    int steps_taken() const { return t_; }
    const std::vector<GaloreSlot>& slots() const { return slots_; }
    std::vector<GaloreSlot>& slots() { return slots_; }
    const GaloreOptions& options() const { return options_; }
    const OptimizerConfig& config() const { return config_; }

  private:
    void refresh_projection(GaloreSlot& s, const float* grad);  // the top-r singular vectors of grad (m,n)
    void step_projected(GaloreSlot& s, float* param, const float* grad, float lr, float clip_scale);

    OptimizerConfig config_;
    GaloreOptions options_;
    std::vector<GaloreSlot> slots_;  // one per tensor, in layout order
    size_t num_params_ = 0;
    int t_ = 0;                      // updates applied (bias correction uses t_ + 1; refresh when t_ % every == 0)
    std::vector<float> scratch_r_, scratch_w_;  // R / N (r * max(m,n)), back(N) (m n): reused every step
};

}  // namespace llmq
