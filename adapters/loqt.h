// loqt: LoQT (Loeschcke et al. 2024, arXiv 2405.16528), low-rank adapters for quantized training: every
// attention and MLP weight W (out,in) is a frozen base (NF4 block 64 in `loqt`, fp32 in `loqt-nq`) plus one
// low-rank product of which only one factor trains:
//
//   y = W x + s B (A x),   A (r,in), B (out,r),   s = alpha (used directly, not alpha / r)
//
// P, the factor that spans the SMALLER dimension, is frozen: A when in <= out (the trained factor is B), B
// when out < in (the trained factor is A). The reference code (sebulo/LoQT, loqt/LoQT.py: LoraLinear,
// determine_projection_type 'left'/'right') is followed in this, in the schedule (loqt/utils.py:
// get_proj_update_steps, 'exponential') and in the step loop (torchrun_main.py).
//
// Merges, at steps 0, tau, then gaps tau + floor(psi^k), k = 1, 2, ... (never within the last tau steps, as
// torchrun_main.py's `update_step + update_proj_gap < num_training_steps`; step 0 always merges):
//   before the step's forward (begin_merge):
//     W_full = deq(W) + s B A;  W <- Q(W_full)  (loqt-nq: W += s B A);  A = B = 0 (the factors add nothing);
//     the Linear gets a gradient slot for this step only (the model's own gradient buffer) and an fp32 view of
//     its base (the model's parameter slot, which always holds deq(W)), so the step's backward forms dW.
//   after the step's backward (finish_merge):
//     SVD(dW) -> P = top-r right singular vectors (rows of A, in <= out) or left ones (columns of B);
//     optionally P_hat = deq(NF4(P)) (--loqt-quant-p), else P_hat = P;
//     error compensation (loqt only, `ec_iters` > 0; reference: optimize_quant_and_lora_jointly):
//       W_hat = W_full; repeat: Q = Q(W_hat); T = (W_full - deq Q) pinv(P_hat) / s  (or pinv(P_hat) (...) / s);
//       W_hat = W_full - s T P_hat; keep the (Q, T) with the smallest ||W_full - (deq Q + s T P_hat)||_F.
//     With 0 iterations (and always in loqt-nq): Q = Q(W_full), T = 0.
//   The step does NOT update anything (the reference skips optimizer.step() at merge steps), and the trained
//   factors' AdamW state is not reset.
// Besides the trained factors, LoQT trains the model's unwrapped tensors (embeddings, norms, lm_head), as the
// reference does when pretraining (only_train_lora False): a second AdamW over the model's buffer, restricted
// to those tensors (model_trained_tensors); both are clipped together by one global norm (loqt_optimizer_step).
//
// Buffers: the trained factors in one buffer of named tensors with a gradient buffer of the same layout (what
// the optimizer and the checkpoint's adapter section see), the frozen factors in a second, gradient-free one
// (fp32; NF4-rounded values with --loqt-quant-p). The quantized bases are the Linears' `quant` slots. A
// checkpoint holds the frozen factors and the bases' codes in its "loqt" state section (serialize / deserialize).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../layers/linear.h"
#include "../layers/model.h"
#include "../layers/optimizer.h"
#include "../quant/formats.h"
#include "../quant/quantized_weight.h"

namespace llmq {

struct LoqtOptions {
    int rank = 8;
    float alpha = 0.5f;          // s
    bool quantize_base = true;   // loqt: NF4 base (base_spec); loqt-nq: fp32
    QuantSpec base_spec;         // NF4, block 64 unless --quant-block / --double-quant say otherwise; also P's
    bool quantize_p = false;     // store the frozen factor as NF4 (its rounded values are what the products use)
    int ec_iters = 5;            // error-compensation iterations (0: T = 0)
    int tau = 100;
    float psi = 1.2f;
    int total_steps = 1;         // no merge within the last tau steps
};

// The reference's schedule: 0, tau, then each next = previous + tau + floor(psi^k), k = 1, 2, ..., while
// <= total_steps. (tau 100, psi 1.2, 10000 steps: 0, 100, 201, 302, 403, 505, ..., 9999: 40 steps.)
std::vector<int> loqt_merge_schedule(int tau, float psi, int total_steps);
// Whether 0-based `step` merges: 0, and the schedule's other steps with step + tau < total_steps (39 of those
// 40 in 10k steps: 9999 is within the last tau).
bool loqt_merges_at(const LoqtOptions& options, int step);

// Error compensation for one layer (see above). W (out,in) is the merged fp32 weight, P the frozen factor:
// p_is_A: P (r,in) and the result's trained factor T = B (out,r), W ~ deq Q + s T P;
// else:   P (out,r) and T = A (r,in), W ~ deq Q + s P T.
struct LoqtCompensation {
    std::shared_ptr<FormatQuantizedWeight> q;  // the chosen base
    std::vector<float> trained;                // T (0 with iters == 0)
    double error = 0;                          // ||W - (deq Q + s T P)||_F of the chosen pair
    double error_plain = 0;                    // ||W - deq Q(W)||_F: what 0 iterations give
};
LoqtCompensation loqt_compensate(const float* W, int out, int in, const float* P, int rank, bool p_is_A, float s,
                                 const QuantSpec& spec, int iters);

// What one merge did, summed over the wrapped layers (relative errors: / ||W_full||_F over all layers).
struct LoqtMergeReport {
    int layers = 0;
    double rel_error = 0;        // ||W_full - (deq Q + s T P_hat)|| / ||W_full|| (0 in loqt-nq)
    double rel_error_plain = 0;  // ||W_full - deq Q(W_full)|| / ||W_full||
};

class LoqtAdapters {
  public:
    // Wraps every attention and MLP Linear of model (freezing its base, quantizing it in loqt); A = B = 0 until
    // the merge of step 0. lm_head keeps its gradient (it trains with the embeddings and norms).
    LoqtAdapters(Model& model, const LoqtOptions& options);
    LoqtAdapters(const LoqtAdapters&) = delete;
    LoqtAdapters& operator=(const LoqtAdapters&) = delete;

    const LoqtOptions& options() const { return options_; }
    // the trained factors (and their gradients): what the factors' AdamW steps
    const std::vector<ParamTensor>& tensors() const { return trained_; }
    size_t num_params() const { return params_.size(); }
    float* params() { return params_.data(); }
    float* grads() { return grads_.data(); }
    void zero_grad();
    // the frozen factors P (no gradients)
    const std::vector<ParamTensor>& frozen_tensors() const { return frozen_; }
    size_t num_frozen() const { return frozen_params_.size(); }
    float* frozen_params() { return frozen_params_.data(); }
    // The model's tensors LoQT trains besides the factors: every tensor but the wrapped weights.
    const std::vector<ParamTensor>& model_trained_tensors() const { return model_trained_; }
    size_t num_model_trained() const;
    // Bytes as stored: the bases' codes and scales (0 in loqt-nq); the frozen factors (NF4 with quantize_p).
    size_t base_bytes() const;
    size_t frozen_bytes() const;
    // Wrapped Linears whose frozen factor is A (in <= out) / B (out < in).
    int count_p_is_A() const;
    size_t num_wrapped() const { return wrapped_.size(); }

    bool merges_at(int step) const { return loqt_merges_at(options_, step); }
    void begin_merge();                 // before the merge step's first forward (see above)
    LoqtMergeReport finish_merge();     // after its last backward: P from the SVD of dW, compensation
    bool merging() const { return merging_; }

    // The checkpoint's "loqt" state section (versioned: kStateVersion first): the frozen factors and, in loqt, every
    // base's codes and scales; deserialize checks them against this run's shapes (errors name `what`).
    static constexpr uint32_t kStateVersion = 1;
    std::vector<uint8_t> serialize() const;
    void deserialize(const std::vector<uint8_t>& bytes, const char* what);

  private:
    struct Wrapped {
        std::string name;
        Linear<float>* lin = nullptr;
        float* weight_slot = nullptr;  // the model's parameter slot: the fp32 base (nq) or deq(base) (loqt)
        float* grad_slot = nullptr;    // the model's gradient slot, used at merge steps only
        bool p_is_A = true;            // in <= out: A frozen, B trained
        size_t trained_offset = 0, frozen_offset = 0;
        std::shared_ptr<FormatQuantizedWeight> base;  // loqt only
        std::vector<float> full;       // W_full between begin_merge and finish_merge (loqt only)
    };
    void set_base(Wrapped& w, std::shared_ptr<FormatQuantizedWeight> q);  // quant slot + slot = deq(q)
    // the adapter's A and B pointers for w
    float* factor_A(Wrapped& w);
    float* factor_B(Wrapped& w);

    Model& model_;
    LoqtOptions options_;
    std::vector<Wrapped> wrapped_;
    std::vector<ParamTensor> trained_, frozen_, model_trained_;
    std::vector<float> params_, grads_, frozen_params_;
    bool merging_ = false;
};

// The AdamW for the model's unwrapped tensors (embeddings, norms, lm_head): fp32 or 8-bit states for exactly
// those tensors, none for the wrapped weights.
std::unique_ptr<AdamW> loqt_model_optimizer(const LoqtAdapters& loqt, const OptimizerConfig& config);
// One optimizer step of a LoQT run: the gradients of the trained factors and of the model's unwrapped tensors
// clipped together to grad_clip by their global norm (both AdamWs are built with grad_clip 0), then both
// updated. Returns the norm before clipping.
float loqt_optimizer_step(LoqtAdapters& loqt, Model& model, AdamW& factor_opt, AdamW& model_opt, float grad_clip,
                          int step);

}  // namespace llmq
