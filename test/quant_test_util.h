// quant_test_util: small helpers shared by the quant/ tests.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "../kernels/common.h"

namespace llmq_test {

// Runs f, expecting an llmq::Error whose message contains every one of `parts`.
template <typename F>
void expect_error(F&& f, std::initializer_list<const char*> parts) {
    try {
        f();
        ADD_FAILURE() << "no llmq::Error thrown";
    } catch (const llmq::Error& e) {
        for (const char* p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
            << "message '" << e.what() << "' lacks '" << p << "'";
    }
}

inline std::vector<float> normal_vector(llmq::Rng& rng, size_t n, float stddev = 1.0f) {
    std::vector<float> v(n);
    for (float& x : v) x = stddev * rng.normal();
    return v;
}

inline std::vector<float> poisoned(size_t n) { return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN()); }

}  // namespace llmq_test
