// dev/rope.cu: the road to kernels/rope.cu, llm.c dev/cuda style.
//
//   version 1: naive port of the CPU code, one thread per pair (i, i+hd/2), 2-byte bf16 and 4-byte table loads
//   version 2: 8 pairs per thread, 128-bit loads of both halves and of the cos/sin rows, grid-stride:
//              llmq::rope_*_cuda itself
//
// Each version is checked against the fp32 CPU reference on fresh random bf16 inputs (forward, the
// accumulating and the overwriting backward), then timed on q of 60m (8 heads of 64), 1b (32 of 64) and 7b
// (32 of 128) with B*T = 8192 rows (B 8, T 1024). Memory-bound: GB/s counts the bf16 tensor read and written
// once (forward and the overwriting backward: 2 streams; the accumulating backward also reads dinp: 3) plus
// the two tables read once, against the copy bandwidth measured in the same run.
//
// build: make build/dev/rope
// run:   ./build/dev/rope [version=all]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "../kernels/rope.h"
#include "../kernels/rope_cuda.h"
#include "../test/gpu_test_util.h"
#include "dev_cuda.h"

using namespace llmq;

enum Mode { kForward, kBackwardAccumulate, kBackwardOverwrite };
const char* const kModeName[] = {"rope_forward", "rope_backward", "rope_backward_overwrite"};

// out = R x (forward) or dinp (+)= R^T dout (backward); one thread per pair
__global__ void rope_v1(bf16* out, const bf16* inp, const float* cos, const float* sin, int T, int NH, int hd,
                        size_t n_pairs, int mode) {
    const size_t p = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (p >= n_pairs) return;
    const int half = hd / 2, i = (int)(p % half), h = (int)(p / half % NH);
    const size_t token = p / half / NH;
    const int t = (int)(token % T);
    const size_t off = (token * NH + h) * hd + i;
    const float x1 = __bfloat162float(inp[off]), x2 = __bfloat162float(inp[off + half]);
    const float c = cos[(size_t)t * half + i], s = mode == kForward ? sin[(size_t)t * half + i] : -sin[(size_t)t * half + i];
    float y1 = x1 * c - x2 * s, y2 = x2 * c + x1 * s;
    if (mode == kBackwardAccumulate) y1 += __bfloat162float(out[off]), y2 += __bfloat162float(out[off + half]);
    out[off] = __float2bfloat16(y1);
    out[off + half] = __float2bfloat16(y2);
}

static void run(int version, Mode mode, bf16* out, const bf16* inp, const float* cos, const float* sin, int B, int T,
                int NH, int hd) {
    if (version == 1) {
        const size_t pairs = (size_t)B * T * NH * hd / 2;
        rope_v1<<<ceil_div(pairs, 256), 256>>>(out, inp, cos, sin, T, NH, hd, pairs, mode);
        CUDA_CHECK_LAUNCH();
    } else if (mode == kForward) {
        rope_forward_cuda(out, inp, cos, sin, B, T, NH, hd);
    } else if (mode == kBackwardAccumulate) {
        rope_backward_cuda(out, inp, cos, sin, B, T, NH, hd);
    } else {
        rope_backward_overwrite_cuda(out, inp, cos, sin, B, T, NH, hd);
    }
}

// every mode of one version against the CPU on (B,T,NH,hd); prints the errors, false on a failure
static bool check(int version, int B, int T, int NH, int hd) {
    Rng rng(100 + version);
    const size_t n = (size_t)B * T * NH * hd;
    std::vector<float> cos((size_t)T * hd / 2), sin((size_t)T * hd / 2);
    rope_tables_cpu<float>(cos.data(), sin.data(), T, hd, 10000.0f);
    const auto x = test::bf16_rounded(test::randn_floats(n, rng)), d0 = test::bf16_rounded(test::randn_floats(n, rng));
    DeviceBuffer<float> dcos(cos), dsin(sin);
    DeviceBuffer<bf16> dx(test::to_bf16(x));
    bool ok = true;
    for (Mode mode : {kForward, kBackwardAccumulate, kBackwardOverwrite}) {
        std::vector<float> ref = mode == kBackwardAccumulate ? d0 : std::vector<float>(n, 0.0f);
        if (mode == kForward) rope_forward_cpu<float>(ref.data(), x.data(), cos.data(), sin.data(), B, T, NH, hd);
        else rope_backward_cpu<float>(ref.data(), x.data(), cos.data(), sin.data(), B, T, NH, hd);
        DeviceBuffer<bf16> dy(test::to_bf16(d0));
        if (mode != kBackwardAccumulate) dy.poison();
        run(version, mode, dy.data(), dx.data(), dcos.data(), dsin.data(), B, T, NH, hd);
        const auto got = test::from_bf16(dy.download());
        double err = 0, norm = 0;
        for (size_t i = 0; i < n; i++) err += (got[i] - ref[i]) * (double)(got[i] - ref[i]), norm += ref[i] * (double)ref[i];
        const double rel = std::sqrt(err / norm);  // NaN (an unwritten element) fails the test below
        const bool good = rel < 1e-2;
        printf("version %d: %s hd %d relative error %.2e %s\n", version, kModeName[mode], hd, rel, good ? "ok" : "FAILED");
        ok = ok && good;
    }
    return ok;
}

int main(int argc, char** argv) {
    if (!dev::gpu_or_skip("dev/rope")) return 0;
    const int only = argc > 1 ? atoi(argv[1]) : 0;
    const double peak = dev::measured_copy_gbs();
    printf("measured copy bandwidth: %.0f GB/s\n", peak);
    struct Shape { const char* model; int NH, hd; } shapes[] = {{"60m", 8, 64}, {"1b", 32, 64}, {"7b", 32, 128}};
    const int B = 8, T = 1024;
    for (int version = 1; version <= 2; version++) {
        if (only && version != only) continue;
        if (!check(version, 2, 64, 8, 64) || !check(version, 1, 16, 3, 40)) return 1;
        for (const auto& s : shapes) {
            const size_t n = (size_t)B * T * s.NH * s.hd;
            std::vector<float> cos((size_t)T * s.hd / 2), sin(cos.size());
            rope_tables_cpu<float>(cos.data(), sin.data(), T, s.hd, 10000.0f);
            DeviceBuffer<float> dcos(cos), dsin(sin);
            DeviceBuffer<bf16> x(n), dx(n);
            dev::dev_fill_random_bf16<<<1024, 256>>>(x.data(), n, 1);
            dev::dev_fill_random_bf16<<<1024, 256>>>(dx.data(), n, 2);
            CUDA_CHECK_LAUNCH();
            const double table_bytes = 2.0 * cos.size() * sizeof(float);
            for (Mode mode : {kForward, kBackwardAccumulate, kBackwardOverwrite}) {
                // the forward in place, as the model runs it; the backward from x into dx (values drift
                // over the repetitions, which changes nothing in the time)
                bf16* out = mode == kForward ? x.data() : dx.data();
                const float ms = dev::median_ms([&] {
                    run(version, mode, out, x.data(), dcos.data(), dsin.data(), B, T, s.NH, s.hd);
                });
                const double streams = mode == kBackwardAccumulate ? 3.0 : 2.0;
                const double bytes = streams * n * sizeof(bf16) + table_bytes;
                const std::string c = "v" + std::to_string(version) + " " + s.model + " q";
                dev::print_summary(kModeName[mode], c, ms, bytes / (ms * 1e-3) / 1e9, peak, "GB/s");
            }
        }
    }
    return 0;
}
