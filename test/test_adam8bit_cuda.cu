// GPU tests of quant/adam8bit.cu against the CPU reference (adam8bit_step_cpu): several steps from a random
// state (as after training) on a tensor with a partial last block, with non-finite gradient elements, weight
// decay and grad_scale != 1; a zero state with all-zero and all-NaN gradient blocks (absmax 0); a tensor
// with more quantization blocks than the grid has thread blocks (the grid-stride loop); run-twice
// determinism; the fp32 path of small tensors; bad arguments. Both sides run adam8bit_update.h's
// arithmetic with one rounding per operation, so the expected difference is none: codes, absmax and
// parameters are compared bit for bit (the first mismatches are printed).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "../quant/adam8bit.h"
#include "../quant/adam8bit_cuda.h"
#include "adam8bit_test_util.h"
#include "gpu_test_util.h"
#include "test_util.h"

using namespace llmq;
using namespace llmq::test;

namespace {

// An 8-bit state's buffers on the device.
struct DeviceState {
    DeviceBuffer<uint8_t> m_codes, v_codes;
    DeviceBuffer<float> m_absmax, v_absmax;
    explicit DeviceState(const Adam8bitState& s)
        : m_codes(s.m_codes), v_codes(s.v_codes), m_absmax(s.m_absmax), v_absmax(s.v_absmax) {}
    Adam8bitState download(int64_t n) const {
        Adam8bitState s;
        s.n = n, s.eight_bit = true;
        s.m_codes = m_codes.download(), s.v_codes = v_codes.download();
        s.m_absmax = m_absmax.download(), s.v_absmax = v_absmax.download();
        return s;
    }
};

template <typename T>
size_t count_mismatches(const char* name, const std::vector<T>& got, const std::vector<T>& want) {
    EXPECT_EQ(got.size(), want.size()) << name;
    size_t bad = 0;
    for (size_t i = 0; i < std::min(got.size(), want.size()); i++) {
        if (std::memcmp(&got[i], &want[i], sizeof(T)) == 0) continue;
        if (bad++ < 5) ADD_FAILURE() << name << "[" << i << "]: GPU " << +got[i] << ", CPU " << +want[i];
    }
    return bad;
}

// Every buffer bit for bit; the counts go into the failure message.
void expect_same_state(const Adam8bitState& gpu, const std::vector<float>& gpu_param, const Adam8bitState& cpu,
                       const std::vector<float>& cpu_param) {
    EXPECT_EQ(count_mismatches("m_codes", gpu.m_codes, cpu.m_codes), 0u);
    EXPECT_EQ(count_mismatches("v_codes", gpu.v_codes, cpu.v_codes), 0u);
    EXPECT_EQ(count_mismatches("m_absmax", gpu.m_absmax, cpu.m_absmax), 0u);
    EXPECT_EQ(count_mismatches("v_absmax", gpu.v_absmax, cpu.v_absmax), 0u);
    EXPECT_EQ(count_mismatches("param", gpu_param, cpu_param), 0u);
}

// `steps` steps of the same tensor on the CPU and the GPU, fresh gradients each step (grad_fn(step, g) may
// plant special values), compared after every step.
template <typename GradFn>
void check_steps(Adam8bitState cpu, std::vector<float> param, int steps, const Adam8bitHyper& h, float grad_scale,
                 uint64_t seed, GradFn grad_fn) {
    const int64_t n = cpu.n;
    Rng rng(seed);
    Adam8bitMapsCuda maps;
    DeviceState gpu(cpu);
    DeviceBuffer<float> d_param(param), d_grad((size_t)n);
    for (int step = 1; step <= steps; step++) {
        SCOPED_TRACE(format("n=%lld step %d", (long long)n, step));
        std::vector<float> grad = randn_floats(n, rng, 0.01f);
        grad_fn(step, grad);
        d_grad.upload(grad);
        adam8bit_step_cpu(param.data(), grad.data(), cpu, h, step, grad_scale);
        adam8bit_step_cuda(d_param.data(), d_grad.data(), gpu.m_codes.data(), gpu.v_codes.data(),
                           gpu.m_absmax.data(), gpu.v_absmax.data(), maps.signed_map.data(),
                           maps.unsigned_map.data(), n, h, step, grad_scale);
        CUDA_CHECK(cudaDeviceSynchronize());
        expect_same_state(gpu.download(n), d_param.download(), cpu, param);
        if (::testing::Test::HasFailure()) return;  // later steps would only repeat the first difference
    }
}

const Adam8bitHyper kHyper{2e-3f, 0.9f, 0.99f, 1e-8f, 0.1f};

}  // namespace

TEST(Adam8bitCuda, StepsFromRandomStateEqualCpu) {
    LLMQ_REQUIRE_GPU();
    Rng rng(1);
    const int64_t n = 256 * 37 + 5;  // a partial last block of 5
    const auto param = randn_floats(n, rng);
    check_steps(adam8bit_random_state(rng, n), param, 4, kHyper, 0.5f, 2, [n](int step, std::vector<float>& g) {
        g[3] = NAN, g[300] = INFINITY, g[301] = -INFINITY;  // non-finite: these elements stay as they were
        g[n - 1] = step % 2 ? NAN : g[n - 1];                // in the partial block too
        g[1000 + step] = 1e15f;                               // one huge element dominates its block's absmax
    });
}

TEST(Adam8bitCuda, NonFiniteGradientsLeaveParamsAlone) {
    LLMQ_REQUIRE_GPU();
    Rng rng(3);
    const int64_t n = 256 * 8 + 100;
    Adam8bitState s = adam8bit_random_state(rng, n);
    std::vector<float> param = randn_floats(n, rng), grad = randn_floats(n, rng, 0.01f);
    for (int64_t i = 0; i < n; i += 7) grad[i] = (i % 2) ? NAN : -INFINITY;
    Adam8bitMapsCuda maps;
    DeviceState gpu(s);
    DeviceBuffer<float> d_param(param), d_grad(grad);
    adam8bit_step_cuda(d_param.data(), d_grad.data(), gpu.m_codes.data(), gpu.v_codes.data(), gpu.m_absmax.data(),
                       gpu.v_absmax.data(), maps.signed_map.data(), maps.unsigned_map.data(), n, kHyper, 3, 2.0f);
    const auto after = d_param.download();
    for (int64_t i = 0; i < n; i++) {
        if (i % 7 == 0) ASSERT_EQ(std::memcmp(&after[i], &param[i], 4), 0) << "param " << i << " changed";
        else ASSERT_NE(after[i], param[i]) << "param " << i << " not updated";
    }
}

TEST(Adam8bitCuda, ZeroStateAndAllZeroBlocksEqualCpu) {
    LLMQ_REQUIRE_GPU();
    Rng rng(4);
    const int64_t n = 256 * 20 + 77;
    const auto param = randn_floats(n, rng);
    // block 2 all-zero and block 5 all-NaN gradients: m = v = 0 there, absmax 0, the code of 0.0
    check_steps(adam8bit_init(n), param, 3, Adam8bitHyper{}, 1.0f, 5, [](int, std::vector<float>& g) {
        std::fill(g.begin() + 2 * 256, g.begin() + 3 * 256, 0.0f);
        std::fill(g.begin() + 5 * 256, g.begin() + 6 * 256, NAN);
    });
}

TEST(Adam8bitCuda, MoreBlocksThanThreadBlocksEqualCpu) {
    LLMQ_REQUIRE_GPU();
    Rng rng(6);
    const int64_t n = 256 * 4000 + 17;  // 4001 blocks: more than the grid's 8 per SM on any current GPU
    const auto param = randn_floats(n, rng);
    check_steps(adam8bit_random_state(rng, n), param, 1, kHyper, 0.25f, 7, [](int, std::vector<float>&) {});
}

TEST(Adam8bitCuda, Deterministic) {
    LLMQ_REQUIRE_GPU();
    Rng rng(8);
    const int64_t n = 256 * 300 + 1;
    const Adam8bitState s = adam8bit_random_state(rng, n);
    const auto param = randn_floats(n, rng), grad = randn_floats(n, rng, 0.01f);
    Adam8bitMapsCuda maps;
    DeviceBuffer<float> d_grad(grad);
    std::vector<float> params[2];
    Adam8bitState states[2];
    for (int run = 0; run < 2; run++) {
        DeviceState gpu(s);
        DeviceBuffer<float> d_param(param);
        for (int step = 1; step <= 3; step++)
            adam8bit_step_cuda(d_param.data(), d_grad.data(), gpu.m_codes.data(), gpu.v_codes.data(),
                               gpu.m_absmax.data(), gpu.v_absmax.data(), maps.signed_map.data(),
                               maps.unsigned_map.data(), n, kHyper, step, 1.0f);
        params[run] = d_param.download(), states[run] = gpu.download(n);
    }
    expect_same_state(states[1], params[1], states[0], params[0]);
}

TEST(Adam8bitCuda, Fp32PathEqualsCpu) {
    LLMQ_REQUIRE_GPU();
    Rng rng(9);
    for (int64_t n : {1, 300, 4095}) {
        SCOPED_TRACE(format("n=%lld", (long long)n));
        Adam8bitState s = adam8bit_init(n);
        ASSERT_FALSE(s.eight_bit);
        std::vector<float> param = randn_floats(n, rng);
        DeviceBuffer<float> d_param(param), d_m(s.m32), d_v(s.v32), d_grad((size_t)n);
        for (int step = 1; step <= 3; step++) {
            std::vector<float> grad = randn_floats(n, rng, 0.01f);
            grad[0] = step == 2 ? NAN : grad[0];
            d_grad.upload(grad);
            adam8bit_step_cpu(param.data(), grad.data(), s, kHyper, step, 0.5f);
            adam8bit_step_fp32_cuda(d_param.data(), d_grad.data(), d_m.data(), d_v.data(), n, kHyper, step, 0.5f);
        }
        EXPECT_EQ(count_mismatches("param", d_param.download(), param), 0u);
        EXPECT_EQ(count_mismatches("m", d_m.download(), s.m32), 0u);
        EXPECT_EQ(count_mismatches("v", d_v.download(), s.v32), 0u);
    }
}

TEST(Adam8bitCuda, RejectsBadArguments) {
    LLMQ_REQUIRE_GPU();
    using llmq_test::expect_error;
    Adam8bitMapsCuda maps;
    DeviceBuffer<float> p(512), g(512), am(2), av(2);
    DeviceBuffer<uint8_t> mc(512), vc(512);
    auto step = [&](int64_t n, int t, Adam8bitHyper h, float* param) {
        adam8bit_step_cuda(param, g.data(), mc.data(), vc.data(), am.data(), av.data(), maps.signed_map.data(),
                           maps.unsigned_map.data(), n, h, t);
    };
    expect_error([&] { step(0, 1, kHyper, p.data()); }, {"adam8bit_step_cuda", "0 elements"});
    expect_error([&] { step(512, 0, kHyper, p.data()); }, {"adam8bit", "step 0"});
    expect_error([&] { step(512, 1, Adam8bitHyper{1e-3f, 0.9f, 1.0f}, p.data()); }, {"betas"});
    expect_error([&] { step(512, 1, kHyper, nullptr); }, {"adam8bit_step_cuda", "null pointer"});
    expect_error([&] { adam8bit_step_fp32_cuda(p.data(), g.data(), nullptr, p.data(), 4, kHyper, 1); },
                 {"adam8bit_step_fp32_cuda", "null pointer"});
}
