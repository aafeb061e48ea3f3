// GPU tests of kernels/matmul.cu (cuBLASLt) against the CPU reference (matmul_cpu.cpp) run in fp32 on the same
// bf16-rounded inputs: the three products on odd sizes (leading dimensions that are not multiples of 8),
// the 60m model's layer shapes, pointers off 16-byte alignment, overwrite (into NaN) and accumulate (into
// random values), a split-K-prone shape run twice for bitwise determinism, the per-shape algorithm cache,
// and bad arguments.
#include <cmath>
#include <cstring>
#include <tuple>
#include <type_traits>

#include "../kernels/matmul.h"
#include "../kernels/matmul_cuda.h"
#include "gpu_test_util.h"
#include "test_util.h"

using namespace llmq;
using namespace llmq::test;

namespace {

// bf16 outputs carry bf16 rounding (~2e-3 relative); the fp32 dweight only the order of fp32 sums: its
// inputs are exact in bf16 and every product of two bf16 is exact in fp32, so 1e-4 leaves ~100x margin
// and still fails a kernel that rounded to bf16 anywhere.
constexpr double kBf16Tol = 1e-2, kFp32Tol = 1e-4;

// A device array holding x as T (bf16 or fp32) after `offset` filler elements, so that data() + offset is
// off 16-byte alignment when offset is odd.
template <typename T>
struct Padded {
    DeviceBuffer<T> buf;
    size_t offset;
    Padded(const std::vector<float>& x, size_t offset_) : offset(offset_) {
        std::vector<float> p(offset, 3.0f);
        p.insert(p.end(), x.begin(), x.end());
        if constexpr (std::is_same_v<T, bf16>) buf.upload(to_bf16(p));
        else buf.upload(p);
    }
    T* data() { return buf.data() + offset; }
    void poison() { buf.poison(); }
    std::vector<float> download() const {
        std::vector<float> all;
        if constexpr (std::is_same_v<T, bf16>) all = from_bf16(buf.download());
        else all = buf.download();
        return std::vector<float>(all.begin() + offset, all.end());
    }
};

struct Inputs {
    std::vector<float> inp, weight, dout, dinp0, dweight0;  // bf16-rounded except dweight0 (fp32)
    Inputs(int N, int C, int OC, uint64_t seed) {
        Rng rng(seed);
        inp = bf16_rounded(randn_floats((size_t)N * C, rng));
        weight = bf16_rounded(randn_floats((size_t)OC * C, rng, 1.0f / std::sqrt((float)C)));  // outputs ~1
        dout = bf16_rounded(randn_floats((size_t)N * OC, rng));
        dinp0 = bf16_rounded(randn_floats((size_t)N * C, rng));
        dweight0 = randn_floats((size_t)OC * C, rng);
    }
};

// Every product, overwrite and accumulate, against the CPU; `offset` elements shift every pointer.
void check_products(Blas& blas, int N, int C, int OC, size_t offset, uint64_t seed) {
    SCOPED_TRACE(format("N=%d C=%d OC=%d offset=%zu", N, C, OC, offset));
    const Inputs x(N, C, OC, seed);
    std::vector<float> out_ref((size_t)N * OC), dinp_ref((size_t)N * C, 0.0f), dinp_acc_ref = x.dinp0,
        dweight_ref = x.dweight0;
    matmul_forward_cpu<float>(out_ref.data(), x.inp.data(), x.weight.data(), N, C, OC);
    matmul_backward_input_cpu<float>(dinp_ref.data(), x.dout.data(), x.weight.data(), N, C, OC);
    matmul_backward_input_cpu<float>(dinp_acc_ref.data(), x.dout.data(), x.weight.data(), N, C, OC);
    matmul_backward_weight_cpu<float>(dweight_ref.data(), x.dout.data(), x.inp.data(), N, C, OC);

    Padded<bf16> inp(x.inp, offset), weight(x.weight, offset), dout(x.dout, offset), dinp_acc(x.dinp0, offset);
    Padded<bf16> out(std::vector<float>((size_t)N * OC), offset), dinp(std::vector<float>((size_t)N * C), offset);
    Padded<float> dweight(x.dweight0, offset);
    out.poison(), dinp.poison();  // overwrite must ignore the NaNs there
    matmul_forward_cuda(blas, out.data(), inp.data(), weight.data(), N, C, OC);
    matmul_backward_input_cuda(blas, dinp.data(), dout.data(), weight.data(), N, C, OC, /*accumulate=*/false);
    matmul_backward_input_cuda(blas, dinp_acc.data(), dout.data(), weight.data(), N, C, OC, /*accumulate=*/true);
    matmul_backward_weight_cuda(blas, dweight.data(), dout.data(), inp.data(), N, C, OC);
    CUDA_CHECK(cudaDeviceSynchronize());

    expect_rel_close("out", out.download(), out_ref, kBf16Tol);
    expect_rel_close("dinp (overwrite)", dinp.download(), dinp_ref, kBf16Tol);
    expect_rel_close("dinp (accumulate)", dinp_acc.download(), dinp_acc_ref, kBf16Tol);
    expect_rel_close("dweight (accumulate)", dweight.download(), dweight_ref, kFp32Tol);
}

template <typename T>
bool same_bits(const DeviceBuffer<T>& a, const DeviceBuffer<T>& b) {
    const auto x = a.download(), y = b.download();
    return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(T)) == 0;
}

}  // namespace

TEST(MatmulCuda, OddSizesMatchCpu) {
    LLMQ_REQUIRE_GPU();
    Blas blas;
    check_products(blas, 37, 72, 40, 0, 1);  // N odd, C and OC multiples of 8
    check_products(blas, 37, 75, 41, 0, 2);  // every size odd: leading dimensions of 150 and 82 bytes
    check_products(blas, 1, 8, 3, 0, 3);     // one row
}

TEST(MatmulCuda, ModelShapesMatchCpu) {
    LLMQ_REQUIRE_GPU();
    Blas blas;
    // the 60m preset's Linears (C 512, F 1376, V 32000) on a few rows
    check_products(blas, 64, 512, 512, 0, 4);     // q, k, v, o
    check_products(blas, 64, 512, 1376, 0, 5);    // gate, up
    check_products(blas, 64, 1376, 512, 0, 6);    // down
    check_products(blas, 16, 512, 32000, 0, 7);   // lm_head
    check_products(blas, 24, 256, 5461, 0, 8);    // the 1b preset's odd F as OC
}

TEST(MatmulCuda, UnalignedPointersMatchCpu) {
    LLMQ_REQUIRE_GPU();
    Blas blas;
    check_products(blas, 37, 72, 40, 1, 9);   // every pointer 2 bytes (bf16) or 4 bytes (fp32) off 16
    check_products(blas, 16, 64, 48, 3, 10);
}

TEST(MatmulCuda, DeterministicIncludingSplitKShapes) {
    LLMQ_REQUIRE_GPU();
    Blas blas;
    // (8192, 64, 72): the weight gradient sums over 8192 rows into a 72 x 64 output, where the heuristic
    // likes split-K; (128, 512, 1376): an ordinary layer shape
    for (auto [N, C, OC] : {std::tuple{8192, 64, 72}, std::tuple{128, 512, 1376}}) {
        SCOPED_TRACE(format("N=%d C=%d OC=%d", N, C, OC));
        const Inputs x(N, C, OC, 11);
        DeviceBuffer<bf16> inp(to_bf16(x.inp)), weight(to_bf16(x.weight)), dout(to_bf16(x.dout));
        DeviceBuffer<bf16> out[2], dinp[2];
        DeviceBuffer<float> dweight[2];
        for (int run = 0; run < 2; run++) {
            out[run].resize((size_t)N * OC);
            dinp[run].upload(to_bf16(x.dinp0));
            dweight[run].upload(x.dweight0);
            matmul_forward_cuda(blas, out[run].data(), inp.data(), weight.data(), N, C, OC);
            matmul_backward_input_cuda(blas, dinp[run].data(), dout.data(), weight.data(), N, C, OC, true);
            matmul_backward_weight_cuda(blas, dweight[run].data(), dout.data(), inp.data(), N, C, OC);
        }
        CUDA_CHECK(cudaDeviceSynchronize());
        EXPECT_TRUE(same_bits(out[0], out[1])) << "forward differs between two runs";
        EXPECT_TRUE(same_bits(dinp[0], dinp[1])) << "backward input differs between two runs";
        EXPECT_TRUE(same_bits(dweight[0], dweight[1])) << "backward weight differs between two runs";
        std::vector<float> dweight_ref = x.dweight0;
        matmul_backward_weight_cpu<float>(dweight_ref.data(), x.dout.data(), x.inp.data(), N, C, OC);
        expect_rel_close("dweight", dweight[0].download(), dweight_ref, kFp32Tol);
    }
}

TEST(MatmulCuda, AlgorithmChosenOncePerShape) {
    LLMQ_REQUIRE_GPU();
    Blas blas;
    const int N = 32, C = 64, OC = 48;
    DeviceBuffer<bf16> inp((size_t)N * C), weight((size_t)OC * C), out((size_t)N * OC);
    inp.zero(), weight.zero();
    EXPECT_EQ(blas.cached_algorithms(), 0u);
    matmul_forward_cuda(blas, out.data(), inp.data(), weight.data(), N, C, OC);
    matmul_forward_cuda(blas, out.data(), inp.data(), weight.data(), N, C, OC);
    EXPECT_EQ(blas.cached_algorithms(), 1u);
    matmul_forward_cuda(blas, out.data(), inp.data(), weight.data(), N / 2, C, OC);  // another problem
    EXPECT_EQ(blas.cached_algorithms(), 2u);
    CUDA_CHECK(cudaDeviceSynchronize());
}

TEST(MatmulCuda, RejectsBadArguments) {
    LLMQ_REQUIRE_GPU();
    Blas blas;
    DeviceBuffer<bf16> a(64), b(64), c(64);
    DeviceBuffer<float> w(64);
    using llmq_test::expect_error;
    expect_error([&] { matmul_forward_cuda(blas, c.data(), a.data(), b.data(), 0, 8, 8); },
                 {"matmul_forward_cuda", "N=0"});
    expect_error([&] { matmul_backward_input_cuda(blas, c.data(), a.data(), b.data(), 8, -1, 8, false); },
                 {"matmul_backward_input_cuda", "C=-1"});
    expect_error([&] { matmul_backward_weight_cuda(blas, nullptr, a.data(), b.data(), 8, 8, 8); },
                 {"matmul_backward_weight_cuda", "dweight is null"});
    bf16* odd = reinterpret_cast<bf16*>(reinterpret_cast<char*>(a.data()) + 1);
    expect_error([&] { matmul_forward_cuda(blas, c.data(), odd, b.data(), 4, 8, 8); }, {"inp", "not aligned"});
}
