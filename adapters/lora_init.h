// lora_init: how LoRA adapters start on a QUANTIZED base, per layer W (out,in) fp32, rank r, adapter scale s.
// The adapter computes y = x (Q + s B A)^T, A (r,in), B (out,r) (adapters/lora.h), so an initialisation picks the
// base codes Q and the factors with s B A meant to undo (part of) the quantization error W - deq Q:
//
//   plain  Q = quant(W); A as LoraAdapters draws it, B = 0 (QLoRA): the model starts at the quantized one.
//   LoftQ  (Li et al. 2023) alternate T times: Q = quant(W - s B A); s B A = [W - deq Q]_r (truncated SVD),
//          minimising the WEIGHT error ||W - deq Q - s B A||_F. LoftQ's code returns the last iterate; we keep
//          the iterate with the smallest weight error (the first one is already <= plain's, so the result is too).
//          T defaults to 5, what the LoftQ authors' released models use (loftq_iter 5 in their adapter configs;
//          peft's LoftQConfig defaults to 1).
//   CLoQ   (Deng et al. 2025) Q = quant(W); s B A = the rank-r M minimising the calibrated OUTPUT error
//          ||X (deq Q + M - W)^T||_F on calibration inputs X (n,in), in closed form (see cloq_factors).
//
// quant() is round-to-nearest or GPTQ with the layer's H (LayerQuantizer). The factors are split with the square
// root of the singular values on each side, and divided by sqrt(s) each, so that s B A is the wanted product
// (peft's LoftQ writes B A without the 1/s and is only right for alpha = r).
//
// init_adapters_for_quantized_base does this for every adapted Linear of a model: attaches Q to the Linear's
// `quant` slot (through quantize_model_linears) and writes A, B into the LoraAdapters buffer, and reports each
// layer's errors so the trainer can log them. Every factorisation runs in double (adapters/svd.h).
#pragma once

#include <string>
#include <vector>

#include "../quant/calibration.h"
#include "../quant/formats.h"
#include "../quant/gptq.h"
#include "lora.h"

namespace llmq {

enum class LoraInit { Plain, Loftq, Cloq };
// "plain", "loftq", "cloq"; Error naming `what` otherwise.
LoraInit parse_lora_init(const std::string& name, const char* what);

// How one layer is quantized: GPTQ with `hessian` (in,in) when given, else round-to-nearest.
struct LayerQuantizer {
    QuantSpec spec;
    const std::vector<double>* hessian = nullptr;
    GptqOptions gptq;
    QuantizedTensor operator()(const float* w, int64_t out, int64_t in) const {
        return quantize_rtn_or_gptq(w, out, in, spec, hessian, gptq);
    }
};

// One layer's start: the base codes and the factors. A and B empty (plain): keep the drawn A, B = 0.
struct LayerInit {
    QuantizedTensor q;
    std::vector<float> A;  // (r,in)
    std::vector<float> B;  // (out,r)
};

// s B A = [E]_r, the rank-r truncated SVD of e (out,in) (Eckart-Young: the best in ||.||_F). A (r,in), B (out,r).
// Errors (naming `what`): rank outside [1, min(out,in)].
void truncated_svd_factors(const double* e, int out, int in, int rank, float scale, float* A, float* B,
                           const char* what);
// s B A = argmin over rank-r M of ||X (M - E)^T||_F = tr((M - E) H (M - E)^T), H = X^T X (in,in) symmetric (the
// full matrix, as HessianAccumulator::hessian(); its scale does not matter), damped as GPTQ: H + percdamp *
// mean(diag H) I. Errors (naming `what`): rank outside [1, min(out,in)], H not (in,in), H not positive definite
// after damping.
void cloq_factors(const double* e, int out, int in, int rank, float scale, const std::vector<double>& h,
                  double percdamp, float* A, float* B, const char* what);

LayerInit plain_init(const float* w, int out, int in, const LayerQuantizer& quant);
LayerInit loftq_init(const float* w, int out, int in, int rank, float scale, const LayerQuantizer& quant,
                     int iters, const char* what);
LayerInit cloq_init(const float* w, int out, int in, int rank, float scale, const LayerQuantizer& quant,
                    const std::vector<double>& h, double percdamp, const char* what);

// The errors of an initialisation against W (out,in): squared norms, in double.
struct InitErrors {
    double weight_sq = 0, weight_err_sq = 0;  // ||W||_F^2, ||W - deq Q - s B A||_F^2
    double out_sq = -1, out_err_sq = -1;      // ||X W^T||_F^2, ||X (deq Q + s B A - W)^T||_F^2 (-1: no acc given)
    double weight_rel() const;                // ||W - deq Q - s B A||_F / ||W||_F
    double calibrated_rel() const;            // ||X (deq Q + s B A - W)^T||_F / ||X W^T||_F, -1 without acc
};
// The adapted weight deq Q + s B A (out,in), as the Linear computes it (fp32).
std::vector<float> adapted_weight(const LayerInit& init, int rank, float scale);
InitErrors init_errors(const float* w, const LayerInit& init, int rank, float scale, const HessianAccumulator* acc);

struct LoraInitOptions {
    LoraInit init = LoraInit::Plain;
    bool gptq = false;       // Q by GPTQ with each layer's H (needs hessians), else round-to-nearest
    int loftq_iters = 5;
    double percdamp = 0.01;  // GPTQ's and CLoQ's damping of H
    bool compare = false;    // also compute the other two initialisations' calibrated errors (costs their work)
};

// Per adapted layer: the chosen init's weight error and the calibrated relative errors (-1: not computed). With
// hessians, plain's and the chosen init's are computed; with compare, all three.
struct LoraInitReport {
    std::string name;  // HF module name
    double weight_rel = 0;
    double plain = -1, loftq = -1, cloq = -1;
};

// Quantizes every attention and MLP base of model with spec (quantize_model_linears); each Linear that lora adapts
// gets options.init's Q and factors (written into lora's buffer), the others the plain Q. hessians: the
// calibration statistics of every adapted module (calibrate_hessians on the fp32 model), needed by CLoQ and GPTQ,
// optional for the rest (then no calibrated errors). Errors: a base already quantized, a missing Hessian.
std::vector<LoraInitReport> init_adapters_for_quantized_base(Model& model, LoraAdapters& lora, const QuantSpec& spec,
                                                             const LoraInitOptions& options,
                                                             const CalibrationHessians* hessians);

}  // namespace llmq
