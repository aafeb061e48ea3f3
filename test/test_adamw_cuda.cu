// GPU tests of kernels/adamw.cu against the CPU reference (adamw_cpu.cpp):
//   AdamW: master, m, v after several steps equal adamw_update_cpu's (~1e-6: the same fp32 code, up to FMA
//   contraction), on the packed path, its scalar tail and unaligned buffers, with and without the bf16 copy;
//   the copy: every element one of the two bf16 neighbours of its master (the master itself when it is a bf16
//   value), unbiased over many seeds (per element and per launch, Hoeffding bounds), and the same bits for the
//   same seed.
//   The norm: sum_squares_cpu (double) to ~1e-6, on sizes from 1 element to several grid-strides, aligned or
//   not, and the same bits on every run.
#include <cstring>

#include "../kernels/adamw.h"
#include "../kernels/adamw_cuda.h"
#include "gpu_test_util.h"

using namespace llmq;
using namespace llmq::test;

namespace {

struct Hyper {
    float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.1f, grad_scale = 0.7f;
};

uint16_t bits_of(bf16 x) { return static_cast<__nv_bfloat16_raw>(x).x; }

// The two bf16 values around finite x: lo = x truncated toward zero, hi = the next bf16 away from zero (== lo
// when x is a bf16 value).
void bf16_neighbours(float x, float* lo, float* hi) {
    const uint32_t u = float_bits(x), t = u & 0xFFFF0000u;
    *lo = bits_float(t);
    *hi = (u & 0xFFFFu) ? bits_float(t + 0x10000u) : *lo;
}

// device copies of one optimizer state; offset elements before each array (1: no 16-byte alignment)
struct DeviceState {
    size_t offset;
    DeviceBuffer<float> master, grad, m, v;
    DeviceBuffer<bf16> param;
    DeviceState(const std::vector<float>& w, const std::vector<float>& mm, const std::vector<float>& vv,
                size_t offset_)
        : offset(offset_), master(pad(w)), grad(w.size() + offset), m(pad(mm)), v(pad(vv)), param(w.size() + offset) {
        param.poison();
    }
    std::vector<float> pad(const std::vector<float>& x) const {
        std::vector<float> p(offset, 3.0f);
        p.insert(p.end(), x.begin(), x.end());
        return p;
    }
    template <typename T>
    static std::vector<T> unpad(const DeviceBuffer<T>& b, size_t offset) {
        const auto all = b.download();
        return std::vector<T>(all.begin() + offset, all.end());
    }
    void step(const std::vector<float>& g, const Hyper& h, int step, uint32_t seed, bool with_param = true) {
        grad.upload(pad(g));
        adamw_update_cuda(master.data() + offset, with_param ? param.data() + offset : nullptr, grad.data() + offset,
                          m.data() + offset, v.data() + offset, g.size(), h.lr, h.beta1, h.beta2, h.eps,
                          h.weight_decay, step, h.grad_scale, seed);
        CUDA_CHECK(cudaDeviceSynchronize());
    }
};

// every param element is a bf16 neighbour of its master
void expect_neighbours(const std::vector<float>& master, const std::vector<bf16>& param) {
    ASSERT_EQ(master.size(), param.size());
    for (size_t i = 0; i < master.size(); i++) {
        float lo, hi;
        bf16_neighbours(master[i], &lo, &hi);
        const float p = bf16_to_float(bits_of(param[i]));
        ASSERT_TRUE(p == lo || p == hi) << "param[" << i << "] = " << p << " is not a bf16 neighbour of master "
                                        << master[i] << " (" << lo << ", " << hi << ")";
    }
}

// steps 1..steps of the GPU and of adamw_update_cpu from the same state, compared after each step
void check_adamw(size_t n, size_t offset, bool with_param, bool zero_moments, uint64_t seed) {
    SCOPED_TRACE(testing::Message() << "n " << n << " offset " << offset << " param " << with_param);
    Rng rng(seed);
    std::vector<float> w = randn_floats(n, rng, 0.5f), m(n, 0.0f), v(n, 0.0f);
    if (!zero_moments) {
        m = randn_floats(n, rng, 0.01f);
        for (float& x : v) x = std::fabs(rng.normal()) * 1e-4f;
    }
    DeviceState d(w, m, v, offset);
    const Hyper h;
    for (int step = 1; step <= 3; step++) {
        const auto g = randn_floats(n, rng, 0.05f);
        adamw_update_cpu<float>(w.data(), g.data(), m.data(), v.data(), n, h.lr, h.beta1, h.beta2, h.eps,
                                h.weight_decay, step, h.grad_scale);
        d.step(g, h, step, 1000 + step, with_param);
        const auto master = DeviceState::unpad(d.master, offset);
        expect_rel_close("master", master, w, 1e-6);
        expect_rel_close("m", DeviceState::unpad(d.m, offset), m, 1e-6);
        expect_rel_close("v", DeviceState::unpad(d.v, offset), v, 1e-6);
        if (with_param) expect_neighbours(master, DeviceState::unpad(d.param, offset));
    }
    if (!with_param) {  // a null param is never written: still the poison (0xFFFF, a NaN) everywhere
        for (bf16 x : d.param.download()) ASSERT_EQ(bits_of(x), 0xFFFFu);
    }
}

}  // namespace

TEST(AdamwCuda, MatchesCpuOverSteps) {
    LLMQ_REQUIRE_GPU();
    check_adamw(1 << 16, 0, true, true, 1);    // packed path only; from zero moments, as training starts
    check_adamw(100003, 0, true, false, 2);    // a scalar tail of 3
}

TEST(AdamwCuda, MatchesCpuUnalignedAndWithoutBf16Copy) {
    LLMQ_REQUIRE_GPU();
    check_adamw(4099, 1, true, false, 3);  // every buffer off a 16-byte boundary: the scalar path for everything
    check_adamw(10007, 0, false, false, 4);
    check_adamw(5, 0, true, false, 5);  // fewer elements than one pack
}

TEST(AdamwCuda, RoundingKeepsBf16ValuesAndPicksNeighbours) {
    LLMQ_REQUIRE_GPU();
    // lr = 0: the master does not move (param -= 0 * finite), so the copy is the rounding of known values;
    // half of them are bf16 values already and must come back exactly, the others must be neighbours
    const size_t n = 20000;
    Rng rng(6);
    std::vector<float> w = randn_floats(n, rng);
    for (size_t i = 0; i < n; i += 2) w[i] = bf16_rounded({w[i]})[0];
    // zero and subnormals (not -0: -0 - (-0) is +0, so lr = 0 may flip its sign bit, which is fine but not this test)
    w[1] = 0.0f, w[3] = 2.5e-39f, w[5] = 1e-40f, w[7] = -3e-39f;
    DeviceState d(w, std::vector<float>(n, 0.0f), std::vector<float>(n, 1.0f), 0);
    Hyper h;
    h.lr = 0.0f;
    d.step(randn_floats(n, rng), h, 1, 77);
    const auto master = DeviceState::unpad(d.master, 0);
    ASSERT_EQ(0, std::memcmp(master.data(), w.data(), n * sizeof(float))) << "lr = 0 moved the master";
    const auto param = DeviceState::unpad(d.param, 0);
    for (size_t i = 0; i < n; i += 2)
        ASSERT_EQ(bits_of(param[i]), float_bits(w[i]) >> 16) << "bf16 value " << w[i] << " at " << i << " changed";
    expect_neighbours(master, param);
}

TEST(AdamwCuda, StochasticRoundingIsUnbiased) {
    LLMQ_REQUIRE_GPU();
    // K launches with different seeds round the same masters (lr = 0). In units of the gap between the two
    // neighbours, a master at fraction f of the gap has rounding error e = -f or 1 - f (an interval of width 1),
    // mean 0 when unbiased. Hoeffding, P(|mean of k errors| >= t) <= 2 exp(-2 k t^2):
    //   per element, K = 256 launches, t = 0.25: 2 exp(-32) = 2.5e-14;
    //   per launch, n = 4096 elements, t = 0.06: 2 exp(-29.5) = 3e-13.
    // Round-to-nearest fails the first (|e| near 0.5 for many elements), so does an ignored seed; an ignored
    // index (every element of a launch sharing one random number) fails the second.
    const size_t n = 4096;
    const int K = 256;
    Rng rng(7);
    std::vector<float> w = randn_floats(n, rng);
    for (float& x : w)  // no bf16 values here (they have no rounding error to measure): one fp32 ulp off them
        if ((float_bits(x) & 0xFFFFu) == 0) x = bits_float(float_bits(x) + 1);
    w[0] = 1.0f + 0.25f / 128;  // a quarter of the way from 1 to the next bf16
    DeviceState d(w, std::vector<float>(n, 0.0f), std::vector<float>(n, 1.0f), 0);
    Hyper h;
    h.lr = 0.0f;
    const auto g = randn_floats(n, rng);
    std::vector<double> sum_err(n, 0.0);
    std::vector<bf16> first;
    int launches_differing_from_first = 0;
    for (int k = 0; k < K; k++) {
        d.step(g, h, 1, 5000 + 7919 * k);
        const auto param = DeviceState::unpad(d.param, 0);
        double launch_err = 0.0;
        for (size_t i = 0; i < n; i++) {
            float lo, hi;
            bf16_neighbours(w[i], &lo, &hi);
            ASSERT_NE(lo, hi) << "the test wants masters that are not bf16 values (element " << i << ")";
            const float p = bf16_to_float(bits_of(param[i]));
            ASSERT_TRUE(p == lo || p == hi) << "element " << i << " launch " << k;
            const double e = ((double)p - w[i]) / ((double)hi - lo);
            sum_err[i] += e, launch_err += e;
        }
        EXPECT_LE(std::fabs(launch_err / n), 0.06) << "launch " << k << ": the elements' roundings are correlated";
        if (k == 0) first = param;
        else if (std::memcmp(first.data(), param.data(), n * sizeof(bf16)) != 0) launches_differing_from_first++;
    }
    EXPECT_EQ(launches_differing_from_first, K - 1) << "different seeds gave the same rounding";
    for (size_t i = 0; i < n; i++)
        ASSERT_LE(std::fabs(sum_err[i] / K), 0.25) << "element " << i << " (master " << w[i] << ") is biased";
}

TEST(AdamwCuda, SameSeedSameBits) {
    LLMQ_REQUIRE_GPU();
    const size_t n = 50001;
    Rng rng(8);
    const auto w = randn_floats(n, rng), m = randn_floats(n, rng, 0.01f), g = randn_floats(n, rng);
    std::vector<float> v(n);
    for (float& x : v) x = std::fabs(rng.normal()) * 1e-4f;
    const Hyper h;
    DeviceState a(w, m, v, 0), b(w, m, v, 0), c(w, m, v, 0);
    a.step(g, h, 4, 123), b.step(g, h, 4, 123), c.step(g, h, 4, 124);
    const auto pa = a.param.download(), pb = b.param.download(), pc = c.param.download();
    EXPECT_EQ(0, std::memcmp(pa.data(), pb.data(), n * sizeof(bf16)));
    EXPECT_NE(0, std::memcmp(pa.data(), pc.data(), n * sizeof(bf16))) << "another seed, the same rounding";
    const auto ma = a.master.download(), mb = b.master.download(), mc = c.master.download();
    EXPECT_EQ(0, std::memcmp(ma.data(), mb.data(), n * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(ma.data(), mc.data(), n * sizeof(float))) << "the seed changed the fp32 update";
}

TEST(AdamwCuda, RejectsBadArguments) {
    LLMQ_REQUIRE_GPU();
    DeviceBuffer<float> x(8);
    EXPECT_THROW(adamw_update_cuda(x.data(), nullptr, x.data(), x.data(), x.data(), 8, 1e-3f, 0.9f, 0.95f, 1e-8f,
                                   0.0f, 0, 1.0f, 1),
                 Error);
    EXPECT_THROW(adamw_update_cuda(x.data(), nullptr, x.data(), x.data(), x.data(), 8, 1e-3f, 1.0f, 0.95f, 1e-8f,
                                   0.0f, 1, 1.0f, 1),
                 Error);
}

namespace {

// sum_squares_cuda of x (n) starting offset elements into its buffer, against sum_squares_cpu
float gpu_sum_squares(const std::vector<float>& x, size_t offset) {
    std::vector<float> padded(offset, 100.0f);
    padded.insert(padded.end(), x.begin(), x.end());
    DeviceBuffer<float> d(padded), result(1);
    DeviceBuffer<double> scratch(sum_squares_scratch_count(x.size()));
    scratch.poison(), result.poison();
    sum_squares_cuda(result.data(), scratch.data(), d.data() + offset, x.size());
    CUDA_CHECK(cudaDeviceSynchronize());
    return result.download()[0];
}

}  // namespace

TEST(SumSquaresCuda, MatchesCpu) {
    LLMQ_REQUIRE_GPU();
    Rng rng(9);
    // one block, several, and the largest grid (1024 blocks from 4M elements on) striding several times
    for (size_t n : {(size_t)1, (size_t)3, (size_t)1000, (size_t)(1 << 20) + 5, (size_t)5 * 1000 * 1000 + 7}) {
        for (size_t offset : {(size_t)0, (size_t)1}) {
            const auto x = randn_floats(n, rng, 0.01f);
            const double want = sum_squares_cpu(x.data(), n);
            const float got = gpu_sum_squares(x, offset);
            EXPECT_NEAR(got, want, 1e-6 * want) << "n " << n << " offset " << offset;
        }
    }
}

TEST(SumSquaresCuda, DeterministicAndEmpty) {
    LLMQ_REQUIRE_GPU();
    Rng rng(10);
    const auto x = randn_floats(3 * 1000 * 1000 + 1, rng);
    const float a = gpu_sum_squares(x, 0), b = gpu_sum_squares(x, 0);
    EXPECT_EQ(float_bits(a), float_bits(b));
    EXPECT_EQ(gpu_sum_squares({}, 0), 0.0f);
    EXPECT_EQ(sum_squares_scratch_count(0), 1u);
    EXPECT_LE(sum_squares_scratch_count((size_t)1 << 34), 1024u);
}

// stochastic_round_cuda rebuilds exactly the bf16 copy a step wrote from the step's master and seed (resume)
TEST(AdamwCuda, StochasticRoundCopyEqualsTheStepsCopy) {
    LLMQ_REQUIRE_GPU();
    const size_t n = 50001;
    Rng rng(9);
    const auto w = randn_floats(n, rng), m = randn_floats(n, rng, 0.01f), g = randn_floats(n, rng);
    std::vector<float> v(n);
    for (float& x : v) x = std::fabs(rng.normal()) * 1e-4f;
    DeviceState a(w, m, v, 0);
    a.step(g, Hyper{}, 5, 777);
    DeviceBuffer<bf16> copy(n);
    copy.poison();
    stochastic_round_cuda(copy.data(), a.master.data(), n, 777);
    CUDA_CHECK(cudaDeviceSynchronize());
    const auto want = a.param.download(), got = copy.download();
    EXPECT_EQ(0, std::memcmp(want.data(), got.data(), n * sizeof(bf16)));
}
