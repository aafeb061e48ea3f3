// linear: y = x W^T, the layer every memory-saving method of llmq plugs into.
//
// A Linear is a VIEW: it owns no parameters. Its pointers lead into buffers someone else carved (the model's
// parameter and gradient buffers, an adapter buffer, a quantized store), so the optimizer, the checkpoint
// writer and the HF exporter keep seeing one flat buffer with named tensors, whatever is attached here.
// Four independent choices make up a layer:
//
//   1. The base weight W (out,in), trainable or frozen. Trainable means a place for its gradient exists:
//      `dweight` (accumulated, the usual path) or an immediate-update callback (4b). Frozen means neither:
//      no gradient buffer at all (LoRA, QLoRA, LoQT keep W frozen).
//   2. Where W comes from: `weight` (fp32 in the parameter buffer), or `quant`, a QuantizedWeight filled by
//      quant/ (NF4/FP4/INT): it either runs the product fused from the packed codes, or dequantizes into a
//      scratch buffer before a plain fp32 matmul (bitsandbytes' approach). A quantized base is always frozen;
//      LoQT changes it only at merges, outside forward/backward.
//   3. A list of low-rank adapters: y += scale * (x A^T) B^T, A (r,in), B (out,r). Each factor is trainable or
//      frozen on its own (LoQT trains only B; ReLoRA/SwitchLoRA both). x A^T is recomputed in the backward
//      (N*r*in flops, small next to the base product) so adapters add no activation memory. With adapter
//      dropout (peft's lora_dropout) the adapters read drop(x) = x * m / (1 - p) instead, m_ij ~ Bernoulli(1 - p)
//      drawn from `dropout_seed` by a counter-based hash of the element index (Rng::uniform_at): nothing is
//      stored, the backward regenerates the mask; seed 0 (evaluation, sampling) means no dropout. Merging
//      (W += scale B A), re-initialisation and switching are adapter methods' business (adapters/), done
//      between steps on the same pointers.
//   4. How the base weight gradient dW = dY^T X is formed and delivered:
//      a) estimate: exact (all N rows), or SAMPLED through a RowSampler (WTA-CRS): at forward the sampler picks
//         k of the N rows of X with weights w_i so that sum_i w_i dY_i^T X_i is unbiased; only those k rows
//         are kept (k*in instead of N*in), and the backward forms the weight gradient from them. The
//         gathering and weighted product are implemented here (tested against the hand-written weighted
//         sum); the WTA-CRS selection itself (winners + residual draws) is layers/wtacrs.h. Linears that
//         read one input (q,k,v read norm1; gate,up read norm2) may share one SampledRows and one sampler:
//         the first to run its forward selects, the others reuse the rows, so the input is kept once, and
//         the sampler learns the norm of their concatenated output gradient -- the fused [q;k;v] weight's.
//      b) delivery: accumulate into `dweight`, or IMMEDIATE: the gradient of this backward is formed in a
//         layer-sized scratch and handed to `on_weight_grad(W, dW, n)` at once, which updates W in place
//         (SGD/AdamW with per-layer state). The input gradient is computed BEFORE the callback, with the
//         weights the forward used, so the update equals the usual step exactly; no full gradient buffer is
//         needed (LoQT's 13B-in-24GB trick). Global-norm clipping needs every gradient first, so the immediate
//         path does per-layer clipping or none, and needs one micro-batch per step (or its own accumulation).
//
// Every product goes through kernels/matmul.h; Real is float (runtime) or double (gradient checks). The
// quantized slot exists for float only.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

namespace llmq {

// The quantized-base slot (2). rows = out, cols = in. quant/ implements it for its formats.
struct QuantizedWeight {
    virtual ~QuantizedWeight() = default;
    virtual int rows() const = 0;
    virtual int cols() const = 0;
    // w (rows, cols) = the dequantized weight (overwrites)
    virtual void dequantize(float* w) const = 0;
    // Fused products straight from the codes; return false where the format has none (the Linear then
    // dequantizes into its scratch and uses the fp32 matmul).
    // out (N,rows) = inp (N,cols) W^T
    virtual bool fused_forward(float* out, const float* inp, int N) const { return false; }
    // dinp (N,cols) += dout (N,rows) W
    virtual bool fused_backward_input(float* dinp, const float* dout, int N) const { return false; }
};

// One low-rank adapter (3). A gradient pointer left null freezes that factor.
template <typename Real>
struct LoraAdapter {
    int rank = 0;
    Real scale = 1;      // peft: alpha / r; LoQT: alpha
    Real* A = nullptr;   // (rank, in)
    Real* B = nullptr;   // (out, rank)
    Real* dA = nullptr;  // (rank, in) accumulated gradient, or null (frozen)
    Real* dB = nullptr;  // (out, rank) accumulated gradient, or null (frozen)
};

// The sampled weight-gradient hook (4a). Called at every forward of a layer whose base is trained.
template <typename Real>
struct RowSampler {
    virtual ~RowSampler() = default;
    // inp (N,C). Fills rows (k indices in [0,N)) and weights (k) such that
    // sum_i weights[i] * dout[rows[i]]^T inp[rows[i]] is an unbiased estimate of dout^T inp for any dout.
    virtual void select(const Real* inp, int N, int C, std::vector<int>& rows, std::vector<Real>& weights) = 0;
    // Called after the backward of the Linears that read the sampled input with sq_norms (N) = ||dY_i||^2 of
    // their real output gradients (summed over them when several share the rows), before the weight gradients
    // are formed, so a sampler can learn the ||dY_i|| it has to guess at the next forward (WTA-CRS).
    virtual void observe_output_norms(const std::vector<double>& sq_norms) {}
};

// The rows of an input kept for sampled weight gradients (4a), shared by the `readers` Linears that read that
// input and share one sampler (or owned by one Linear: readers 1). A round is one forward of every reader
// (the first selects and gathers; the rest check they got the same input) and then their backwards (each
// adds its ||dY_i||^2; the last hands the sums to the sampler).
template <typename Real>
struct SampledRows {
    int readers = 1;
    std::vector<int> rows;      // (k) chosen rows of the input
    std::vector<Real> weights;  // (k)
    std::vector<Real> inp;      // (k,in) those rows
    const void* selector = nullptr;  // the Linear that selected (counts these bytes in its kept_sample_bytes)
    const Real* source = nullptr;    // the input they came from, (source_rows, source_cols)
    int source_rows = 0, source_cols = 0;
    int forwards = 0, backwards = 0;  // of this round, each < readers
    std::vector<double> dout_sq;      // (N) sum over this round's backwards of ||dY_i||^2
    size_t bytes() const { return sizeof(Real) * (weights.capacity() + inp.capacity()) + sizeof(int) * rows.capacity(); }
};

// The immediate-update callback (4b): param (n) is updated in place from grad (n), this layer's full
// gradient for the current backward. The callback may identify the tensor by the param pointer (e.g. its
// offset in the model's parameter buffer indexes the optimizer state).
template <typename Real>
using WeightUpdateFn = std::function<void(Real* param, const Real* grad, size_t n)>;

// The temporaries of one forward or backward: the dequantized base (out,in), u = x A^T and its gradient (N,r),
// drop(x) (N,in). Nothing in them lives from a forward to its backward, and a model runs its Linears one at a
// time, so all of a model's Linears share one (ModelCore gives it to them): the scratch is the largest layer's,
// not the sum over layers (a 4-bit base would otherwise hold a dequantized fp32 copy per layer). A Linear
// without one makes its own.
template <typename Real>
struct LinearScratch {
    std::vector<Real> dequant, u, du, dropped;
    size_t bytes() const {
        return sizeof(Real) * (dequant.capacity() + u.capacity() + du.capacity() + dropped.capacity());
    }
};

template <typename Real>
class Linear {
  public:
    int in = 0, out = 0;                            // C, OC
    Real* weight = nullptr;                         // (out,in) base weight; unused when quant is set
    Real* dweight = nullptr;                        // (out,in) accumulated gradient; null: not accumulated
    std::shared_ptr<const QuantizedWeight> quant;   // float only; a quantized base is frozen
    std::vector<LoraAdapter<Real>> adapters;
    std::shared_ptr<RowSampler<Real>> sampler;      // null: exact weight gradient
    std::shared_ptr<SampledRows<Real>> kept_rows;   // the sampler's rows; null: own (made on first use)
    WeightUpdateFn<Real> on_weight_grad;            // set: immediate update instead of dweight
    Real* immediate_scratch = nullptr;              // (out*in) shared scratch for the immediate path; null: own
    std::shared_ptr<LinearScratch<Real>> scratch;   // temporaries, shared with the model's other Linears
    float adapter_dropout = 0;                      // p in [0,1): dropout on the adapters' input
    uint64_t dropout_seed = 0;                      // this forward's (and its backward's) mask; 0: no dropout

    Linear() = default;
    Linear(int in_features, int out_features, Real* w, Real* dw) : in(in_features), out(out_features), weight(w), dweight(dw) {}

    // Whether the base weight receives a gradient this backward.
    bool base_trained() const { return !quant && (dweight != nullptr || (bool)on_weight_grad); }
    // Whether some weight gradient (the base's, or an adapter's A) is formed from the input X.
    bool forms_input_weight_grad() const;
    // Whether that gradient comes from the sampler's kept rows (a sampler is set and there is such a gradient).
    bool sampled() const { return sampler && forms_input_weight_grad(); }
    // Whether backward reads its full input: to form an exact weight gradient from it, or to recompute an
    // adapter's u = x A^T for dB. False means the caller need not keep the input for the backward and may pass
    // inp = nullptr there (layers/activations.h): a sampled layer keeps its k rows and its adapters' u (N*r)
    // from the forward; a layer that forms no gradient from X or u needs neither.
    bool needs_input_in_backward() const;

    // out (N,out) = inp (N,in) W^T + sum over adapters. Overwrites out. With a sampler, keeps the chosen rows.
    void forward(Real* out_, const Real* inp, int N);
    // out (N,out) = the forward's product again, for a backward that recomputes a dropped output (overwrites out):
    // the same numbers as forward gave, and nothing kept or selected (the forward's sample stays).
    void recompute(Real* out_, const Real* inp, int N);
    // dinp (N,in) += dout W (+ adapters), unless dinp is null; adapter and base weight gradients as configured.
    // inp is the forward's input (N,in), or null when !needs_input_in_backward(); the base weight must be the
    // one the forward used.
    void backward(Real* dinp, const Real* dout, const Real* inp, int N);

    // What this layer holds beyond its views and the shared scratch (kept samples, the immediate-path gradient)
    size_t scratch_bytes() const;
    // Bytes the sampled path kept at the last forward: the input rows (k*in, counted by the Linear that selected
    // them when several share them) and the adapters' u (N*r each); 0 without a sampler. Part of scratch_bytes().
    size_t kept_sample_bytes() const;

  private:
    LinearScratch<Real>& tmp();  // scratch (made on first use when none was given)
    const Real* base_weight();  // weight, or the dequantized copy in tmp().dequant
    bool dropping() const { return adapter_dropout > 0 && dropout_seed != 0 && !adapters.empty(); }
    // drop(x) (N,in) into tmp().dropped (the adapters' input; x itself when not dropping)
    const Real* adapter_input(const Real* inp, int N);
    void check() const;

    std::vector<std::vector<Real>> adapter_u_kept_;  // per adapter (N,r): kept from the forward when sampled()
    std::vector<Real> own_scratch_; // (out,in) immediate-path gradient when no shared scratch is given
    // y = x W^T + adapters; their u = x A^T into adapter_u_kept_ when keep_u (sampled), else the scratch
    void product(Real* y, const Real* inp, int N, bool keep_u);
    SampledRows<Real>& rows_kept();  // kept_rows (made on first use when none was given)
    bool counts_rows() const { return kept_rows && kept_rows->selector == this; }
};

}  // namespace llmq
