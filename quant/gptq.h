// gptq: GPTQ (Frantar et al. 2022) on the CPU: quantize a weight W (out, in) column by column, pushing
// each column's rounding error onto the not-yet-quantized columns through the inverse Hessian of the
// layer's reconstruction loss ||X W^T - X Q^T||^2, so Q reproduces the layer's OUTPUTS on calibration
// inputs X (rows of activations) much better than round-to-nearest.
//
// Hessian: H = 2/n sum_s x_s x_s^T over the n calibration rows x_s (in); HessianAccumulator sums x x^T in
// double and counts rows; hessian() returns 2/n * sum, exactly what the reference's running update
// (H *= n_old / n_new; H += (sqrt(2 / n_new) x)(sqrt(2 / n_new) x)^T) computes. H's overall scale does not
// change the codes: dampening is relative (percdamp * mean diag H) and U's scale cancels in the updates.
//
// The algorithm, as the reference gptq.py fasterquant (and AutoGPTQ) do it:
//   1. dead columns: diag H = 0 (an input that is always 0) -> H[i][i] = 1 and W[:, i] = 0;
//   2. static groups (see below) are fitted on this W, in natural column order;
//   3. act-order: columns sorted by decreasing diag H (stable: ties keep their order), W and H permuted;
//   4. dampening: H += percdamp * mean(diag H) * I;
//   5. U = upper Cholesky factor of H^{-1} (cholesky.h, double), held as fp32 like the reference;
//   6. columns in lazy blocks of `blocksize` (128): inside a block, quantizing column i updates the block's
//      later columns at once, w[j] -= (w[i] - q[i]) / U[i][i] * U[i][j]; the columns after the block get
//      the block's errors in one product at its end (W[:, i2:] -= Err1 Hinv[i1:i2, i2:]).
//   7. when a group starts (column index a multiple of the group size `spec.block`), its grid (INT
//      scale/zero, intq.h; or NF4/FP4 absmax, fourbit.h) is fitted on the group's weights as they are
//      then: error-updated by every earlier BLOCK. As in the reference, a group that starts in the middle
//      of a lazy block (group < 128) is fitted on the copy without the updates from its own block's
//      earlier columns (the reference reads W, not the block's working copy W1); groups of 128 or a
//      multiple of it start on block boundaries and see fully updated weights.
//   8. act-order's permutation is undone: codes land at their original columns.
// Rows are independent in GPTQ (every update is within a row), so the CPU walks one row at a time, OpenMP
// over rows, in the same per-row arithmetic as the reference's column-blocked matrix form.
//
// Groups and act-order. Our INT and NF4/FP4 formats have no g_idx: group g is columns [g*block, (g+1)*block)
// of the ORIGINAL order. So with act_order the group grids are always static (the reference's
// --static-groups): fitted on W (dead columns zeroed) before any update, one per natural group, and column
// c uses the grid of its original group. Without act_order, static_groups is optional (default off, the
// reference's default: dynamic groups fitted on the error-updated weights, step 7).
//
// Output: a QuantizedTensor in the existing formats (same packing) that dequantize_cpu reads: INT4/3/2
// symmetric or asymmetric, or NF4/FP4 with block dividing `in` (blocks of the flattened weight then lie
// inside rows, so they are GPTQ groups) and no double quantization (the error compensation uses the exact
// absmax; double quantizing it afterwards would undo part of that).
#pragma once

#include <cstdint>
#include <vector>

#include "formats.h"

namespace llmq {

struct HessianAccumulator {
    int64_t dim = 0;           // in
    int64_t samples = 0;       // calibration rows seen (n)
    std::vector<double> sum;   // (in, in) sum of x x^T over the rows seen: lower triangle (column <= row) only,
                               // the upper stays 0 (hessian() mirrors it)

    explicit HessianAccumulator(int64_t in);
    // x (rows, in) fp32 row-major: one activation vector per row (all tokens of all sequences). Throws
    // Error on a non-finite value.
    void add(const float* x, int64_t rows);
    // H (in, in) = 2/n * sum; throws Error when no rows were added.
    std::vector<double> hessian() const;
};

struct GptqOptions {
    double percdamp = 0.01;     // H += percdamp * mean(diag H) * I
    bool act_order = false;     // quantize columns by decreasing diag H (implies static groups)
    bool static_groups = false; // fit every group's grid on the (dead-column-zeroed) W before any update
    int blocksize = 128;        // lazy-batch width in columns
};

struct GptqStats {
    double loss = 0;            // the reference's sum of Losses: sum (w - q)^2 / U[i][i]^2 / 2
    double seconds = 0;         // wall time of the whole call
};

// W (rows, cols) fp32, hessian (cols, cols) double and symmetric (HessianAccumulator::hessian()); neither is
// modified (the dead-column and dampening changes are made on copies). Throws Error when the
// Hessian's size is not cols*cols, H or W holds a non-finite value, H is not positive definite after
// dampening, or the spec does not fit (check_spec; NF4/FP4: block must divide cols, no double quant).
QuantizedTensor gptq_quantize_cpu(const float* w, int64_t rows, int64_t cols, const std::vector<double>& hessian,
                                  const QuantSpec& spec, const GptqOptions& options = {},
                                  GptqStats* stats = nullptr);

// The quantizer a caller picks per layer: GPTQ with `hessian` (cols, cols) when it is given, else round-to-nearest
// (quantize_cpu). ./quantize and the adapter initialisations (adapters/lora_init.h) both form Q this way.
QuantizedTensor quantize_rtn_or_gptq(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec,
                                     const std::vector<double>* hessian, const GptqOptions& options = {});

}  // namespace llmq
