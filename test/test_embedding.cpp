// Tests of kernels/embedding_cpu.cpp: the lookup, its scatter-add gradient (finite differences in
// double, repeated tokens), float against double, and a backward that does not depend on threads.
#include <gtest/gtest.h>
#include <omp.h>

#include "../kernels/embedding.h"
#include "op_test_util.h"

using namespace llmq;
using namespace llmq::test;

namespace {

template <typename Real>
void run_embedding(std::vector<double>& out, std::vector<double>& dwte, const std::vector<int>& tokens,
                   const std::vector<double>& wte, const std::vector<double>& dout, const std::vector<double>& dwte0,
                   int N, int C) {
    auto w = cast<Real>(wte), dy = cast<Real>(dout), dw = cast<Real>(dwte0);
    auto y = nans<Real>((size_t)N * C);
    embedding_forward_cpu<Real>(y.data(), tokens.data(), w.data(), N, C);
    embedding_backward_cpu<Real>(dw.data(), dy.data(), tokens.data(), N, C);
    out = to_double(y);
    dwte = to_double(dw);
}

}  // namespace

TEST(Embedding, ForwardCopiesRows) {
    Rng rng(1);
    const int V = 11, C = 5, N = 9;
    auto wte = randn((size_t)V * C, rng);
    std::vector<int> tokens(N);
    for (int& t : tokens) t = (int)rng.below(V);
    std::vector<double> out, dwte;
    run_embedding<double>(out, dwte, tokens, wte, randn((size_t)N * C, rng), randn(wte.size(), rng), N, C);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) EXPECT_EQ(out[(size_t)n * C + c], wte[(size_t)tokens[n] * C + c]);
}

TEST(Embedding, GradientMatchesFiniteDifferences) {
    Rng rng(2);
    const int V = 6, C = 7, N = 10;  // more rows than tokens: repeats must add up
    std::vector<int> tokens(N);
    for (int& t : tokens) t = (int)rng.below(V);
    tokens[3] = tokens[7] = 2;
    auto wte = randn((size_t)V * C, rng), wloss = randn((size_t)N * C, rng), dwte0 = randn(wte.size(), rng);
    std::vector<double> out, dwte;
    run_embedding<double>(out, dwte, tokens, wte, wloss, dwte0, N, C);
    auto loss = [&]() {
        std::vector<double> o, d;
        run_embedding<double>(o, d, tokens, wte, wloss, dwte0, N, C);
        return dot(o, wloss);
    };
    // rows of tokens that never occur have zero gradient: the check covers them too
    expect_gradient_matches_fd("dwte", wte, added(dwte, dwte0), loss);
}

TEST(Embedding, FloatMatchesDouble) {
    Rng rng(3);
    const int V = 50, C = 130, N = 300;
    std::vector<int> tokens(N);
    for (int& t : tokens) t = (int)rng.below(V);
    auto wte = randn((size_t)V * C, rng), dout = randn((size_t)N * C, rng), dwte0 = randn(wte.size(), rng);
    std::vector<double> od, dd, of, df;
    run_embedding<double>(od, dd, tokens, wte, dout, dwte0, N, C);
    run_embedding<float>(of, df, tokens, wte, dout, dwte0, N, C);
    expect_close("out", of, od);
    expect_close("dwte", df, dd);
}

TEST(Embedding, BackwardIsDeterministicAcrossThreadCounts) {
    Rng rng(4);
    const int V = 7, C = 300, N = 400;  // few tokens, many repeats; N*C large enough for a team
    std::vector<int> tokens(N);
    for (int& t : tokens) t = (int)rng.below(V);
    auto dout = cast<float>(randn((size_t)N * C, rng));
    auto d0 = cast<float>(randn((size_t)V * C, rng));
    auto d1 = d0, d2 = d0;
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    embedding_backward_cpu<float>(d1.data(), dout.data(), tokens.data(), N, C);
    omp_set_num_threads(3);
    embedding_backward_cpu<float>(d2.data(), dout.data(), tokens.data(), N, C);
    omp_set_num_threads(threads);
    EXPECT_EQ(d1, d2);
    // and the order is n = 0..N-1, as documented
    std::vector<float> ref = d0;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) ref[(size_t)tokens[n] * C + c] += dout[(size_t)n * C + c];
    EXPECT_EQ(d1, ref);
}
