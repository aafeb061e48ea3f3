// GPU tests of quant/fourbit.cu against the CPU references (quant/fourbit_cpu.cpp, kernels/matmul_cpu.cpp):
//   dequantize: bit-exact with bf16(dequantize_4bit_cpu), vector and unaligned (scalar) paths, double quant;
//   quantize: codes and absmax bitwise equal to quantize_4bit_cpu on random weights and on constructed exact
//             ties (x / absmax exactly a midpoint of two code values), NF4 and FP4, several block sizes;
//   fused matmuls: forward and backward-input vs the fp32 CPU product of the bf16 inputs and the bf16-rounded
//             dequantized weight, on the 60m shapes (C 512 / hidden 1376: blocks spanning rows, a partial
//             128-column tile), tail rows (N = 37, 130), a partial K step (C = 80), accumulate mode into
//             random values, determinism, and the argument checks.
#include <algorithm>
#include <cstring>
#include <limits>

#include "../kernels/matmul.h"
#include "../quant/fourbit.h"
#include "../quant/fourbit_cuda.h"
#include "gpu_test_util.h"

using namespace llmq;
using namespace llmq::test;

namespace {

std::vector<uint16_t> bf16_bits(const std::vector<bf16>& x) {
    std::vector<uint16_t> b(x.size());
    for (size_t i = 0; i < x.size(); i++) b[i] = static_cast<__nv_bfloat16_raw>(x[i]).x;
    return b;
}
std::vector<uint32_t> float_bits(const std::vector<float>& x) {
    std::vector<uint32_t> b(x.size());
    std::memcpy(b.data(), x.data(), x.size() * 4);
    return b;
}

// Normal weights whose scale varies from row to row (as trained weights' rows do), an all-zero block at the
// start and a block of tiny values with a negative zero after it, when the tensor is big enough.
std::vector<float> test_weights(int64_t rows, int64_t cols, int block, Rng& rng) {
    std::vector<float> w(rows * cols);
    for (int64_t r = 0; r < rows; r++) {
        const float scale = 0.02f * (1.0f + 4.0f * rng.uniform());
        for (int64_t c = 0; c < cols; c++) w[r * cols + c] = scale * rng.normal();
    }
    if ((int64_t)w.size() >= 3 * block) {
        for (int i = 0; i < block; i++) w[i] = 0.0f;
        for (int i = block; i < 2 * block; i++) w[i] = 1e-30f * rng.normal();
        w[block + 3] = -0.0f;
    }
    return w;
}

// The first index where two equally long vectors differ, or -1.
template <typename T>
long first_difference(const std::vector<T>& a, const std::vector<T>& b) {
    if (a.size() != b.size()) return 0;
    for (size_t i = 0; i < a.size(); i++)
        if (a[i] != b[i]) return (long)i;
    return -1;
}

// Every element within bf16 rounding of the reference (1% of itself, plus 0.1% of the RMS for values near 0),
// besides the norm-wise check: one wrong tile corner or chunk fails here even when the norm hides it.
void expect_each_close(const std::string& name, const std::vector<float>& got, const std::vector<float>& want) {
    expect_rel_close(name, got, want, 1e-2);
    double ss = 0;
    for (float v : want) ss += (double)v * v;
    const double rms = std::sqrt(ss / want.size());
    for (size_t i = 0; i < got.size(); i++)
        ASSERT_LE(std::fabs((double)got[i] - want[i]), 1e-2 * std::fabs(want[i]) + 1e-3 * rms)
            << name << "[" << i << "]: got " << got[i] << ", want " << want[i];
}

struct MatmulCase {
    int N, C, OC;
    QuantFormat format;
    int block;
    bool double_quant;
    std::string name() const {
        return llmq::format("%s N=%d C=%d OC=%d block %d%s", format_name(format), N, C, OC, block,
                            double_quant ? " double-quant" : "");
    }
};

const MatmulCase kMatmulCases[] = {
    {37, 512, 1376, QuantFormat::NF4, 64, false},   // 60m gate/up: tail rows, OC = 10 x 128 + 96
    {130, 1376, 512, QuantFormat::FP4, 64, false},  // 60m down: 1376 % 64 = 32, blocks span rows; 2 row tiles
    {65, 80, 48, QuantFormat::NF4, 32, true},       // K = 2 x 32 + 16: a half K step; OC < one tile
    {256, 512, 512, QuantFormat::NF4, 128, false},  // whole tiles only
};

// A quantized weight (OC, C) on both sides and its bf16-rounded dequantized value, the GPU's operand.
struct TestWeight {
    QuantizedTensor q;
    std::vector<float> dequant;  // (OC, C) bf16-rounded
    DeviceQuantizedTensor dev;
};
TestWeight make_weight(const MatmulCase& mc, Rng& rng) {
    const auto w = test_weights(mc.OC, mc.C, mc.block, rng);
    TestWeight t;
    t.q = quantize_4bit_cpu(w.data(), mc.OC, mc.C, QuantSpec{mc.format, mc.block, true, mc.double_quant});
    t.dequant.resize(w.size());
    dequantize_4bit_cpu(t.q, t.dequant.data());
    t.dequant = bf16_rounded(t.dequant);
    t.dev = DeviceQuantizedTensor(t.q);
    return t;
}

}  // namespace

TEST(FourbitCuda, DequantizeMatchesCpuBitExactly) {
    LLMQ_REQUIRE_GPU();
    struct Case {
        QuantFormat format;
        int64_t rows, cols;
        int block;
        bool double_quant;
    } cases[] = {{QuantFormat::NF4, 37, 192, 64, false},
                 {QuantFormat::FP4, 512, 1376, 64, false},
                 {QuantFormat::NF4, 48, 80, 32, true},
                 {QuantFormat::FP4, 3, 2048, 256, true}};
    Rng rng(11);
    for (const Case& c : cases) {
        SCOPED_TRACE(llmq::format("%s (%lld, %lld) block %d", format_name(c.format), (long long)c.rows,
                                  (long long)c.cols, c.block));
        const auto w = test_weights(c.rows, c.cols, c.block, rng);
        const QuantizedTensor q =
            quantize_4bit_cpu(w.data(), c.rows, c.cols, QuantSpec{c.format, c.block, true, c.double_quant});
        std::vector<float> ref(q.numel());
        dequantize_4bit_cpu(q, ref.data());
        const auto want = bf16_bits(to_bf16(ref));
        const DeviceQuantizedTensor dq(q);
        const size_t n = q.numel();

        DeviceBuffer<bf16> out(n + 1);
        out.poison();
        dequantize_4bit_cuda(out.data(), dq);  // the 128-bit path
        CUDA_CHECK(cudaDeviceSynchronize());
        auto got = bf16_bits(out.download());
        EXPECT_EQ(got.back(), 0xFFFF) << "wrote past the end of the output";
        got.pop_back();
        EXPECT_EQ(first_difference(got, want), -1);

        // unaligned output and codes: the scalar path
        std::vector<uint8_t> shifted_codes(q.codes.size() + 1, 0x5A);
        std::copy(q.codes.begin(), q.codes.end(), shifted_codes.begin() + 1);
        DeviceBuffer<uint8_t> codes(shifted_codes);
        out.poison();
        dequantize_4bit_cuda(out.data() + 1, codes.data() + 1, dq.absmax.data(), dq.code.data(), c.rows, c.cols,
                             c.block);
        CUDA_CHECK(cudaDeviceSynchronize());
        got = bf16_bits(out.download());
        EXPECT_EQ(got[0], 0xFFFF) << "wrote before the start of the output";
        EXPECT_EQ(first_difference(std::vector<uint16_t>(got.begin() + 1, got.end()), want), -1);
    }
}

TEST(FourbitCuda, QuantizeMatchesCpuBitwise) {
    LLMQ_REQUIRE_GPU();
    struct Case {
        QuantFormat format;
        int64_t rows, cols;
        int block;
    } cases[] = {{QuantFormat::NF4, 37, 192, 64},   {QuantFormat::FP4, 37, 192, 64}, {QuantFormat::NF4, 512, 1376, 64},
                 {QuantFormat::FP4, 1376, 512, 64}, {QuantFormat::NF4, 48, 80, 32},  {QuantFormat::FP4, 9, 1024, 256}};
    Rng rng(12);
    for (const Case& c : cases) {
        SCOPED_TRACE(llmq::format("%s (%lld, %lld) block %d", format_name(c.format), (long long)c.rows,
                                  (long long)c.cols, c.block));
        const auto w = test_weights(c.rows, c.cols, c.block, rng);
        const QuantizedTensor want = quantize_4bit_cpu(w.data(), c.rows, c.cols, QuantSpec{c.format, c.block});
        DeviceBuffer<float> wd(w);
        DeviceQuantizedTensor dq(c.format, c.rows, c.cols, c.block);
        dq.codes.poison();
        dq.absmax.poison();
        quantize_4bit_cuda(dq, wd.data());
        CUDA_CHECK(cudaDeviceSynchronize());
        const QuantizedTensor got = dq.download();
        EXPECT_EQ(first_difference(got.codes, want.codes), -1) << "code byte";
        EXPECT_EQ(first_difference(float_bits(got.absmax), float_bits(want.absmax)), -1) << "absmax";
    }
}

// Weights built so that x * (1/absmax) lands exactly on, or one ulp either side of, the midpoints between
// code values: the cases where a float (not double) comparison or a different rounding would flip the code.
TEST(FourbitCuda, QuantizeExactTiesMatchCpu) {
    LLMQ_REQUIRE_GPU();
    const int block = 64;
    for (QuantFormat f : {QuantFormat::NF4, QuantFormat::FP4}) {
        SCOPED_TRACE(format_name(f));
        const float* code = fourbit_code(f);
        std::vector<double> sorted(code, code + 16);
        std::sort(sorted.begin(), sorted.end());
        std::vector<double> mids;
        for (int i = 0; i + 1 < 16; i++)
            if (sorted[i] != sorted[i + 1]) mids.push_back((sorted[i] + sorted[i + 1]) * 0.5);
        std::vector<float> values;
        for (float amax : {1.0f, 2.0f, 0.75f, 3.3f, 0.013f}) {
            std::vector<float> cand;
            for (double m : mids) {
                const float x = (float)(m * amax);
                const float inf = std::numeric_limits<float>::infinity();
                for (float v : {x, std::nextafter(x, -inf), std::nextafter(x, inf)})
                    if (std::fabs(v) < amax) cand.push_back(v);
            }
            for (size_t i = 0; i < cand.size(); i += block - 1) {  // blocks of 64 headed by amax itself
                values.push_back(i % 2 ? -amax : amax);
                for (size_t j = i; j < i + block - 1; j++) values.push_back(j < cand.size() ? cand[j] : 0.0f);
            }
        }
        int exact_ties = 0;
        for (size_t b = 0; b < values.size(); b += block) {
            const float inv = 1.0f / std::fabs(values[b]);
            for (int i = 1; i < block; i++) {
                const double x = (double)(values[b + i] * inv);
                exact_ties += std::find(mids.begin(), mids.end(), std::fabs(x)) != mids.end() ||
                              std::find(mids.begin(), mids.end(), x) != mids.end();
            }
        }
        ASSERT_GT(exact_ties, 4) << "the constructed weights hold too few exact ties to test the rule";

        const int64_t cols = block, rows = (int64_t)values.size() / block;
        const QuantizedTensor want = quantize_4bit_cpu(values.data(), rows, cols, QuantSpec{f, block});
        DeviceBuffer<float> wd(values);
        DeviceQuantizedTensor dq(f, rows, cols, block);
        dq.codes.poison();
        dq.absmax.poison();
        quantize_4bit_cuda(dq, wd.data());
        CUDA_CHECK(cudaDeviceSynchronize());
        const QuantizedTensor got = dq.download();
        EXPECT_EQ(first_difference(got.codes, want.codes), -1) << "code byte (" << exact_ties << " exact ties)";
        EXPECT_EQ(first_difference(float_bits(got.absmax), float_bits(want.absmax)), -1) << "absmax";
    }
}

TEST(FourbitCuda, ForwardMatchesCpu) {
    LLMQ_REQUIRE_GPU();
    Rng rng(13);
    for (const MatmulCase& mc : kMatmulCases) {
        SCOPED_TRACE(mc.name());
        const TestWeight w = make_weight(mc, rng);
        const auto inp = bf16_rounded(randn_floats((size_t)mc.N * mc.C, rng));
        std::vector<float> want((size_t)mc.N * mc.OC);
        matmul_forward_cpu<float>(want.data(), inp.data(), w.dequant.data(), mc.N, mc.C, mc.OC);

        DeviceBuffer<bf16> x(to_bf16(inp)), y(want.size());
        y.poison();
        matmul_4bit_forward_cuda(y.data(), x.data(), w.dev, mc.N, mc.C, mc.OC);
        CUDA_CHECK(cudaDeviceSynchronize());
        expect_each_close("out", from_bf16(y.download()), want);
    }
}

TEST(FourbitCuda, BackwardInputMatchesCpuOverwriteAndAccumulate) {
    LLMQ_REQUIRE_GPU();
    Rng rng(14);
    for (const MatmulCase& mc : kMatmulCases) {
        SCOPED_TRACE(mc.name());
        const TestWeight w = make_weight(mc, rng);
        const size_t n_in = (size_t)mc.N * mc.C;
        const auto dout = bf16_rounded(randn_floats((size_t)mc.N * mc.OC, rng));
        const auto old = bf16_rounded(randn_floats(n_in, rng));
        std::vector<float> product(n_in, 0.0f), accumulated = old;
        matmul_backward_input_cpu<float>(product.data(), dout.data(), w.dequant.data(), mc.N, mc.C, mc.OC);
        matmul_backward_input_cpu<float>(accumulated.data(), dout.data(), w.dequant.data(), mc.N, mc.C, mc.OC);

        DeviceBuffer<bf16> d(to_bf16(dout)), dinp(n_in);
        dinp.poison();
        matmul_4bit_backward_input_cuda(dinp.data(), d.data(), w.dev, mc.N, mc.C, mc.OC, false);
        CUDA_CHECK(cudaDeviceSynchronize());
        expect_each_close("dinp (overwrite)", from_bf16(dinp.download()), product);

        dinp.upload(to_bf16(old));
        matmul_4bit_backward_input_cuda(dinp.data(), d.data(), w.dev, mc.N, mc.C, mc.OC, true);
        CUDA_CHECK(cudaDeviceSynchronize());
        expect_each_close("dinp (accumulate)", from_bf16(dinp.download()), accumulated);
    }
}

TEST(FourbitCuda, MatmulsAndQuantizeAreDeterministic) {
    LLMQ_REQUIRE_GPU();
    Rng rng(15);
    const MatmulCase mc = kMatmulCases[1];
    const TestWeight w = make_weight(mc, rng);
    DeviceBuffer<bf16> x(to_bf16(randn_floats((size_t)mc.N * mc.C, rng))),
        d(to_bf16(randn_floats((size_t)mc.N * mc.OC, rng))), y(x.size() / mc.C * mc.OC), dx(x.size());
    std::vector<uint16_t> first_y, first_dx;
    for (int run = 0; run < 2; run++) {
        y.poison();
        dx.upload(to_bf16(std::vector<float>(dx.size(), 0.5f)));
        matmul_4bit_forward_cuda(y.data(), x.data(), w.dev, mc.N, mc.C, mc.OC);
        matmul_4bit_backward_input_cuda(dx.data(), d.data(), w.dev, mc.N, mc.C, mc.OC, true);
        CUDA_CHECK(cudaDeviceSynchronize());
        if (run == 0) {
            first_y = bf16_bits(y.download()), first_dx = bf16_bits(dx.download());
        } else {
            EXPECT_EQ(first_difference(bf16_bits(y.download()), first_y), -1) << "forward";
            EXPECT_EQ(first_difference(bf16_bits(dx.download()), first_dx), -1) << "backward input";
        }
    }
    const auto wf = test_weights(mc.OC, mc.C, 64, rng);
    DeviceBuffer<float> wd(wf);
    DeviceQuantizedTensor a(QuantFormat::NF4, mc.OC, mc.C), b(QuantFormat::NF4, mc.OC, mc.C);
    quantize_4bit_cuda(a, wd.data());
    quantize_4bit_cuda(b, wd.data());
    EXPECT_EQ(first_difference(a.codes.download(), b.codes.download()), -1);
}

// call() throws llmq::Error whose message contains `part`
template <typename F>
void expect_error_with(F&& call, const std::string& part) {
    try {
        call();
        ADD_FAILURE() << "no llmq::Error thrown; expected one with '" << part << "'";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << "message '" << e.what() << "'";
    }
}

TEST(FourbitCuda, BadArgumentsAreClearErrors) {
    LLMQ_REQUIRE_GPU();
    Rng rng(16);
    const auto wf = test_weights(64, 80, 64, rng);
    const DeviceQuantizedTensor w(quantize_4bit_cpu(wf.data(), 64, 80, QuantSpec{QuantFormat::NF4, 64}));
    const auto wf72 = test_weights(8, 72, 64, rng);
    const DeviceQuantizedTensor w72(quantize_4bit_cpu(wf72.data(), 8, 72, QuantSpec{QuantFormat::FP4, 64}));
    DeviceBuffer<bf16> a(16 * 80), b(16 * 80);
    expect_error_with([&] { matmul_4bit_forward_cuda(b.data(), a.data(), w, 16, 64, 80); }, "the weight is (64, 80)");
    expect_error_with([&] { matmul_4bit_forward_cuda(b.data(), a.data(), w72, 16, 72, 8); },
                      "C 72 must be a positive multiple of 16");
    expect_error_with([&] { matmul_4bit_backward_input_cuda(b.data() + 1, a.data(), w, 16, 80, 64, false); },
                      "16-byte aligned");
    expect_error_with([&] { matmul_4bit_forward_cuda(b.data(), a.data(), w, -1, 80, 64); }, "N -1");
    expect_error_with(
        [&] { dequantize_4bit_cuda(b.data(), w.codes.data(), w.absmax.data(), w.code.data(), 64, 80, 48); },
        "block size 48");
    expect_error_with([&] { DeviceQuantizedTensor(QuantFormat::INT4, 64, 80); }, "int4 is not nf4/fp4");
    // N = 0 is a no-op, not an error
    EXPECT_NO_THROW(matmul_4bit_forward_cuda(b.data(), a.data(), w, 0, 80, 64));
}
