// Tests of adapters/lora_init.h: CLoQ's closed form is the optimum of the calibrated error (no random perturbation
// of its factors and not the unweighted SVD does better; at full rank it is exact), equal to an independent
// double-precision reference that whitens with a Cholesky factor instead of the eigendecomposition and truncates
// through the eigenvectors of Y^T Y instead of an SVD; the scale s is accounted for (s B A does not depend on it);
// CLoQ <= LoftQ <= plain in calibrated error at INT2/3/4 (group 64, Q by RTN or GPTQ) and LoftQ <= plain in weight
// error; LoftQ's first step is the truncated SVD of W - Q and more steps never hurt; the
// model-level function leaves a plain-initialised model equal to the quantized one, CLoQ's equal to a model whose
// weights are deq Q + s B A, with logged errors that a recomputation reproduces; and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>

#include "../adapters/lora_init.h"
#include "../adapters/svd.h"
#include "../quant/cholesky.h"
#include "../tools/hf_peft.h"
#include "quant_test_util.h"

using namespace llmq;
using namespace llmq_test;

namespace {

// A layer with heavy-tailed correlated calibration inputs X (n,in) (an outlier channel; quant_test_util.h).
struct Layer {
    int out, in;
    std::vector<float> w, x;
    HessianAccumulator acc;
    std::vector<double> h;
    Layer(uint64_t seed, int out_, int in_, int n) : out(out_), in(in_), acc(in_) {
        Rng rng(seed);
        w = normal_vector(rng, (size_t)out * in, 0.05f);
        x = calibration_inputs(rng, n, in);
        acc.add(x.data(), n);
        h = acc.hessian();
    }
    // ||X (deq Q + s B A - W)^T||_F / ||X W^T||_F
    double calibrated(const LayerInit& li, int rank, float scale) const {
        return init_errors(w.data(), li, rank, scale, &acc).calibrated_rel();
    }
};

LayerQuantizer rtn(QuantFormat f, int block = 64) {
    LayerQuantizer q;
    q.spec.format = f;
    q.spec.block = block;
    return q;
}

// s B A (out,in) in double from fp32 factors
std::vector<double> product(const LayerInit& li, int out, int in, int rank, float scale) {
    std::vector<double> m((size_t)out * in, 0.0);
    for (int i = 0; i < out; i++)
        for (int k = 0; k < rank; k++)
            for (int c = 0; c < in; c++)
                m[(size_t)i * in + c] += (double)scale * li.B[(size_t)i * rank + k] * li.A[(size_t)k * in + c];
    return m;
}

double max_abs(const std::vector<double>& a) {
    double m = 0;
    for (double v : a) m = std::max(m, std::fabs(v));
    return m;
}

std::vector<double> residual_of(const Layer& L, const QuantizedTensor& q) {
    const std::vector<float> deq = dequantized(q);
    std::vector<double> e(deq.size());
    for (size_t i = 0; i < e.size(); i++) e[i] = (double)L.w[i] - deq[i];
    return e;
}

// The reference minimiser of ||(M - E) L||_F over rank-r M, H = L L^T (Cholesky, damped as CLoQ): Y = E L,
// [Y]_r = Y V_r V_r^T with V_r the top-r eigenvectors of Y^T Y, then M = [Y]_r L^{-1} by back substitution.
std::vector<double> whitened_reference(const std::vector<double>& e, int out, int in, int rank,
                                       const std::vector<double>& h, double percdamp) {
    std::vector<double> hd(h);
    double mean = 0;
    for (int i = 0; i < in; i++) mean += hd[(size_t)i * in + i] / in;
    for (int i = 0; i < in; i++) hd[(size_t)i * in + i] += percdamp * mean;
    const std::vector<double> l = cholesky_lower(hd.data(), in, "reference");
    std::vector<double> y((size_t)out * in, 0.0), yty((size_t)in * in, 0.0);
    for (int i = 0; i < out; i++)
        for (int k = 0; k < in; k++)
            for (int c = 0; c <= k; c++) y[(size_t)i * in + c] += e[(size_t)i * in + k] * l[(size_t)k * in + c];
    for (int a = 0; a < in; a++)
        for (int b = 0; b < in; b++)
            for (int i = 0; i < out; i++) yty[(size_t)a * in + b] += y[(size_t)i * in + a] * y[(size_t)i * in + b];
    const SymmetricEigen eig = symmetric_eigen(yty.data(), in, "reference");  // ascending: the top r are last
    std::vector<double> z((size_t)out * in, 0.0), m((size_t)out * in, 0.0);
    for (int i = 0; i < out; i++)
        for (int j = in - rank; j < in; j++) {
            double p = 0;
            for (int c = 0; c < in; c++) p += y[(size_t)i * in + c] * eig.V[(size_t)c * in + j];
            for (int c = 0; c < in; c++) z[(size_t)i * in + c] += p * eig.V[(size_t)c * in + j];
        }
    // m L = z, L lower: column c of m from the last one down
    for (int i = 0; i < out; i++)
        for (int c = in - 1; c >= 0; c--) {
            double s = z[(size_t)i * in + c];
            for (int k = c + 1; k < in; k++) s -= m[(size_t)i * in + k] * l[(size_t)k * in + c];
            m[(size_t)i * in + c] = s / l[(size_t)c * in + c];
        }
    return m;
}

}  // namespace

TEST(Cloq, ClosedFormBeatsPerturbationsAndTheUnweightedSvd) {
    const Layer L(11, 48, 64, 512);
    const int rank = 4;
    const float scale = 2.0f;
    LayerInit cloq = cloq_init(L.w.data(), L.out, L.in, rank, scale, rtn(QuantFormat::INT3), L.h, 0.0, "layer");
    const double best = L.calibrated(cloq, rank, scale);
    // the unweighted truncated SVD of the same residual (LoftQ's first step)
    LayerInit svd = cloq;
    const std::vector<double> e = residual_of(L, cloq.q);
    truncated_svd_factors(e.data(), L.out, L.in, rank, scale, svd.A.data(), svd.B.data(), "layer");
    const double unweighted = L.calibrated(svd, rank, scale);
    const double plain = L.calibrated(plain_init(L.w.data(), L.out, L.in, rtn(QuantFormat::INT3)), rank, scale);
    printf("  int3 calibrated error: plain %.4f, unweighted svd %.4f, cloq %.4f\n", plain, unweighted, best);
    EXPECT_LT(best, 0.9 * unweighted);
    // random perturbations of either factor (relative size 1e-2 and 1e-1) only increase the error
    Rng rng(5);
    for (int t = 0; t < 20; t++) {
        LayerInit p = cloq;
        const float eps = t % 2 ? 1e-2f : 1e-1f;
        std::vector<float>& f = t % 4 < 2 ? p.A : p.B;
        double rms = std::sqrt(sq_distance(f.data(), nullptr, f.size()) / f.size());
        for (float& v : f) v += eps * (float)rms * rng.normal();
        EXPECT_GE(L.calibrated(p, rank, scale), best * (1 - 1e-6)) << "perturbation " << t;
    }
    // full rank: the residual is undone exactly
    const int full = std::min(L.out, L.in);
    LayerInit exact = cloq_init(L.w.data(), L.out, L.in, full, scale, rtn(QuantFormat::INT3), L.h, 0.0, "layer");
    EXPECT_LT(L.calibrated(exact, full, scale), 1e-5);
}

TEST(Cloq, EqualsTheCholeskyWhiteningReference) {
    for (double percdamp : {0.0, 0.01}) {
        const Layer L(23, 12, 32, 96);
        const int rank = 3;
        const float scale = 0.5f;
        const LayerInit li = cloq_init(L.w.data(), L.out, L.in, rank, scale, rtn(QuantFormat::INT2, 32), L.h,
                                       percdamp, "layer");
        const std::vector<double> ref = whitened_reference(residual_of(L, li.q), L.out, L.in, rank, L.h, percdamp);
        std::vector<double> diff = product(li, L.out, L.in, rank, scale);
        for (size_t i = 0; i < diff.size(); i++) diff[i] -= ref[i];
        EXPECT_LT(max_abs(diff), 1e-5 * max_abs(ref)) << "percdamp " << percdamp;
    }
}

TEST(Cloq, ScaleIsAccountedForInBothFactorisations) {
    const Layer L(31, 24, 64, 256);
    const int rank = 5;
    for (bool use_cloq : {false, true}) {
        std::vector<double> first;
        for (float scale : {0.25f, 1.0f, 8.0f}) {
            const LayerInit li = use_cloq
                ? cloq_init(L.w.data(), L.out, L.in, rank, scale, rtn(QuantFormat::INT4), L.h, 0.01, "layer")
                : loftq_init(L.w.data(), L.out, L.in, rank, scale, rtn(QuantFormat::INT4), 1, "layer");
            const std::vector<double> m = product(li, L.out, L.in, rank, scale);
            if (first.empty()) {
                first = m;
                continue;
            }
            std::vector<double> d(m);
            for (size_t i = 0; i < d.size(); i++) d[i] -= first[i];
            EXPECT_LT(max_abs(d), 1e-5 * max_abs(first)) << (use_cloq ? "cloq" : "loftq") << " scale " << scale;
        }
    }
}

TEST(Cloq, CloqBeatsLoftqBeatsPlainAtInt2To4) {
    const Layer L(41, 96, 128, 1024);
    const int rank = 8;
    const float scale = 16.0f / rank;
    for (bool gptq : {false, true})
        for (QuantFormat f : {QuantFormat::INT2, QuantFormat::INT3, QuantFormat::INT4}) {
            LayerQuantizer q = rtn(f);
            if (gptq) q.hessian = &L.h;
            const double t0 = now_seconds();
            const LayerInit plain = plain_init(L.w.data(), L.out, L.in, q);
            const double t1 = now_seconds();
            const LayerInit loftq = loftq_init(L.w.data(), L.out, L.in, rank, scale, q, 5, "layer");
            const double t2 = now_seconds();
            const LayerInit cloq = cloq_init(L.w.data(), L.out, L.in, rank, scale, q, L.h, 0.01, "layer");
            const double t3 = now_seconds();
            const InitErrors ep = init_errors(L.w.data(), plain, rank, scale, &L.acc);
            const InitErrors el = init_errors(L.w.data(), loftq, rank, scale, &L.acc);
            const InitErrors ec = init_errors(L.w.data(), cloq, rank, scale, &L.acc);
            printf("  %s %s g64 r%d: calibrated plain %.4f loftq %.4f cloq %.4f; weight plain %.4f loftq %.4f cloq "
                   "%.4f; %.3f / %.3f / %.3f s\n", gptq ? "gptq" : "rtn", format_name(f), rank, ep.calibrated_rel(),
                   el.calibrated_rel(), ec.calibrated_rel(), ep.weight_rel(), el.weight_rel(), ec.weight_rel(),
                   t1 - t0, t2 - t1, t3 - t2);
            EXPECT_LT(ec.calibrated_rel(), el.calibrated_rel()) << format_name(f) << " gptq " << gptq;
            EXPECT_LT(el.weight_rel(), ep.weight_rel()) << format_name(f) << " gptq " << gptq;
            EXPECT_LT(el.calibrated_rel(), ep.calibrated_rel()) << format_name(f) << " gptq " << gptq;
        }
}

namespace {


CalibrationSet random_tokens(uint64_t seed, int n_seq, int T, int vocab) {
    Rng rng(seed);
    CalibrationSet set;
    for (int s = 0; s < n_seq; s++) {
        set.sequences.emplace_back(T);
        for (int& t : set.sequences.back()) t = (int)rng.below(vocab);
        set.tokens += T;
    }
    return set;
}

std::vector<float> logits_on(Model& m, const std::vector<int>& tokens) {
    m.forward(tokens.data(), nullptr, 1, (int)tokens.size());
    return std::vector<float>(m.logits(), m.logits() + tokens.size() * m.config().vocab_size);
}

QuantSpec int_spec(QuantFormat f) {
    QuantSpec s;
    s.format = f;
    s.block = 64;
    return s;
}

// The Linear's effective weight deq Q + s B A (out,in), formed by hand from its quantized base and its adapter.
std::vector<float> effective_weight(const Linear<float>& lin) {
    std::vector<float> m((size_t)lin.out * lin.in);
    lin.quant->dequantize(m.data());
    const LoraAdapter<float>& a = lin.adapters.back();
    for (int i = 0; i < lin.out; i++)
        for (int c = 0; c < lin.in; c++) {
            double s = 0;
            for (int k = 0; k < a.rank; k++) s += (double)a.B[i * a.rank + k] * a.A[k * lin.in + c];
            m[(size_t)i * lin.in + c] += (float)(a.scale * s);
        }
    return m;
}

}  // namespace

TEST(Cloq, ModelPlainInitIsTheQuantizedModel) {
    const QuantSpec spec = int_spec(QuantFormat::INT4);
    const CalibrationSet set = random_tokens(3, 4, 32, 64);
    Model m(lora_test_config(), 7), q(lora_test_config(), 7);
    LoraAdapters lora(m, LoraOptions{4, 8.0f, "all-linear"}, 1);
    const std::vector<float> a_before(lora.params(), lora.params() + lora.num_params());
    const CalibrationHessians hs = calibrate_hessians(m, set);
    LoraInitOptions o;  // plain, RTN
    const std::vector<LoraInitReport> reps = init_adapters_for_quantized_base(m, lora, spec, o, &hs);
    quantize_model_linears(q, spec);
    EXPECT_EQ(logits_on(m, set.sequences[0]), logits_on(q, set.sequences[0]));  // B = 0: bit-identical
    EXPECT_EQ(0, memcmp(a_before.data(), lora.params(), a_before.size() * 4));  // plain keeps the drawn A
    ASSERT_EQ(reps.size(), 14u);
    std::map<std::string, Linear<float>*> lin;
    for (auto& [name, l] : named_linears(m)) lin[name] = l;
    for (const LoraInitReport& r : reps) {
        const Linear<float>& L = *lin.at(r.name);
        std::vector<float> deq((size_t)L.out * L.in);
        L.quant->dequantize(deq.data());
        const HessianAccumulator& acc = hs.at(r.name);
        const double want = std::sqrt(calibrated_sq_norm(acc, deq.data(), L.weight, L.out, L.in) /
                                      calibrated_sq_norm(acc, L.weight, nullptr, L.out, L.in));
        EXPECT_NEAR(r.plain, want, 1e-9 * want) << r.name;
        EXPECT_NEAR(r.weight_rel, std::sqrt(sq_distance(deq.data(), L.weight, deq.size()) /
                                            sq_distance(L.weight, nullptr, deq.size())), 1e-9) << r.name;
        EXPECT_EQ(r.loftq, -1);
        EXPECT_EQ(r.cloq, -1);
    }
}

TEST(Cloq, ModelCloqInitComputesDeqQPlusSBAAndLogsItsErrors) {
    const QuantSpec spec = int_spec(QuantFormat::INT3);
    const CalibrationSet set = random_tokens(4, 4, 32, 64);
    for (bool gptq : {false, true}) {
        Model m(lora_test_config(), 9), ref(lora_test_config(), 9);
        LoraAdapters lora(m, LoraOptions{4, 8.0f, "all-linear"}, 1);
        const CalibrationHessians hs = calibrate_hessians(m, set);
        LoraInitOptions o;
        o.init = LoraInit::Cloq;
        o.gptq = gptq;
        o.compare = true;
        const std::vector<LoraInitReport> reps = init_adapters_for_quantized_base(m, lora, spec, o, &hs);
        std::map<std::string, Linear<float>*> lin, ref_lin;
        for (auto& [name, l] : named_linears(m)) lin[name] = l;
        for (auto& [name, l] : named_linears(ref)) ref_lin[name] = l;
        double plain = 0, loftq = 0, cloq = 0;
        for (const LoraInitReport& r : reps) {
            const Linear<float>& L = *lin.at(r.name);
            const std::vector<float> eff = effective_weight(L);
            const HessianAccumulator& acc = hs.at(r.name);
            const double want = std::sqrt(calibrated_sq_norm(acc, eff.data(), L.weight, L.out, L.in) /
                                          calibrated_sq_norm(acc, L.weight, nullptr, L.out, L.in));
            EXPECT_NEAR(r.cloq, want, 1e-5 * want) << r.name;
            EXPECT_LT(r.cloq, r.plain) << r.name;
            EXPECT_GT(r.loftq, 0) << r.name;
            plain += r.plain, loftq += r.loftq, cloq += r.cloq;
            std::copy(eff.begin(), eff.end(), ref_lin.at(r.name)->weight);  // the fp32 model deq Q + s B A
        }
        printf("  tiny-shaped model int3 g64 r4 %s: mean calibrated error plain %.4f loftq %.4f cloq %.4f\n",
               gptq ? "gptq" : "rtn", plain / reps.size(), loftq / reps.size(), cloq / reps.size());
        const std::vector<float> a = logits_on(m, set.sequences[1]), b = logits_on(ref, set.sequences[1]);
        EXPECT_LT(max_abs_diff(a, b), 1e-4f) << (gptq ? "gptq" : "rtn");
    }
}

TEST(Cloq, BadInputGivesOneClearMessage) {
    const Layer L(51, 12, 32, 64);
    expect_error([&] { cloq_init(L.w.data(), 12, 32, 13, 1.0f, rtn(QuantFormat::INT4, 32), L.h, 0.01, "mod.q"); },
                 {"mod.q", "rank 13", "min(out 12, in 32)"});
    expect_error([&] { loftq_init(L.w.data(), 12, 32, 0, 1.0f, rtn(QuantFormat::INT4, 32), 5, "mod.q"); },
                 {"mod.q", "rank 0"});
    const std::vector<double> small(16 * 16, 1.0);
    expect_error([&] { cloq_init(L.w.data(), 12, 32, 2, 1.0f, rtn(QuantFormat::INT4, 32), small, 0.01, "mod.q"); },
                 {"mod.q", "(32, 32) calibration Hessian", "256 entries"});
    std::vector<double> singular(32 * 32, 0.0);  // rank one: x = (1, 1, ..., 1), undamped
    for (double& v : singular) v = 1.0;
    expect_error([&] { cloq_init(L.w.data(), 12, 32, 2, 1.0f, rtn(QuantFormat::INT4, 32), singular, 0.0, "mod.q"); },
                 {"mod.q", "not positive definite"});
    expect_error([] { parse_lora_init("svd", "--lora-init"); }, {"--lora-init", "'svd'", "plain|loftq|cloq"});
    Model m(lora_test_config(), 7);
    LoraAdapters lora(m, LoraOptions{4, 8.0f, "attn"}, 1);
    LoraInitOptions o;
    o.init = LoraInit::Cloq;
    expect_error([&] { init_adapters_for_quantized_base(m, lora, int_spec(QuantFormat::INT4), o, nullptr); },
                 {"model.layers.0.self_attn.q_proj", "CLoQ needs the calibration statistics"});
    quantize_model_linears(m, int_spec(QuantFormat::INT4));
    o.init = LoraInit::Plain;
    expect_error([&] { init_adapters_for_quantized_base(m, lora, int_spec(QuantFormat::INT4), o, nullptr); },
                 {"already has a quantized base"});
}

TEST(Loftq, FirstStepIsTheTruncatedSvdAndMoreStepsNeverHurt) {
    const Layer L(61, 40, 64, 64);
    const int rank = 6;
    const float scale = 2.0f;
    const LayerQuantizer q = rtn(QuantFormat::INT3);
    // T = 1: Q = quant(W), s B A = [W - deq Q]_r, so the weight error is the tail of W - deq Q's spectrum
    const Svd s = svd_thin(residual_of(L, q(L.w.data(), L.out, L.in)).data(), L.out, L.in, "residual");
    double tail = 0;
    for (int64_t j = rank; j < s.k; j++) tail += s.S[j] * s.S[j];
    double prev = 0;
    for (int iters = 1; iters <= 5; iters++) {
        const LayerInit li = loftq_init(L.w.data(), L.out, L.in, rank, scale, q, iters, "layer");
        const InitErrors e = init_errors(L.w.data(), li, rank, scale, nullptr);
        if (iters == 1) {
            EXPECT_NEAR(e.weight_err_sq, tail, 1e-4 * tail);
        } else {
            EXPECT_LE(e.weight_err_sq, prev) << iters << " iterations";
        }
        EXPECT_EQ(e.calibrated_rel(), -1);  // no statistics given
        prev = e.weight_err_sq;
    }
}
