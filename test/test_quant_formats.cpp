// Tests of quant/formats.h and quant/fourbit.h: NF4/FP4 code tables, nearest-code quantization and its
// tie rule, the packing order, round-trip error bounds, double quantization and the storage formulas.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "../quant/dynamic_map.h"
#include "../quant/fourbit.h"
#include "quant_test_util.h"

using namespace llmq;
using llmq_test::expect_error;

// methods.md, "4-bit weights": the NF4 code, index = 4-bit value
static const double kNF4Expected[16] = {
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0};

TEST(QuantFormats, NF4CodeTableIsExact) {
    for (int i = 0; i < 16; i++) EXPECT_EQ(kNF4Code[i], (float)kNF4Expected[i]) << "code " << i;
    EXPECT_EQ(fourbit_code(QuantFormat::NF4), kNF4Code);
}

TEST(QuantFormats, FP4CodeTableIsExact) {
    // methods.md (rounded): bit 3 sign; magnitudes for 0b000..0b111
    const double rounded[8] = {0, 0.0052083, 0.6667, 1.0, 0.3333, 0.5, 0.16667, 0.25};
    const double exact[8] = {0, 1.0 / 192, 2.0 / 3, 1.0, 1.0 / 3, 0.5, 1.0 / 6, 0.25};
    for (int i = 0; i < 8; i++) {
        EXPECT_NEAR(kFP4Code[i], rounded[i], 5e-5) << "code " << i;
        EXPECT_EQ(kFP4Code[i], (float)exact[i]) << "code " << i;
        EXPECT_EQ(kFP4Code[i + 8], -(float)exact[i]) << "code " << i + 8;
        EXPECT_TRUE(std::signbit(kFP4Code[i + 8])) << "code " << i + 8;
    }
}

// Index of the nearest code by linear scan: the independent reference of quantize_4bit_value.
static float distance_to_code(const float* code, float x, int q) { return std::fabs((double)x - code[q]); }

TEST(QuantFormats, NF4HandPickedValuesAndTie) {
    // block of 64 with absmax 2 (the element -2.0): x / 2 is the normalised value
    std::vector<float> w(64, 0.0f);
    const float tie = kNF4Code[8] / 2;  // exactly halfway between code 7 (0.0) and code 8: exact in fp32
    w[0] = -2.0f;                       // -> -1.0, code 0
    w[1] = 1.0f;                        // 0.5: between 0.4407 (12) and 0.5626 (13), midpoint 0.5017 -> 12
    w[2] = 1.6f;                        // 0.8: below the midpoint 0.8615 of 0.7230 and 1.0 -> 14
    w[3] = 2.0f * tie;                  // exactly the tie -> the LOWER code, 7
    w[4] = 2.0f * std::nextafter(tie, 1.0f);  // just above the tie -> 8
    w[5] = -0.2f;                       // -0.1: between -0.1848 (5) and -0.0911 (6) -> 6
    w[6] = 2.0f * kNF4Code[11];         // exactly a code value -> 11
    w[7] = -1.999f;                     // -0.9995 -> 0
    QuantizedTensor q = quantize_4bit_cpu(w.data(), 1, 64, QuantSpec{QuantFormat::NF4, 64});
    ASSERT_EQ(q.absmax.size(), 1u);
    EXPECT_EQ(q.absmax[0], 2.0f);
    const uint8_t expected[8] = {0, 12, 14, 7, 8, 6, 11, 0};
    for (int k = 0; k < 8; k++) EXPECT_EQ(packed_code_at(q.codes.data(), k, 4), expected[k]) << "element " << k;
    for (int k = 8; k < 64; k++) EXPECT_EQ(packed_code_at(q.codes.data(), k, 4), 7) << "zero element " << k;
    // the single-value quantizer agrees, and the tie really is a tie
    EXPECT_EQ(quantize_4bit_value(QuantFormat::NF4, tie), 7);
    EXPECT_EQ(distance_to_code(kNF4Code, tie, 7), distance_to_code(kNF4Code, tie, 8));
}

TEST(QuantFormats, FP4HandPickedValuesAndTie) {
    const float tie = kFP4Code[1] / 2;  // halfway between 0 and 1/192: ties go to the smaller magnitude
    EXPECT_EQ(quantize_4bit_value(QuantFormat::FP4, tie), 0);
    EXPECT_EQ(quantize_4bit_value(QuantFormat::FP4, -tie), 8);  // negative zero
    EXPECT_EQ(quantize_4bit_value(QuantFormat::FP4, std::nextafter(tie, 1.0f)), 1);
    EXPECT_EQ(quantize_4bit_value(QuantFormat::FP4, 1.0f), 3);
    EXPECT_EQ(quantize_4bit_value(QuantFormat::FP4, -1.0f), 11);
    EXPECT_EQ(quantize_4bit_value(QuantFormat::FP4, 0.45f), 5);    // nearest 0.5
    EXPECT_EQ(quantize_4bit_value(QuantFormat::FP4, -0.3f), 12);   // nearest -1/3
    EXPECT_EQ(quantize_4bit_value(QuantFormat::FP4, 0.2f), 6);     // 1/6 (0.1667) nearer than 0.25
    EXPECT_EQ(quantize_4bit_value(QuantFormat::FP4, -0.9f), 11);   // -1 (midpoint with -2/3 is -0.8333)
    EXPECT_EQ(quantize_4bit_value(QuantFormat::FP4, 0.8f), 2);     // 2/3
}

TEST(QuantFormats, PackingPutsFirstElementInHighNibble) {
    std::vector<float> w(64, 0.0f);
    w[0] = 1.0f;   // NF4 code 15
    w[1] = -1.0f;  // NF4 code 0
    w[2] = -1.0f;
    w[3] = 1.0f;
    w[4] = kNF4Code[9];  // code 9
    w[5] = kNF4Code[3];  // code 3
    QuantizedTensor q = quantize_4bit_cpu(w.data(), 2, 32, QuantSpec{QuantFormat::NF4, 64});
    ASSERT_EQ(q.codes.size(), 32u);
    EXPECT_EQ(q.codes[0], 0xF0);
    EXPECT_EQ(q.codes[1], 0x0F);
    EXPECT_EQ(q.codes[2], 0x93);
    EXPECT_EQ(q.codes[3], 0x77);  // two zeros
}

TEST(QuantFormats, PackCodesBitStreams) {
    const uint8_t two[4] = {3, 0, 1, 2};
    uint8_t byte = 0;
    pack_codes(two, 4, 2, &byte);
    EXPECT_EQ(byte, 0xC6);  // 11 00 01 10
    const uint8_t three[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    uint8_t word[3] = {0, 0, 0};
    pack_codes(three, 8, 3, word);  // 000 001 010 011 100 101 110 111 = 0x053977
    EXPECT_EQ(word[0], 0x05);
    EXPECT_EQ(word[1], 0x39);
    EXPECT_EQ(word[2], 0x77);
    llmq::Rng rng(11);
    for (int bits : {2, 3, 4}) {
        const size_t n = 8 * 37;
        std::vector<uint8_t> codes(n), packed(n * bits / 8), back(n, 0xFF);
        for (auto& c : codes) c = (uint8_t)rng.below(1u << bits);
        pack_codes(codes.data(), n, bits, packed.data());
        unpack_codes(packed.data(), n, bits, back.data());
        EXPECT_EQ(codes, back) << bits << "-bit";
    }
}

// Round trip on random weights: every element got the nearest code (checked by linear scan) and is
// within half the largest code gap times its block absmax.
TEST(QuantFormats, FourBitRoundTripIsNearestAndBounded) {
    llmq::Rng rng(2024);
    const int64_t rows = 24, cols = 128;
    for (QuantFormat f : {QuantFormat::NF4, QuantFormat::FP4}) {
        const float* code = fourbit_code(f);
        std::vector<float> sorted(code, code + 16);
        std::sort(sorted.begin(), sorted.end());
        double max_gap = 0;
        for (int i = 0; i < 15; i++) max_gap = std::max(max_gap, (double)sorted[i + 1] - sorted[i]);
        for (int block : {64, 128, 256}) {
            std::vector<float> w = llmq_test::normal_vector(rng, rows * cols, 0.02f);
            QuantizedTensor q = quantize_4bit_cpu(w.data(), rows, cols, QuantSpec{f, block});
            ASSERT_EQ(q.codes.size(), (size_t)rows * cols / 2);
            ASSERT_EQ(q.absmax.size(), (size_t)rows * cols / block);
            std::vector<float> out = llmq_test::poisoned(rows * cols);
            dequantize_cpu(q, out.data());
            double worst = 0;
            for (int64_t i = 0; i < rows * cols; i++) {
                float a = q.absmax[i / block];
                int c = packed_code_at(q.codes.data(), i, 4);
                float normalised = w[i] * (1.0f / a);
                for (int k = 0; k < 16; k++)
                    ASSERT_LE(distance_to_code(code, normalised, c), distance_to_code(code, normalised, k))
                        << format_name(f) << " element " << i << " code " << c << " vs " << k;
                ASSERT_EQ(out[i], code[c] * a);
                double err = std::fabs((double)out[i] - w[i]);
                ASSERT_LE(err, 0.5 * max_gap * a * (1 + 1e-6)) << format_name(f) << " element " << i;
                worst = std::max(worst, err / a);
            }
            EXPECT_GT(worst, 0.0);
        }
    }
}

TEST(QuantFormats, ZeroBlockDequantizesToZero) {
    llmq::Rng rng(5);
    std::vector<float> w = llmq_test::normal_vector(rng, 128);
    std::fill(w.begin() + 64, w.end(), 0.0f);
    for (QuantFormat f : {QuantFormat::NF4, QuantFormat::FP4}) {
        QuantizedTensor q = quantize_4bit_cpu(w.data(), 2, 64, QuantSpec{f, 64});
        std::vector<float> out = llmq_test::poisoned(128);
        dequantize_cpu(q, out.data());
        EXPECT_EQ(q.absmax[1], 0.0f);
        for (int i = 64; i < 128; i++) ASSERT_EQ(out[i], 0.0f) << format_name(f);
        EXPECT_GT(*std::max_element(out.begin(), out.begin() + 64), 0.0f);
    }
}

TEST(QuantFormats, DoubleQuantizedAbsmaxIsCloseAndSmall) {
    llmq::Rng rng(77);
    const DynamicMap& map = dynamic_map_signed();
    double map_gap = 0;
    for (int i = 0; i < 255; i++) map_gap = std::max(map_gap, (double)map[i + 1] - map[i]);
    // 640 x 256 / 64 = 2560 blocks = 10 full groups of 256; 96 x 200 / 64 = 300 blocks: one partial group
    // NF4 on 640 x 256, FP4 on 96 x 200
    for (auto shape : {std::pair<int64_t, int64_t>{640, 256}, {96, 200}}) {
        const int64_t rows = shape.first, cols = shape.second, n = rows * cols;
        const QuantFormat f = rows == 640 ? QuantFormat::NF4 : QuantFormat::FP4;
        std::vector<float> w = llmq_test::normal_vector(rng, n, 0.02f);
        QuantSpec plain{f, 64}, dq{f, 64, true, true};
        QuantizedTensor qp = quantize_4bit_cpu(w.data(), rows, cols, plain);
        QuantizedTensor qd = quantize_4bit_cpu(w.data(), rows, cols, dq);
        const size_t blocks = n / 64, groups = (blocks + 255) / 256;
        ASSERT_TRUE(qd.absmax.empty());
        ASSERT_EQ(qd.absmax_codes.size(), blocks);
        ASSERT_EQ(qd.absmax_scales.size(), groups);
        EXPECT_EQ(qd.codes, qp.codes);  // the weight codes use the exact absmax
        double mean = 0;
        for (float a : qp.absmax) mean += a;
        EXPECT_NEAR(qd.absmax_offset, mean / blocks, 1e-6 * mean / blocks);
        std::vector<float> approx = block_absmax(qd);
        double worst_rel = 0;
        for (size_t i = 0; i < blocks; i++) {
            double err = std::fabs((double)approx[i] - qp.absmax[i]);
            ASSERT_LE(err, 0.5 * map_gap * qd.absmax_scales[i / 256] * (1 + 1e-5) + 1e-9) << "block " << i;
            worst_rel = std::max(worst_rel, err / qp.absmax[i]);
        }
        // measured ~0.5-1% for N(0, 0.02) weights (the per-block bound above is the exact check)
        EXPECT_LT(worst_rel, 0.02) << "absmax relative error after double quantization";
        std::printf("[          ] %s (%lld, %lld) double-quant absmax: max relative error %.5f\n", format_name(f), (long long)rows,
                    (long long)cols, worst_rel);
        std::vector<float> out = llmq_test::poisoned(n);
        dequantize_cpu(qd, out.data());
        for (int64_t i = 0; i < n; i++) ASSERT_EQ(out[i], fourbit_code(f)[packed_code_at(qd.codes.data(), i, 4)] * approx[i / 64]);
        // storage: the formula and the actual buffers agree
        EXPECT_EQ(storage_bytes(plain, rows, cols), tensor_bytes(qp));
        EXPECT_EQ(storage_bytes(dq, rows, cols), tensor_bytes(qd));
        EXPECT_EQ(tensor_bytes(qp) * 8.0 / n, 4.5);
        if (blocks % 256 == 0) {
            EXPECT_NEAR(tensor_bytes(qd) * 8.0 / n, 4.127, 0.001);
        }
    }
    EXPECT_EQ(bits_per_weight(QuantSpec{QuantFormat::NF4, 64}), 4.5);
    EXPECT_EQ(bits_per_weight(QuantSpec{QuantFormat::NF4, 64, true, true}), 4.0 + 8.0 / 64 + 32.0 / (64 * 256));
    EXPECT_NEAR(bits_per_weight(QuantSpec{QuantFormat::NF4, 64, true, true}), 4.127, 0.0005);
    EXPECT_EQ(bits_per_weight(QuantSpec{QuantFormat::FP4, 128}), 4.25);
}

TEST(QuantFormats, BadInputErrors) {
    std::vector<float> w(96 * 64, 0.5f);
    expect_error([&] { quantize_4bit_cpu(w.data(), 96, 64, QuantSpec{QuantFormat::NF4, 48}); }, {"nf4", "block size 48"});
    expect_error([&] { quantize_4bit_cpu(w.data(), 96, 64, QuantSpec{QuantFormat::NF4, 16}); }, {"block size 16"});
    expect_error([&] { quantize_4bit_cpu(w.data(), 3, 40, QuantSpec{QuantFormat::FP4, 64}); },
                 {"fp4", "block size 64", "(3, 40)"});
    expect_error([&] { quantize_4bit_cpu(w.data(), 0, 64, QuantSpec{QuantFormat::NF4, 64}); }, {"(0, 64)"});
    expect_error([&] { quantize_4bit_cpu(w.data(), 96, 64, QuantSpec{QuantFormat::INT4, 64}); }, {"int4"});
    w[100] = std::nanf("");
    expect_error([&] { quantize_4bit_cpu(w.data(), 96, 64, QuantSpec{QuantFormat::NF4, 64}); },
                 {"non-finite", "row 1 col 36"});
    expect_error([] { parse_format("nf5", "--format"); }, {"--format", "nf5"});
    EXPECT_EQ(parse_format("int3", "--format"), QuantFormat::INT3);
    expect_error([] { fourbit_code(QuantFormat::INT2); }, {"int2"});
    // a damaged double-quantized tensor
    std::fill(w.begin(), w.end(), 0.5f);
    QuantizedTensor q = quantize_4bit_cpu(w.data(), 96, 64, QuantSpec{QuantFormat::NF4, 64, true, true});
    q.absmax_scales.clear();
    std::vector<float> out(96 * 64);
    expect_error([&] { dequantize_cpu(q, out.data()); }, {"nf4", "0 scales"});
}
