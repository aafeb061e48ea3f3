// quant_test_util: small helpers shared by the quant/ and adapters/ tests (heavy-tailed calibration inputs).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "../kernels/common.h"
#include "../quant/formats.h"
#include "../quant/gptq.h"
#include "test_util.h"

namespace llmq_test {

inline std::vector<float> normal_vector(llmq::Rng& rng, size_t n, float stddev = 1.0f) {
    std::vector<float> v(n);
    for (float& x : v) x = stddev * rng.normal();
    return v;
}

inline std::vector<float> poisoned(size_t n) { return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN()); }

// Calibration inputs X (n, in) = Z M: Z heavy-tailed (a normal over sqrt of a uniform, Student-t-like),
// M = I + a dense random mixing (correlates the channels), and a few channels scaled up 20x (the outlier
// features of real LLM activations; those of them below `in`).
inline std::vector<float> calibration_inputs(llmq::Rng& rng, int64_t n, int64_t in) {
    std::vector<float> z(n * in), mix(in * in), x(n * in, 0.0f);
    for (float& v : z) v = rng.normal() / std::sqrt(0.05f + rng.uniform());
    for (int64_t i = 0; i < in; i++)
        for (int64_t j = 0; j < in; j++) mix[i * in + j] = (i == j) + 0.6f * rng.normal() / std::sqrt((float)in);
    for (int64_t s = 0; s < n; s++)
        for (int64_t k = 0; k < in; k++)
            for (int64_t j = 0; j < in; j++) x[s * in + j] += z[s * in + k] * mix[k * in + j];
    for (int64_t c : {5, 77, 200})
        for (int64_t s = 0; c < in && s < n; s++) x[s * in + c] *= 20.0f;
    return x;
}

inline std::vector<double> hessian_of(const std::vector<float>& x, int64_t in) {
    llmq::HessianAccumulator acc(in);
    acc.add(x.data(), (int64_t)x.size() / in);
    return acc.hessian();
}

inline std::vector<float> dequantized(const llmq::QuantizedTensor& q) {
    std::vector<float> out = poisoned(q.numel());
    llmq::dequantize_cpu(q, out.data());
    return out;
}

}  // namespace llmq_test
