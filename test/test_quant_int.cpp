// Tests of quant/intq.h: INT4/3/2 symmetric and asymmetric group-wise quantization: hand-picked values on
// exact grids (including round-half-to-even ties and the clamp), packing bytes, round-trip error <= scale/2
// on random weights, storage formulas and bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "../quant/intq.h"
#include "quant_test_util.h"

using namespace llmq;
using llmq_test::expect_error;

static std::vector<uint8_t> codes_of(const QuantizedTensor& q) {
    std::vector<uint8_t> c(q.numel());
    unpack_codes(q.codes.data(), c.size(), code_bits(q.spec.format), c.data());
    return c;
}

TEST(QuantInt, Int4SymmetricHandPicked) {
    // absmax 7.5 -> scale = 2 * 7.5 / 15 = 1 exactly, zero = 8
    std::vector<float> w(64, 0.0f);
    const float x[8] = {7.5f, -7.5f, 2.5f, 3.5f, -2.5f, 0.4f, -0.6f, 1.0f};
    std::copy(x, x + 8, w.begin());
    QuantizedTensor q = quantize_int_cpu(w.data(), 1, 64, QuantSpec{QuantFormat::INT4, 64, true});
    ASSERT_EQ(q.scales.size(), 1u);
    EXPECT_EQ(q.scales[0], 1.0f);
    EXPECT_TRUE(q.zeros.empty());
    // 7.5 -> round 8 (even) + 8 = 16, clamped to 15; -7.5 -> -8 + 8 = 0; 2.5 -> 2 (even); 3.5 -> 4; -2.5 -> -2
    const uint8_t expected[8] = {15, 0, 10, 12, 6, 8, 7, 9};
    std::vector<uint8_t> c = codes_of(q);
    for (int k = 0; k < 8; k++) EXPECT_EQ(c[k], expected[k]) << "element " << k;
    EXPECT_EQ(q.codes[0], 0xF0);  // first element high nibble
    std::vector<float> out = llmq_test::poisoned(64);
    dequantize_cpu(q, out.data());
    const float deq[8] = {7.0f, -8.0f, 2.0f, 4.0f, -2.0f, 0.0f, -1.0f, 1.0f};
    for (int k = 0; k < 8; k++) EXPECT_EQ(out[k], deq[k]) << "element " << k;
}

TEST(QuantInt, Int4AsymmetricHandPicked) {
    // range [-1, 14] -> scale = 15 / 15 = 1, zero = round(1 / 1) = 1
    std::vector<float> w(64, 3.0f);
    const float x[6] = {-1.0f, 14.0f, 0.5f, 1.5f, 6.2f, -0.7f};
    std::copy(x, x + 6, w.begin());
    QuantizedTensor q = quantize_int_cpu(w.data(), 1, 64, QuantSpec{QuantFormat::INT4, 64, false});
    ASSERT_EQ(q.zeros.size(), 1u);
    EXPECT_EQ(q.scales[0], 1.0f);
    EXPECT_EQ(q.zeros[0], 1);
    const uint8_t expected[6] = {0, 15, 1, 3, 7, 0};  // 0.5 -> 0 (even), 1.5 -> 2 (even), -0.7 -> -1
    std::vector<uint8_t> c = codes_of(q);
    for (int k = 0; k < 6; k++) EXPECT_EQ(c[k], expected[k]) << "element " << k;
    std::vector<float> out = llmq_test::poisoned(64);
    dequantize_cpu(q, out.data());
    EXPECT_EQ(out[2], 0.0f);
    EXPECT_EQ(out[4], 6.0f);
    EXPECT_EQ(out[10], 3.0f);
}

TEST(QuantInt, Int2AndInt3PackingBytes) {
    // INT2 symmetric: absmax 1.5 -> scale = 3 / 3 = 1, zero 2: -1.5, -1, 0, 1 -> codes 0, 1, 2, 3
    std::vector<float> w2(64, 0.0f);
    const float x2[4] = {-1.5f, -1.0f, 0.0f, 1.0f};
    std::copy(x2, x2 + 4, w2.begin());
    QuantizedTensor q2 = quantize_int_cpu(w2.data(), 1, 64, QuantSpec{QuantFormat::INT2, 64, true});
    ASSERT_EQ(q2.codes.size(), 16u);
    EXPECT_EQ(q2.scales[0], 1.0f);
    EXPECT_EQ(q2.codes[0], 0x1B);  // 00 01 10 11
    EXPECT_EQ(q2.codes[1], 0xAA);  // four zeros -> code 2 each
    // INT3 symmetric: absmax 3.5 -> scale = 7 / 7 = 1, zero 4: -3.5 .. 3 -> codes 0 .. 7
    std::vector<float> w3(64, 0.0f);
    const float x3[8] = {-3.5f, -3.0f, -2.0f, -1.0f, 0.0f, 1.0f, 2.0f, 3.0f};
    std::copy(x3, x3 + 8, w3.begin());
    QuantizedTensor q3 = quantize_int_cpu(w3.data(), 1, 64, QuantSpec{QuantFormat::INT3, 64, true});
    ASSERT_EQ(q3.codes.size(), 24u);
    EXPECT_EQ(q3.scales[0], 1.0f);
    EXPECT_EQ(q3.codes[0], 0x05);  // 24-bit word 000 001 010 011 100 101 110 111 = 0x053977
    EXPECT_EQ(q3.codes[1], 0x39);
    EXPECT_EQ(q3.codes[2], 0x77);
    EXPECT_EQ(q3.codes[3], 0x92);  // eight zeros = code 4: 100 100 100 100 100 100 100 100 = 0x924924
    EXPECT_EQ(q3.codes[4], 0x49);
    EXPECT_EQ(q3.codes[5], 0x24);
}

TEST(QuantInt, RoundTripWithinHalfScale) {
    llmq::Rng rng(31337);
    const int64_t rows = 12, cols = 256;
    for (QuantFormat f : {QuantFormat::INT4, QuantFormat::INT3, QuantFormat::INT2})
        for (bool sym : {true, false})
            for (int group : {64, 128}) {
                const int maxq = (1 << code_bits(f)) - 1;
                std::vector<float> w = llmq_test::normal_vector(rng, rows * cols, 0.02f);
                for (int64_t c = 0; c < cols; c++) w[5 * cols + c] = std::fabs(w[5 * cols + c]);  // a one-signed row
                for (int64_t c = 0; c < 64; c++) w[7 * cols + c] = 0.0f;                        // an all-zero group
                QuantSpec spec{f, group, sym};
                QuantizedTensor q = quantize_cpu(w.data(), rows, cols, spec);
                ASSERT_EQ(q.scales.size(), (size_t)rows * cols / group);
                ASSERT_EQ(q.zeros.size(), sym ? 0u : (size_t)rows * cols / group);
                EXPECT_EQ(tensor_bytes(q), storage_bytes(spec, rows, cols));
                std::vector<float> out = llmq_test::poisoned(rows * cols);
                dequantize_cpu(q, out.data());
                std::vector<uint8_t> c = codes_of(q);
                double worst = 0;
                for (int64_t i = 0; i < rows * cols; i++) {
                    int64_t g = (i / cols) * (cols / group) + (i % cols) / group;  // per-row groups
                    float scale = q.scales[g], zero = sym ? (float)(1 << (code_bits(f) - 1)) : q.zeros[g];
                    ASSERT_LE(c[i], maxq);
                    ASSERT_EQ(out[i], scale * ((float)c[i] - zero));
                    double err = std::fabs((double)out[i] - w[i]);
                    ASSERT_LE(err, 0.5 * scale * (1 + 1e-5)) << format_name(f) << (sym ? " sym" : " asym") << " i=" << i;
                    worst = std::max(worst, err / scale);
                }
                for (int64_t k = 7 * cols; k < 7 * cols + 64; k++) ASSERT_EQ(out[k], 0.0f);
                EXPECT_GT(worst, 0.3) << "the error bound should be nearly reached";
            }
}

TEST(QuantInt, StorageFormulas) {
    EXPECT_EQ(bits_per_weight(QuantSpec{QuantFormat::INT4, 64, true}), 4.5);
    EXPECT_EQ(bits_per_weight(QuantSpec{QuantFormat::INT4, 64, false}), 4.625);
    EXPECT_EQ(bits_per_weight(QuantSpec{QuantFormat::INT3, 128, false}), 3.0 + 40.0 / 128);
    EXPECT_EQ(bits_per_weight(QuantSpec{QuantFormat::INT2, 64, true}), 2.5);
    EXPECT_EQ(storage_bytes(QuantSpec{QuantFormat::INT3, 64, false}, 4, 128), 4 * 128 * 3 / 8 + 8 * 5u);
}

TEST(QuantInt, BadInputErrors) {
    std::vector<float> w(8 * 96, 0.25f);
    expect_error([&] { quantize_int_cpu(w.data(), 8, 96, QuantSpec{QuantFormat::INT4, 64}); },
                 {"int4", "group size 64", "(8, 96)"});
    expect_error([&] { quantize_int_cpu(w.data(), 8, 96, QuantSpec{QuantFormat::INT3, 48}); }, {"block size 48"});
    expect_error([&] { quantize_int_cpu(w.data(), 8, 96, QuantSpec{QuantFormat::NF4, 32}); }, {"nf4"});
    expect_error([&] { quantize_int_cpu(w.data(), 8, 96, QuantSpec{QuantFormat::INT2, 32, true, true}); },
                 {"int2", "double quantization"});
    w[3] = INFINITY;
    expect_error([&] { quantize_int_cpu(w.data(), 8, 96, QuantSpec{QuantFormat::INT2, 32}); }, {"non-finite", "col 3"});
    QuantizedTensor q = quantize_int_cpu(w.data() + 96, 2, 96, QuantSpec{QuantFormat::INT4, 32, false});
    q.zeros.pop_back();
    std::vector<float> out(2 * 96);
    expect_error([&] { dequantize_cpu(q, out.data()); }, {"int4", "zeros"});
}
