// dev/dequant4.cu: the road to quant/fourbit.cu's fused 4-bit matmuls, llm.c dev/cuda style.
//
//   version 1: what users have today (bitsandbytes-style): dequantize W to a bf16 buffer in global memory
//              (dequantize_4bit_cuda), then the plain bf16 cublasGemmEx
//   version 2: fused: each block dequantizes its weight tile in shared memory and multiplies with WMMA tensor
//              cores; the bf16 W is never written to global memory: llmq::matmul_4bit_*_cuda itself
//
// Each version is checked against the CPU (fp32 product of the bf16 inputs and the bf16-rounded CPU dequant)
// on fresh random inputs, forward and backward-input with accumulation, then timed on the linear layers of
// 60m..7b, N = 4096 and 8192 rows, (C, OC) = (512,512) (512,1376) (1024,2736) (2048,5504) (4096,4096)
// (4096,11008). Matmul-bound: TFLOP/s against the cuBLAS bf16 rate measured in the same run, and each case
// name carries the ratio of its time to plain bf16 cublasGemmEx on an unquantized weight of the same shape
// (the goal: <= 1.1x). The dequantize kernel alone is reported in GB/s against the copy bandwidth.
//
// build: make build/dev/dequant4
// run:   ./build/dev/dequant4 [version=all]
#include <cstdio>
#include <cstdlib>
#include <string>

#include "../kernels/matmul.h"
#include "../quant/fourbit.h"
#include "../quant/fourbit_cuda.h"
#include "../test/gpu_test_util.h"
#include "dev_cuda.h"

using namespace llmq;

namespace {

cublasHandle_t cublas() {
    static cublasHandle_t h = nullptr;
    if (!h && cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) throw Error("cublasCreate failed");
    return h;
}
void cublas_check(cublasStatus_t s) {
    if (s != CUBLAS_STATUS_SUCCESS) throw Error(format("cublasGemmEx failed (status %d)", (int)s));
}

// row-major out (N,OC) = inp (N,C) @ w (OC,C)^T, as llm.c: in cuBLAS's column-major view out^T = op_T(w) inp^T
void cublas_forward(bf16* out, const bf16* inp, const bf16* w, int N, int C, int OC) {
    const float one = 1.0f, zero = 0.0f;
    cublas_check(cublasGemmEx(cublas(), CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, &one, w, CUDA_R_16BF, C, inp, CUDA_R_16BF,
                              C, &zero, out, CUDA_R_16BF, OC, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}
// row-major dinp (N,C) (+)= dout (N,OC) @ w (OC,C)
void cublas_backward_input(bf16* dinp, const bf16* dout, const bf16* w, int N, int C, int OC, bool accumulate) {
    const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    cublas_check(cublasGemmEx(cublas(), CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, &one, w, CUDA_R_16BF, C, dout, CUDA_R_16BF,
                              OC, &beta, dinp, CUDA_R_16BF, C, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// version 1 needs a (OC,C) bf16 scratch for the dequantized weight; version 2 none
void forward(int version, bf16* out, const bf16* inp, const DeviceQuantizedTensor& w, bf16* scratch, int N, int C,
             int OC) {
    if (version == 1) {
        dequantize_4bit_cuda(scratch, w);
        cublas_forward(out, inp, scratch, N, C, OC);
    } else {
        matmul_4bit_forward_cuda(out, inp, w, N, C, OC);
    }
}
void backward_input(int version, bf16* dinp, const bf16* dout, const DeviceQuantizedTensor& w, bf16* scratch, int N,
                    int C, int OC, bool accumulate) {
    if (version == 1) {
        dequantize_4bit_cuda(scratch, w);
        cublas_backward_input(dinp, dout, scratch, N, C, OC, accumulate);
    } else {
        matmul_4bit_backward_input_cuda(dinp, dout, w, N, C, OC, accumulate);
    }
}

double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
    double err = 0, norm = 0;
    for (size_t i = 0; i < got.size(); i++) {
        if (!std::isfinite(got[i])) return INFINITY;
        err += ((double)got[i] - want[i]) * ((double)got[i] - want[i]), norm += (double)want[i] * want[i];
    }
    return std::sqrt(err / norm);
}

// forward and accumulating backward-input on a 350m-like shape with tail rows, against the CPU
bool check_version(int version) {
    const int N = 201, C = 1024, OC = 2736;
    Rng rng(100 + version);
    std::vector<float> wf = test::randn_floats((size_t)OC * C, rng, 0.02f);
    const QuantizedTensor q = quantize_4bit_cpu(wf.data(), OC, C, QuantSpec{QuantFormat::NF4, 64});
    std::vector<float> deq(q.numel());
    dequantize_4bit_cpu(q, deq.data());
    deq = test::bf16_rounded(deq);
    const auto x = test::bf16_rounded(test::randn_floats((size_t)N * C, rng)),
               dy = test::bf16_rounded(test::randn_floats((size_t)N * OC, rng)),
               old = test::bf16_rounded(test::randn_floats((size_t)N * C, rng));
    std::vector<float> y_ref((size_t)N * OC), dx_ref = old;
    matmul_forward_cpu<float>(y_ref.data(), x.data(), deq.data(), N, C, OC);
    matmul_backward_input_cpu<float>(dx_ref.data(), dy.data(), deq.data(), N, C, OC);

    const DeviceQuantizedTensor w(q);
    DeviceBuffer<bf16> dx_in(test::to_bf16(x)), ddy(test::to_bf16(dy)), y((size_t)N * OC), dx(test::to_bf16(old)),
        scratch((size_t)OC * C);
    y.poison();
    forward(version, y.data(), dx_in.data(), w, scratch.data(), N, C, OC);
    backward_input(version, dx.data(), ddy.data(), w, scratch.data(), N, C, OC, true);
    CUDA_CHECK(cudaDeviceSynchronize());
    const double ef = rel_error(test::from_bf16(y.download()), y_ref),
                 eb = rel_error(test::from_bf16(dx.download()), dx_ref);
    const bool ok = ef < 1e-2 && eb < 1e-2;
    printf("version %d: forward relative error %.2e, backward-input (accumulate) %.2e %s\n", version, ef, eb,
           ok ? "ok" : "FAILED");
    return ok;
}

__global__ void bf16_to_fp32(float* out, const bf16* in, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = __bfloat162float(in[i]);
}

}  // namespace

int main(int argc, char** argv) {
    if (!dev::gpu_or_skip("dev/dequant4")) return 0;
    const int only = argc > 1 ? atoi(argv[1]) : 0;
    for (int version = 1; version <= 2; version++)
        if ((!only || version == only) && !check_version(version)) return 1;

    const double tflops_peak = dev::measured_bf16_tflops(), gbs_peak = dev::measured_copy_gbs();
    printf("measured cuBLAS bf16 rate: %.0f TFLOP/s, copy bandwidth: %.0f GB/s\n", tflops_peak, gbs_peak);
    struct Shape {
        const char* model;
        int C, OC;
    } shapes[] = {{"60m", 512, 512},  {"60m", 512, 1376}, {"350m", 1024, 2736},
                  {"1b", 2048, 5504}, {"7b", 4096, 4096}, {"7b", 4096, 11008}};
    for (const Shape& s : shapes) {
        const size_t wn = (size_t)s.OC * s.C;
        DeviceBuffer<bf16> wb(wn), scratch(wn);
        DeviceBuffer<float> wf(wn);
        dev::dev_fill_random_bf16<<<1024, 256>>>(wb.data(), wn, 7);
        bf16_to_fp32<<<1024, 256>>>(wf.data(), wb.data(), wn);
        CUDA_CHECK_LAUNCH();
        DeviceQuantizedTensor w(QuantFormat::NF4, s.OC, s.C, 64);
        quantize_4bit_cuda(w, wf.data());

        const float dq_ms = dev::median_ms([&] { dequantize_4bit_cuda(scratch.data(), w); });
        const double dq_bytes = wn / 2.0 + wn / 64 * 4.0 + wn * 2.0;
        dev::print_summary("dequant4", format("%s %dx%d", s.model, s.OC, s.C), dq_ms, dq_bytes / (dq_ms * 1e-3) / 1e9,
                           gbs_peak, "GB/s");

        for (int N : {4096, 8192}) {
            DeviceBuffer<bf16> x((size_t)N * s.C), y((size_t)N * s.OC), dy((size_t)N * s.OC), dx((size_t)N * s.C);
            dev::dev_fill_random_bf16<<<1024, 256>>>(x.data(), x.size(), 1);
            dev::dev_fill_random_bf16<<<1024, 256>>>(dy.data(), dy.size(), 2);
            dev::dev_fill_random_bf16<<<1024, 256>>>(dx.data(), dx.size(), 3);
            CUDA_CHECK_LAUNCH();
            const double flop = 2.0 * N * (double)s.C * s.OC;
            const std::string shape = format("%s N=%d C=%d OC=%d", s.model, N, s.C, s.OC);
            const float ref_f = dev::median_ms([&] { cublas_forward(y.data(), x.data(), wb.data(), N, s.C, s.OC); });
            const float ref_b =
                dev::median_ms([&] { cublas_backward_input(dx.data(), dy.data(), wb.data(), N, s.C, s.OC, true); });
            dev::print_summary("matmul4_forward", "bf16 cuBLAS " + shape, ref_f, flop / (ref_f * 1e-3) / 1e12,
                               tflops_peak, "TFLOP/s");
            dev::print_summary("matmul4_backward_input", "bf16 cuBLAS " + shape, ref_b, flop / (ref_b * 1e-3) / 1e12,
                               tflops_peak, "TFLOP/s");
            for (int version = 1; version <= 2; version++) {
                if (only && version != only) continue;
                const float fms =
                    dev::median_ms([&] { forward(version, y.data(), x.data(), w, scratch.data(), N, s.C, s.OC); });
                const float bms = dev::median_ms(
                    [&] { backward_input(version, dx.data(), dy.data(), w, scratch.data(), N, s.C, s.OC, true); });
                dev::print_summary("matmul4_forward",
                                   format("v%d %s (%.2fx bf16 cuBLAS)", version, shape.c_str(), fms / ref_f), fms,
                                   flop / (fms * 1e-3) / 1e12, tflops_peak, "TFLOP/s");
                dev::print_summary("matmul4_backward_input",
                                   format("v%d %s (%.2fx bf16 cuBLAS)", version, shape.c_str(), bms / ref_b), bms,
                                   flop / (bms * 1e-3) / 1e12, tflops_peak, "TFLOP/s");
            }
        }
    }
    return 0;
}
