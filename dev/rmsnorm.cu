// dev/rmsnorm.cu: the road to kernels/rmsnorm.cu, llm.c dev/cuda style.
//
//   version 1: naive port of the CPU code: one thread per row, 2-byte loads, two passes over the row; the
//              skip connection a separate elementwise kernel; dweight one thread per channel over all rows
//   version 2: one warp per row, lanes striding the row (coalesced 2-byte loads), row sums by warp shuffles;
//              the skip connection still separate, dweight as version 1
//   version 3: row teams of 1..8 warps, 128-bit loads, the row kept in registers, the skip connection fused
//              into the norm, dweight from per-block partials summed in a fixed order: llmq's
//              rmsnorm_forward_cuda, residual_rmsnorm_forward_cuda and rmsnorm_backward_cuda themselves
//
// Each version is checked against the CPU reference on fresh random bf16 inputs (forward, fused forward
// and backward), then timed on the models' widths (C = 512, 1024, 2048, 4096 for 60m, 350m, 1b, 7b; N =
// B*T = 8192 rows). Memory-bound: GB/s counts the bytes each op must move once (forward 4NC, fused
// forward 8NC, backward 8NC, plus rstd), against the copy bandwidth measured in the same run; the unfused
// versions pay for their extra passes in the figure.
//
// build: make build/dev/rmsnorm
// run:   ./build/dev/rmsnorm [version=all]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "../kernels/cuda_reduce.h"
#include "../kernels/residual.h"
#include "../kernels/rmsnorm.h"
#include "../kernels/rmsnorm_cuda.h"
#include "../test/gpu_test_util.h"
#include "dev_cuda.h"

using namespace llmq;

constexpr float kEps = 1e-5f;

// ---- version 1 ----------------------------------------------------------------------------------------------

__global__ void residual_v1(bf16* out, const bf16* a, const bf16* b, size_t n) {
    const size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i < n) out[i] = __float2bfloat16(__bfloat162float(a[i]) + __bfloat162float(b[i]));
}

__global__ void rmsnorm_forward_v1(bf16* out, float* rstd, const bf16* inp, const bf16* weight, int N, int C,
                                   float eps) {
    const int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= N) return;
    const bf16* x = inp + (size_t)row * C;
    float ss = 0.0f;
    for (int i = 0; i < C; i++) ss += __bfloat162float(x[i]) * __bfloat162float(x[i]);
    const float r = 1.0f / sqrtf(ss / C + eps);
    for (int i = 0; i < C; i++)
        out[(size_t)row * C + i] = __float2bfloat16(__bfloat162float(x[i]) * r * __bfloat162float(weight[i]));
    rstd[row] = r;
}

__global__ void rmsnorm_backward_dinp_v1(bf16* dinp, const bf16* dout, const bf16* inp, const bf16* weight,
                                         const float* rstd, int N, int C) {
    const int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= N) return;
    const bf16 *x = inp + (size_t)row * C, *dy = dout + (size_t)row * C;
    bf16* dx = dinp + (size_t)row * C;
    const float r = rstd[row];
    float dot = 0.0f;
    for (int i = 0; i < C; i++)
        dot += __bfloat162float(dy[i]) * __bfloat162float(weight[i]) * __bfloat162float(x[i]);
    const float coef = r * r * r * dot / C;
    for (int i = 0; i < C; i++)
        dx[i] = __float2bfloat16(__bfloat162float(dx[i]) + (r * __bfloat162float(dy[i]) * __bfloat162float(weight[i]) -
                                                            coef * __bfloat162float(x[i])));
}

// versions 1 and 2: one thread per channel sums every row in order (deterministic, few threads)
__global__ void rmsnorm_backward_dweight_v1(float* dweight, const bf16* dout, const bf16* inp, const float* rstd,
                                            int N, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float acc = 0.0f;
    for (int n = 0; n < N; n++)
        acc += __bfloat162float(dout[(size_t)n * C + c]) * __bfloat162float(inp[(size_t)n * C + c]) * rstd[n];
    dweight[c] += acc;
}

// ---- version 2 ----------------------------------------------------------------------------------------------

__global__ void rmsnorm_forward_v2(bf16* out, float* rstd, const bf16* inp, const bf16* weight, int N, int C,
                                   float eps) {
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;  // the whole warp leaves: no shuffle has a missing lane
    const bf16* x = inp + (size_t)row * C;
    float ss = 0.0f;
    for (int i = lane; i < C; i += 32) ss += __bfloat162float(x[i]) * __bfloat162float(x[i]);
    const float r = 1.0f / sqrtf(warp_sum(ss) / C + eps);
    for (int i = lane; i < C; i += 32)
        out[(size_t)row * C + i] = __float2bfloat16(__bfloat162float(x[i]) * r * __bfloat162float(weight[i]));
    if (lane == 0) rstd[row] = r;
}

__global__ void rmsnorm_backward_dinp_v2(bf16* dinp, const bf16* dout, const bf16* inp, const bf16* weight,
                                         const float* rstd, int N, int C) {
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= N) return;
    const bf16 *x = inp + (size_t)row * C, *dy = dout + (size_t)row * C;
    bf16* dx = dinp + (size_t)row * C;
    const float r = rstd[row];
    float dot = 0.0f;
    for (int i = lane; i < C; i += 32)
        dot += __bfloat162float(dy[i]) * __bfloat162float(weight[i]) * __bfloat162float(x[i]);
    const float coef = r * r * r * warp_sum(dot) / C;
    for (int i = lane; i < C; i += 32)
        dx[i] = __float2bfloat16(__bfloat162float(dx[i]) + (r * __bfloat162float(dy[i]) * __bfloat162float(weight[i]) -
                                                            coef * __bfloat162float(x[i])));
}

// ---- dispatch -----------------------------------------------------------------------------------------------

static void forward(int version, bf16* out, float* rstd, const bf16* inp, const bf16* weight, int N, int C) {
    if (version == 1) {
        rmsnorm_forward_v1<<<ceil_div(N, 64), 64>>>(out, rstd, inp, weight, N, C, kEps);
    } else if (version == 2) {
        rmsnorm_forward_v2<<<ceil_div(N, 8), 256>>>(out, rstd, inp, weight, N, C, kEps);
    } else {
        rmsnorm_forward_cuda(out, rstd, inp, weight, N, C, kEps);
    }
    CUDA_CHECK_LAUNCH();
}
static void residual_forward(int version, bf16* res_out, bf16* norm_out, float* rstd, const bf16* res_in,
                             const bf16* branch, const bf16* weight, int N, int C) {
    if (version == 3) {
        residual_rmsnorm_forward_cuda(res_out, norm_out, rstd, res_in, branch, weight, N, C, kEps);
        return;
    }
    residual_v1<<<ceil_div((size_t)N * C, 256), 256>>>(res_out, res_in, branch, (size_t)N * C);
    CUDA_CHECK_LAUNCH();
    forward(version, norm_out, rstd, res_out, weight, N, C);
}
static void backward(int version, bf16* dinp, float* dweight, float* scratch, const bf16* dout, const bf16* inp,
                     const bf16* weight, const float* rstd, int N, int C) {
    if (version == 3) {
        rmsnorm_backward_cuda(dinp, dweight, scratch, dout, inp, weight, rstd, N, C);
        return;
    }
    if (version == 1) rmsnorm_backward_dinp_v1<<<ceil_div(N, 64), 64>>>(dinp, dout, inp, weight, rstd, N, C);
    else rmsnorm_backward_dinp_v2<<<ceil_div(N, 8), 256>>>(dinp, dout, inp, weight, rstd, N, C);
    CUDA_CHECK_LAUNCH();
    rmsnorm_backward_dweight_v1<<<ceil_div(C, 256), 256>>>(dweight, dout, inp, rstd, N, C);
    CUDA_CHECK_LAUNCH();
}

// ---- correctness --------------------------------------------------------------------------------------------

static double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
    double err = 0, norm = 0;
    for (size_t i = 0; i < got.size(); i++) {
        if (!std::isfinite(got[i])) return INFINITY;  // an unwritten (poisoned) element
        err += ((double)got[i] - want[i]) * ((double)got[i] - want[i]), norm += (double)want[i] * want[i];
    }
    return std::sqrt(err / norm);
}
static bool report(int version, const char* what, double err, double tol) {
    const bool ok = err <= tol;
    printf("version %d: %-22s relative error %.2e %s\n", version, what, err, ok ? "ok" : "FAILED");
    return ok;
}

// all three ops of one version on one shape, fresh random inputs, against the CPU reference
static bool check(int version, int N, int C, uint64_t seed) {
    printf("version %d: check N=%d C=%d\n", version, N, C);
    Rng rng(seed);
    const size_t n = (size_t)N * C;
    using test::bf16_rounded, test::randn_floats, test::to_bf16, test::from_bf16;
    const auto res = bf16_rounded(randn_floats(n, rng, 3.0f)), branch = bf16_rounded(randn_floats(n, rng)),
               w = bf16_rounded(randn_floats(C, rng)), dout = bf16_rounded(randn_floats(n, rng)),
               dinp0 = bf16_rounded(randn_floats(n, rng)), dweight0 = randn_floats(C, rng);
    // the add in fp32 as the kernels do it; the norm in double (its long fp32 sums would blur the 1e-5 checks)
    std::vector<float> sum(n);
    residual_forward_cpu<float>(sum.data(), res.data(), branch.data(), n);
    sum = bf16_rounded(sum);
    auto dbl = [](const std::vector<float>& x) { return std::vector<double>(x.begin(), x.end()); };
    auto flt = [](const std::vector<double>& x) { return std::vector<float>(x.begin(), x.end()); };
    std::vector<double> norm_d(n), rstd_d(N), dinp_d = dbl(dinp0), dweight_d = dbl(dweight0);
    rmsnorm_forward_cpu<double>(norm_d.data(), rstd_d.data(), dbl(sum).data(), dbl(w).data(), N, C, kEps);
    const std::vector<float> norm = flt(norm_d), rstd = flt(rstd_d);
    rmsnorm_backward_cpu<double>(dinp_d.data(), dweight_d.data(), dbl(dout).data(), dbl(sum).data(), dbl(w).data(),
                                 dbl(rstd).data(), N, C);
    const std::vector<float> dinp_ref = flt(dinp_d), dweight_ref = flt(dweight_d);

    DeviceBuffer<bf16> d_res(to_bf16(res)), d_branch(to_bf16(branch)), d_w(to_bf16(w)), d_dout(to_bf16(dout)),
        d_dinp(to_bf16(dinp0)), d_sum(n), d_norm(n);
    DeviceBuffer<float> d_rstd(N), d_dweight(dweight0), scratch(rmsnorm_backward_scratch_floats(N, C));
    d_sum.poison(), d_norm.poison(), d_rstd.poison(), scratch.poison();
    residual_forward(version, d_sum.data(), d_norm.data(), d_rstd.data(), d_res.data(), d_branch.data(), d_w.data(),
                     N, C);
    bool ok = report(version, "fused: residual_out", rel_error(from_bf16(d_sum.download()), sum), 0.0);
    ok &= report(version, "fused: norm_out", rel_error(from_bf16(d_norm.download()), norm), 1e-2);
    ok &= report(version, "fused: rstd", rel_error(d_rstd.download(), rstd), 1e-5);
    d_norm.poison(), d_rstd.poison();
    forward(version, d_norm.data(), d_rstd.data(), d_sum.data(), d_w.data(), N, C);
    ok &= report(version, "forward: out", rel_error(from_bf16(d_norm.download()), norm), 1e-2);
    ok &= report(version, "forward: rstd", rel_error(d_rstd.download(), rstd), 1e-5);
    DeviceBuffer<float> d_rstd_ref(rstd);  // the backward alone: the CPU's rstd on both sides
    backward(version, d_dinp.data(), d_dweight.data(), scratch.data(), d_dout.data(), d_sum.data(), d_w.data(),
             d_rstd_ref.data(), N, C);
    ok &= report(version, "backward: dinp (+=)", rel_error(from_bf16(d_dinp.download()), dinp_ref), 1e-2);
    ok &= report(version, "backward: dweight (+=)", rel_error(d_dweight.download(), dweight_ref), 1e-5);
    return ok;
}

// ---- benchmark ----------------------------------------------------------------------------------------------

static void bench(int version, const char* model, int N, int C, double peak) {
    const size_t n = (size_t)N * C;
    DeviceBuffer<bf16> res(n), branch(n), w(C), sum(n), norm(n), dout(n), dinp(n);
    DeviceBuffer<float> rstd(N), dweight(C), scratch(rmsnorm_backward_scratch_floats(N, C));
    dev::dev_fill_random_bf16<<<1024, 256>>>(res.data(), n, 1);
    dev::dev_fill_random_bf16<<<1024, 256>>>(branch.data(), n, 2);
    dev::dev_fill_random_bf16<<<64, 256>>>(w.data(), C, 3);
    dev::dev_fill_random_bf16<<<1024, 256>>>(dout.data(), n, 4);
    dinp.zero(), dweight.zero();
    CUDA_CHECK_LAUNCH();
    // the fused forward runs first: its residual_out and rstd are the other two ops' inputs
    const float fused_ms = dev::median_ms([&] {
        residual_forward(version, sum.data(), norm.data(), rstd.data(), res.data(), branch.data(), w.data(), N, C);
    });
    const float fwd_ms = dev::median_ms([&] { forward(version, norm.data(), rstd.data(), sum.data(), w.data(), N, C); });
    const float bwd_ms = dev::median_ms([&] {
        backward(version, dinp.data(), dweight.data(), scratch.data(), dout.data(), sum.data(), w.data(), rstd.data(),
                 N, C);
    });
    const std::string c = "v" + std::to_string(version) + " " + model + " C=" + std::to_string(C);
    const double nb = 2.0 * n, stats = 4.0 * N;  // bytes of one (N,C) bf16 stream, of rstd
    dev::print_summary("rmsnorm_forward", c, fwd_ms, (2 * nb + stats) / (fwd_ms * 1e-3) / 1e9, peak, "GB/s");
    dev::print_summary("residual_rmsnorm_forward", c, fused_ms, (4 * nb + stats) / (fused_ms * 1e-3) / 1e9, peak,
                       "GB/s");
    dev::print_summary("rmsnorm_backward", c, bwd_ms, (4 * nb + stats) / (bwd_ms * 1e-3) / 1e9, peak, "GB/s");
}

int main(int argc, char** argv) {
    if (!dev::gpu_or_skip("dev/rmsnorm")) return 0;
    const int only = argc > 1 ? atoi(argv[1]) : 0;
    const double peak = dev::measured_copy_gbs();
    printf("measured copy bandwidth: %.0f GB/s\n", peak);
    struct Shape { const char* model; int C; } shapes[] = {{"60m", 512}, {"350m", 1024}, {"1b", 2048}, {"7b", 4096}};
    const int N = 8192;
    for (int version = 1; version <= 3; version++) {
        if (only && version != only) continue;
        // odd N (partial blocks; backward teams over several rows) and a ragged multi-warp row
        if (!check(version, 1001, 768, 10 * version) || !check(version, 1300, 4104, 10 * version + 1)) return 1;
        for (const auto& s : shapes) bench(version, s.model, N, s.C, peak);
    }
    return 0;
}
