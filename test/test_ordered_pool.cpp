// Tests of tools/ordered_pool.h: results are consumed in input order for any thread count, no more than
// max_in_flight jobs exist at once, and an exception from any stage stops the pool and reaches the caller.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "../kernels/common.h"
#include "../tools/ordered_pool.h"

using namespace llmq;

namespace {
struct Job {
    int index = -1;
    uint64_t value = 0;
};
}  // namespace

TEST(OrderedPool, ConsumesInOrderWithBoundedJobsInFlight) {
    for (int threads : {1, 2, 5}) {
        const int n = 300;
        const size_t window = 4;
        int next = 0;
        std::atomic<int> in_flight{0}, max_seen{0};
        std::vector<uint64_t> got;
        run_ordered<Job, uint64_t>(
            threads, window,
            [&](Job& j) {
                if (next == n) return false;
                j.index = next++;
                j.value = Rng(j.index).next_u64();
                int now = ++in_flight;
                int m = max_seen.load();
                while (now > m && !max_seen.compare_exchange_weak(m, now)) {
                }
                return true;
            },
            [&](Job& j, uint64_t& r) {
                if (j.value % 7 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));  // reorder finishes
                r = j.value * 3 + 1;
            },
            [&](Job& j, uint64_t& r) {
                EXPECT_EQ(j.index, (int)got.size());
                got.push_back(r);
                --in_flight;
            });
        ASSERT_EQ(got.size(), (size_t)n) << threads << " threads";
        for (int i = 0; i < n; i++) ASSERT_EQ(got[i], Rng(i).next_u64() * 3 + 1);
        EXPECT_LE(max_seen.load(), (int)window);
    }
}

TEST(OrderedPool, ExceptionsFromEveryStageReachTheCaller) {
    for (int stage = 0; stage < 3; stage++) {
        int next = 0, consumed = 0;
        try {
            run_ordered<Job, int>(
                3, 8,
                [&](Job& j) {
                    if (stage == 0 && next == 40) throw Error("produce failed");
                    if (next == 1000) return false;
                    j.index = next++;
                    return true;
                },
                [&](Job& j, int& r) {
                    if (stage == 1 && j.index == 40) throw Error("work failed");
                    r = j.index;
                },
                [&](Job& j, int& r) {
                    if (stage == 2 && j.index == 40) throw Error("consume failed");
                    consumed++;
                });
            ADD_FAILURE() << "no exception from stage " << stage;
        } catch (const Error& e) {
            const char* want[] = {"produce failed", "work failed", "consume failed"};
            EXPECT_STREQ(e.what(), want[stage]);
        }
        EXPECT_LE(consumed, 40) << "jobs after the failing one are not consumed";
        EXPECT_LT(next, 1000) << "the pool stops reading input";
    }
}
