// GPU tests of kernels/swiglu.cu against the CPU reference (swiglu_cpu.cpp) on bf16-rounded inputs:
// the vectorised path, the scalar tail and an unaligned start, out of place and in place.
#include "../kernels/swiglu.h"
#include "../kernels/swiglu_cuda.h"
#include "gpu_test_util.h"

using namespace llmq;
using namespace llmq::test;

namespace {

// n elements starting `offset` elements into the buffers (offset 1 breaks 16-byte alignment)
void check_swiglu(size_t n, size_t offset, bool in_place, uint64_t seed) {
    Rng rng(seed);
    const auto gate = bf16_rounded(randn_floats(n, rng, 2.0f)), up = bf16_rounded(randn_floats(n, rng)),
               dout = bf16_rounded(randn_floats(n, rng));
    std::vector<float> out_ref(n), dgate_ref(n), dup_ref(n);
    swiglu_forward_cpu<float>(out_ref.data(), gate.data(), up.data(), n);
    swiglu_backward_cpu<float>(dgate_ref.data(), dup_ref.data(), dout.data(), gate.data(), up.data(), n);

    auto padded = [&](const std::vector<float>& x) {
        std::vector<float> p(offset, 7.0f);
        p.insert(p.end(), x.begin(), x.end());
        return DeviceBuffer<bf16>(to_bf16(p));
    };
    DeviceBuffer<bf16> g = padded(gate), u = padded(up), d = padded(dout), y(n + offset), dg(n + offset),
                       du(n + offset);
    y.poison(), dg.poison(), du.poison();
    swiglu_forward_cuda(y.data() + offset, g.data() + offset, u.data() + offset, n);
    bf16* dg_out = in_place ? g.data() + offset : dg.data() + offset;
    bf16* du_out = in_place ? u.data() + offset : du.data() + offset;
    swiglu_backward_cuda(dg_out, du_out, d.data() + offset, g.data() + offset, u.data() + offset, n);
    CUDA_CHECK(cudaDeviceSynchronize());

    auto tail = [&](const DeviceBuffer<bf16>& b) {
        auto all = from_bf16(b.download());
        return std::vector<float>(all.begin() + offset, all.end());
    };
    expect_rel_close("out", tail(y), out_ref, 1e-2);
    expect_rel_close("dgate", tail(in_place ? g : dg), dgate_ref, 1e-2);
    expect_rel_close("dup", tail(in_place ? u : du), dup_ref, 1e-2);
}

}  // namespace

TEST(SwigluCuda, MatchesCpuVectorised) {
    LLMQ_REQUIRE_GPU();
    check_swiglu(1 << 20, 0, false, 1);
}

TEST(SwigluCuda, MatchesCpuWithTailAndUnalignedStart) {
    LLMQ_REQUIRE_GPU();
    check_swiglu(1000003, 0, false, 2);  // not a multiple of 8: the scalar tail
    check_swiglu(4099, 1, false, 3);     // misaligned pointers: the scalar path for everything
}

TEST(SwigluCuda, BackwardInPlaceEqualsCpu) {
    LLMQ_REQUIRE_GPU();
    check_swiglu(65536 + 5, 0, true, 4);
}
