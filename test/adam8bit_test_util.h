// adam8bit_test_util.h: the 8-bit Adam state the CPU test (test_adam8bit.cpp), the GPU test
// (test_adam8bit_cuda.cu) and the benchmark (dev/adam8bit.cu) start from.
#pragma once

#include "../kernels/common.h"
#include "../quant/adam8bit.h"

namespace llmq::test {

// An 8-bit state of n >= kAdam8bitMinSize elements with random codes and absmax, as after some training:
// first-moment codes anywhere in the signed map, second-moment codes in the upper half of the unsigned one.
inline Adam8bitState adam8bit_random_state(Rng& rng, int64_t n) {
    Adam8bitState s = adam8bit_init(n);
    LLMQ_CHECK(s.eight_bit, "adam8bit_random_state: %lld elements get an fp32 state", (long long)n);
    for (auto& c : s.m_codes) c = (uint8_t)rng.below(256);
    for (auto& c : s.v_codes) c = (uint8_t)(128 + rng.below(128));
    for (auto& a : s.m_absmax) a = 0.01f * (0.5f + rng.uniform());
    for (auto& a : s.v_absmax) a = 1e-4f * (0.5f + rng.uniform());
    return s;
}

}  // namespace llmq::test
