// train_method: what trains in a run (--method) and how its optimizer step goes, behind one interface, so the
// training loop (trainer.cpp) reads the same for every method:
//
//   method       what trains                                  optimizer                      between steps
//   full         every tensor of the model                    AdamW (fp32 or 8-bit states)   -
//   lora, qlora  LoraAdapters on the frozen (quantized) base  AdamW over the adapters        -
//   relora       LoraAdapters on the frozen fp32 base         AdamW, jagged lr               merge + restart every K
//   switchlora   LoraAdapters (s = 1/r) on the fp32 base      SwitchLoraOptimizer            vector switches
//   galore       every tensor of the model                    GaloreOptimizer (projected)    (refresh in its step)
//   loqt(-nq)    one factor per Linear, plus the embeddings,  two AdamWs, clipped together   merges on a schedule
//                norms and lm_head                                                           (no update then)
// --train-rest 1 trains the embeddings, norms and lm_head beside a lora-family method's adapters (a second AdamW,
// one clipping norm for both), as pretraining with ReLoRA, SwitchLoRA and LoQT does.
//
// The loop: zero_grad; begin_step (LoQT opens a merge); grad_accum x (forward, backward); grads_finite;
// finish_step (the update, LoQT's merge, ReLoRA's merge). Checkpoints hold the model's buffer (with its AdamW for
// full and LoQT's unwrapped tensors), the adapter section (LoRA's adapters or LoQT's trained factors, with their
// AdamW) and the method's own state sections ("galore", "loqt", "switchlora"; "quantized_base" when a LoRA base
// was initialised by LoftQ / CLoQ or GPTQ, whose codes cannot be re-derived from the fp32 weights); a checkpoint
// resumes only as the method that wrote it.
//
// --init loftq|cloq and --quantizer gptq (lora / qlora on a quantized base, adapters/lora_init.h): before the
// first step the base is quantized and the adapters initialised from calibration statistics of --calib-tokens
// training tokens; each layer's weight and calibrated output errors are logged.
#pragma once

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "../kernels/common.h"
#include "../layers/model.h"
#include "../layers/optimizer.h"
#include "checkpoint.h"
#include "trainer.h"

namespace llmq {

class GaloreOptimizer;
class LoraAdapters;
class LoqtAdapters;
class SwitchLora;
struct LoraInitReport;

// Error naming the flag unless --method and its flags (rank, alpha, base format, the methods' own) fit together.
void check_method_options(const TrainOptions& o);

// alpha as the method uses it: --alpha, or the method's default when --alpha is 0 (lora family 16, so
// s = alpha / r; switchlora 1, so s = 1/r; loqt 0.5, used as s directly, the paper's 0.25-0.5).
float method_alpha(const TrainOptions& o);

// Bytes a method holds, by component (what is allocated is what is reported: the CPU backend keeps the fp32 base
// beside a quantized one's codes, and the model's gradient buffer even when the base is frozen).
struct MethodMemory {
    size_t weights = 0, grads = 0, optimizer = 0;
    size_t trained_params = 0;  // parameters the optimizer updates
};

class TrainMethod {
  public:
    // Attaches o.method to model (adapters, wrapped Linears, frozen base). `optimizer` null: for inference and
    // export (no optimizer state; only load() and the parts); else the run's optimizers are built from it.
    TrainMethod(Model& model, const TrainOptions& o, const OptimizerConfig* optimizer);
    ~TrainMethod();
    TrainMethod(const TrainMethod&) = delete;
    TrainMethod& operator=(const TrainMethod&) = delete;

    // Loads a checkpoint this method wrote (Error when another --method wrote it) into the model, the trained
    // buffers, their optimizer state (when built with one) and the method's state sections; then quantizes a
    // qlora base from the loaded (never trained) fp32 weights. Returns the file's info with every state section.
    CheckpointInfo load(const std::string& path);
    // Without a checkpoint: quantizes a qlora / --weights base from the initial weights (with --init loftq|cloq
    // or --quantizer gptq: calibrates and initialises the adapters too).
    void start_fresh();
    // Writes a checkpoint of the model and this method's state, plus `extra` sections (WTA-CRS's samplers).
    void save(const std::string& path, const TrainState& state, const FlagValues& flags,
              std::vector<StateSection> extra = {}) const;

    // What the run trains and holds, as log lines.
    void describe(FILE* log) const;
    MethodMemory memory() const;

    void zero_grad();
    void begin_step(int step);
    // Around each training forward and backward: --lora-dropout's masks come from a seed drawn from rng (the
    // checkpointed training Rng; nothing is drawn without dropout); outside them (evaluation) no dropout.
    void begin_micro_batch(Rng& rng);
    void end_micro_batch();
    bool grads_finite() const;
    // Whether this step only merges (LoQT: its gradient gives the new projections; nothing is updated).
    bool merging() const;
    // The learning rate of 0-based step (ReLoRA's re-warmup included).
    float lr(int step) const;
    // After the step's backward: the update, or LoQT's merge, then ReLoRA's merge when due. skip: the gradients
    // are not finite (--on-nan skip), no update, the schedules go on. Returns the gradient norm before clipping
    // (NAN when nothing was updated). Merges log one line each.
    float finish_step(int step, bool skip, FILE* log);

    // The model buffer's AdamW (full; LoQT's and --train-rest's other tensors), null when it has none: the GPU
    // backend (cuda_run.h) keeps it as the host mirror of its own optimizer state.
    AdamW* model_optimizer() { return model_opt_.get(); }
    LoraAdapters* lora() { return lora_.get(); }  // lora, qlora, relora: for the peft export
    bool has_adapters() const;  // the model's Linears carry adapters (exports merge them into the base)
    // Whether the adapters alone, put on the ORIGINAL base (peft's way), give this model: lora and qlora with the
    // base quantized from it by round-to-nearest (plain or CLoQ init). Not ReLoRA and SwitchLoRA (they change
    // the base), LoftQ (Q = quant(W - s B A)), GPTQ, LoQT.
    bool adapter_fits_original_base() const;

  private:
    // The frozen LoRA base: from the checkpoint's "quantized_base" section, or quantized from the fp32 weights
    // (plain, round-to-nearest), or through adapters/lora_init.h (LoftQ / CLoQ / GPTQ). resumed: the loaded file.
    void quantize_base(const CheckpointInfo* resumed, const std::string& path);
    std::vector<uint8_t> quantized_base_bytes() const;
    void restore_quantized_base(const std::vector<uint8_t>& bytes, const char* what);
    float* trained_params() const;  // the adapter section's buffer: LoRA's adapters or LoQT's trained factors
    size_t trained_count() const;

    Model& model_;
    TrainOptions o_;
    OptimizerConfig ocfg_;
    std::unique_ptr<LoraAdapters> lora_;
    std::unique_ptr<LoqtAdapters> loqt_;
    std::unique_ptr<GaloreOptimizer> galore_;
    std::unique_ptr<SwitchLora> switch_;  // switchlora (training only: inference needs the adapters alone)
    std::unique_ptr<AdamW> model_opt_;    // the model's buffer: full; LoQT's (and --train-rest's) other tensors
    std::vector<ParamTensor> rest_;       // --train-rest: the model's tensors trained beside the adapters
    std::unique_ptr<AdamW> trained_opt_;  // LoRA's adapters or LoQT's trained factors
    size_t quant_bytes_ = 0;              // the frozen base's codes and scales
    std::string base_format_ = "bf16";
    bool base_in_section_ = false;        // the base's codes travel in the checkpoint (not re-derivable)
    std::vector<LoraInitReport> init_report_;  // --init / --quantizer gptq: per layer, for describe()
    // --layerwise: the step the backward's updates belong to, their gradients' sum of squares (for the norm),
    // and whether one was not finite (then not applied)
    int layerwise_step_ = 0;
    double layerwise_sum_squares_ = 0;
    bool layerwise_non_finite_ = false;
};

// The options a checkpoint was trained with (its stored flags over the defaults): for sampling and export.
TrainOptions options_of_checkpoint(const CheckpointInfo& info);
// Loads a checkpoint's weights into model (built from info.config) for inference or export: the method's parts
// (adapters, quantized base, LoQT's factors) are rebuilt from its flags and filled. Keep the result alive while
// the model is used.
std::unique_ptr<TrainMethod> load_checkpoint_for_inference(const std::string& path, const CheckpointInfo& info,
                                                          Model& model);

}  // namespace llmq
