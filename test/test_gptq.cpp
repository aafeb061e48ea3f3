// Tests of quant/cholesky.h and quant/gptq.h: Cholesky against a hand-checked 3x3 and reconstruction;
// the Hessian accumulator against 2/n X^T X; GPTQ against an independent double-precision OBQ-style
// reference (full inverse-Hessian downdates, no Cholesky, no lazy blocks), GPTQ beating round-to-nearest on
// correlated heavy-tailed calibration inputs at INT4/3/2 (and NF4), equal to RTN to the bit when H is
// diagonal (also with act-order, whose permutation must then be undone exactly), lazy-block invariance,
// dead columns, and bad input.
#include <gtest/gtest.h>

#include <cstdio>

#include "../quant/cholesky.h"
#include "../quant/fourbit.h"
#include "../quant/gptq.h"
#include "../quant/intq.h"
#include "quant_test_util.h"

using namespace llmq;
using llmq_test::calibration_inputs;
using llmq_test::dequantized;
using llmq_test::expect_error;
using llmq_test::hessian_of;

namespace {

constexpr int64_t kOut = 128, kIn = 256, kSamples = 1024;

// ||X (Q - W)^T||_F: the error of the layer's outputs on the calibration inputs, in double
double calibrated_error(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& q,
                        int64_t out, int64_t in) {
    double total = 0;
    for (int64_t s = 0; s < (int64_t)x.size() / in; s++)
        for (int64_t r = 0; r < out; r++) {
            double y = 0;
            for (int64_t c = 0; c < in; c++) y += (double)x[s * in + c] * ((double)q[r * in + c] - w[r * in + c]);
            total += y * y;
        }
    return std::sqrt(total);
}

std::vector<uint8_t> codes_of(const QuantizedTensor& q) {
    std::vector<uint8_t> c(q.numel());
    unpack_codes(q.codes.data(), c.size(), code_bits(q.spec.format), c.data());
    return c;
}

void expect_same_tensor(const QuantizedTensor& a, const QuantizedTensor& b) {
    EXPECT_EQ(a.codes, b.codes);
    EXPECT_EQ(a.scales, b.scales);
    EXPECT_EQ(a.zeros, b.zeros);
    EXPECT_EQ(a.absmax, b.absmax);
}

// Independent reference: OBQ's greedy column order 0..in-1 with the full inverse Hessian downdated after
// every column (F^{-1} -= F^{-1}[:, i] F^{-1}[i, :] / F^{-1}[i][i]), everything in double, group grids fitted
// on the fully updated weights when a group starts. Mathematically GPTQ without act-order.
std::vector<uint8_t> reference_obq_codes(const std::vector<float>& w0, const std::vector<double>& h, int64_t out,
                                         int64_t in, const QuantSpec& spec, double percdamp) {
    std::vector<double> a(h);
    double mean = 0;
    for (int64_t c = 0; c < in; c++) mean += a[c * in + c] / in;
    for (int64_t c = 0; c < in; c++) a[c * in + c] += percdamp * mean;
    std::vector<double> l = cholesky_lower(a.data(), in, "test"), hinv = cholesky_inverse(l.data(), in);
    std::vector<double> w(w0.begin(), w0.end());
    std::vector<uint8_t> codes(out * in);
    std::vector<IntGrid> grids(out);
    const int bits = code_bits(spec.format);
    for (int64_t i = 0; i < in; i++) {
        for (int64_t r = 0; r < out; r++) {
            double* wr = &w[r * in];
            if (i % spec.block == 0) {
                std::vector<float> g(wr + i, wr + i + spec.block);
                grids[r] = int_grid(g.data(), spec.block, bits, spec.symmetric);
            }
            uint8_t code = int_code((float)wr[i], grids[r], bits);
            codes[r * in + i] = code;
            double e = (wr[i] - int_dequant(code, grids[r])) / hinv[i * in + i];
            for (int64_t j = i + 1; j < in; j++) wr[j] -= e * hinv[i * in + j];
        }
        std::vector<double> col(in);
        for (int64_t j = 0; j < in; j++) col[j] = hinv[j * in + i];
        for (int64_t j = 0; j < in; j++)
            for (int64_t k = 0; k < in; k++) hinv[j * in + k] -= col[j] * col[k] / col[i];
    }
    return codes;
}

}  // namespace

TEST(Cholesky, HandChecked3x3) {
    const double a[9] = {4, 12, -16, 12, 37, -43, -16, -43, 98};
    const double l_expected[9] = {2, 0, 0, 6, 1, 0, -8, 5, 3};
    std::vector<double> l = cholesky_lower(a, 3, "3x3");
    for (int i = 0; i < 9; i++) EXPECT_NEAR(l[i], l_expected[i], 1e-14) << i;
    // inverse by hand: 1/36 [[1777, -488, 76], [-488, 136, -20], [76, -20, 4]]
    const double inv_expected[9] = {1777, -488, 76, -488, 136, -20, 76, -20, 4};
    std::vector<double> inv = cholesky_inverse(l.data(), 3);
    for (int i = 0; i < 9; i++) EXPECT_NEAR(inv[i], inv_expected[i] / 36, 1e-12) << i;
    std::vector<double> u = cholesky_upper(a, 3, "3x3");
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) EXPECT_NEAR(u[i * 3 + j], l_expected[j * 3 + i], 1e-14);
}

TEST(Cholesky, ReconstructsRandomSpd) {
    Rng rng(11);
    const int64_t n = 70;
    std::vector<double> b(n * n), a(n * n, 0.0);
    for (double& v : b) v = rng.normal();
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            for (int64_t k = 0; k < n; k++) a[i * n + j] += b[i * n + k] * b[j * n + k];
    for (int64_t i = 0; i < n; i++) a[i * n + i] += 0.5;  // well enough conditioned for 1e-10 checks
    std::vector<double> l = cholesky_lower(a.data(), n, "spd"), inv = cholesky_inverse(l.data(), n);
    std::vector<double> u = cholesky_upper(inv.data(), n, "inverse");
    double scale = 0;
    for (double v : a) scale = std::max(scale, std::fabs(v));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            if (j > i) {
                EXPECT_EQ(l[i * n + j], 0.0);
            } else if (j < i) {
                EXPECT_EQ(u[i * n + j], 0.0);
            }
            double llt = 0, ainv = 0, utu = 0;
            for (int64_t k = 0; k < n; k++) {
                llt += l[i * n + k] * l[j * n + k];
                ainv += a[i * n + k] * inv[k * n + j];
                utu += u[k * n + i] * u[k * n + j];
            }
            EXPECT_NEAR(llt, a[i * n + j], 1e-12 * scale);
            EXPECT_NEAR(ainv, i == j ? 1.0 : 0.0, 1e-9);
            EXPECT_NEAR(utu, inv[i * n + j], 1e-12 * std::fabs(inv[i * n + i]) + 1e-12);
        }
}

TEST(Cholesky, RejectsIndefiniteAndNonFinite) {
    const double indefinite[4] = {1, 2, 2, 1};
    expect_error([&] { cholesky_lower(indefinite, 2, "my matrix"); }, {"my matrix", "not positive definite", "pivot 1"});
    const double nan_offdiag[4] = {1, 0, NAN, 1};
    expect_error([&] { cholesky_lower(nan_offdiag, 2, "m"); }, {"non-finite"});
}

TEST(Gptq, HessianAccumulatorIsTwoOverNXtX) {
    Rng rng(3);
    const int64_t in = 24, n = 50;
    std::vector<float> x = llmq_test::normal_vector(rng, n * in);
    HessianAccumulator acc(in);
    acc.add(x.data(), 20);  // two batches must equal one
    acc.add(x.data() + 20 * in, n - 20);
    EXPECT_EQ(acc.samples, n);
    std::vector<double> h = acc.hessian();
    for (int64_t a = 0; a < in; a++)
        for (int64_t b = 0; b < in; b++) {
            double s = 0;
            for (int64_t k = 0; k < n; k++) s += (double)x[k * in + a] * x[k * in + b];
            EXPECT_NEAR(h[a * in + b], 2.0 * s / n, 1e-12 * (1 + std::fabs(s)));
        }
}

TEST(Gptq, MatchesDoublePrecisionObqReference) {
    Rng rng(5);
    std::vector<float> x = calibration_inputs(rng, kSamples, kIn), w = llmq_test::normal_vector(rng, kOut * kIn);
    std::vector<double> h = hessian_of(x, kIn);
    for (bool symmetric : {true, false})
        for (int group : {64, 128}) {
            QuantSpec spec{QuantFormat::INT4, group, symmetric};
            GptqOptions opt;
            opt.blocksize = group;  // the reference fits groups on fully updated weights
            std::vector<uint8_t> got = codes_of(gptq_quantize_cpu(w.data(), kOut, kIn, h, spec, opt));
            std::vector<uint8_t> ref = reference_obq_codes(w, h, kOut, kIn, spec, opt.percdamp);
            int64_t differ = 0;
            for (size_t i = 0; i < got.size(); i++) differ += got[i] != ref[i];
            // fp32 vs double may flip a code that sits on a rounding boundary (and its row's later codes)
            EXPECT_LE(differ, (int64_t)got.size() / 200) << "symmetric " << symmetric << " group " << group;
        }
}

TEST(Gptq, BeatsRoundToNearestOnCorrelatedInputs) {
    Rng rng(7);
    std::vector<float> x = calibration_inputs(rng, kSamples, kIn), w = llmq_test::normal_vector(rng, kOut * kIn);
    std::vector<double> h = hessian_of(x, kIn);
    for (QuantFormat f : {QuantFormat::INT4, QuantFormat::INT3, QuantFormat::INT2, QuantFormat::NF4})
        for (bool act_order : {false, true}) {
            QuantSpec spec{f, 64, f != QuantFormat::INT2};  // INT2 asymmetric, as it is used
            GptqOptions opt;
            opt.act_order = act_order;
            GptqStats stats;
            QuantizedTensor g = gptq_quantize_cpu(w.data(), kOut, kIn, h, spec, opt, &stats);
            double e_gptq = calibrated_error(x, w, dequantized(g), kOut, kIn);
            double e_rtn = calibrated_error(x, w, dequantized(quantize_cpu(w.data(), kOut, kIn, spec)), kOut, kIn);
            EXPECT_LT(e_gptq, 0.9 * e_rtn) << format_name(f) << " act_order " << act_order;
            printf("  gptq %s group 64 %s act_order %d: calibrated error gptq/rtn = %.3f (%.4f s)\n", format_name(f),
                   spec.symmetric ? "sym" : "asym", act_order, e_gptq / e_rtn, stats.seconds);
        }
}

TEST(Gptq, DiagonalHessianEqualsRoundToNearestExactly) {
    // With H diagonal, U is diagonal: every error update is a multiple of an exact 0, so GPTQ must return
    // RTN's tensor to the bit. A distinct random diagonal makes act-order a real permutation, which must be
    // undone exactly (static groups = RTN's groups).
    Rng rng(9);
    std::vector<float> w = llmq_test::normal_vector(rng, kOut * kIn);
    std::vector<double> identity(kIn * kIn, 0.0), diagonal(kIn * kIn, 0.0);
    for (int64_t c = 0; c < kIn; c++) identity[c * kIn + c] = 1.0, diagonal[c * kIn + c] = 0.1 + rng.uniform();
    for (QuantFormat f : {QuantFormat::INT4, QuantFormat::INT3, QuantFormat::INT2, QuantFormat::NF4, QuantFormat::FP4})
        for (bool symmetric : {true, false}) {
            if (!is_int_format(f) && !symmetric) continue;
            QuantSpec spec{f, 64, symmetric};
            QuantizedTensor rtn = quantize_cpu(w.data(), kOut, kIn, spec);
            expect_same_tensor(gptq_quantize_cpu(w.data(), kOut, kIn, identity, spec), rtn);
            GptqOptions act;
            act.act_order = true;
            expect_same_tensor(gptq_quantize_cpu(w.data(), kOut, kIn, diagonal, spec, act), rtn);
            GptqOptions fixed_groups;
            fixed_groups.static_groups = true;
            expect_same_tensor(gptq_quantize_cpu(w.data(), kOut, kIn, diagonal, spec, fixed_groups), rtn);
        }
}

TEST(Gptq, LazyBlockSizeDoesNotChangeTheResult) {
    // Lazy batching only regroups the same updates: blocks of 1 (immediate), 32, 64 and 128 agree up to fp32
    // summation order when every group starts on a block boundary (group 128). (Blocks of 256 would not: the
    // group at column 128 would start mid-block and be fitted on the stale copy, as in the reference.)
    Rng rng(13);
    std::vector<float> x = calibration_inputs(rng, 512, kIn), w = llmq_test::normal_vector(rng, kOut * kIn);
    std::vector<double> h = hessian_of(x, kIn);
    QuantSpec spec{QuantFormat::INT3, 128, false};
    GptqOptions opt;
    opt.blocksize = 1;
    std::vector<uint8_t> immediate = codes_of(gptq_quantize_cpu(w.data(), kOut, kIn, h, spec, opt));
    for (int blocksize : {32, 64, 128}) {
        opt.blocksize = blocksize;
        std::vector<uint8_t> lazy = codes_of(gptq_quantize_cpu(w.data(), kOut, kIn, h, spec, opt));
        int64_t differ = 0;
        for (size_t i = 0; i < lazy.size(); i++) differ += lazy[i] != immediate[i];
        EXPECT_LE(differ, (int64_t)lazy.size() / 200) << "blocksize " << blocksize;
    }
}

TEST(Gptq, ActOrderKeepsColumnsInPlace) {
    // On correlated inputs every column moves, so compare dequantized columns with W's: each must be closer
    // to its own column than to the next one (a permutation left in place would break this everywhere).
    // The group grids are static: exactly RTN's, while the codes differ.
    Rng rng(17);
    std::vector<float> x = calibration_inputs(rng, 512, kIn), w = llmq_test::normal_vector(rng, kOut * kIn);
    GptqOptions opt;
    opt.act_order = true;
    const QuantSpec spec{QuantFormat::INT4, 64, false};
    QuantizedTensor gq = gptq_quantize_cpu(w.data(), kOut, kIn, hessian_of(x, kIn), spec, opt);
    // act-order uses static groups: every grid is fitted on the original W, so it is RTN's grid exactly
    QuantizedTensor rtn = quantize_cpu(w.data(), kOut, kIn, spec);
    EXPECT_EQ(gq.scales, rtn.scales);
    EXPECT_EQ(gq.zeros, rtn.zeros);
    EXPECT_NE(gq.codes, rtn.codes);
    std::vector<float> q = dequantized(gq);
    for (int64_t c = 0; c < kIn; c++) {
        double own = 0, next = 0;
        for (int64_t r = 0; r < kOut; r++) {
            own += std::pow(q[r * kIn + c] - w[r * kIn + c], 2);
            next += std::pow(q[r * kIn + c] - w[r * kIn + (c + 1) % kIn], 2);
        }
        EXPECT_LT(own, 0.25 * next) << "column " << c;
    }
}

TEST(Gptq, DeadColumnsQuantizeToZero) {
    Rng rng(19);
    std::vector<float> x = calibration_inputs(rng, 512, kIn), w = llmq_test::normal_vector(rng, kOut * kIn);
    const int64_t dead_cols[3] = {0, 64, 131};
    for (int64_t c : dead_cols)
        for (int64_t s = 0; s < 512; s++) x[s * kIn + c] = 0.0f;
    std::vector<double> h = hessian_of(x, kIn);
    std::vector<float> w_other = w;  // what a dead column holds must not matter
    for (int64_t c : dead_cols)
        for (int64_t r = 0; r < kOut; r++) w_other[r * kIn + c] = 50.0f * rng.normal();
    for (bool act_order : {false, true}) {
        GptqOptions opt;
        opt.act_order = act_order;
        QuantSpec spec{QuantFormat::INT4, 64, false};
        QuantizedTensor a = gptq_quantize_cpu(w.data(), kOut, kIn, h, spec, opt);
        expect_same_tensor(gptq_quantize_cpu(w_other.data(), kOut, kIn, h, spec, opt), a);
        std::vector<float> q = dequantized(a);
        for (int64_t c : dead_cols)
            for (int64_t r = 0; r < kOut; r++) EXPECT_EQ(q[r * kIn + c], 0.0f) << "row " << r << " col " << c;
        double e_rtn = calibrated_error(x, w, dequantized(quantize_cpu(w.data(), kOut, kIn, spec)), kOut, kIn);
        EXPECT_LT(calibrated_error(x, w, q, kOut, kIn), e_rtn);
    }
}

TEST(Gptq, RejectsBadInput) {
    Rng rng(23);
    const int64_t out = 8, in = 64;
    std::vector<float> w = llmq_test::normal_vector(rng, out * in);
    std::vector<double> h(in * in, 0.0);
    for (int64_t c = 0; c < in; c++) h[c * in + c] = 1.0 + c;
    QuantSpec spec{QuantFormat::INT4, 32, true};
    std::vector<double> small(32 * 32, 0.0);
    expect_error([&] { gptq_quantize_cpu(w.data(), out, in, small, spec); }, {"Hessian has 1024 entries", "(64, 64)"});
    std::vector<double> bad = h;
    bad[3 * in + 5] = NAN;
    expect_error([&] { gptq_quantize_cpu(w.data(), out, in, bad, spec); }, {"Hessian", "non-finite", "(3, 5)"});
    bad = h;
    bad[7 * in + 7] = INFINITY;
    expect_error([&] { gptq_quantize_cpu(w.data(), out, in, bad, spec); }, {"non-finite", "(7, 7)"});
    bad = h;
    bad[10 * in + 10] = -100.0;
    expect_error([&] { gptq_quantize_cpu(w.data(), out, in, bad, spec); }, {"not positive definite"});
    std::vector<float> w_bad = w;
    w_bad[9] = NAN;
    expect_error([&] { gptq_quantize_cpu(w_bad.data(), out, in, h, spec); }, {"weight", "non-finite"});
    expect_error([&] { gptq_quantize_cpu(w.data(), out, in, h, QuantSpec{QuantFormat::NF4, 64, true, true}); },
                 {"double quantization"});
    expect_error([&] { gptq_quantize_cpu(w.data(), out, in, h, QuantSpec{QuantFormat::INT4, 48, true}); },
                 {"block size 48"});
    HessianAccumulator acc(in);
    expect_error([&] { acc.hessian(); }, {"no calibration rows"});
    std::vector<float> x_bad = llmq_test::normal_vector(rng, 2 * in);
    x_bad[in + 3] = INFINITY;
    expect_error([&] { acc.add(x_bad.data(), 2); }, {"row 1", "non-finite", "column 3"});
}
