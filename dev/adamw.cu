// dev/adamw.cu: the road to kernels/adamw.cu, llm.c dev/cuda style.
//
//   AdamW step (fp32 master, m, v; bf16 copy by stochastic rounding):
//   version 1: naive port of the CPU loop, one thread per parameter, 4-byte loads
//   version 2: 4 parameters per thread, 128-bit loads and stores, grid-stride: llmq::adamw_update_cuda
//   global norm (sum of squares, in double, deterministic):
//   version 1: per-block partials from 4-byte loads, one thread per element, then one block sums them
//   version 2: a fixed grid of at most 1024 blocks striding with 128-bit loads: llmq::sum_squares_cuda
//
// Each version is checked against the CPU reference (adamw_update_cpu, sum_squares_cpu) on fresh random inputs
// with a tail, then timed on one tensor of 64M parameters (the 60m model's 58M) and of 512M (350m's 368M; 1b
// and 7b step as a few such) when the GPU has the ~10 GB. Memory-bound: AdamW moves 30 bytes per parameter
// (reads master, grad, m, v; writes master, m, v and the bf16 copy), the norm reads 4; GB/s against the copy
// bandwidth measured in the same run.
//
// build: make build/dev/adamw
// run:   ./build/dev/adamw [version=all]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "../kernels/adamw.h"
#include "../kernels/adamw_cuda.h"
#include "../kernels/stochastic_round_cuda.h"
#include "../test/gpu_test_util.h"
#include "dev_cuda.h"

using namespace llmq;

struct Hyper {
    float lr = 3e-4f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.1f, grad_scale = 0.5f;
};

__global__ void adamw_v1(float* master, bf16* param, const float* grad, float* m, float* v, size_t n, Hyper h,
                         float bc1, float bc2, uint64_t key) {
    const size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    adamw_element(master[i], grad[i] * h.grad_scale, m[i], v[i], h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, bc1,
                  bc2);
    param[i] = stochastic_round_bf16(master[i], key, i);
}

constexpr int kNormBlockV1 = 256;
__global__ void sum_squares_partials_v1(double* partials, const float* x, size_t n) {
    __shared__ double shared[kNormBlockV1];
    const size_t i = blockIdx.x * (size_t)kNormBlockV1 + threadIdx.x;
    shared[threadIdx.x] = i < n ? (double)x[i] * (double)x[i] : 0.0;
    __syncthreads();
    for (int half = kNormBlockV1 / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) partials[blockIdx.x] = shared[0];
}
// one block of kNormBlockV1 threads: strided sums of the partials, then the same tree
__global__ void sum_squares_final_v1(float* result, const double* partials, size_t count) {
    __shared__ double shared[kNormBlockV1];
    double s = 0.0;
    for (size_t i = threadIdx.x; i < count; i += kNormBlockV1) s += partials[i];
    shared[threadIdx.x] = s;
    __syncthreads();
    for (int half = kNormBlockV1 / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) *result = (float)shared[0];
}

static void adamw(int version, float* master, bf16* param, const float* grad, float* m, float* v, size_t n,
                  const Hyper& h, int step, uint32_t seed) {
    if (version == 1) {
        adamw_v1<<<ceil_div(n, 256), 256>>>(master, param, grad, m, v, n, h, adam_bias_correction(h.beta1, step),
                                             adam_bias_correction(h.beta2, step), stochastic_round_key(seed));
        CUDA_CHECK_LAUNCH();
    } else {
        adamw_update_cuda(master, param, grad, m, v, n, h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, step,
                          h.grad_scale, seed);
    }
}

// scratch: ceil(n / 256) doubles for version 1, sum_squares_scratch_count(n) for version 2
static void sum_squares(int version, float* result, double* scratch, const float* x, size_t n) {
    if (version == 1) {
        const int blocks = ceil_div(n, kNormBlockV1);
        sum_squares_partials_v1<<<blocks, kNormBlockV1>>>(scratch, x, n);
        sum_squares_final_v1<<<1, kNormBlockV1>>>(result, scratch, blocks);
        CUDA_CHECK_LAUNCH();
    } else {
        sum_squares_cuda(result, scratch, x, n);
    }
}

static double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
    double err = 0, norm = 0;
    for (size_t i = 0; i < got.size(); i++) {
        const double d = (double)got[i] - want[i];
        err += d * d, norm += (double)want[i] * want[i];
    }
    return std::isfinite(err) ? std::sqrt(err / norm) : INFINITY;
}

// both ops of a version against the CPU on a size with a tail; false on failure
static bool check(int version) {
    const size_t n = 1000003;
    Rng rng(10 + version);
    auto w = test::randn_floats(n, rng, 0.5f), g = test::randn_floats(n, rng, 0.05f),
         m = test::randn_floats(n, rng, 0.01f);
    std::vector<float> v(n);
    for (float& x : v) x = std::fabs(rng.normal()) * 1e-4f;
    DeviceBuffer<float> dw(w), dg(g), dm(m), dv(v), result(1);
    DeviceBuffer<bf16> param(n);
    DeviceBuffer<double> scratch(ceil_div(n, kNormBlockV1));
    param.poison(), result.poison();
    const Hyper h;
    adamw(version, dw.data(), param.data(), dg.data(), dm.data(), dv.data(), n, h, 7, 99);
    sum_squares(version, result.data(), scratch.data(), dg.data(), n);
    adamw_update_cpu<float>(w.data(), g.data(), m.data(), v.data(), n, h.lr, h.beta1, h.beta2, h.eps,
                            h.weight_decay, 7, h.grad_scale);
    const double want_ss = sum_squares_cpu(g.data(), n);
    const auto got_w = dw.download();
    const double err = std::max({rel_error(got_w, w), rel_error(dm.download(), m), rel_error(dv.download(), v)});
    // the bf16 copy: within one bf16 gap of the master (it is one of the two neighbours)
    const double param_err = rel_error(test::from_bf16(param.download()), got_w);
    const double ss_err = std::fabs(result.download()[0] - want_ss) / want_ss;
    const bool ok = err < 1e-6 && param_err < 1e-2 && ss_err < 1e-6;
    printf("version %d: adamw relative error %.2e (bf16 copy %.2e), sum of squares %.2e %s\n", version, err,
           param_err, ss_err, ok ? "ok" : "FAILED");
    return ok;
}

__global__ void fill_random_floats(float* x, size_t n, uint32_t seed, float scale, bool positive) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float u = (float)(splitmix64_mix(seed + (i + 1) * Rng::kGamma) >> 40) * (1.0f / 16777216.0f);
        x[i] = scale * (positive ? u : 2.0f * u - 1.0f);
    }
}

int main(int argc, char** argv) {
    if (!dev::gpu_or_skip("dev/adamw")) return 0;
    const int only = argc > 1 ? atoi(argv[1]) : 0;
    const double peak = dev::measured_copy_gbs();
    printf("measured copy bandwidth: %.0f GB/s\n", peak);
    struct Size {
        const char* name;
        size_t n;
    } sizes[] = {{"64M (60m)", (size_t)64 << 20}, {"512M (350m..7b)", (size_t)512 << 20}};
    size_t free_bytes = 0, total_bytes = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const size_t bytes_per_param = 4 * sizeof(float) + sizeof(bf16);  // master, grad, m, v, param resident
    size_t max_n = 0;
    for (const Size& s : sizes)
        if (s.n * bytes_per_param + ((size_t)1 << 30) < free_bytes) max_n = s.n;  // keep 1 GiB free
    if (max_n == 0) {
        printf("dev/adamw: %.1f GiB free is too little for the smallest case\n", free_bytes / 1073741824.0);
        return 1;
    }
    DeviceBuffer<float> master(max_n), grad(max_n), m(max_n), v(max_n), result(1);
    DeviceBuffer<bf16> param(max_n);
    DeviceBuffer<double> scratch(std::max<size_t>(ceil_div(max_n, kNormBlockV1), sum_squares_scratch_count(max_n)));
    fill_random_floats<<<1024, 256>>>(master.data(), max_n, 1, 0.1f, false);
    fill_random_floats<<<1024, 256>>>(grad.data(), max_n, 2, 0.01f, false);
    fill_random_floats<<<1024, 256>>>(m.data(), max_n, 3, 0.001f, false);
    fill_random_floats<<<1024, 256>>>(v.data(), max_n, 4, 1e-5f, true);
    CUDA_CHECK_LAUNCH();
    const Hyper h;
    for (int version = 1; version <= 2; version++) {
        if (only && version != only) continue;
        if (!check(version)) return 1;
        for (const Size& s : sizes) {
            if (s.n > max_n) {
                printf("version %d: %s skipped (%.1f GiB free)\n", version, s.name, free_bytes / 1073741824.0);
                continue;
            }
            int step = 1;
            const float ams = dev::median_ms([&] {
                adamw(version, master.data(), param.data(), grad.data(), m.data(), v.data(), s.n, h, step, step);
                step++;
            });
            const float nms =
                dev::median_ms([&] { sum_squares(version, result.data(), scratch.data(), grad.data(), s.n); });
            const std::string c = "v" + std::to_string(version) + " " + s.name;
            dev::print_summary("adamw", c, ams, 30.0 * s.n / (ams * 1e-3) / 1e9, peak, "GB/s");
            dev::print_summary("grad_norm", c, nms, 4.0 * s.n / (nms * 1e-3) / 1e9, peak, "GB/s");
        }
    }
    return 0;
}
