// Tests of quant/dynamic_map.h: the signed and unsigned dynamic 8-bit maps against an independent
// recomputation in double, their extremes, and nearest-code quantization with its tie rule.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "../quant/dynamic_map.h"
#include "quant_test_util.h"

using namespace llmq;

// methods.md: for i = 0..6, n = 2^i (signed) or 2^(i+1) (unsigned) midpoints of linspace(0.1, 1, n+1)
// scaled by 10^(i-6), signed adds the negatives, then 0 and 1 are appended and the list sorted.
// Written differently from the library on purpose: midpoint k is 0.1 + 0.9 (2k+1) / (2n).
static std::vector<double> reference_map(bool is_signed) {
    std::vector<double> v = {0.0, 1.0};
    for (int i = 0; i <= 6; i++) {
        int n = is_signed ? 1 << i : 2 << i;
        for (int k = 0; k < n; k++) {
            double mid = std::pow(10.0, i - 6) * (0.1 + 0.9 * (2 * k + 1) / (2.0 * n));
            v.push_back(mid);
            if (is_signed) v.push_back(-mid);
        }
    }
    std::sort(v.begin(), v.end());
    return v;
}

TEST(DynamicMap, MatchesFormulaAndExtremes) {
    for (bool is_signed : {true, false}) {
        DynamicMap map = create_dynamic_map(is_signed);
        std::vector<double> ref = reference_map(is_signed);
        ASSERT_EQ(ref.size(), 256u);
        for (int i = 0; i < 256; i++) {
            EXPECT_EQ(map[i], (float)ref[i]) << (is_signed ? "signed" : "unsigned") << " index " << i;
            if (i > 0) {
                EXPECT_LT(map[i - 1], map[i]) << "not strictly sorted at " << i;
            }
        }
        EXPECT_EQ(map[255], 1.0f);
        EXPECT_EQ(std::count(map.begin(), map.end(), 0.0f), 1);
    }
    const DynamicMap& s = dynamic_map_signed();
    const DynamicMap& u = dynamic_map_unsigned();
    EXPECT_EQ(s[0], (float)-0.99296875);  // -(1 - 0.9/128)
    EXPECT_NEAR(s[0], -0.99297, 5e-6);
    EXPECT_EQ(s[127], 0.0f);  // 127 negatives below zero
    EXPECT_EQ(s[128], (float)(1e-6 * 0.55));  // smallest positive: i = 0, n = 1
    EXPECT_EQ(s[254], (float)0.99296875);
    EXPECT_EQ(u[0], 0.0f);
    EXPECT_EQ(u[1], (float)(1e-6 * 0.325));  // i = 0, n = 2: midpoints 0.325, 0.775
    EXPECT_EQ(u[254], (float)(1 - 0.9 / 256));
}

// Linear scan: index of the nearest map value, ties to the lower index.
static int nearest_by_scan(const DynamicMap& map, float x) {
    int best = 0;
    for (int i = 1; i < 256; i++)
        if (std::fabs((double)x - map[i]) < std::fabs((double)x - map[best])) best = i;
    return best;
}

TEST(DynamicMap, QuantizeIsNearestWithTiesLow) {
    llmq::Rng rng(99);
    for (bool is_signed : {true, false}) {
        const DynamicMap& map = is_signed ? dynamic_map_signed() : dynamic_map_unsigned();
        for (int t = 0; t < 20000; t++) {
            // magnitudes spread over all seven decades, both signs for the signed map
            float x = std::pow(10.0f, -7.0f * rng.uniform()) * (is_signed && rng.below(2) ? -1.0f : 1.0f);
            ASSERT_EQ(quantize_to_map(map, x), nearest_by_scan(map, x)) << "x = " << x;
        }
        for (int i = 0; i < 256; i++) ASSERT_EQ(quantize_to_map(map, map[i]), i);  // codes are fixed points
        EXPECT_EQ(quantize_to_map(map, 2.0f), 255);                                 // clamps above
        EXPECT_EQ(quantize_to_map(map, -2.0f), 0);                                  // and below
        // an exact tie: a pair of neighbours whose midpoint is an fp32 value
        int ties = 0;
        for (int i = 0; i < 255; i++) {
            double mid = ((double)map[i] + map[i + 1]) / 2;
            if ((double)(float)mid != mid) continue;
            ties++;
            EXPECT_EQ(quantize_to_map(map, (float)mid), i) << "tie between " << i << " and " << i + 1;
            EXPECT_EQ(quantize_to_map(map, std::nextafter((float)mid, 2.0f)), i + 1);
        }
        EXPECT_GT(ties, 0);
    }
}
