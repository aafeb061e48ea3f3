// trainer: the training loop behind ./train, as a library function so tests can run it in-process.
//
//   data  -> DataLoader (shuffled train windows, fixed val batches)
//   model -> Model (layers/model.h) + AdamW (layers/optimizer.h), cosine schedule with warmup
//   model -> optionally initialised from a Hugging Face LLaMA directory (--init-from: its config.json
//            replaces the preset), unless --resume continues a checkpoint (whose config it keeps)
//   each step: grad_accum x (forward, backward(1/grad_accum)), NaN/inf check (naming the first parameter
//   tensor whose gradient is not finite), AdamW step, log line
//   every --eval-every: val loss; every --ckpt-every: DIR/latest.ckpt; every --sample-every: a sample
//   end: final val loss against the val tokens' unigram entropy, DIR/loss.svg, checkpoint, sample
//
// Interrupts: SIGINT / SIGTERM during train() set a flag; the current step finishes, DIR/latest.ckpt is
// written (atomically) and train() returns with interrupted set (./train exits 130). A second signal exits
// at once (_exit(130)); the last complete checkpoint is never touched by that.
//
// Determinism: the data order comes from (seed, epoch), the model init from seed, samples from their own
// Rng seeded from (seed, step); a checkpoint carries the rest, so a resumed run continues bit-identically.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "../layers/config.h"
#include "checkpoint.h"
#include "flags.h"

namespace llmq {

struct TrainOptions {
    // model: a preset, optionally reshaped (0 = the preset's value)
    std::string model = "tiny";
    int dim = 0, ffn_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, max_seq_len = 0;
    // data and tokenizer
    std::string data = "data/shards";
    std::string encoding = "gpt2";  // the tokenizer the shards came from; "none": no tokenizer, no samples
    std::string vocab;              // a vocabulary file instead of --encoding
    // optimisation
    // (the defaults are the `make run` demo: tiny on the bundled corpus with a 4096-token trained
    //  vocabulary, ~4 minutes on 2 cores)
    int steps = 500, batch = 16, seq = 128, grad_accum = 1;
    float lr = 5e-3f, min_lr_ratio = 0.1f;
    int warmup = 30;
    float weight_decay = 0.1f, grad_clip = 1.0f;
    std::string optimizer = "adamw";  // adamw (fp32 states) or adamw8bit (block-wise 8-bit states)
    // what trains (tools/train_method.h): every weight (full; galore: with GaLore's projected Adam on the linears),
    // LoRA adapters on the frozen base (lora), on a quantized base (qlora), merged periodically (relora), LoQT's
    // one trained factor per linear on an NF4 (loqt) or fp32 (loqt-nq) base
    std::string method = "full";
    int rank = 8;
    float alpha = 0;  // 0: the method's default (method_alpha: lora family 16, loqt 0.5)
    std::string lora_targets = "all-linear";
    float lora_dropout = 0;        // peft's lora_dropout on the adapters' input (lora family)
    int train_rest = 0;            // lora family: 1 also trains embeddings, norms and lm_head (pretraining)
    int layerwise = 0;             // full: 1 updates each layer Linear during the backward (no full gradient buffer)
    // how adapters start on a quantized base (adapters/lora_init.h): plain (B = 0), loftq, cloq; the base's
    // quantizer rtn or gptq; calibration tokens (from the train split) for cloq, gptq and the error report
    std::string init = "plain", quantizer = "rtn";
    int calib_tokens = 4096, init_compare = 0;
    int switch_interval = 40, switch_freeze = 5;   // --method switchlora: interval before step 1, freeze after a reset
    std::string weights = "bf16";  // base weight format: bf16 (unquantized; fp32 on the CPU) or nf4|fp4|int4|int3|int2
    int quant_block = 64;
    int double_quant = 0;
    int relora_every = 100, relora_rewarmup = 10;  // --method relora: merge every K steps, lr re-warmup
    float relora_prune = 0.99f;                    // fraction of the adapters' optimizer state zeroed at a merge
    int galore_every = 200;                        // --method galore (rank: --rank): projection refresh interval
    float galore_scale = 0.25f;                    // and the factor on the projected-back update
    int loqt_tau = 100;         // --method loqt|loqt-nq (adapters/loqt.h): merges at 0, tau, then gaps tau + floor(psi^k)
    float loqt_psi = 1.2f;
    int loqt_quant_p = 0;       // 1: the frozen factor P in NF4
    int loqt_ec_iters = 5;      // error-compensation iterations at each merge (0: the trained factor restarts at 0)
    std::string on_nan = "stop";
    // machine
    std::string device = "auto";
    int profile = 0;  // --device cuda: a short run of N steps for Nsight (cuda_run.h)
    int threads = 0;
    // output, evaluation, checkpoints
    std::string out = "out";
    int log_every = 1, eval_every = 100, val_batches = 16;
    int ckpt_every = 100, ckpt_keep_every = 0;
    std::string resume;
    std::string init_from;  // a Hugging Face LLaMA directory: its config and weights (ignored with --resume)
    int sample_every = 0, sample_tokens = 64;
    uint64_t seed = 1337;
    // WTA-CRS sampled weight gradients (layers/wtacrs.h): ratio 0 = off; which Linears of every layer
    float wtacrs = 0;
    std::string wtacrs_layers = "attn-out,mlp";
    // activation recomputation (layers/activations.h): none, or mlp (gate and up recomputed in the backward)
    std::string recompute = "none";
};

// Binds every field of opts to a flag of the same name (dashes for underscores) with its help text.
void add_train_flags(FlagSet& flags, TrainOptions& opts);
// For a resumed run: takes each training flag stored in the checkpoint that the command line did not set
// (so `./train --resume out` continues with the original settings). --seq must not change.
void apply_checkpoint_flags(FlagSet& flags, const CheckpointInfo& info);
// The model shape for opts (preset + overrides) with the given vocabulary; validated.
ModelConfig model_config_for(const TrainOptions& opts, int vocab_size);

class Model;

struct TrainResult {
    int64_t first_step = 0;     // the step the run started from (0, or the checkpoint's)
    std::vector<float> losses;  // train loss of each step run, first_step onwards
    double val_loss = NAN;      // the final evaluation
    double unigram_entropy = NAN;
    int skipped_steps = 0;      // --on-nan skip
    bool interrupted = false;   // stopped by SIGINT / SIGTERM after writing a checkpoint
};

// What is not finite after a forward and backward, for the NaN/inf report: "loss is nan (first non-finite
// activation: layers.0.q)", "parameter NAME is inf" (the first non-finite parameter tensor, when one is),
// "gradient of NAME is nan" (the first parameter tensor, in layout order, whose gradient is not finite),
// joined by "; ". Empty when everything is finite.
std::string describe_non_finite(Model& model, double loss);

// Runs the training described by opts (opts.resume: continue from that checkpoint). Log lines go to log;
// the progress bar to stderr when log is stdout, else to log. Throws Error on bad input and on a
// non-finite loss with --on-nan stop.
TrainResult train(const TrainOptions& opts, FILE* log = stdout);

}  // namespace llmq
