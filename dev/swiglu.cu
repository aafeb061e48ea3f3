// dev/swiglu.cu: the road to kernels/swiglu.cu, llm.c dev/cuda style.
//
//   version 1: naive port of the CPU code, one thread per element, 2-byte loads
//   version 2: 128-bit loads and stores (8 bf16 per access), grid-stride: llmq::swiglu_*_cuda itself
//
// Each version is checked against the fp32 CPU reference on fresh random bf16 inputs, then timed on the
// MLP shapes of 60m..7b (N = B*T = 8192 rows of F hidden units). Memory-bound: the benchmark prints GB/s
// (forward 3 bf16 streams, backward 5) against the copy bandwidth measured in the same run.
//
// build: make build/dev/swiglu
// run:   ./build/dev/swiglu [version=all]
#include <cstdio>
#include <cstdlib>
#include <string>

#include "../kernels/swiglu.h"
#include "../kernels/swiglu_cuda.h"
#include "../test/gpu_test_util.h"
#include "dev_cuda.h"

using namespace llmq;

__global__ void swiglu_forward_v1(bf16* out, const bf16* gate, const bf16* up, size_t n) {
    const size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float g = __bfloat162float(gate[i]);
    out[i] = __float2bfloat16(g / (1.0f + expf(-g)) * __bfloat162float(up[i]));
}
__global__ void swiglu_backward_v1(bf16* dgate, bf16* dup, const bf16* dout, const bf16* gate, const bf16* up,
                                   size_t n) {
    const size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float g = __bfloat162float(gate[i]), u = __bfloat162float(up[i]), d = __bfloat162float(dout[i]);
    const float sg = 1.0f / (1.0f + expf(-g));
    dgate[i] = __float2bfloat16(d * u * sg * (1.0f + g * (1.0f - sg)));
    dup[i] = __float2bfloat16(d * g * sg);
}

static void forward(int version, bf16* out, const bf16* gate, const bf16* up, size_t n) {
    if (version == 1) {
        swiglu_forward_v1<<<ceil_div(n, 256), 256>>>(out, gate, up, n);
        CUDA_CHECK_LAUNCH();
    } else {
        swiglu_forward_cuda(out, gate, up, n);
    }
}
static void backward(int version, bf16* dgate, bf16* dup, const bf16* dout, const bf16* gate, const bf16* up,
                     size_t n) {
    if (version == 1) {
        swiglu_backward_v1<<<ceil_div(n, 256), 256>>>(dgate, dup, dout, gate, up, n);
        CUDA_CHECK_LAUNCH();
    } else {
        swiglu_backward_cuda(dgate, dup, dout, gate, up, n);
    }
}

int main(int argc, char** argv) {
    if (!dev::gpu_or_skip("dev/swiglu")) return 0;
    const int only = argc > 1 ? atoi(argv[1]) : 0;
    const double peak = dev::measured_copy_gbs();
    printf("measured copy bandwidth: %.0f GB/s\n", peak);
    struct Shape { const char* model; size_t F; } shapes[] = {{"60m", 1376}, {"350m", 2736}, {"1b", 5461}, {"7b", 11008}};
    const size_t N = 8192;
    for (int version = 1; version <= 2; version++) {
        if (only && version != only) continue;
        // correctness on a size with a tail
        Rng rng(version);
        const size_t nc = 100003;
        const auto g = test::bf16_rounded(test::randn_floats(nc, rng, 2.0f)), u = test::bf16_rounded(test::randn_floats(nc, rng));
        std::vector<float> ref(nc);
        swiglu_forward_cpu<float>(ref.data(), g.data(), u.data(), nc);
        DeviceBuffer<bf16> dg(test::to_bf16(g)), du(test::to_bf16(u)), dy(nc);
        dy.poison();
        forward(version, dy.data(), dg.data(), du.data(), nc);
        const auto got = test::from_bf16(dy.download());
        double err = 0, norm = 0;
        for (size_t i = 0; i < nc; i++) err += (got[i] - ref[i]) * (got[i] - ref[i]), norm += ref[i] * ref[i];
        printf("version %d: forward relative error %.2e %s\n", version, sqrt(err / norm), sqrt(err / norm) < 1e-2 ? "ok" : "FAILED");
        if (!(sqrt(err / norm) < 1e-2)) return 1;
        for (const auto& s : shapes) {
            const size_t n = N * s.F;
            DeviceBuffer<bf16> gate(n), up(n), out(n), dout(n), dgate(n), dup(n);
            dev::dev_fill_random_bf16<<<1024, 256>>>(gate.data(), n, 1);
            dev::dev_fill_random_bf16<<<1024, 256>>>(up.data(), n, 2);
            dev::dev_fill_random_bf16<<<1024, 256>>>(dout.data(), n, 3);
            const float fms = dev::median_ms([&] { forward(version, out.data(), gate.data(), up.data(), n); });
            const float bms = dev::median_ms([&] { backward(version, dgate.data(), dup.data(), dout.data(), gate.data(), up.data(), n); });
            const std::string c = std::string("v") + std::to_string(version) + " " + s.model;
            dev::print_summary("swiglu_forward", c, fms, 3.0 * n * 2 / (fms * 1e-3) / 1e9, peak, "GB/s");
            dev::print_summary("swiglu_backward", c, bms, 5.0 * n * 2 / (bms * 1e-3) / 1e9, peak, "GB/s");
        }
    }
    return 0;
}
