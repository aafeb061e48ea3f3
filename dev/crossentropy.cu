// dev/crossentropy.cu: the road to kernels/crossentropy.cu, llm.c dev/cuda style.
//
//   version 1: naive port of the CPU code: one block per row, 2-byte loads, three passes over the row (max,
//              sum of exp, gradient), a shared-memory tree reduction after each of the first two
//   version 2: one online-softmax pass (running max and sum, 8 bf16 per 128-bit load, one block reduction of
//              (max, sum) pairs), then the gradient pass, also 128-bit: llmq::crossentropy_forward_backward_cuda
//
// Each version is checked against the CPU reference (double, on the same bf16 logits) on fresh random inputs
// with an odd vocabulary and ignored rows, then timed on N = 4096 rows of V = 32000 (LLaMA 2), 50257 (gpt2)
// and 128256 (Llama 3). Memory-bound: GB/s counts the logits read once and dlogits written once (2 x N x V x 2
// bytes), against the copy bandwidth measured in the same run.
//
// build: make build/dev/crossentropy
// run:   ./build/dev/crossentropy [version=all]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "../kernels/crossentropy.h"
#include "../kernels/crossentropy_cuda.h"
#include "../test/gpu_test_util.h"
#include "dev_cuda.h"

using namespace llmq;

constexpr int kIgnore = -100;
constexpr int kBlockV1 = 512;

// the block's max or sum of x (op), returned to every thread; shared is kBlockV1 floats
template <bool kMax>
__device__ float block_reduce_v1(float x, float* shared) {
    shared[threadIdx.x] = x;
    __syncthreads();
    for (int half = kBlockV1 / 2; half > 0; half /= 2) {
        if (threadIdx.x < half)
            shared[threadIdx.x] = kMax ? fmaxf(shared[threadIdx.x], shared[threadIdx.x + half])
                                       : shared[threadIdx.x] + shared[threadIdx.x + half];
        __syncthreads();
    }
    const float total = shared[0];
    __syncthreads();  // shared is reused by the next reduction
    return total;
}

__global__ void crossentropy_v1(float* losses, bf16* dlogits, const bf16* logits, const int* targets, int V,
                                float grad_scale) {
    __shared__ float shared[kBlockV1];
    const int row = blockIdx.x, target = targets[row];
    const bf16* x = logits + (size_t)row * V;
    bf16* dx = dlogits + (size_t)row * V;
    if (target == kIgnore) {
        if (threadIdx.x == 0) losses[row] = 0.0f;
        for (int j = threadIdx.x; j < V; j += kBlockV1) dx[j] = __float2bfloat16(0.0f);
        return;
    }
    float m = -INFINITY;
    for (int j = threadIdx.x; j < V; j += kBlockV1) m = fmaxf(m, __bfloat162float(x[j]));
    m = block_reduce_v1<true>(m, shared);
    float s = 0.0f;
    for (int j = threadIdx.x; j < V; j += kBlockV1) s += expf(__bfloat162float(x[j]) - m);
    s = block_reduce_v1<false>(s, shared);  // also the barrier before the row is overwritten
    const float lse = m + logf(s);
    if (threadIdx.x == 0) losses[row] = lse - __bfloat162float(x[target]);
    __syncthreads();  // thread 0 has read x[target] before anyone overwrites it (in place)
    for (int j = threadIdx.x; j < V; j += kBlockV1)
        dx[j] = __float2bfloat16(grad_scale * expf(__bfloat162float(x[j]) - lse) - (j == target ? grad_scale : 0.0f));
}

static void run(int version, float* losses, bf16* dlogits, const bf16* logits, const int* targets, int N, int V,
                float grad_scale) {
    if (version == 1) {
        crossentropy_v1<<<N, kBlockV1>>>(losses, dlogits, logits, targets, V, grad_scale);
        CUDA_CHECK_LAUNCH();
    } else {
        crossentropy_forward_backward_cuda(losses, dlogits, logits, targets, N, V, kIgnore, grad_scale);
    }
}

// relative L2 error of got against want
static double rel_error(const std::vector<float>& got, const std::vector<double>& want) {
    double err = 0, norm = 0;
    for (size_t i = 0; i < got.size(); i++) err += (got[i] - want[i]) * (got[i] - want[i]), norm += want[i] * want[i];
    return std::isfinite(err) ? std::sqrt(err / norm) : INFINITY;
}

// version against the CPU on N rows of V; false on failure
static bool check(int version, int N, int V) {
    Rng rng(100 + version);
    const size_t NV = (size_t)N * V;
    const auto logits = test::bf16_rounded(test::randn_floats(NV, rng, 2.0f));
    std::vector<int> targets(N);
    for (int i = 0; i < N; i++) targets[i] = i % 7 == 2 ? kIgnore : (int)rng.below(V);
    const float grad_scale = 1.0f / N;
    std::vector<double> logits_d(logits.begin(), logits.end()), loss_ref(N), grad_ref(NV);
    crossentropy_forward_backward_cpu<double>(loss_ref.data(), grad_ref.data(), logits_d.data(), targets.data(), N, V,
                                              kIgnore, grad_scale);
    DeviceBuffer<bf16> d_logits(test::to_bf16(logits));
    DeviceBuffer<int> d_targets(targets);
    DeviceBuffer<float> d_losses(N);
    d_losses.poison();
    run(version, d_losses.data(), d_logits.data(), d_logits.data(), d_targets.data(), N, V, grad_scale);  // in place
    const double loss_err = rel_error(d_losses.download(), loss_ref);
    const double grad_err = rel_error(test::from_bf16(d_logits.download()), grad_ref);
    const bool ok = loss_err < 1e-5 && grad_err < 1e-2;
    printf("version %d: V %d loss relative error %.2e, dlogits %.2e %s\n", version, V, loss_err, grad_err,
           ok ? "ok" : "FAILED");
    return ok;
}

int main(int argc, char** argv) {
    if (!dev::gpu_or_skip("dev/crossentropy")) return 0;
    const int only = argc > 1 ? atoi(argv[1]) : 0;
    const double peak = dev::measured_copy_gbs();
    printf("measured copy bandwidth: %.0f GB/s\n", peak);
    const int N = 4096, vocabs[] = {32000, 50257, 128256};
    const size_t max_nv = (size_t)N * 128256;
    DeviceBuffer<bf16> logits(max_nv), dlogits(max_nv);
    DeviceBuffer<float> losses(N);
    std::vector<int> targets(N);
    Rng rng(1);
    for (int version = 1; version <= 2; version++) {
        if (only && version != only) continue;
        if (!check(version, 29, 50257) || !check(version, 8, 128256)) return 1;
        for (const int V : vocabs) {
            for (int i = 0; i < N; i++) targets[i] = (int)rng.below(V);
            DeviceBuffer<int> d_targets(targets);
            dev::dev_fill_random_bf16<<<1024, 256>>>(logits.data(), (size_t)N * V, 1);
            CUDA_CHECK_LAUNCH();
            // out of place, so every repetition sees the same logits (in place moves the same bytes)
            const float ms = dev::median_ms(
                [&] { run(version, losses.data(), dlogits.data(), logits.data(), d_targets.data(), N, V, 1.0f / N); });
            const double bytes = 2.0 * N * (double)V * sizeof(bf16);
            dev::print_summary("crossentropy", "v" + std::to_string(version) + " V=" + std::to_string(V), ms,
                               bytes / (ms * 1e-3) / 1e9, peak, "GB/s");
        }
    }
    return 0;
}
