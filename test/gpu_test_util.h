// gpu_test_util.h: what the GPU tests (test/test_<op>_cuda.cu) share.
//
//   LLMQ_REQUIRE_GPU()        skips the test, saying why, on a machine without a usable CUDA GPU
//   randn_floats(n, rng, s)   fresh normal inputs (never zeros: they hide unwritten outputs)
//   to_bf16 / from_bf16       host conversions (round to nearest even), exactly as the GPU stores bf16
//   bf16_rounded(x)           x rounded to bf16 and back: the inputs a bf16 kernel really sees, so the
//                             fp32 CPU reference runs on the same values
//   expect_rel_close(...)     ||got - want|| / ||want|| <= tol, and every element finite: outputs are
//                             poisoned (DeviceBuffer::poison, NaN) before the kernel runs, so an element
//                             the kernel never wrote fails the test
// Tolerances follow the precision: fp32 kernels ~1e-5 relative, bf16 inputs or outputs ~1e-2.
// Every GPU test's suite name ends in "Cuda", so `--gtest_filter='*Cuda*'` runs exactly them.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "../kernels/cuda_common.h"
#include "../tools/float16.h"

namespace llmq::test {

#define LLMQ_REQUIRE_GPU()                                                                    \
    do {                                                                                      \
        std::string why_no_gpu;                                                               \
        if (::llmq::cuda_device_count(&why_no_gpu) == 0)                                      \
            GTEST_SKIP() << "no CUDA GPU (" << why_no_gpu << "): GPU test skipped";           \
    } while (0)

inline std::vector<float> randn_floats(size_t n, Rng& rng, float scale = 1.0f) {
    std::vector<float> x(n);
    for (auto& e : x) e = rng.normal() * scale;
    return x;
}

inline std::vector<bf16> to_bf16(const std::vector<float>& x) {
    std::vector<bf16> out(x.size());
    for (size_t i = 0; i < x.size(); i++) {
        __nv_bfloat16_raw raw;
        raw.x = float_to_bf16(x[i]);
        out[i] = raw;
    }
    return out;
}

inline std::vector<float> from_bf16(const std::vector<bf16>& x) {
    std::vector<float> out(x.size());
    for (size_t i = 0; i < x.size(); i++) {
        out[i] = bf16_to_float(static_cast<__nv_bfloat16_raw>(x[i]).x);
    }
    return out;
}

inline std::vector<float> bf16_rounded(const std::vector<float>& x) { return from_bf16(to_bf16(x)); }

// ||got - want||_2 / ||want||_2 in double; fails (with the first bad index) if got has a NaN or inf.
inline void expect_rel_close(const std::string& name, const std::vector<float>& got, const std::vector<float>& want,
                             double tol) {
    ASSERT_EQ(got.size(), want.size()) << name;
    double diff = 0.0, norm = 0.0;
    for (size_t i = 0; i < got.size(); i++) {
        ASSERT_TRUE(std::isfinite(got[i])) << name << "[" << i << "] = " << got[i]
                                           << ": not finite (an element the kernel did not write?)";
        diff += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
        norm += (double)want[i] * want[i];
    }
    ASSERT_GT(norm, 0.0) << name << ": the reference is all zeros (the test cannot fail)";
    EXPECT_LE(std::sqrt(diff / norm), tol) << name << ": relative error over " << got.size() << " elements";
}

}  // namespace llmq::test
