// Tests of layers/wtacrs.h: the k formula, winners' weights, unbiasedness of the selection over many draws,
// lower variance than plain column-row and uniform sampling on heavy-tailed rows, a Linear with the sampler
// (dX exact, dW unbiased), and Linears reading one input sharing its kept rows.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "../layers/linear.h"
#include "../layers/wtacrs.h"

using namespace llmq;

namespace {
// rows scaled by a log-normal factor: the heavy-tailed norms of real activations
template <typename Real>
std::vector<Real> heavy_rows(Rng& rng, int N, int C) {
    std::vector<Real> v((size_t)N * C);
    for (int i = 0; i < N; i++) {
        double s = std::exp(1.5 * rng.normal());
        for (int c = 0; c < C; c++) v[(size_t)i * C + c] = (Real)(s * rng.normal());
    }
    return v;
}
template <typename Real>
std::vector<double> exact_dw(const std::vector<Real>& x, const std::vector<Real>& dy, int N, int C, int OC) {
    std::vector<double> w((size_t)OC * C, 0);
    for (int i = 0; i < N; i++)
        for (int o = 0; o < OC; o++)
            for (int c = 0; c < C; c++) w[(size_t)o * C + c] += (double)dy[(size_t)i * OC + o] * x[(size_t)i * C + c];
    return w;
}
template <typename Real>
void add_estimate(std::vector<double>& acc, const std::vector<int>& rows, const std::vector<Real>& wts,
                  const std::vector<Real>& x, const std::vector<Real>& dy, int C, int OC) {
    for (size_t s = 0; s < rows.size(); s++)
        for (int o = 0; o < OC; o++)
            for (int c = 0; c < C; c++)
                acc[(size_t)o * C + c] += (double)wts[s] * dy[(size_t)rows[s] * OC + o] * x[(size_t)rows[s] * C + c];
}
double frob2(const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); i++) s += (a[i] - b[i]) * (a[i] - b[i]);
    return s;
}
}  // namespace

TEST(WtaCrs, KFormula) {
    EXPECT_EQ(wtacrs_k(100, 0.3), 30);
    EXPECT_EQ(wtacrs_k(20, 0.3), 10);  // the minimum of 10
    EXPECT_EQ(wtacrs_k(7, 0.3), 7);    // capped at N
    EXPECT_EQ(wtacrs_k(1000, 0.1), 100);
    EXPECT_THROW(wtacrs_k(10, 1.5), Error);
}

template <typename Real>
void check_weights_and_unbiased() {
    Rng rng(5);
    const int N = 40, k = 12;
    std::vector<double> p(N);
    for (double& v : p) v = std::exp(2.0 * rng.normal());
    std::vector<int> rows;
    std::vector<Real> w;
    std::vector<double> sum(N, 0), sq(N, 0), once(N);
    const int draws = 20000;
    int winners = 0;
    for (int d = 0; d < draws; d++) {
        winners = wtacrs_select<Real>(p, k, rng, rows, w);
        ASSERT_EQ((int)rows.size(), k);
        for (int c = 0; c < winners; c++) EXPECT_EQ(w[c], Real(1));
        std::fill(once.begin(), once.end(), 0.0);
        for (size_t s = 0; s < rows.size(); s++) once[rows[s]] += w[s];
        for (int i = 0; i < N; i++) sum[i] += once[i], sq[i] += once[i] * once[i];
    }
    EXPECT_GT(winners, 0);  // heavy-tailed p: some winners
    // E[sum of weights on row i] = 1 for every row, within 5 standard errors (rare rows carry large weights)
    for (int i = 0; i < N; i++) {
        double m = sum[i] / draws, se = std::sqrt(std::max(sq[i] / draws - m * m, 0.0) / draws);
        EXPECT_NEAR(m, 1.0, 5 * se + 1e-6) << "row " << i;
    }
    // k >= N: every row once, weight 1
    wtacrs_select<Real>(p, N, rng, rows, w);
    EXPECT_EQ((int)rows.size(), N);
    for (Real x : w) EXPECT_EQ(x, Real(1));
}
TEST(WtaCrs, WeightsUnbiasedFloat) { check_weights_and_unbiased<float>(); }
TEST(WtaCrs, WeightsUnbiasedDouble) { check_weights_and_unbiased<double>(); }

template <typename Real>
void check_estimator() {
    Rng rng(17);
    const int N = 64, C = 6, OC = 5;
    std::vector<Real> x = heavy_rows<Real>(rng, N, C), dy = heavy_rows<Real>(rng, N, OC);
    std::vector<double> exact = exact_dw(x, dy, N, C, OC);
    std::vector<double> p(N), pu(N, 1.0);
    for (int i = 0; i < N; i++) {
        double a = 0, b = 0;
        for (int c = 0; c < C; c++) a += (double)x[i * C + c] * x[i * C + c];
        for (int o = 0; o < OC; o++) b += (double)dy[i * OC + o] * dy[i * OC + o];
        p[i] = std::sqrt(a * b);
    }
    const int k = wtacrs_k(N, 0.3), draws = 20000;
    std::vector<double> mean(exact.size(), 0), half(exact.size(), 0);
    double var_wta = 0, var_crs = 0, var_uni = 0, total = 0;
    for (double v : p) total += v;
    std::vector<int> rows;
    std::vector<Real> w;
    for (int d = 0; d < draws; d++) {
        std::vector<double> est(exact.size(), 0);
        wtacrs_select<Real>(p, k, rng, rows, w);
        add_estimate(est, rows, w, x, dy, C, OC);
        var_wta += frob2(est, exact);
        for (size_t j = 0; j < est.size(); j++) mean[j] += est[j], half[j] += d < draws / 2 ? est[j] : 0;
        // plain CRS: k draws with replacement, p ~ ||x|| ||dy||, weights 1/(k p)
        std::fill(est.begin(), est.end(), 0);
        rows.clear(), w.clear();
        for (int s = 0; s < k; s++) {
            double u = (rng.next_u64() >> 11) * (1.0 / 9007199254740992.0) * total, acc = 0;
            int i = 0;
            while (i < N - 1 && (acc += p[i]) <= u) i++;
            rows.push_back(i), w.push_back((Real)(total / (k * p[i])));
        }
        add_estimate(est, rows, w, x, dy, C, OC);
        var_crs += frob2(est, exact);
        // uniform: k draws with replacement, weights N/k
        std::fill(est.begin(), est.end(), 0);
        rows.clear(), w.clear();
        for (int s = 0; s < k; s++) rows.push_back((int)rng.below(N)), w.push_back((Real)((double)N / k));
        add_estimate(est, rows, w, x, dy, C, OC);
        var_uni += frob2(est, exact);
    }
    for (double& m : mean) m /= draws;
    for (double& h : half) h /= draws / 2;
    double e2 = frob2(exact, std::vector<double>(exact.size(), 0));
    double err_full = frob2(mean, exact) / e2, err_half = frob2(half, exact) / e2;
    // mean squared error of the mean is var/draws: the bias must be within a few standard errors
    EXPECT_LT(frob2(mean, exact), 9.0 * var_wta / draws / draws) << "relative error " << err_full;
    EXPECT_LT(err_full, err_half * 1.5) << "error does not shrink with more draws";
    printf("WTA-CRS N=%d k=%d: mse wta %.4g, crs %.4g (x%.2f), uniform %.4g (x%.2f); rel err of mean %.2e\n", N, k,
           var_wta / draws, var_crs / draws, var_crs / var_wta, var_uni / draws, var_uni / var_wta, std::sqrt(err_full));
    EXPECT_LT(var_wta, var_crs);
    EXPECT_LT(var_wta, var_uni);
}
TEST(WtaCrs, EstimatorUnbiasedAndLowerVarianceFloat) { check_estimator<float>(); }
TEST(WtaCrs, EstimatorUnbiasedAndLowerVarianceDouble) { check_estimator<double>(); }

template <typename Real>
void check_linear() {
    Rng rng(29);
    const int N = 30, in = 5, out = 4;
    std::vector<Real> W((size_t)out * in), x = heavy_rows<Real>(rng, N, in), R = heavy_rows<Real>(rng, N, out);
    for (Real& v : W) v = (Real)rng.normal();
    std::vector<Real> dW0(W.size(), 0), dX0((size_t)N * in, 0), y((size_t)N * out);
    Linear<Real> exact(in, out, W.data(), dW0.data());
    exact.forward(y.data(), x.data(), N);
    exact.backward(dX0.data(), R.data(), x.data(), N);
    auto sampler = std::make_shared<WtaCrsSampler<Real>>(0.3, 7, 0);
    std::vector<Real> dW(W.size()), dX((size_t)N * in);
    std::vector<double> mean(W.size(), 0);
    const int draws = 4000;
    Linear<Real> lin(in, out, W.data(), dW.data());
    lin.sampler = sampler;
    for (int d = 0; d < draws; d++) {
        std::fill(dW.begin(), dW.end(), Real(0));
        std::fill(dX.begin(), dX.end(), Real(0));
        lin.forward(y.data(), x.data(), N);
        EXPECT_EQ(lin.kept_sample_bytes(), sizeof(Real) * wtacrs_k(N, 0.3) * in);
        lin.backward(dX.data(), R.data(), x.data(), N);
        if (d == 0) {
            for (size_t i = 0; i < dX.size(); i++) ASSERT_EQ(dX[i], dX0[i]);  // dX exact, bit for bit
            double diff = 0;
            for (size_t i = 0; i < dW.size(); i++) diff += std::fabs(dW[i] - dW0[i]);
            EXPECT_GT(diff, 0);  // dW is sampled
        }
        for (size_t i = 0; i < dW.size(); i++) mean[i] += dW[i];
    }
    EXPECT_FALSE(sampler->proxy().empty());  // the backward fed the proxy
    double num = 0, den = 0;
    for (size_t i = 0; i < dW.size(); i++) num += std::pow(mean[i] / draws - dW0[i], 2), den += std::pow(dW0[i], 2);
    EXPECT_LT(std::sqrt(num / den), 0.05);
}
TEST(WtaCrs, LinearExactInputGradUnbiasedWeightGradFloat) { check_linear<float>(); }
TEST(WtaCrs, LinearExactInputGradUnbiasedWeightGradDouble) { check_linear<double>(); }

// Three Linears reading one input (q, k, v) share one sampler and one SampledRows: the rows are chosen once and
// kept once, each Linear's dX stays exact and its dW unbiased, the sampler learns ||[dY_q dY_k dY_v]_i|| (the
// fused weight's output gradient), and a reader handed another input is refused.
TEST(WtaCrs, LinearsReadingOneInputShareTheirRows) {
    Rng rng(31);
    const int N = 30, in = 5, k = wtacrs_k(N, 0.3);
    const std::vector<int> outs = {4, 2, 3};
    std::vector<double> x = heavy_rows<double>(rng, N, in);
    std::vector<std::vector<double>> W(3), dW(3), dY(3), dX0(3), dW0(3);
    std::vector<Linear<double>> lins(3);
    auto sampler = std::make_shared<WtaCrsSampler<double>>(0.3, 5, 0);
    auto rows = std::make_shared<SampledRows<double>>();
    rows->readers = 3;
    for (int m = 0; m < 3; m++) {
        W[m].resize((size_t)outs[m] * in), dW[m].resize(W[m].size());
        for (double& v : W[m]) v = rng.normal();
        dY[m] = heavy_rows<double>(rng, N, outs[m]);
        dW0[m] = exact_dw(x, dY[m], N, in, outs[m]);
        dX0[m].assign((size_t)N * in, 0.0);  // dY_m W_m
        for (int i = 0; i < N; i++)
            for (int o = 0; o < outs[m]; o++)
                for (int c = 0; c < in; c++) dX0[m][(size_t)i * in + c] += dY[m][(size_t)i * outs[m] + o] * W[m][(size_t)o * in + c];
        lins[m] = Linear<double>(in, outs[m], W[m].data(), dW[m].data());
        lins[m].sampler = sampler;
        lins[m].kept_rows = rows;
    }
    std::vector<std::vector<double>> mean(3);
    for (int m = 0; m < 3; m++) mean[m].assign(W[m].size(), 0.0);
    const int draws = 4000;
    for (int d = 0; d < draws; d++) {
        for (int m = 0; m < 3; m++) {
            std::vector<double> y((size_t)N * outs[m]);
            lins[m].forward(y.data(), x.data(), N);
        }
        const std::vector<int> chosen = rows->rows;
        size_t kept = 0;
        for (const Linear<double>& l : lins) kept += l.kept_sample_bytes();
        ASSERT_EQ(kept, sizeof(double) * k * in);  // one copy of the k rows for the three
        for (int m = 2; m >= 0; m--) {              // the backward runs v, k, q
            std::vector<double> dX((size_t)N * in, 0.0);
            std::fill(dW[m].begin(), dW[m].end(), 0.0);
            lins[m].backward(dX.data(), dY[m].data(), nullptr, N);
            ASSERT_EQ(rows->rows, chosen);  // the same rows for every reader
            if (d == 0) {
                for (size_t i = 0; i < dX.size(); i++) ASSERT_NEAR(dX[i], dX0[m][i], 1e-12 * (1 + std::fabs(dX0[m][i])));
            }
            for (size_t i = 0; i < dW[m].size(); i++) mean[m][i] += dW[m][i] / draws;
        }
        if (d == 0) {  // first observation: the proxy is the norm of the concatenated output gradient, per row
            ASSERT_EQ(sampler->proxy().size(), (size_t)N);
            for (int i = 0; i < N; i++) {
                double sq = 0;
                for (int m = 0; m < 3; m++)
                    for (int o = 0; o < outs[m]; o++) sq += std::pow(dY[m][(size_t)i * outs[m] + o], 2);
                ASSERT_NEAR(sampler->proxy()[i], std::sqrt(sq), 1e-12 * std::sqrt(sq)) << "row " << i;
            }
        }
    }
    for (int m = 0; m < 3; m++) {
        double num = 0, den = 0;
        for (size_t i = 0; i < mean[m].size(); i++) num += std::pow(mean[m][i] - dW0[m][i], 2), den += std::pow(dW0[m][i], 2);
        EXPECT_LT(std::sqrt(num / den), 0.05) << "reader " << m;
    }
    // a reader given another input than the one the rows came from
    std::vector<double> other = x, y((size_t)N * outs[0]), y1((size_t)N * outs[1]);
    lins[0].forward(y.data(), x.data(), N);
    try {
        lins[1].forward(y1.data(), other.data(), N);
        FAIL() << "a reader of another input was accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("sharing sampled rows must read one input"), std::string::npos) << e.what();
    }
}

// (e) a short in-process training run with --wtacrs 0.3 on every Linear: it runs and its loss falls
#include "../tools/shard.h"
#include "../tools/trainer.h"
#include "train_test_util.h"

TEST(WtaCrs, TrainingRunWithSamplerLossFalls) {
    std::string data = llmq_test::temp_dir("wtacrs_data"), out = llmq_test::temp_dir("wtacrs_out");
    Rng rng(41);
    std::vector<uint32_t> tr = llmq_test::markov_tokens(rng, 3000, 64), va = llmq_test::markov_tokens(rng, 300, 64);
    write_shard(data + "/syn_train_000000.bin", tr.data(), tr.size(), 64, 0);
    write_shard(data + "/syn_val_000000.bin", va.data(), va.size(), 64, 0);
    TrainOptions o;
    o.data = data, o.out = out, o.encoding = "none", o.dim = 32, o.ffn_dim = 64, o.n_layers = 2, o.n_heads = 2;
    o.n_kv_heads = 1, o.max_seq_len = 32, o.batch = 4, o.seq = 16, o.threads = 1, o.sample_tokens = 0;
    o.steps = 30, o.lr = 1e-2f, o.warmup = 3, o.log_every = 100, o.wtacrs = 0.3f, o.wtacrs_layers = "all";
    FILE* devnull = fopen("/dev/null", "w");
    TrainResult r = train(o, devnull);
    fclose(devnull);
    ASSERT_EQ((int)r.losses.size(), 30);
    double first = (r.losses[0] + r.losses[1] + r.losses[2]) / 3, last = (r.losses[27] + r.losses[28] + r.losses[29]) / 3;
    EXPECT_LT(last, first - 0.3) << first << " -> " << last;
    o.wtacrs_layers = "mlp,bogus";
    EXPECT_THROW(train(o, stdout), Error);
}

// --recompute mlp in ./train: the same losses bit for bit as keeping gate and up, with less activation memory
// (exact gradients and WTA-CRS 0.3 on every Linear); an unknown --recompute is refused by name.
TEST(WtaCrs, TrainingWithRecomputedMlpHasTheSameLosses) {
    const std::string data = llmq_test::markov_corpus("recompute_data", 43, 3000, 300, 64);
    for (float ratio : {0.0f, 0.3f}) {
        TrainOptions o = llmq_test::adapter_test_run(data, llmq_test::temp_dir("recompute_kept"));
        o.steps = 6, o.threads = 1, o.sample_tokens = 0, o.wtacrs = ratio, o.wtacrs_layers = "all";
        TrainOptions r = o;
        r.out = llmq_test::temp_dir("recompute_mlp"), r.recompute = "mlp";
        TrainResult kept, recomputed;
        const std::string log_kept = llmq_test::train_and_read_log(o, &kept);
        const std::string log_recomputed = llmq_test::train_and_read_log(r, &recomputed);
        ASSERT_EQ(kept.losses.size(), 6u);
        EXPECT_EQ(kept.losses, recomputed.losses) << "ratio " << ratio;
        EXPECT_EQ(kept.val_loss, recomputed.val_loss);
        EXPECT_NE(log_recomputed.find("recompute: mlp"), std::string::npos);
        // the log compares with the plan that keeps everything: the kept run's own activations when exact
        const size_t at = log_recomputed.find("activations: ");
        ASSERT_NE(at, std::string::npos) << log_recomputed;
        EXPECT_NE(log_recomputed.find("less than the", at), std::string::npos);
        auto activations = [](const std::string& dir) { return llmq_test::last_metric(dir, "mem_activations"); };
        // the 2 layers' gate and up (2 x 128 floats per row, 4 x 32 rows) leave; the workspace's MLP phase grows by
        // them: from F = 128 (+ C = 64 sampled) to 3F (+ C), past the attention phase's 224 (+ QD = 64 sampled)
        EXPECT_EQ(activations(o.out) - activations(r.out), 4.0 * 4 * 32 * (2 * 2 * 128 - (384 - 224))) << "ratio " << ratio;
    }
    TrainOptions bad = llmq_test::adapter_test_run(data, llmq_test::temp_dir("recompute_bad"));
    bad.recompute = "attention";
    llmq_test::expect_error([&] { train(bad, stdout); }, {"--recompute 'attention' is unknown (none, mlp)"});
}
