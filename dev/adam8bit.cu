// dev/adam8bit.cu: the road to quant/adam8bit.cu, llm.c dev/cuda style.
//
//   version 1: naive port of the CPU code, one thread per quantization block looping over its 256 elements,
//              maps read from global memory, midpoints formed during the search
//   version 2: one thread block per quantization block, one element per thread, block max by warp
//              shuffles, maps and double midpoints in shared memory, grid-stride: llmq::adam8bit_step_cuda
//
// Each version is checked bit for bit against adam8bit_step_cpu (codes, absmax, params) on fresh random
// inputs over a few steps, then timed on a 64M-parameter tensor. Memory-bound: the benchmark prints GB/s
// counting each byte once (read param, grad, codes, absmax; write param, codes, absmax: 16 bytes + 16/256
// per parameter) against the copy bandwidth measured in the same run.
//
// build: make build/dev/adam8bit
// run:   ./build/dev/adam8bit [version=all]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "../quant/adam8bit.h"
#include "../quant/adam8bit_cuda.h"
#include "../quant/adam8bit_update.h"
#include "../test/adam8bit_test_util.h"
#include "../test/gpu_test_util.h"
#include "dev_cuda.h"

using namespace llmq;

// quantize_to_map on a device array: midpoints in double, ties to the lower index
__device__ uint8_t quantize_v1(const float* map, float x) {
    int lo = 0, hi = 255;
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        const double midpoint = __dmul_rn(__dadd_rn((double)map[mid], (double)map[mid + 1]), 0.5);
        if ((double)x > midpoint) lo = mid + 1;
        else hi = mid;
    }
    return (uint8_t)lo;
}

__global__ void adam8bit_v1(float* param, const float* grad, uint8_t* m_codes, uint8_t* v_codes, float* m_absmax,
                            float* v_absmax, const float* smap, const float* umap, int64_t n,
                            Adam8bitStepConstants k, float grad_scale) {
    namespace am = adam8bit_math;
    const int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x, begin = b * kAdam8bitBlock;
    if (begin >= n) return;
    const int count = (int)min((int64_t)kAdam8bitBlock, n - begin);
    float m[kAdam8bitBlock], v[kAdam8bitBlock];  // local memory: this version is the slow one
    float m_max = 0.0f, v_max = 0.0f;
    for (int j = 0; j < count; j++) {
        const int64_t i = begin + j;
        m[j] = am::mul(smap[m_codes[i]], m_absmax[b]);
        v[j] = am::mul(umap[v_codes[i]], v_absmax[b]);
        adam8bit_update(param[i], m[j], v[j], am::mul(grad[i], grad_scale), k);
        m_max = am::max_abs(m_max, m[j]), v_max = am::max_abs(v_max, v[j]);
    }
    m_absmax[b] = m_max, v_absmax[b] = v_max;
    for (int j = 0; j < count; j++) {
        m_codes[begin + j] = quantize_v1(smap, adam8bit_normalized(m[j], m_max));
        v_codes[begin + j] = quantize_v1(umap, adam8bit_normalized(v[j], v_max));
    }
}

struct Tensors {
    DeviceBuffer<float> param, grad, m_absmax, v_absmax;
    DeviceBuffer<uint8_t> m_codes, v_codes;
};

static void step(int version, Tensors& t, const Adam8bitMapsCuda& maps, int64_t n, const Adam8bitHyper& h, int s) {
    if (version == 1) {
        const int64_t blocks = (n + kAdam8bitBlock - 1) / kAdam8bitBlock;
        adam8bit_v1<<<ceil_div(blocks, 128), 128>>>(t.param.data(), t.grad.data(), t.m_codes.data(), t.v_codes.data(),
                                                     t.m_absmax.data(), t.v_absmax.data(), maps.signed_map.data(),
                                                     maps.unsigned_map.data(), n, adam8bit_step_constants(h, s), 1.0f);
        CUDA_CHECK_LAUNCH();
    } else {
        adam8bit_step_cuda(t.param.data(), t.grad.data(), t.m_codes.data(), t.v_codes.data(), t.m_absmax.data(),
                           t.v_absmax.data(), maps.signed_map.data(), maps.unsigned_map.data(), n, h, s);
    }
}

template <typename T>
static size_t mismatches(const std::vector<T>& a, const std::vector<T>& b) {
    size_t bad = a.size() != b.size();
    for (size_t i = 0; i < std::min(a.size(), b.size()); i++) bad += std::memcmp(&a[i], &b[i], sizeof(T)) != 0;
    return bad;
}

// three steps from a random state against the CPU, bit for bit; prints the mismatch counts
static bool check(int version, const Adam8bitMapsCuda& maps, const Adam8bitHyper& h) {
    Rng rng(version);
    const int64_t n = 256 * 1000 + 77;
    Adam8bitState cpu = test::adam8bit_random_state(rng, n);
    std::vector<float> param = test::randn_floats(n, rng);
    Tensors t{DeviceBuffer<float>(param), DeviceBuffer<float>((size_t)n), DeviceBuffer<float>(cpu.m_absmax),
              DeviceBuffer<float>(cpu.v_absmax), DeviceBuffer<uint8_t>(cpu.m_codes), DeviceBuffer<uint8_t>(cpu.v_codes)};
    for (int s = 1; s <= 3; s++) {
        std::vector<float> grad = test::randn_floats(n, rng, 0.01f);
        grad[s * 1000] = NAN;
        t.grad.upload(grad);
        adam8bit_step_cpu(param.data(), grad.data(), cpu, h, s);
        step(version, t, maps, n, h, s);
    }
    CUDA_CHECK(cudaDeviceSynchronize());
    const size_t codes = mismatches(t.m_codes.download(), cpu.m_codes) + mismatches(t.v_codes.download(), cpu.v_codes),
                 absmax = mismatches(t.m_absmax.download(), cpu.m_absmax) + mismatches(t.v_absmax.download(), cpu.v_absmax),
                 params = mismatches(t.param.download(), param);
    const bool ok = codes == 0 && absmax == 0 && params == 0;
    printf("version %d: %lld elements, 3 steps: %zu codes, %zu absmax, %zu params differ from the CPU %s\n", version,
           (long long)n, codes, absmax, params, ok ? "ok" : "FAILED");
    return ok;
}

__global__ void fill_state(float* param, float* grad, uint8_t* m_codes, uint8_t* v_codes, float* m_absmax,
                           float* v_absmax, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        unsigned h = (unsigned)i * 2654435761u;
        h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
        param[i] = (h & 0xffff) / 32768.0f - 1.0f;
        grad[i] = ((h >> 16) / 32768.0f - 1.0f) * 0.01f;
        m_codes[i] = (uint8_t)h, v_codes[i] = (uint8_t)(128 | (h >> 8));
        if (i % kAdam8bitBlock == 0) m_absmax[i / kAdam8bitBlock] = 0.01f, v_absmax[i / kAdam8bitBlock] = 1e-4f;
    }
}

int main(int argc, char** argv) {
    if (!dev::gpu_or_skip("dev/adam8bit")) return 0;
    const int only = argc > 1 ? atoi(argv[1]) : 0;
    const double peak = dev::measured_copy_gbs();
    printf("measured copy bandwidth: %.0f GB/s\n", peak);
    const Adam8bitHyper h{1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f};
    Adam8bitMapsCuda maps;
    const int64_t n = int64_t(64) << 20, nb = n / kAdam8bitBlock;
    for (int version = 1; version <= 2; version++) {
        if (only && version != only) continue;
        if (!check(version, maps, h)) return 1;
        Tensors t{DeviceBuffer<float>(n), DeviceBuffer<float>(n), DeviceBuffer<float>(nb), DeviceBuffer<float>(nb),
                  DeviceBuffer<uint8_t>(n), DeviceBuffer<uint8_t>(n)};
        fill_state<<<1024, 256>>>(t.param.data(), t.grad.data(), t.m_codes.data(), t.v_codes.data(),
                                  t.m_absmax.data(), t.v_absmax.data(), n);
        CUDA_CHECK_LAUNCH();
        const float ms = dev::median_ms([&] { step(version, t, maps, n, h, 10); }, version == 1 ? 5 : 20);
        const double bytes = 16.0 * n + 16.0 * nb;
        dev::print_summary("adam8bit_step", "v" + std::to_string(version) + " 64M params", ms,
                           bytes / (ms * 1e-3) / 1e9, peak, "GB/s");
    }
    return 0;
}
