// GPU tests of kernels/embedding.cu against the CPU reference (embedding_cpu.cpp).
//   forward:  a copy, so bitwise equal to the CPU's rows (vectorised and scalar paths, unaligned buffers);
//   backward: into dwte holding random values (it accumulates). The GPU adds each element's rows in the CPU's
//             order, so it must equal embedding_backward_cpu<float> bit for bit, run after run; it is also
//             within fp32 rounding of the double reference. Batches with repeated ids (a padding id that
//             fills most of the batch, one id everywhere), odd C (the last channel chunk partly used, the
//             scalar path), unaligned buffers, a large vocabulary barely touched;
//   the plan: its CSR contents on a small batch, reuse on the next batch, and the check of the ids.
#include <cstring>

#include "../kernels/embedding.h"
#include "../kernels/embedding_cuda.h"
#include "gpu_test_util.h"

using namespace llmq;
using namespace llmq::test;

namespace {

std::vector<int> random_tokens(int N, int V, Rng& rng) {
    std::vector<int> t(N);
    for (int& id : t) id = (int)rng.below(V);
    return t;
}

// elements whose bits differ (NaN != anything), with the first one described
template <typename T>
size_t bit_mismatches(const std::vector<T>& got, const std::vector<T>& want, std::string* first) {
    size_t bad = 0;
    for (size_t i = 0; i < got.size(); i++) {
        if (std::memcmp(&got[i], &want[i], sizeof(T)) == 0) continue;
        if (bad++ == 0 && first) *first = format("[%zu]", i);
    }
    return bad;
}

template <typename T>
std::vector<T> drop_front(const std::vector<T>& x, size_t offset) {
    return std::vector<T>(x.begin() + offset, x.end());
}

void check_forward(int V, int N, int C, size_t offset, uint64_t seed) {
    SCOPED_TRACE(format("forward V %d N %d C %d offset %zu", V, N, C, offset));
    Rng rng(seed);
    const auto wte = bf16_rounded(randn_floats((size_t)V * C, rng));
    const auto tokens = random_tokens(N, V, rng);
    std::vector<float> ref((size_t)N * C);
    embedding_forward_cpu<float>(ref.data(), tokens.data(), wte.data(), N, C);

    std::vector<float> wte_padded(offset, 7.0f);
    wte_padded.insert(wte_padded.end(), wte.begin(), wte.end());
    DeviceBuffer<bf16> dwte(to_bf16(wte_padded)), out((size_t)N * C + offset);
    DeviceBuffer<int> dtokens(tokens);
    out.poison();
    embedding_forward_cuda(out.data() + offset, dtokens.data(), dwte.data() + offset, N, C);
    CUDA_CHECK(cudaDeviceSynchronize());
    const auto got = from_bf16(drop_front(out.download(), offset));
    std::string first;
    EXPECT_EQ(bit_mismatches(got, ref, &first), 0u) << "first at " << first;
}

// dwte0 (V,C) random fp32 += dout scattered by tokens: GPU vs CPU float (bitwise) and double (close), twice
void check_backward(int V, int C, const std::vector<int>& tokens, size_t offset, uint64_t seed) {
    const int N = (int)tokens.size();
    SCOPED_TRACE(format("backward V %d N %d C %d offset %zu", V, N, C, offset));
    Rng rng(seed);
    const auto dout = bf16_rounded(randn_floats((size_t)N * C, rng));
    const auto dwte0 = randn_floats((size_t)V * C, rng);

    std::vector<float> ref = dwte0;
    embedding_backward_cpu<float>(ref.data(), dout.data(), tokens.data(), N, C);
    std::vector<double> ref_d(dwte0.begin(), dwte0.end()), dout_d(dout.begin(), dout.end());
    embedding_backward_cpu<double>(ref_d.data(), dout_d.data(), tokens.data(), N, C);

    EmbeddingBackwardPlan plan;
    plan.build(tokens.data(), N, V);
    std::vector<float> dout_padded(offset, 7.0f), dwte_padded(offset, 7.0f);
    dout_padded.insert(dout_padded.end(), dout.begin(), dout.end());
    dwte_padded.insert(dwte_padded.end(), dwte0.begin(), dwte0.end());
    DeviceBuffer<bf16> ddout(to_bf16(dout_padded));
    std::vector<float> runs[2];
    for (auto& run : runs) {
        DeviceBuffer<float> dwte(dwte_padded);
        embedding_backward_cuda(dwte.data() + offset, ddout.data() + offset, plan, C);
        CUDA_CHECK(cudaDeviceSynchronize());
        const auto all = dwte.download();
        for (size_t i = 0; i < offset; i++) EXPECT_EQ(all[i], 7.0f) << "padding [" << i << "] was written";
        run = drop_front(all, offset);
    }
    std::string first;
    EXPECT_EQ(bit_mismatches(runs[0], ref, &first), 0u) << "not bitwise the CPU's order; first at " << first;
    EXPECT_EQ(bit_mismatches(runs[1], runs[0], &first), 0u) << "two runs differ; first at " << first;
    expect_rel_close("dwte vs double", runs[0], std::vector<float>(ref_d.begin(), ref_d.end()), 1e-5);
    // the part added (dwte - dwte0) against the double reference's, where rounding shows relative to its size
    std::vector<float> added(runs[0].size()), added_d(runs[0].size());
    for (size_t i = 0; i < added.size(); i++) {
        added[i] = (float)((double)runs[0][i] - dwte0[i]);
        added_d[i] = (float)(ref_d[i] - dwte0[i]);
    }
    expect_rel_close("dwte - dwte0 vs double", added, added_d, 1e-5);
}

}  // namespace

TEST(EmbeddingCuda, ForwardCopiesRowsBitwise) {
    LLMQ_REQUIRE_GPU();
    check_forward(1000, 512, 512, 0, 1);   // 60m's C, many repeated ids
    check_forward(64, 77, 4096, 0, 2);     // 7b's C
    check_forward(50, 33, 37, 0, 3);       // C % 8 != 0: the scalar path
    check_forward(300, 129, 512, 1, 4);    // unaligned out and wte: the scalar path
}

TEST(EmbeddingCuda, BackwardMatchesCpuOnModelSizes) {
    LLMQ_REQUIRE_GPU();
    Rng rng(10);
    check_backward(1000, 512, random_tokens(512, 1000, rng), 0, 11);   // 60m's C
    check_backward(256, 2048, random_tokens(300, 256, rng), 0, 12);    // 1b's C, every id repeated
    check_backward(64, 4096, random_tokens(200, 64, rng), 0, 13);      // 7b's C
}

TEST(EmbeddingCuda, BackwardWithPaddingAndRepeatedIds) {
    LLMQ_REQUIRE_GPU();
    Rng rng(20);
    // three quarters of the batch is the padding id 3; C = 520: the last 256-channel chunk has one lane
    std::vector<int> tokens = random_tokens(2048, 500, rng);
    for (int& id : tokens)
        if (rng.below(4) != 0) id = 3;
    check_backward(500, 520, tokens, 0, 21);
    // one id everywhere: a single bucket of 1003 rows (not a multiple of the 8 loaded at a time)
    check_backward(10, 64, std::vector<int>(1003, 7), 0, 22);
    // the last id of the vocabulary only, and a huge vocabulary barely touched (untouched rows stay as they were)
    check_backward(40, 24, std::vector<int>(19, 39), 0, 23);
    check_backward(32000, 64, random_tokens(64, 32000, rng), 0, 24);
}

TEST(EmbeddingCuda, BackwardScalarPath) {
    LLMQ_REQUIRE_GPU();
    Rng rng(30);
    check_backward(100, 37, random_tokens(333, 100, rng), 0, 31);   // C % 8 != 0
    check_backward(100, 512, random_tokens(150, 100, rng), 1, 32);  // unaligned dwte and dout
}

TEST(EmbeddingCuda, PlanGroupsPositionsByIdLargestFirst) {
    LLMQ_REQUIRE_GPU();
    const std::vector<int> tokens = {5, 2, 5, 5, 0, 2};
    EmbeddingBackwardPlan plan;
    plan.build(tokens.data(), (int)tokens.size(), 6);
    EXPECT_EQ(plan.N, 6);
    EXPECT_EQ(plan.V, 6);
    EXPECT_EQ(plan.n_buckets, 3);
    EXPECT_EQ(plan.max_bucket, 3);
    auto head = [](const DeviceBuffer<int>& b, int n) {
        auto all = b.download();
        return std::vector<int>(all.begin(), all.begin() + n);
    };
    EXPECT_EQ(head(plan.bucket_ids, 3), (std::vector<int>{5, 2, 0}));
    EXPECT_EQ(head(plan.bucket_start, 4), (std::vector<int>{0, 3, 5, 6}));
    EXPECT_EQ(head(plan.positions, 6), (std::vector<int>{0, 2, 3, 1, 5, 4}));
    // the next batch of the same N reuses the buffers; ties in size go by id
    const int* ids_before = plan.bucket_ids.data();
    const std::vector<int> next = {1, 4, 4, 1, 3, 3};
    plan.build(next.data(), (int)next.size(), 6);
    EXPECT_EQ(plan.bucket_ids.data(), ids_before);
    EXPECT_EQ(plan.n_buckets, 3);
    EXPECT_EQ(plan.max_bucket, 2);
    EXPECT_EQ(head(plan.bucket_ids, 3), (std::vector<int>{1, 3, 4}));
    EXPECT_EQ(head(plan.bucket_start, 4), (std::vector<int>{0, 2, 4, 6}));
    EXPECT_EQ(head(plan.positions, 6), (std::vector<int>{0, 3, 4, 5, 1, 2}));
}

TEST(EmbeddingCuda, PlanRejectsIdsOutsideTheVocabulary) {
    LLMQ_REQUIRE_GPU();
    EmbeddingBackwardPlan plan;
    const std::vector<int> too_big = {0, 1, 6, 2}, negative = {0, -1};
    EXPECT_THROW(plan.build(too_big.data(), 4, 6), Error);
    EXPECT_THROW(plan.build(negative.data(), 2, 6), Error);
    try {
        plan.build(too_big.data(), 4, 6);
        ADD_FAILURE() << "no exception";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("token 6 at position 2"), std::string::npos) << e.what();
    }
    // an unbuilt plan is refused by the backward
    DeviceBuffer<float> dwte(64);
    DeviceBuffer<bf16> dout(64);
    EXPECT_THROW(embedding_backward_cuda(dwte.data(), dout.data(), EmbeddingBackwardPlan{}, 8), Error);
}
