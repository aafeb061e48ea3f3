// quant_test_util: small helpers shared by the quant/ tests.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "../kernels/common.h"
#include "test_util.h"

namespace llmq_test {

inline std::vector<float> normal_vector(llmq::Rng& rng, size_t n, float stddev = 1.0f) {
    std::vector<float> v(n);
    for (float& x : v) x = stddev * rng.normal();
    return v;
}

inline std::vector<float> poisoned(size_t n) { return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN()); }

}  // namespace llmq_test
