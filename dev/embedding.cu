// dev/embedding.cu: the road to kernels/embedding.cu, llm.c dev/cuda style.
//
//   forward  version 1: naive port of the CPU code, one thread per element, 2-byte loads
//   forward  version 2: 8 channels per thread, 128-bit loads and stores, grid-stride: embedding_forward_cuda
//   backward version 1: naive port of the CPU code: one thread per channel walks the whole batch, n = 0..N-1,
//                       adding each row into dwte[tokens[n]] (deterministic, the CPU's order, but only C threads)
//   backward version 2: the host groups the batch by id (EmbeddingBackwardPlan); one warp per (id, 256
//                       channels) adds that id's rows in order n, 8 rows in flight: embedding_backward_cuda
//
// Each version is checked against the CPU reference on fresh random inputs (bitwise: the forward is a copy,
// and both backwards add in the CPU's order), then timed on V = 32000, N = 8192, C = 512 (60m), 1024 (350m),
// 2048 (1b), 4096 (7b) with uniformly random tokens, and the backward also on a padding-heavy batch (half the
// tokens one id: one long bucket that its lanes walk alone). Memory-bound: GB/s counts what must move once:
// forward N*C bf16 read and written plus the tokens; backward dout read plus each distinct id's dwte row read
// and written (the same count for both versions), against the copy bandwidth measured in the same run.
//
// build: make build/dev/embedding
// run:   ./build/dev/embedding [version=all]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "../kernels/embedding.h"
#include "../kernels/embedding_cuda.h"
#include "../test/gpu_test_util.h"
#include "dev_cuda.h"

using namespace llmq;

__global__ void embedding_forward_v1(bf16* out, const int* tokens, const bf16* wte, int N, int C) {
    const size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (i >= (size_t)N * C) return;
    out[i] = wte[(size_t)tokens[i / C] * C + i % C];
}
__global__ void embedding_backward_v1(float* dwte, const bf16* dout, const int* tokens, int N, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    for (int n = 0; n < N; n++) dwte[(size_t)tokens[n] * C + c] += __bfloat162float(dout[(size_t)n * C + c]);
}

struct Batch {
    std::vector<int> tokens;
    DeviceBuffer<int> dtokens;
    EmbeddingBackwardPlan plan;
    int distinct = 0;
    Batch(std::vector<int> t, int V) : tokens(std::move(t)), dtokens(tokens) {
        plan.build(tokens.data(), (int)tokens.size(), V);
        distinct = plan.n_buckets;
    }
};

static std::vector<int> make_tokens(int N, int V, bool padded, Rng& rng) {
    std::vector<int> t(N);
    for (int& id : t) id = padded && rng.below(2) ? 0 : (int)rng.below(V);
    return t;
}

static void forward(int version, bf16* out, const Batch& b, const bf16* wte, int C) {
    const int N = (int)b.tokens.size();
    if (version == 1) {
        embedding_forward_v1<<<ceil_div((size_t)N * C, 256), 256>>>(out, b.dtokens.data(), wte, N, C);
        CUDA_CHECK_LAUNCH();
    } else {
        embedding_forward_cuda(out, b.dtokens.data(), wte, N, C);
    }
}
static void backward(int version, float* dwte, const bf16* dout, const Batch& b, int C) {
    if (version == 1) {
        embedding_backward_v1<<<ceil_div(C, 128), 128>>>(dwte, dout, b.dtokens.data(), (int)b.tokens.size(), C);
        CUDA_CHECK_LAUNCH();
    } else {
        embedding_backward_cuda(dwte, dout, b.plan, C);
    }
}

// both directions of one version against the CPU, bitwise; prints what it found, false on a failure
static bool check(int version, int V, int N, int C, bool padded) {
    Rng rng(1000 + version * 10 + C);
    const auto wte = test::bf16_rounded(test::randn_floats((size_t)V * C, rng));
    const auto dout = test::bf16_rounded(test::randn_floats((size_t)N * C, rng));
    const auto dwte0 = test::randn_floats((size_t)V * C, rng);
    Batch b(make_tokens(N, V, padded, rng), V);
    std::vector<float> out_ref((size_t)N * C), dwte_ref = dwte0;
    embedding_forward_cpu<float>(out_ref.data(), b.tokens.data(), wte.data(), N, C);
    embedding_backward_cpu<float>(dwte_ref.data(), dout.data(), b.tokens.data(), N, C);

    DeviceBuffer<bf16> dwte_bf16(test::to_bf16(wte)), dout_dev(test::to_bf16(dout)), out((size_t)N * C);
    DeviceBuffer<float> dwte(dwte0);
    out.poison();
    forward(version, out.data(), b, dwte_bf16.data(), C);
    backward(version, dwte.data(), dout_dev.data(), b, C);
    const auto got_out = test::from_bf16(out.download());
    const auto got_dwte = dwte.download();
    size_t bad_out = 0, bad_dwte = 0;
    for (size_t i = 0; i < got_out.size(); i++) bad_out += std::memcmp(&got_out[i], &out_ref[i], sizeof(float)) != 0;
    for (size_t i = 0; i < got_dwte.size(); i++) bad_dwte += std::memcmp(&got_dwte[i], &dwte_ref[i], sizeof(float)) != 0;
    printf("version %d: C %d%s: forward %zu, backward %zu elements not bitwise the CPU's %s\n", version, C,
           padded ? " (padded batch)" : "", bad_out, bad_dwte, bad_out + bad_dwte == 0 ? "ok" : "FAILED");
    return bad_out + bad_dwte == 0;
}

int main(int argc, char** argv) {
    if (!dev::gpu_or_skip("dev/embedding")) return 0;
    const int only = argc > 1 ? atoi(argv[1]) : 0;
    const double peak = dev::measured_copy_gbs();
    printf("measured copy bandwidth: %.0f GB/s\n", peak);
    const int V = 32000, N = 8192;
    Rng rng(1);
    Batch uniform(make_tokens(N, V, false, rng), V), padded(make_tokens(N, V, true, rng), V);
    printf("batches: uniform %d distinct ids, padded %d (largest bucket %d rows)\n", uniform.distinct, padded.distinct,
           padded.plan.max_bucket);
    {  // the host's share of the backward: grouping the batch and uploading the plan, once per step
        const int reps = 20;
        const double t0 = now_seconds();
        for (int i = 0; i < reps; i++) uniform.plan.build(uniform.tokens.data(), N, V);
        printf("plan build (host grouping + upload), N %d V %d: %.3f ms\n", N, V, (now_seconds() - t0) * 1e3 / reps);
    }
    for (int version = 1; version <= 2; version++) {
        if (only && version != only) continue;
        if (!check(version, 1000, 777, 520, true) || !check(version, 300, 500, 37, false)) return 1;
        for (int C : {512, 1024, 2048, 4096}) {
            DeviceBuffer<bf16> wte((size_t)V * C), out((size_t)N * C), dout((size_t)N * C);
            DeviceBuffer<float> dwte((size_t)V * C);
            dev::dev_fill_random_bf16<<<1024, 256>>>(wte.data(), wte.size(), 1);
            dev::dev_fill_random_bf16<<<1024, 256>>>(dout.data(), dout.size(), 2);
            CUDA_CHECK_LAUNCH();
            dwte.zero();
            const std::string c = "v" + std::to_string(version) + " C=" + std::to_string(C);
            const float fms = dev::median_ms([&] { forward(version, out.data(), uniform, wte.data(), C); });
            dev::print_summary("embedding_forward", c, fms,
                               (2.0 * N * C * sizeof(bf16) + N * sizeof(int)) / (fms * 1e-3) / 1e9, peak, "GB/s");
            const int reps = version == 1 ? 5 : 20;  // version 1 walks the batch serially: milliseconds a call
            for (const Batch* b : {&uniform, &padded}) {
                const float bms = dev::median_ms([&] { backward(version, dwte.data(), dout.data(), *b, C); }, reps, 1);
                const double bytes = (double)N * C * sizeof(bf16) + 2.0 * b->distinct * C * sizeof(float);
                dev::print_summary("embedding_backward", c + (b == &padded ? " pad50" : ""), bms,
                                   bytes / (bms * 1e-3) / 1e9, peak, "GB/s");
            }
        }
    }
    return 0;
}
