// gptq: GPTQ quantization of a weight from its layer's calibration Hessian, CPU reference (gptq.h).
#include "gptq.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "../kernels/common.h"
#include "cholesky.h"
#include "fourbit.h"
#include "intq.h"

namespace llmq {

HessianAccumulator::HessianAccumulator(int64_t in) : dim(in) {
    LLMQ_CHECK(in > 0, "HessianAccumulator: input width %lld must be positive", (long long)in);
    sum.assign(in * in, 0.0);
}

void HessianAccumulator::add(const float* x, int64_t rows) {
    for (int64_t i = 0; i < rows * dim; i++)
        LLMQ_CHECK(std::isfinite(x[i]), "HessianAccumulator: calibration row %lld (of %lld added) has a non-finite "
                   "value at column %lld", (long long)(samples + i / dim), (long long)rows, (long long)(i % dim));
    // lower triangle only (row a, columns <= a), rows of sum independent; mirrored in hessian()
#pragma omp parallel for schedule(dynamic, 8)
    for (int64_t a = 0; a < dim; a++) {
        double* out = &sum[a * dim];
        for (int64_t s = 0; s < rows; s++) {
            const float* xs = x + s * dim;
            const double xa = xs[a];
            if (xa == 0) continue;
            for (int64_t b = 0; b <= a; b++) out[b] += xa * xs[b];
        }
    }
    samples += rows;
}

std::vector<double> HessianAccumulator::hessian() const {
    LLMQ_CHECK(samples > 0, "HessianAccumulator: no calibration rows were added");
    std::vector<double> h(dim * dim);
    const double scale = 2.0 / (double)samples;
    for (int64_t a = 0; a < dim; a++)
        for (int64_t b = 0; b <= a; b++) h[a * dim + b] = h[b * dim + a] = scale * sum[a * dim + b];
    return h;
}

namespace {

// One group's grid in either family: fitted on the group's weights, then code <-> value.
struct GroupGrid {
    QuantFormat format;
    int bits;
    bool symmetric;
    IntGrid intq{1.0f, 0.0f};
    float absmax = 0.0f, inv_absmax = 0.0f;  // NF4/FP4

    void fit(const float* x, int64_t n) {
        if (is_int_format(format)) {
            intq = int_grid(x, n, bits, symmetric);
            return;
        }
        absmax = 0.0f;  // as quantize_4bit_cpu: multiply by the reciprocal; an all-zero group codes 0.0
        for (int64_t i = 0; i < n; i++) absmax = std::fmax(absmax, std::fabs(x[i]));
        inv_absmax = absmax > 0 ? 1.0f / absmax : 0.0f;
    }
    uint8_t code(float x) const {
        return is_int_format(format) ? int_code(x, intq, bits) : quantize_4bit_value(format, x * inv_absmax);
    }
    float value(uint8_t c) const {
        return is_int_format(format) ? int_dequant(c, intq) : fourbit_code(format)[c] * absmax;
    }
    // the stored statistics of group g
    void store(QuantizedTensor& q, int64_t g) const {
        if (!is_int_format(format)) q.absmax[g] = absmax;
        else {
            q.scales[g] = intq.scale;
            if (!symmetric) q.zeros[g] = (uint8_t)intq.zero;
        }
    }
};

}  // namespace

QuantizedTensor gptq_quantize_cpu(const float* w, int64_t rows, int64_t cols, const std::vector<double>& hessian,
                                  const QuantSpec& spec, const GptqOptions& options, GptqStats* stats) {
    const double t0 = now_seconds();
    const char* name = format_name(spec.format);
    check_spec(spec, rows, cols);
    LLMQ_CHECK(is_int_format(spec.format) || (cols % spec.block == 0 && !spec.double_quant),
               "gptq %s: block %d must divide the input dimension of weight (%lld, %lld), without double "
               "quantization", name, spec.block, (long long)rows, (long long)cols);
    LLMQ_CHECK((int64_t)hessian.size() == cols * cols,
               "gptq %s: Hessian has %zu entries, weight (%lld, %lld) needs (%lld, %lld) = %lld", name,
               hessian.size(), (long long)rows, (long long)cols, (long long)cols, (long long)cols,
               (long long)(cols * cols));
    LLMQ_CHECK(options.percdamp >= 0 && std::isfinite(options.percdamp) && options.blocksize > 0,
               "gptq %s: percdamp %g must be >= 0 and blocksize %d positive", name, options.percdamp,
               options.blocksize);
    for (int64_t i = 0; i < cols * cols; i++)
        LLMQ_CHECK(std::isfinite(hessian[i]), "gptq %s: Hessian has a non-finite value at (%lld, %lld)", name,
                   (long long)(i / cols), (long long)(i % cols));
    for (int64_t i = 0; i < rows * cols; i++)
        LLMQ_CHECK(std::isfinite(w[i]), "gptq %s: weight (%lld, %lld) has a non-finite value at row %lld col %lld",
                   name, (long long)rows, (long long)cols, (long long)(i / cols), (long long)(i % cols));

    // 1. dead columns: an input that never fires has no curvature; quantize its weights as zeros
    std::vector<char> dead(cols);
    for (int64_t c = 0; c < cols; c++) dead[c] = hessian[c * cols + c] == 0;
    auto diag = [&](int64_t c) { return dead[c] ? 1.0 : hessian[c * cols + c]; };
    // 3. act-order: perm[position] = original column
    std::vector<int64_t> perm(cols);
    std::iota(perm.begin(), perm.end(), 0);
    if (options.act_order)
        std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return diag(a) > diag(b); });
    // 4. the permuted, dampened Hessian
    double mean_diag = 0;
    for (int64_t c = 0; c < cols; c++) mean_diag += diag(c);
    const double damp = options.percdamp * mean_diag / (double)cols;
    std::vector<double> h(cols * cols);
    for (int64_t i = 0; i < cols; i++)
        for (int64_t j = 0; j < cols; j++)
            h[i * cols + j] = i == j ? diag(perm[i]) + damp : hessian[perm[i] * cols + perm[j]];
    // 5. U with H^{-1} = U^T U, in fp32 as the reference keeps Hinv
    std::vector<double> l = cholesky_lower(h.data(), cols, "gptq: dampened Hessian");
    std::vector<double> hinv = cholesky_inverse(l.data(), cols);
    std::vector<double> u64 = cholesky_upper(hinv.data(), cols, "gptq: inverse Hessian");
    std::vector<float> u(u64.begin(), u64.end());

    QuantizedTensor q;
    q.spec = spec;
    q.rows = rows;
    q.cols = cols;
    const int bits = code_bits(spec.format);
    const int64_t group = spec.block, groups_per_row = cols / group;
    if (is_int_format(spec.format)) {
        q.scales.assign(rows * groups_per_row, 0.0f);
        if (!spec.symmetric) q.zeros.assign(rows * groups_per_row, 0);
    } else {
        q.absmax.assign(rows * groups_per_row, 0.0f);
    }
    const bool static_groups = options.static_groups || options.act_order;
    const int64_t block = options.blocksize;
    std::vector<uint8_t> codes(rows * cols);
    double loss = 0;

#pragma omp parallel reduction(+ : loss)
    {
        std::vector<float> wrow(cols), w1(block), err(block);
        std::vector<GroupGrid> fixed;  // static grids of the current row, natural group order
        GroupGrid grid{spec.format, bits, spec.symmetric};
#pragma omp for schedule(dynamic, 4)
        for (int64_t r = 0; r < rows; r++) {
            const float* wr = w + r * cols;
            uint8_t* coder = &codes[r * cols];
            if (static_groups) {  // 2. fitted on W with dead columns zeroed, natural order
                for (int64_t c = 0; c < cols; c++) wrow[c] = dead[c] ? 0.0f : wr[c];
                fixed.assign(groups_per_row, grid);
                for (int64_t g = 0; g < groups_per_row; g++) {
                    fixed[g].fit(&wrow[g * group], group);
                    fixed[g].store(q, r * groups_per_row + g);
                }
            }
            for (int64_t c = 0; c < cols; c++) wrow[c] = dead[perm[c]] ? 0.0f : wr[perm[c]];
            for (int64_t i1 = 0; i1 < cols; i1 += block) {  // 6. lazy blocks
                const int64_t i2 = std::min(i1 + block, cols), count = i2 - i1;
                std::copy(&wrow[i1], &wrow[i2], w1.begin());
                for (int64_t i = 0; i < count; i++) {
                    const int64_t c = i1 + i;
                    const float* uc = &u[c * cols];
                    const GroupGrid* g = &grid;
                    if (static_groups) {
                        g = &fixed[perm[c] / group];
                    } else if (c % group == 0) {  // 7. a new group: fit on wrow (updated by earlier blocks)
                        grid.fit(&wrow[c], group);
                        grid.store(q, r * groups_per_row + c / group);
                    }
                    const float x = w1[i];
                    const uint8_t code = g->code(x);
                    coder[perm[c]] = code;  // 8. back to the original column
                    const float diff = x - g->value(code), e = diff / uc[c];
                    loss += (double)diff * diff / ((double)uc[c] * uc[c]) / 2;
                    for (int64_t j = i + 1; j < count; j++) w1[j] -= e * uc[i1 + j];
                    err[i] = e;
                }
                for (int64_t i = 0; i < count; i++) {  // the block's errors onto the later columns
                    const float* ui = &u[(i1 + i) * cols];
                    const float e = err[i];
                    for (int64_t j = i2; j < cols; j++) wrow[j] -= e * ui[j];
                }
            }
        }
    }
    q.codes.assign(rows * cols * bits / 8, 0);
    pack_codes(codes.data(), rows * cols, bits, q.codes.data());
    if (stats) {
        stats->loss = loss;
        stats->seconds = now_seconds() - t0;
    }
    return q;
}

QuantizedTensor quantize_rtn_or_gptq(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec,
                                     const std::vector<double>* hessian, const GptqOptions& options) {
    return hessian ? gptq_quantize_cpu(w, rows, cols, *hessian, spec, options) : quantize_cpu(w, rows, cols, spec);
}

}  // namespace llmq
