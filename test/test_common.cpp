// Tests of kernels/common.h: the error type and the deterministic RNG.
#include <gtest/gtest.h>

#include <cmath>

#include "../kernels/common.h"

using namespace llmq;

TEST(Common, CheckThrowsWithFormattedMessage) {
    try {
        LLMQ_CHECK(1 + 1 == 3, "flag --%s: %d is wrong", "steps", 7);
        FAIL() << "LLMQ_CHECK did not throw";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(), "flag --steps: 7 is wrong");
    }
}

TEST(Common, RngIsDeterministicAndRestorable) {
    Rng a(42), b(42);
    for (int i = 0; i < 100; i++) ASSERT_EQ(a.next_u64(), b.next_u64());
    Rng c(a.state);  // restoring the state continues the same stream
    EXPECT_EQ(a.next_u64(), c.next_u64());
}

TEST(Common, RngNormalHasUnitMoments) {
    Rng r(7);
    double s = 0, s2 = 0;
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        double x = r.normal();
        s += x;
        s2 += x * x;
    }
    EXPECT_NEAR(s / n, 0.0, 0.01);
    EXPECT_NEAR(s2 / n, 1.0, 0.02);
    for (int i = 0; i < 1000; i++) {
        float u = r.uniform();
        ASSERT_GE(u, 0.0f);
        ASSERT_LT(u, 1.0f);
    }
}

TEST(Common, FormatHasNoLengthLimit) {
    std::string long_arg(10000, 'x');
    std::string s = format("<%s>", long_arg.c_str());
    ASSERT_EQ(s.size(), long_arg.size() + 2);
    EXPECT_EQ(s.front(), '<');
    EXPECT_EQ(s.back(), '>');
    EXPECT_EQ(format("%d-%s", 7, "ok"), "7-ok");
}
