// GPU tests of kernels/rmsnorm.cu against the CPU references (rmsnorm_cpu.cpp, residual_cpu.cpp) run on the
// bf16-rounded inputs (the norm's in double, the add in fp32 as the kernel does it). The shapes cover every row-team layout of the kernels: one warp per row with idle lanes
// (C = 8, 24) and full (512, 768 = 60m, 130m), several warps with a ragged last pack (1032, 2056), the 7b
// width (4096) and the largest (8192); N not a multiple of the rows per block; backward row ranges where a
// team handles several rows (N > 512 * teams per block). Outputs are poisoned (NaN) first and compared
// element by element as well as in norm, so an element a kernel skipped fails even in an accumulator.
#include "../kernels/residual.h"
#include "../kernels/rmsnorm.h"
#include "../kernels/rmsnorm_cuda.h"
#include "gpu_test_util.h"

#include <cstring>

using namespace llmq;
using namespace llmq::test;

namespace {

constexpr float kEps = 1e-5f;

struct Shape {
    int N, C;
};
const Shape kForwardShapes[] = {{1, 8}, {37, 24}, {37, 512}, {19, 768}, {8, 1032}, {5, 2056}, {9, 4096}, {3, 8192}};

std::string shape_name(const Shape& s) { return format("N=%d C=%d", s.N, s.C); }

// every |got - want| <= rel * |want| + abs_of_rms * rms(want): catches single wrong or unwritten elements
// that a norm-wise comparison over many elements would average away
void expect_each_close(const std::string& name, const std::vector<float>& got, const std::vector<float>& want,
                       double rel, double abs_of_rms) {
    ASSERT_EQ(got.size(), want.size()) << name;
    double ss = 0.0;
    for (float w : want) ss += (double)w * w;
    const double abs_tol = abs_of_rms * std::sqrt(ss / want.size());
    for (size_t i = 0; i < got.size(); i++) {
        const double err = std::fabs((double)got[i] - want[i]);
        ASSERT_TRUE(err <= rel * std::fabs(want[i]) + abs_tol)
            << name << "[" << i << "] = " << got[i] << ", want " << want[i] << " (of " << got.size() << ")";
    }
}
// bf16 outputs computed in fp32: rounding is at most 2^-8 relative, so 2^-7 leaves room for fp32 order effects
void expect_bf16_close(const std::string& name, const std::vector<float>& got, const std::vector<float>& want) {
    expect_rel_close(name, got, want, 1e-2);
    expect_each_close(name, got, want, 1.0 / 128, 1e-3);
}
void expect_fp32_close(const std::string& name, const std::vector<float>& got, const std::vector<float>& want) {
    expect_rel_close(name, got, want, 1e-5);
    expect_each_close(name, got, want, 1e-4, 1e-4);
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

DeviceBuffer<bf16> upload_bf16(const std::vector<float>& x) { return DeviceBuffer<bf16>(to_bf16(x)); }

// The CPU references run in double on the bf16 values the GPU sees: a sequential fp32 sum over 8192 channels
// or 9001 rows can be off by a few 1e-6 itself, too near the 1e-5 that the GPU's fp32 results are held to.
std::vector<double> as_double(const std::vector<float>& x) { return std::vector<double>(x.begin(), x.end()); }
std::vector<float> as_float(const std::vector<double>& x) { return std::vector<float>(x.begin(), x.end()); }

struct ForwardRef {
    std::vector<float> out, rstd;
};
ForwardRef cpu_forward(const std::vector<float>& x, const std::vector<float>& w, int N, int C) {
    std::vector<double> out((size_t)N * C), rstd(N);
    rmsnorm_forward_cpu<double>(out.data(), rstd.data(), as_double(x).data(), as_double(w).data(), N, C, kEps);
    return {as_float(out), as_float(rstd)};
}

void check_forward(const Shape& s, bool in_place, uint64_t seed) {
    SCOPED_TRACE(shape_name(s) + (in_place ? " in place" : ""));
    Rng rng(seed);
    const size_t n = (size_t)s.N * s.C;
    const auto x = bf16_rounded(randn_floats(n, rng, 3.0f)), w = bf16_rounded(randn_floats(s.C, rng));
    const ForwardRef ref = cpu_forward(x, w, s.N, s.C);
    DeviceBuffer<bf16> dx = upload_bf16(x), dw = upload_bf16(w), dy(n);
    DeviceBuffer<float> drstd(s.N);
    dy.poison(), drstd.poison();
    bf16* out = in_place ? dx.data() : dy.data();
    rmsnorm_forward_cuda(out, drstd.data(), dx.data(), dw.data(), s.N, s.C, kEps);
    CUDA_CHECK(cudaDeviceSynchronize());
    expect_bf16_close("out", from_bf16((in_place ? dx : dy).download()), ref.out);
    expect_fp32_close("rstd", drstd.download(), ref.rstd);
}

void check_residual_forward(const Shape& s, bool in_place, uint64_t seed) {
    SCOPED_TRACE(shape_name(s) + (in_place ? " in place" : ""));
    Rng rng(seed);
    const size_t n = (size_t)s.N * s.C;
    const auto res = bf16_rounded(randn_floats(n, rng, 3.0f)), branch = bf16_rounded(randn_floats(n, rng)),
               w = bf16_rounded(randn_floats(s.C, rng));
    std::vector<float> sum(n);
    residual_forward_cpu<float>(sum.data(), res.data(), branch.data(), n);
    const std::vector<bf16> sum_bf16 = to_bf16(sum);  // what the kernel must store, bit for bit
    const ForwardRef ref = cpu_forward(from_bf16(sum_bf16), w, s.N, s.C);

    DeviceBuffer<bf16> dres = upload_bf16(res), dbranch = upload_bf16(branch), dw = upload_bf16(w), dsum(n), dnorm(n);
    DeviceBuffer<float> drstd(s.N);
    dsum.poison(), dnorm.poison(), drstd.poison();
    bf16* res_out = in_place ? dres.data() : dsum.data();
    residual_rmsnorm_forward_cuda(res_out, dnorm.data(), drstd.data(), dres.data(), dbranch.data(), dw.data(), s.N,
                                  s.C, kEps);
    CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<bf16> got_sum = (in_place ? dres : dsum).download();
    EXPECT_TRUE(same_bits(got_sum, sum_bf16)) << "residual_out is not bf16(residual_in + branch) bit for bit";
    const std::vector<bf16> got_norm = dnorm.download();
    const std::vector<float> got_rstd = drstd.download();
    expect_bf16_close("norm_out", from_bf16(got_norm), ref.out);
    expect_fp32_close("rstd", got_rstd, ref.rstd);

    // the fused kernel equals the add followed by the plain norm of the rounded sum, bit for bit
    DeviceBuffer<bf16> dsum2(sum_bf16), dnorm2(n);
    DeviceBuffer<float> drstd2(s.N);
    dnorm2.poison(), drstd2.poison();
    rmsnorm_forward_cuda(dnorm2.data(), drstd2.data(), dsum2.data(), dw.data(), s.N, s.C, kEps);
    CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_TRUE(same_bits(dnorm2.download(), got_norm)) << "fused norm_out differs from rmsnorm_forward_cuda";
    EXPECT_TRUE(same_bits(drstd2.download(), got_rstd)) << "fused rstd differs from rmsnorm_forward_cuda";
}

// The backward's inputs and its accumulators' starting values (random: the kernels must add to them).
struct BackwardCase {
    int N, C;
    std::vector<float> dout, x, w, rstd, dinp0, dweight0;
    BackwardCase(const Shape& s, uint64_t seed) : N(s.N), C(s.C) {
        Rng rng(seed);
        const size_t n = (size_t)N * C;
        x = bf16_rounded(randn_floats(n, rng, 2.0f));
        w = bf16_rounded(randn_floats(C, rng));
        dout = bf16_rounded(randn_floats(n, rng));
        dinp0 = bf16_rounded(randn_floats(n, rng));
        dweight0 = randn_floats(C, rng);
        rstd = cpu_forward(x, w, N, C).rstd;  // fp32 values, the same for both sides: the backward alone is tested
    }
    struct Result {
        std::vector<bf16> dinp;
        std::vector<float> dweight;
    };
    Result run_gpu() const {
        DeviceBuffer<bf16> ddout = upload_bf16(dout), dx = upload_bf16(x), dw = upload_bf16(w),
                           ddinp = upload_bf16(dinp0);
        DeviceBuffer<float> drstd(rstd), ddweight(dweight0), scratch(rmsnorm_backward_scratch_floats(N, C));
        scratch.poison();  // the kernels must not rely on its contents
        rmsnorm_backward_cuda(ddinp.data(), ddweight.data(), scratch.data(), ddout.data(), dx.data(), dw.data(),
                              drstd.data(), N, C);
        CUDA_CHECK(cudaDeviceSynchronize());
        return {ddinp.download(), ddweight.download()};
    }
};

void check_backward(const Shape& s, uint64_t seed) {
    SCOPED_TRACE(shape_name(s));
    const BackwardCase bc(s, seed);
    std::vector<double> dinp_ref = as_double(bc.dinp0), dweight_ref = as_double(bc.dweight0);
    rmsnorm_backward_cpu<double>(dinp_ref.data(), dweight_ref.data(), as_double(bc.dout).data(), as_double(bc.x).data(),
                                 as_double(bc.w).data(), as_double(bc.rstd).data(), s.N, s.C);
    const auto got = bc.run_gpu();
    expect_bf16_close("dinp", from_bf16(got.dinp), as_float(dinp_ref));
    expect_fp32_close("dweight", got.dweight, as_float(dweight_ref));
}

}  // namespace

TEST(RmsnormCuda, ForwardMatchesCpu) {
    LLMQ_REQUIRE_GPU();
    uint64_t seed = 1;
    for (const Shape& s : kForwardShapes) check_forward(s, false, seed++);
}

TEST(RmsnormCuda, ForwardInPlaceMatchesCpu) {
    LLMQ_REQUIRE_GPU();
    check_forward({33, 1024}, true, 20);
    check_forward({6, 4104}, true, 21);
}

TEST(RmsnormCuda, ResidualForwardMatchesCpu) {
    LLMQ_REQUIRE_GPU();
    uint64_t seed = 30;
    for (const Shape& s : kForwardShapes) check_residual_forward(s, false, seed++);
}

TEST(RmsnormCuda, ResidualForwardInPlaceMatchesCpu) {
    LLMQ_REQUIRE_GPU();  // residual_out == residual_in: the model's residual stream updated in place
    check_residual_forward({37, 512}, true, 40);
    check_residual_forward({7, 4096}, true, 41);
}

TEST(RmsnormCuda, BackwardMatchesCpu) {
    LLMQ_REQUIRE_GPU();
    const Shape shapes[] = {{1, 8}, {37, 24}, {64, 512}, {19, 768}, {33, 1032}, {9, 4096}, {3, 8192}};
    uint64_t seed = 50;
    for (const Shape& s : shapes) check_backward(s, seed++);
}

TEST(RmsnormCuda, BackwardManyRowsPerBlockMatchesCpu) {
    LLMQ_REQUIRE_GPU();
    // N > 512: each block of the backward takes ceil(N / 512) rows, so teams loop over several rows
    check_backward({9001, 24}, 60);   // 8 one-warp teams per block, 18 rows per block, last block 1 row
    check_backward({1100, 4096}, 61); // 2 four-warp teams, 3 rows per block
    check_backward({600, 8192}, 62);  // 1 eight-warp team, 2 rows per block
}

TEST(RmsnormCuda, BackwardIsDeterministic) {
    LLMQ_REQUIRE_GPU();
    for (const Shape& s : {Shape{3000, 1032}, Shape{700, 4096}}) {
        SCOPED_TRACE(shape_name(s));
        const BackwardCase bc(s, 70);
        const auto a = bc.run_gpu(), b = bc.run_gpu();
        EXPECT_TRUE(same_bits(a.dinp, b.dinp)) << "dinp differs between two runs";
        EXPECT_TRUE(same_bits(a.dweight, b.dweight)) << "dweight differs between two runs";
    }
}

TEST(RmsnormCuda, RejectsUnsupportedShapes) {
    LLMQ_REQUIRE_GPU();
    DeviceBuffer<bf16> a(2 * 8192 + 8), b(2 * 8192 + 8), w(8192 + 8);
    DeviceBuffer<float> rstd(8), dw(8192), scratch(rmsnorm_backward_scratch_floats(2, 8192));
    EXPECT_THROW(rmsnorm_forward_cuda(b.data(), rstd.data(), a.data(), w.data(), 2, 12, kEps), Error);    // C % 8
    EXPECT_THROW(rmsnorm_forward_cuda(b.data(), rstd.data(), a.data(), w.data(), 2, 8200, kEps), Error);  // C > max
    EXPECT_THROW(rmsnorm_forward_cuda(b.data(), rstd.data(), a.data(), w.data(), 0, 8, kEps), Error);     // N
    EXPECT_THROW(rmsnorm_forward_cuda(b.data(), rstd.data(), a.data() + 1, w.data(), 2, 8, kEps), Error); // align
    EXPECT_THROW(residual_rmsnorm_forward_cuda(a.data(), b.data(), rstd.data(), a.data(), a.data() + 4, w.data(), 2, 8,
                                               kEps),
                 Error);  // branch misaligned
    EXPECT_THROW(rmsnorm_backward_cuda(a.data(), dw.data(), scratch.data(), b.data(), b.data(), w.data(), rstd.data(),
                                       2, 8196),
                 Error);  // C % 8
    EXPECT_THROW(rmsnorm_backward_cuda(a.data(), dw.data(), scratch.data(), a.data(), b.data(), w.data(), rstd.data(),
                                       2, 8),
                 Error);  // dinp aliasing dout
}
