// GPU tests of kernels/crossentropy.cu against the CPU reference (crossentropy_cpu.cpp, run in double on the
// bf16-rounded logits): the vocabularies of the models (32000, gpt2's odd 50257, Llama 3's 128256) and small
// ones, rows at every offset from a 16-byte boundary, out of place, in place, loss only, ignored rows (exact
// zeros), an invalid target (NaN, no out-of-bounds read), and bitwise determinism.
// The gradient is compared in two parts: the target entries (grad_scale * (p - 1)) and all the others
// (grad_scale * p), since the target entries alone would dominate one relative norm and hide a wrong softmax.
#include <cstring>

#include "../kernels/crossentropy.h"
#include "../kernels/crossentropy_cuda.h"
#include "gpu_test_util.h"

using namespace llmq;
using namespace llmq::test;

namespace {

const int kIgnore = -100;

enum class Grad { OutOfPlace, InPlace, None, OutOfPlaceMisaligned };

struct Case {
    int N, V;
    float logit_scale = 2.0f;  // larger: peakier softmax
    int offset = 0;            // elements before the logits in their buffer (and before dlogits, except Misaligned)
    Grad grad = Grad::OutOfPlace;
    uint64_t seed = 1;
};

std::vector<int> random_targets(int N, int V, Rng& rng, int every_ignored = 5) {
    std::vector<int> t(N);
    for (int i = 0; i < N; i++) t[i] = i % every_ignored == 3 ? kIgnore : (int)rng.below(V);
    return t;
}

// the device outputs of one call: losses (N), dlogits (N,V) (empty for Grad::None)
struct Outputs {
    std::vector<float> losses, dlogits;
};

Outputs run_gpu(const Case& c, const std::vector<float>& logits, const std::vector<int>& targets, float grad_scale) {
    const size_t NV = (size_t)c.N * c.V;
    std::vector<float> padded(c.offset, 5.0f);
    padded.insert(padded.end(), logits.begin(), logits.end());
    DeviceBuffer<bf16> d_logits(to_bf16(padded));
    // Misaligned: dlogits one element further from a 16-byte boundary than the logits (the scalar path)
    const int grad_offset = c.grad == Grad::OutOfPlaceMisaligned ? c.offset + 1 : c.offset;
    DeviceBuffer<bf16> d_grad(NV + grad_offset);
    d_grad.poison();
    DeviceBuffer<float> d_losses(c.N);
    d_losses.poison();
    DeviceBuffer<int> d_targets(targets);
    bf16* dl = c.grad == Grad::None      ? nullptr
               : c.grad == Grad::InPlace ? d_logits.data() + c.offset
                                         : d_grad.data() + grad_offset;
    crossentropy_forward_backward_cuda(d_losses.data(), dl, d_logits.data() + c.offset, d_targets.data(), c.N, c.V,
                                       kIgnore, grad_scale);
    CUDA_CHECK(cudaDeviceSynchronize());
    Outputs out;
    out.losses = d_losses.download();
    if (c.grad != Grad::None) {
        const auto all = from_bf16(c.grad == Grad::InPlace ? d_logits.download() : d_grad.download());
        const int at = c.grad == Grad::InPlace ? c.offset : grad_offset;
        out.dlogits.assign(all.begin() + at, all.end());
    }
    return out;
}

void check_case(const Case& c) {
    SCOPED_TRACE(testing::Message() << "N " << c.N << " V " << c.V << " offset " << c.offset << " grad "
                                    << (int)c.grad);
    Rng rng(c.seed);
    const size_t NV = (size_t)c.N * c.V;
    const auto logits = bf16_rounded(randn_floats(NV, rng, c.logit_scale));
    const auto targets = random_targets(c.N, c.V, rng);
    int valid = 0;
    for (int t : targets) valid += t != kIgnore;
    const float grad_scale = 1.0f / (float)valid;

    std::vector<double> logits_d(logits.begin(), logits.end()), loss_ref(c.N), grad_ref(NV);
    crossentropy_forward_backward_cpu<double>(loss_ref.data(), grad_ref.data(), logits_d.data(), targets.data(), c.N,
                                              c.V, kIgnore, (double)grad_scale);
    const Outputs got = run_gpu(c, logits, targets, grad_scale);

    for (int i = 0; i < c.N; i++)
        if (targets[i] == kIgnore) EXPECT_EQ(got.losses[i], 0.0f) << "loss of ignored row " << i;
    expect_rel_close("losses", got.losses, std::vector<float>(loss_ref.begin(), loss_ref.end()), 1e-5);
    if (c.grad == Grad::None) return;

    // ignored rows exactly zero; then the target entries and the rest, each against the reference
    std::vector<float> got_target, want_target, got_rest, want_rest;
    for (int i = 0; i < c.N; i++) {
        for (int j = 0; j < c.V; j++) {
            const size_t at = (size_t)i * c.V + j;
            if (targets[i] == kIgnore) {
                ASSERT_EQ(got.dlogits[at], 0.0f) << "dlogits of ignored row " << i << " at " << j;
            } else if (j == targets[i]) {
                got_target.push_back(got.dlogits[at]), want_target.push_back((float)grad_ref[at]);
            } else {
                got_rest.push_back(got.dlogits[at]), want_rest.push_back((float)grad_ref[at]);
            }
        }
    }
    expect_rel_close("dlogits at the targets", got_target, want_target, 1e-2);
    if (c.V > 1) expect_rel_close("dlogits off the targets", got_rest, want_rest, 1e-2);
}

}  // namespace

TEST(CrossentropyCuda, OddVocabularyEveryRowAlignment) {
    LLMQ_REQUIRE_GPU();
    // 50257 = 1 mod 8: consecutive rows start 1 element further from a 16-byte boundary, all 8 offsets in 8 rows
    check_case({37, 50257});
    check_case({19, 50257, 4.0f, 3, Grad::InPlace, 2});
}

TEST(CrossentropyCuda, ModelVocabularies) {
    LLMQ_REQUIRE_GPU();
    check_case({64, 32000, 2.0f, 0, Grad::OutOfPlace, 3});  // 60m..7b (LLaMA 2's tokenizer)
    check_case({8, 128256, 3.0f, 0, Grad::InPlace, 4});     // Llama 3
    check_case({21, 4096, 1.0f, 0, Grad::OutOfPlace, 5});   // the tiny demo's vocabulary
}

TEST(CrossentropyCuda, InPlaceAndLossOnly) {
    LLMQ_REQUIRE_GPU();
    check_case({33, 32003, 2.0f, 0, Grad::InPlace, 6});
    check_case({33, 32003, 2.0f, 5, Grad::None, 7});
    check_case({16, 8000, 8.0f, 0, Grad::InPlace, 8});  // very peaky rows: p near 1 at the max
}

TEST(CrossentropyCuda, MisalignedBuffersAndSmallVocabularies) {
    LLMQ_REQUIRE_GPU();
    check_case({13, 5003, 2.0f, 2, Grad::OutOfPlaceMisaligned, 9});  // no 128-bit path at all
    check_case({13, 5003, 2.0f, 7, Grad::OutOfPlace, 10});
    for (int V : {2, 3, 7, 8, 9, 15, 16, 17, 511, 513, 4103})  // fewer elements than threads, head and tail only
        check_case({11, V, 2.0f, V % 5, Grad::OutOfPlace, 11 + (uint64_t)V});
}

TEST(CrossentropyCuda, VocabularyOfOneGivesZeroLossAndGradient) {
    LLMQ_REQUIRE_GPU();
    const int N = 6;
    Rng rng(12);
    const auto logits = bf16_rounded(randn_floats(N, rng));
    const std::vector<int> targets = {0, 0, kIgnore, 0, 0, 0};
    const Outputs got = run_gpu({N, 1}, logits, targets, 0.25f);
    for (int i = 0; i < N; i++) {
        EXPECT_EQ(got.losses[i], 0.0f) << "row " << i;
        EXPECT_EQ(got.dlogits[i], 0.0f) << "row " << i;
    }
}

TEST(CrossentropyCuda, InvalidTargetGivesNaNRowNotAnOutOfBoundsRead) {
    LLMQ_REQUIRE_GPU();
    const int N = 4, V = 1000;
    Rng rng(13);
    const auto logits = bf16_rounded(randn_floats((size_t)N * V, rng));
    const std::vector<int> targets = {5, V, -1, kIgnore};  // rows 1 and 2 are invalid
    const Outputs got = run_gpu({N, V}, logits, targets, 1.0f);
    EXPECT_TRUE(std::isfinite(got.losses[0]));
    EXPECT_TRUE(std::isnan(got.losses[1]));
    EXPECT_TRUE(std::isnan(got.losses[2]));
    EXPECT_EQ(got.losses[3], 0.0f);
    for (int j = 0; j < V; j++) {
        ASSERT_TRUE(std::isfinite(got.dlogits[j])) << j;
        ASSERT_TRUE(std::isnan(got.dlogits[(size_t)V + j])) << j;
        ASSERT_TRUE(std::isnan(got.dlogits[(size_t)2 * V + j])) << j;
        ASSERT_EQ(got.dlogits[(size_t)3 * V + j], 0.0f) << j;
    }
}

TEST(CrossentropyCuda, DeterministicBitForBit) {
    LLMQ_REQUIRE_GPU();
    const Case c{24, 50257, 3.0f, 0, Grad::OutOfPlace, 14};
    Rng rng(c.seed);
    const auto logits = bf16_rounded(randn_floats((size_t)c.N * c.V, rng, c.logit_scale));
    const auto targets = random_targets(c.N, c.V, rng);
    const Outputs a = run_gpu(c, logits, targets, 0.01f), b = run_gpu(c, logits, targets, 0.01f);
    EXPECT_EQ(0, std::memcmp(a.losses.data(), b.losses.data(), a.losses.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(a.dlogits.data(), b.dlogits.data(), a.dlogits.size() * sizeof(float)));
    // in place computes the same bits as out of place (same row split, same order)
    Case in_place = c;
    in_place.grad = Grad::InPlace;
    const Outputs p = run_gpu(in_place, logits, targets, 0.01f);
    EXPECT_EQ(0, std::memcmp(a.losses.data(), p.losses.data(), a.losses.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(a.dlogits.data(), p.dlogits.data(), a.dlogits.size() * sizeof(float)));
}

TEST(CrossentropyCuda, RejectsBadShapes) {
    LLMQ_REQUIRE_GPU();
    DeviceBuffer<float> losses(4);
    DeviceBuffer<bf16> logits(4);
    DeviceBuffer<int> targets(std::vector<int>{0, 0, 0, 0});
    EXPECT_THROW(crossentropy_forward_backward_cuda(losses.data(), nullptr, logits.data(), targets.data(), 4, 0,
                                                    kIgnore, 1.0f),
                 Error);
    EXPECT_THROW(crossentropy_forward_backward_cuda(losses.data(), nullptr, logits.data(), targets.data(), -1, 1,
                                                    kIgnore, 1.0f),
                 Error);
}
