// dev/matmul.cu: the road to kernels/matmul.cu, llm.c dev/cuda style.
//
//   version 1: naive port of the CPU products, one thread per output element, fp32 sum over k, no tiling
//   version 2: cuBLASLt, bf16 tensor cores, fp32 accumulate, algorithm cached per shape: llmq::matmul_*_cuda
//
// Each version is checked (all three products) against the fp32 CPU reference on fresh random bf16 inputs,
// on an odd shape and a 60m layer shape, then timed on the Linears of 60m..7b (N = B*T = 8192 rows):
// attention projections C -> C, MLP up/gate C -> F, down F -> C, lm_head C -> V (V = 32000). Matrix-bound:
// the benchmark prints TFLOP/s (2 N C OC flops per product) against cuBLAS's 8192^3 bf16 rate measured in
// the same run. Version 1 runs only on the 60m shapes (minutes otherwise).
//
// build: make build/dev/matmul
// run:   ./build/dev/matmul [version=all]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "../kernels/matmul.h"
#include "../kernels/matmul_cuda.h"
#include "../test/gpu_test_util.h"
#include "dev_cuda.h"

using namespace llmq;

// row-major D (M,N) (+)= op(A) op(B); A stored (M,K), or (K,M) when ta; B stored (K,N), or (N,K) when tb
template <typename Out>
__global__ void gemm_v1(Out* D, const bf16* A, const bf16* B, int M, int N, int K, bool ta, bool tb, bool acc) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x, i = blockIdx.y;
    if (j >= N || i >= M) return;
    float sum = 0.0f;
    for (int k = 0; k < K; k++) {
        const float a = __bfloat162float(ta ? A[(size_t)k * M + i] : A[(size_t)i * K + k]);
        const float b = __bfloat162float(tb ? B[(size_t)j * K + k] : B[(size_t)k * N + j]);
        sum += a * b;
    }
    Out& d = D[(size_t)i * N + j];
    d = (Out)(acc ? (float)d + sum : sum);
}
template <typename Out>
void launch_v1(Out* D, const bf16* A, const bf16* B, int M, int N, int K, bool ta, bool tb, bool acc) {
    gemm_v1<<<dim3(ceil_div(N, 256), M), 256>>>(D, A, B, M, N, K, ta, tb, acc);
    CUDA_CHECK_LAUNCH();
}

struct Products {
    int version;
    Blas& blas;
    void forward(bf16* out, const bf16* inp, const bf16* w, int N, int C, int OC) {
        if (version == 1) launch_v1(out, inp, w, N, OC, C, false, true, false);
        else matmul_forward_cuda(blas, out, inp, w, N, C, OC);
    }
    void backward_input(bf16* dinp, const bf16* dout, const bf16* w, int N, int C, int OC) {  // +=
        if (version == 1) launch_v1(dinp, dout, w, N, C, OC, false, false, true);
        else matmul_backward_input_cuda(blas, dinp, dout, w, N, C, OC, true);
    }
    void backward_weight(float* dw, const bf16* dout, const bf16* inp, int N, int C, int OC) {  // +=
        if (version == 1) launch_v1(dw, dout, inp, OC, C, N, true, false, true);
        else matmul_backward_weight_cuda(blas, dw, dout, inp, N, C, OC);
    }
};

static double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
    double err = 0, norm = 0;
    for (size_t i = 0; i < got.size(); i++) {
        if (!std::isfinite(got[i])) return INFINITY;
        err += ((double)got[i] - want[i]) * ((double)got[i] - want[i]), norm += (double)want[i] * want[i];
    }
    return std::sqrt(err / norm);
}

// all three products of `p` on one shape against the CPU; prints the errors, false on failure
static bool check(Products& p, int N, int C, int OC, uint64_t seed) {
    Rng rng(seed);
    const auto inp = test::bf16_rounded(test::randn_floats((size_t)N * C, rng));
    const auto w = test::bf16_rounded(test::randn_floats((size_t)OC * C, rng, 1.0f / std::sqrt((float)C)));
    const auto dout = test::bf16_rounded(test::randn_floats((size_t)N * OC, rng));
    const auto dinp0 = test::bf16_rounded(test::randn_floats((size_t)N * C, rng));
    const auto dw0 = test::randn_floats((size_t)OC * C, rng);
    std::vector<float> out_ref((size_t)N * OC), dinp_ref = dinp0, dw_ref = dw0;
    matmul_forward_cpu<float>(out_ref.data(), inp.data(), w.data(), N, C, OC);
    matmul_backward_input_cpu<float>(dinp_ref.data(), dout.data(), w.data(), N, C, OC);
    matmul_backward_weight_cpu<float>(dw_ref.data(), dout.data(), inp.data(), N, C, OC);

    DeviceBuffer<bf16> d_inp(test::to_bf16(inp)), d_w(test::to_bf16(w)), d_dout(test::to_bf16(dout)),
        d_dinp(test::to_bf16(dinp0)), d_out(out_ref.size());
    DeviceBuffer<float> d_dw(dw0);
    d_out.poison();
    p.forward(d_out.data(), d_inp.data(), d_w.data(), N, C, OC);
    p.backward_input(d_dinp.data(), d_dout.data(), d_w.data(), N, C, OC);
    p.backward_weight(d_dw.data(), d_dout.data(), d_inp.data(), N, C, OC);
    CUDA_CHECK(cudaDeviceSynchronize());
    const double e_out = rel_error(test::from_bf16(d_out.download()), out_ref),
                 e_dinp = rel_error(test::from_bf16(d_dinp.download()), dinp_ref),
                 e_dw = rel_error(d_dw.download(), dw_ref);
    const bool ok = e_out < 1e-2 && e_dinp < 1e-2 && e_dw < 1e-4;
    printf("version %d (N=%d C=%d OC=%d): relative error forward %.2e, backward input %.2e, backward weight %.2e %s\n",
           p.version, N, C, OC, e_out, e_dinp, e_dw, ok ? "ok" : "FAILED");
    return ok;
}

int main(int argc, char** argv) {
    if (!dev::gpu_or_skip("dev/matmul")) return 0;
    const int only = argc > 1 ? atoi(argv[1]) : 0;
    const double peak = dev::measured_bf16_tflops();
    printf("measured bf16 matmul rate: %.0f TFLOP/s\n", peak);
    struct Model { const char* name; int C, F; } models[] = {{"60m", 512, 1376}, {"350m", 1024, 2736},
                                                              {"1b", 2048, 5461}, {"7b", 4096, 11008}};
    const int N = 8192, V = 32000;
    Blas blas;
    for (int version = 1; version <= 2; version++) {
        if (only && version != only) continue;
        Products p{version, blas};
        if (!check(p, 37, 75, 41, 1) || !check(p, 64, 512, 1376, 2)) return 1;
        for (const Model& m : models) {
            if (version == 1 && std::string(m.name) != "60m") continue;
            struct Layer { const char* name; int C, OC; } layers[] = {
                {"attn", m.C, m.C}, {"mlp_up", m.C, m.F}, {"mlp_down", m.F, m.C}, {"lm_head", m.C, V}};
            for (const Layer& l : layers) {
                if (version == 1 && std::string(l.name) == "lm_head") continue;
                const size_t n_in = (size_t)N * l.C, n_out = (size_t)N * l.OC, n_w = (size_t)l.OC * l.C;
                DeviceBuffer<bf16> inp(n_in), w(n_w), out(n_out), dout(n_out), dinp(n_in);
                DeviceBuffer<float> dw(n_w);
                dev::dev_fill_random_bf16<<<1024, 256>>>(inp.data(), n_in, 1);
                dev::dev_fill_random_bf16<<<1024, 256>>>(w.data(), n_w, 2);
                dev::dev_fill_random_bf16<<<1024, 256>>>(dout.data(), n_out, 3);
                dev::dev_fill_random_bf16<<<1024, 256>>>(dinp.data(), n_in, 4);
                CUDA_CHECK_LAUNCH();
                dw.zero();
                const int reps = version == 1 ? 3 : 10, warmup = version == 1 ? 1 : 3;
                const float fms = dev::median_ms([&] { p.forward(out.data(), inp.data(), w.data(), N, l.C, l.OC); }, reps, warmup);
                const float ims = dev::median_ms([&] { p.backward_input(dinp.data(), dout.data(), w.data(), N, l.C, l.OC); }, reps, warmup);
                const float wms = dev::median_ms([&] { p.backward_weight(dw.data(), dout.data(), inp.data(), N, l.C, l.OC); }, reps, warmup);
                const double flops = 2.0 * N * l.C * l.OC;
                const std::string c = "v" + std::to_string(version) + " " + m.name + " " + l.name + " " +
                                      std::to_string(l.C) + "->" + std::to_string(l.OC);
                dev::print_summary("matmul_forward", c, fms, flops / (fms * 1e-3) / 1e12, peak, "TFLOP/s");
                dev::print_summary("matmul_backward_input", c, ims, flops / (ims * 1e-3) / 1e12, peak, "TFLOP/s");
                dev::print_summary("matmul_backward_weight", c, wms, flops / (wms * 1e-3) / 1e12, peak, "TFLOP/s");
            }
        }
    }
    return 0;
}
