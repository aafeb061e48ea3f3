// GPU tests of kernels/rope.cu against the CPU reference (rope_cpu.cpp) on bf16-rounded inputs, with the
// tables of rope_tables_cpu<float>: forward out of place and in place, the accumulating backward into a
// buffer of random values, the overwriting backward out of place and in place; the vectorised path (model
// shapes, odd counts of items), the scalar path (hd/2 not a multiple of 8, unaligned buffers), and the
// argument checks. Every output is checked as a whole (relative norm, all finite) and element by element.
#include <cstring>

#include "../kernels/rope.h"
#include "../kernels/rope_cuda.h"
#include "gpu_test_util.h"

using namespace llmq;
using namespace llmq::test;

namespace {

// |got - want| <= 2^-7 |want| + 1e-5 for every element: a bf16 output is the fp32 value rounded (at most half
// a bf16 ulp, <= 2^-8 relative) and the GPU's fp32 value differs from the CPU's by a few fp32 ulps (FMA), so
// this has a 2x margin and still catches one wrong pair among thousands, which a norm over all would hide.
void expect_each_close(const std::string& name, const std::vector<float>& got, const std::vector<float>& want) {
    ASSERT_EQ(got.size(), want.size()) << name;
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < got.size(); i++) {
        const double err = std::fabs((double)got[i] - want[i]);
        if (!(err <= std::ldexp(std::fabs((double)want[i]), -7) + 1e-5)) {
            if (bad++ == 0) first = i;
        }
    }
    EXPECT_EQ(bad, 0u) << name << ": " << bad << " of " << got.size() << " elements off, first [" << first
                       << "] = " << got[first] << ", want " << want[first];
}

void expect_matches(const std::string& name, const std::vector<float>& got, const std::vector<float>& want) {
    expect_rel_close(name, got, want, 1e-2);
    expect_each_close(name, got, want);
}

// bf16 device copy of x with `offset` leading elements of 7.0 (offset 1 breaks 16-byte alignment)
DeviceBuffer<bf16> padded(const std::vector<float>& x, size_t offset) {
    std::vector<float> p(offset, 7.0f);
    p.insert(p.end(), x.begin(), x.end());
    return DeviceBuffer<bf16>(to_bf16(p));
}

// the n elements after the offset, and a check that the padding before them was not written
std::vector<float> after_offset(const std::string& name, const DeviceBuffer<bf16>& b, size_t offset) {
    const auto all = from_bf16(b.download());
    for (size_t i = 0; i < offset; i++) EXPECT_EQ(all[i], 7.0f) << name << ": padding [" << i << "] was written";
    return std::vector<float>(all.begin() + offset, all.end());
}

void check_rope(int B, int T, int NH, int hd, size_t offset, uint64_t seed) {
    SCOPED_TRACE(format("B %d T %d NH %d hd %d offset %zu", B, T, NH, hd, offset));
    Rng rng(seed);
    const size_t n = (size_t)B * T * NH * hd;
    std::vector<float> cos((size_t)T * hd / 2), sin((size_t)T * hd / 2);
    rope_tables_cpu<float>(cos.data(), sin.data(), T, hd, 10000.0f);
    const auto x = bf16_rounded(randn_floats(n, rng)), dout = bf16_rounded(randn_floats(n, rng)),
               dinp0 = bf16_rounded(randn_floats(n, rng));

    std::vector<float> y_ref(n), dacc_ref = dinp0, dset_ref(n, 0.0f);
    rope_forward_cpu<float>(y_ref.data(), x.data(), cos.data(), sin.data(), B, T, NH, hd);
    rope_backward_cpu<float>(dacc_ref.data(), dout.data(), cos.data(), sin.data(), B, T, NH, hd);
    rope_backward_cpu<float>(dset_ref.data(), dout.data(), cos.data(), sin.data(), B, T, NH, hd);

    DeviceBuffer<float> dcos(cos), dsin(sin);
    DeviceBuffer<bf16> dx = padded(x, offset), dx_inplace = padded(x, offset), dy = padded(x, offset),
                       ddout = padded(dout, offset), ddout_inplace = padded(dout, offset),
                       dacc = padded(dinp0, offset), dset = padded(dinp0, offset);
    // poison only the outputs' elements (the padding must stay 7.0)
    CUDA_CHECK(cudaMemset(dy.data() + offset, 0xFF, n * sizeof(bf16)));
    CUDA_CHECK(cudaMemset(dset.data() + offset, 0xFF, n * sizeof(bf16)));

    rope_forward_cuda(dy.data() + offset, dx.data() + offset, dcos.data(), dsin.data(), B, T, NH, hd);
    rope_forward_cuda(dx_inplace.data() + offset, dx_inplace.data() + offset, dcos.data(), dsin.data(), B, T, NH, hd);
    rope_backward_cuda(dacc.data() + offset, ddout.data() + offset, dcos.data(), dsin.data(), B, T, NH, hd);
    rope_backward_overwrite_cuda(dset.data() + offset, ddout.data() + offset, dcos.data(), dsin.data(), B, T, NH, hd);
    rope_backward_overwrite_cuda(ddout_inplace.data() + offset, ddout_inplace.data() + offset, dcos.data(),
                                 dsin.data(), B, T, NH, hd);
    CUDA_CHECK(cudaDeviceSynchronize());

    expect_matches("forward", after_offset("forward", dy, offset), y_ref);
    expect_matches("forward in place", after_offset("forward in place", dx_inplace, offset), y_ref);
    expect_matches("backward (accumulate)", after_offset("backward (accumulate)", dacc, offset), dacc_ref);
    expect_matches("backward (overwrite)", after_offset("backward (overwrite)", dset, offset), dset_ref);
    expect_matches("backward (overwrite, in place)", after_offset("backward (overwrite, in place)", ddout_inplace, offset),
                   dset_ref);
    // the inputs of the out-of-place calls are untouched
    EXPECT_EQ(after_offset("forward input", dx, offset), x);
    EXPECT_EQ(after_offset("backward input", ddout, offset), dout);
}

}  // namespace

TEST(RopeCuda, MatchesCpuOnModelShapes) {
    LLMQ_REQUIRE_GPU();
    check_rope(1, 1024, 8, 64, 0, 1);  // 60m q (and 130m..1b: hd 64), a full context of positions
    check_rope(2, 64, 8, 64, 0, 2);    // 60m, two sequences: t restarts at 0 for b = 1
    check_rope(1, 32, 32, 128, 0, 3);  // 7b q
    check_rope(2, 32, 4, 32, 0, 4);    // tiny (hd 32: two items per head)
    check_rope(1, 8, 2, 256, 0, 5);    // the largest head_dim
}

TEST(RopeCuda, VectorisedPathWithOddCounts) {
    LLMQ_REQUIRE_GPU();
    check_rope(3, 5, 3, 16, 0, 6);   // hd/2 = 8: one item per head; 45 items (not a multiple of anything)
    check_rope(1, 7, 1, 48, 0, 7);   // hd/2 = 24: three items per head
}

TEST(RopeCuda, ScalarPathForOtherHeadDims) {
    LLMQ_REQUIRE_GPU();
    check_rope(2, 9, 3, 2, 0, 8);     // hd/2 = 1
    check_rope(3, 7, 5, 6, 0, 9);     // hd/2 = 3
    check_rope(2, 11, 4, 40, 0, 10);  // hd/2 = 20: a multiple of 4, not of 8
    check_rope(1, 5, 3, 250, 0, 11);  // hd/2 = 125
}

TEST(RopeCuda, ScalarPathForUnalignedBuffers) {
    LLMQ_REQUIRE_GPU();
    check_rope(2, 16, 8, 64, 1, 12);  // a model shape, every pointer 2 bytes past a 16-byte boundary
    check_rope(1, 3, 2, 16, 3, 13);
}

TEST(RopeCuda, RejectsBadArguments) {
    LLMQ_REQUIRE_GPU();
    const int B = 1, T = 4, NH = 2, hd = 16;
    DeviceBuffer<bf16> a((size_t)B * T * NH * hd), b(a.size());
    DeviceBuffer<float> c((size_t)T * 128), s((size_t)T * 128);
    EXPECT_THROW(rope_forward_cuda(a.data(), b.data(), c.data(), s.data(), B, T, NH, 15), Error);   // odd
    EXPECT_THROW(rope_forward_cuda(a.data(), b.data(), c.data(), s.data(), B, T, NH, 0), Error);
    EXPECT_THROW(rope_forward_cuda(a.data(), b.data(), c.data(), s.data(), B, T, NH, 258), Error);  // > 256
    EXPECT_THROW(rope_forward_cuda(a.data(), b.data(), c.data(), s.data(), 0, T, NH, hd), Error);
    EXPECT_THROW(rope_forward_cuda(a.data(), nullptr, c.data(), s.data(), B, T, NH, hd), Error);
    // the accumulating backward cannot run in place or on overlapping buffers; the overwriting one can
    EXPECT_THROW(rope_backward_cuda(a.data(), a.data(), c.data(), s.data(), B, T, NH, hd), Error);
    EXPECT_THROW(rope_backward_cuda(a.data() + 8, a.data(), c.data(), s.data(), 1, T, NH, hd / 2), Error);
    EXPECT_THROW(rope_forward_cuda(a.data() + 8, a.data(), c.data(), s.data(), 1, T, NH, hd / 2), Error);  // partly
    try {
        rope_forward_cuda(a.data(), b.data(), c.data(), s.data(), B, T, NH, 15);
        ADD_FAILURE() << "no exception";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("head_dim 15 not supported"), std::string::npos) << e.what();
    }
    b.zero(), c.zero(), s.zero();
    EXPECT_NO_THROW(rope_backward_overwrite_cuda(b.data(), b.data(), c.data(), s.data(), B, T, NH, hd));
    CUDA_CHECK(cudaDeviceSynchronize());
}
