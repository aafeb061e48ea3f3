// calibration: the input statistics of a model's linear layers on calibration text, for GPTQ (quant/gptq.h) and
// CLoQ (adapters/), which both minimise a layer's OUTPUT error ||X (W - Q)^T||_F on calibration inputs X instead of
// the weight error ||W - Q||_F.
//
// Everything they need of X (n, in) is S = X^T X = sum_s x_s x_s^T (in, in): ||X D^T||_F^2 = sum_r d_r^T S d_r =
// tr(D S D^T) for any D (out, in). calibrate_hessians() runs the model's forward over calibration sequences and
// accumulates S in double (HessianAccumulator: `sum`, and `samples` = n) per distinct linear input:
//   q, k, v   share the first RMSNorm's output   norm1  (N, C)
//   o         reads the attention output           att    (N, QD)
//   gate, up  share the second RMSNorm's output  norm2  (N, C)
//   down      reads silu(gate) * up                hidden (N, F)
//   lm_head   reads the final RMSNorm's output     normf  (N, C)   (only when asked for by name)
// These are exactly the tensors the forward keeps for the backward (layers/activations.h), so no hook is needed:
// after each forward the rows are read from core().activations(). Each Linear is found by its HF module name
// (tools/hf_peft.h named_linears), so GPTQ and CLoQ address layers the same way the exporters do.
//
// Memory: one (in, in) double matrix per distinct input asked for: 3 per layer of C^2 and one F^2 (and QD^2); a 7B
// layer is ~1.2 GB. Asking for one layer's modules at a time bounds it; that is also how GPTQ runs (quantize layer
// l, attach its quantized weights, calibrate layer l + 1 on the outputs of the quantized prefix).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "../layers/model.h"
#include "gptq.h"

namespace llmq {

class Progress;

// Calibration text: n_seq sequences of token ids (the last may be shorter), tokens in all.
struct CalibrationSet {
    std::vector<std::vector<int>> sequences;
    int64_t tokens = 0;
};

// `tokens` tokens from the token shards at `data` (a directory, glob or prefix; tools/dataloader.h): windows of
// `seq` tokens of the split, in the order of a shuffle drawn from seed (GPTQ's random segments of the training
// text); the last sequence is cut so that exactly `tokens` are taken. Token ids >= vocab_size are refused (Error
// naming the shard). No window is used twice: a split with fewer windows than the sequences needed is an Error
// naming `data`, so the statistics never silently repeat text.
CalibrationSet load_calibration_set(const std::string& data, const std::string& split, int64_t tokens, int seq,
                                    uint64_t seed, int vocab_size);

// S = X^T X per linear input, by HF module name.
struct CalibrationHessians {
    int64_t tokens = 0;                           // rows each accumulator has seen (= the calibration tokens)
    std::vector<HessianAccumulator> inputs;       // one per distinct input
    std::map<std::string, size_t> input_of;       // module name -> index into inputs
    bool has(const std::string& module) const { return input_of.count(module) > 0; }
    // Error naming the module when it was not calibrated
    const HessianAccumulator& at(const std::string& module) const;
};

// The attention and MLP modules of the model (every named linear but lm_head), in named_linears' order.
std::vector<std::string> attention_mlp_modules(Model& model);

// Runs model.forward (logits only; no gradient) over every sequence and accumulates S for each module in `modules`
// (HF module names; empty: attention_mlp_modules). The Linears are used as they are: an attached quantized base or
// adapter changes the activations downstream of it, which is what sequential GPTQ wants. bar, when given, advances
// by each sequence's tokens. Errors: an unknown module name, an empty set.
CalibrationHessians calibrate_hessians(Model& model, const CalibrationSet& set,
                                       const std::vector<std::string>& modules = {}, Progress* bar = nullptr);

// tr(D S D^T) = sum_r d_r^T S d_r for D (rows, cols) = a - b (b null: D = a), S = acc.sum (cols, cols), in double:
// the squared Frobenius norm of X D^T over the calibration rows. acc.dim must equal cols.
double calibrated_sq_norm(const HessianAccumulator& acc, const float* a, const float* b, int64_t rows, int64_t cols);
// The unweighted counterpart: ||a - b||_F^2 (b null: ||a||_F^2) over n values, in double (the weight error).
double sq_distance(const float* a, const float* b, size_t n);

}  // namespace llmq
