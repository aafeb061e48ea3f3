// Tests of kernels/crossentropy_cpu.cpp: dlogits against finite differences of the summed loss in
// double, uniform logits give log V, ignored rows give 0 loss and 0 gradient, in place equals out of
// place, no dlogits, a bad target is rejected, float against double.
#include <gtest/gtest.h>

#include "../kernels/crossentropy.h"
#include "op_test_util.h"

using namespace llmq;
using namespace llmq::test;

namespace {

const int kIgnore = -100;

// losses (N) and, if want_grad, dlogits (N,V); in_place computes dlogits over the logits buffer
template <typename Real>
void run_ce(std::vector<double>& losses, std::vector<double>& dlogits, const std::vector<double>& logits,
            const std::vector<int>& targets, int N, int V, double grad_scale, bool want_grad = true,
            bool in_place = false) {
    auto l = cast<Real>(logits);
    auto loss = nans<Real>(N);
    auto dl = nans<Real>((size_t)N * V);
    Real* grad = !want_grad ? nullptr : in_place ? l.data() : dl.data();
    crossentropy_forward_backward_cpu<Real>(loss.data(), grad, l.data(), targets.data(), N, V, kIgnore,
                                            (Real)grad_scale);
    losses = to_double(loss);
    dlogits = want_grad ? to_double(in_place ? l : dl) : std::vector<double>();
}

std::vector<int> random_targets(int N, int V, Rng& rng) {
    std::vector<int> t(N);
    for (int& x : t) x = (int)rng.below(V);
    return t;
}

}  // namespace

TEST(Crossentropy, GradientMatchesFiniteDifferences) {
    Rng rng(1);
    const int N = 5, V = 11;
    const double grad_scale = 0.37;  // dlogits is the gradient of grad_scale * sum(losses)
    auto logits = randn((size_t)N * V, rng, 2.0);
    auto targets = random_targets(N, V, rng);
    targets[2] = kIgnore;
    std::vector<double> losses, dlogits;
    run_ce<double>(losses, dlogits, logits, targets, N, V, grad_scale);
    auto loss = [&]() {
        std::vector<double> l, d;
        run_ce<double>(l, d, logits, targets, N, V, grad_scale, false);
        double sum = 0;
        for (double x : l) sum += grad_scale * x;
        return sum;
    };
    expect_gradient_matches_fd("dlogits", logits, dlogits, loss);
}

TEST(Crossentropy, KnownValues) {
    Rng rng(2);
    const int N = 4, V = 13;
    std::vector<double> logits((size_t)N * V);
    for (int n = 0; n < N; n++) {
        const double c = rng.normal() * 5.0;  // uniform logits, a different constant per row
        for (int j = 0; j < V; j++) logits[(size_t)n * V + j] = c;
    }
    auto targets = random_targets(N, V, rng);
    std::vector<double> losses, dlogits;
    run_ce<double>(losses, dlogits, logits, targets, N, V, 2.0);
    for (int n = 0; n < N; n++) {
        EXPECT_NEAR(losses[n], std::log((double)V), 1e-14);
        for (int j = 0; j < V; j++)
            EXPECT_NEAR(dlogits[(size_t)n * V + j], 2.0 * (1.0 / V - (j == targets[n])), 1e-15);
    }
    // a confident correct prediction costs ~0, a confident wrong one ~ the logit gap
    std::vector<double> l2 = {30.0, 0.0, 0.0};
    run_ce<double>(losses, dlogits, l2, {0}, 1, 3, 1.0);
    EXPECT_NEAR(losses[0], 0.0, 1e-12);
    run_ce<double>(losses, dlogits, l2, {1}, 1, 3, 1.0);
    EXPECT_NEAR(losses[0], 30.0, 1e-12);
}

TEST(Crossentropy, IgnoredRowsGiveNoLossNoGradient) {
    Rng rng(3);
    const int N = 6, V = 9;
    auto logits = randn((size_t)N * V, rng);
    auto targets = random_targets(N, V, rng);
    targets[0] = targets[4] = kIgnore;
    std::vector<double> losses, dlogits;
    run_ce<float>(losses, dlogits, logits, targets, N, V, 1.0);
    for (int n = 0; n < N; n++) {
        if (targets[n] == kIgnore) {
            EXPECT_EQ(losses[n], 0.0);
            for (int j = 0; j < V; j++) EXPECT_EQ(dlogits[(size_t)n * V + j], 0.0);
        } else {
            EXPECT_GT(losses[n], 0.0);
            double sum = 0;  // softmax - onehot sums to 0 over the row
            for (int j = 0; j < V; j++) sum += dlogits[(size_t)n * V + j];
            EXPECT_NEAR(sum, 0.0, 1e-6);
        }
    }
}

TEST(Crossentropy, InPlaceAndWithoutGradient) {
    Rng rng(4);
    const int N = 5, V = 300;
    auto logits = randn((size_t)N * V, rng, 3.0);
    auto targets = random_targets(N, V, rng);
    targets[1] = kIgnore;
    std::vector<double> l1, d1, l2, d2, l3, d3;
    run_ce<float>(l1, d1, logits, targets, N, V, 0.5);
    run_ce<float>(l2, d2, logits, targets, N, V, 0.5, true, true);
    run_ce<float>(l3, d3, logits, targets, N, V, 0.5, false);
    EXPECT_EQ(l1, l2);
    EXPECT_EQ(d1, d2);
    EXPECT_EQ(l1, l3);
}

TEST(Crossentropy, RejectsTargetOutsideVocabulary) {
    std::vector<float> logits(6, 0.5f), losses(2), dlogits(6);
    std::vector<int> targets = {1, 3};
    EXPECT_THROW(crossentropy_forward_backward_cpu<float>(losses.data(), dlogits.data(), logits.data(), targets.data(),
                                                          2, 3, kIgnore, 1.0f),
                 Error);
}

TEST(Crossentropy, FloatMatchesDouble) {
    Rng rng(5);
    const int N = 7, V = 1000;
    auto logits = randn((size_t)N * V, rng, 3.0);
    auto targets = random_targets(N, V, rng);
    targets[3] = kIgnore;
    std::vector<double> ld, dd, lf, df;
    run_ce<double>(ld, dd, logits, targets, N, V, 1.0 / N);
    run_ce<float>(lf, df, logits, targets, N, V, 1.0 / N);
    expect_close("losses", lf, ld);
    expect_close("dlogits", df, dd);
}
