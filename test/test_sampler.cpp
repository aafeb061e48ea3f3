// Tests of tools/sampler.h: greedy and top-k choices, and draw frequencies that follow softmax(logits/T).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "../tools/sampler.h"

using namespace llmq;

TEST(Sampler, GreedyAndTopOneTakeTheArgmax) {
    Rng rng(1);
    std::vector<float> logits(50);
    for (float& l : logits) l = rng.normal();
    logits[37] = 5.0f;
    EXPECT_EQ(sample_token(logits.data(), 50, 0.0f, 0, rng), 37);
    for (int i = 0; i < 20; i++) EXPECT_EQ(sample_token(logits.data(), 50, 1.0f, 1, rng), 37);
}

TEST(Sampler, FrequenciesFollowTheTemperedSoftmaxOverTheTopK) {
    Rng rng(2);
    const int V = 6, k = 3, draws = 60000;
    std::vector<float> logits = {0.3f, 1.2f, -0.5f, 0.9f, 1.0f, -2.0f};  // top 3: ids 1, 4, 3
    const float temperature = 0.7f;
    std::vector<int> counts(V, 0);
    for (int i = 0; i < draws; i++) counts[sample_token(logits.data(), V, temperature, k, rng)]++;
    double z = 0;
    for (int id : {1, 4, 3}) z += std::exp(logits[id] / temperature);
    for (int id = 0; id < V; id++) {
        bool in_top = id == 1 || id == 4 || id == 3;
        double p = in_top ? std::exp(logits[id] / temperature) / z : 0.0;
        EXPECT_NEAR(counts[id] / (double)draws, p, 0.01) << "id " << id;
    }
    // the same seed reproduces the same draws
    Rng a(9), b(9);
    for (int i = 0; i < 100; i++)
        ASSERT_EQ(sample_token(logits.data(), V, 1.0f, 0, a), sample_token(logits.data(), V, 1.0f, 0, b));
}
