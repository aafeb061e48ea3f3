// dev/attention.cu: the road to kernels/attention.cu (causal GQA flash attention), llm.c dev/cuda style.
//
//   version 1: naive port of the CPU forward: one thread per (b, h, query row) walking its keys with an
//              online softmax, q and k straight from global memory, the output row in registers (forward
//              only: a naive backward needs atomics or a thread per kv head, which is the CPU's loop)
//   version 2: flash attention 2 on CUDA cores, fp32 FMAs: 64-query x 64-key tiles in shared memory (fp32),
//              16 x 16 threads each owning 4 x 4 scores and 4 rows x hd/16 output columns, online softmax
//              in the half-warp of a row, fully masked tiles skipped; backward as one dk/dv kernel per
//              kv tile (looping over the group's query heads and the query tiles below the diagonal) and
//              one dq kernel per query tile, no atomics: llmq::attention_*_cuda itself
//   version 3 (not written): tensor cores. mma.sync m16n8k16 bf16 (or WMMA) for QK^T and PV with fp32
//              accumulators, Q/K/V kept in shared memory as bf16 (half the bytes: 128-query tiles fit),
//              one warp per 16 query rows so the softmax statistics stay in a quad of lanes (the mma
//              accumulator layout), K/V tiles double-buffered with cp.async; the backward the same way for
//              S, dP, dV, dK, dQ. Expected 5-10x over version 2 on H100 (bf16 tensor-core peak is ~15x
//              the fp32 FMA peak). Check it against version 2 and the CPU, as here.
//
// Each version is checked against the fp32 CPU reference on fresh random bf16 inputs (tails: T = 100, 130;
// GQA 2 and 4; head_dim 64 and 128), then timed at (B,T) = (8,1024) and (2,4096) for a 350m-like layer
// (NH = NKV = 16, hd 64) and a llama-8b-like one (NH 32, NKV 8, hd 128). Matrix-bound: the benchmark prints
// TFLOP/s (forward 4 B NH T^2 hd / 2 causal flops, backward 2.5 times that) against the bf16 cuBLAS rate
// measured in the same run.
//
// build: make build/dev/attention
// run:   ./build/dev/attention [version=all]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "../kernels/attention.h"
#include "../kernels/attention_cuda.h"
#include "../test/gpu_test_util.h"
#include "dev_cuda.h"

using namespace llmq;

template <int HD>
__global__ void attention_forward_v1(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, int B,
                                     int T, int NH, int NKV, float scale) {
    const size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x;  // query row fastest: a warp shares keys
    if (idx >= (size_t)B * NH * T) return;
    const int t = idx % T, h = (idx / T) % NH, b = idx / ((size_t)T * NH), kvh = h / (NH / NKV);
    const bf16* qt = q + (((size_t)b * T + t) * NH + h) * HD;
    float o[HD];
    for (int i = 0; i < HD; i++) o[i] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int u = 0; u <= t; u++) {
        const bf16* ku = k + (((size_t)b * T + u) * NKV + kvh) * HD;
        const bf16* vu = v + (((size_t)b * T + u) * NKV + kvh) * HD;
        float dot = 0.0f;
        for (int i = 0; i < HD; i++) dot += __bfloat162float(qt[i]) * __bfloat162float(ku[i]);
        const float s = dot * scale, m_new = fmaxf(m, s), corr = expf(m - m_new), p = expf(s - m_new);
        l = l * corr + p;
        for (int i = 0; i < HD; i++) o[i] = o[i] * corr + p * __bfloat162float(vu[i]);
        m = m_new;
    }
    bf16* ot = out + (((size_t)b * T + t) * NH + h) * HD;
    for (int i = 0; i < HD; i++) ot[i] = __float2bfloat16(o[i] / l);
    lse[((size_t)b * NH + h) * T + t] = m + logf(l);
}

static void forward(int version, bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, int B, int T,
                    int NH, int NKV, int hd) {
    if (version == 2) return attention_forward_cuda(out, lse, q, k, v, B, T, NH, NKV, hd);
    const int blocks = ceil_div((long long)B * NH * T, 128);
    const float scale = 1.0f / std::sqrt((float)hd);
    if (hd == 64) attention_forward_v1<64><<<blocks, 128>>>(out, lse, q, k, v, B, T, NH, NKV, scale);
    else if (hd == 128) attention_forward_v1<128><<<blocks, 128>>>(out, lse, q, k, v, B, T, NH, NKV, scale);
    else throw Error(format("dev/attention version 1: head_dim %d not built (64 or 128)", hd));
    CUDA_CHECK_LAUNCH();
}

static double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
    double err = 0, norm = 0;
    for (size_t i = 0; i < got.size(); i++) {
        if (!std::isfinite(got[i])) return INFINITY;
        err += ((double)got[i] - want[i]) * ((double)got[i] - want[i]), norm += (double)want[i] * want[i];
    }
    return std::sqrt(err / norm);
}

struct Shape {
    const char* name;
    int B, T, NH, NKV, hd;
    size_t q_size() const { return (size_t)B * T * NH * hd; }
    size_t kv_size() const { return (size_t)B * T * NKV * hd; }
    size_t lse_size() const { return (size_t)B * NH * T; }
};

// version against the CPU on s; prints the errors, false on a failure
static bool check(int version, const Shape& s, uint64_t seed) {
    Rng rng(seed);
    const auto q = test::bf16_rounded(test::randn_floats(s.q_size(), rng)),
               k = test::bf16_rounded(test::randn_floats(s.kv_size(), rng)),
               v = test::bf16_rounded(test::randn_floats(s.kv_size(), rng)),
               dout = test::bf16_rounded(test::randn_floats(s.q_size(), rng));
    std::vector<float> out(s.q_size()), lse(s.lse_size()), dq(s.q_size()), dk(s.kv_size()), dv(s.kv_size());
    attention_forward_cpu<float>(out.data(), lse.data(), q.data(), k.data(), v.data(), s.B, s.T, s.NH, s.NKV, s.hd);
    DeviceBuffer<bf16> gpu_q(test::to_bf16(q)), gpu_k(test::to_bf16(k)), gpu_v(test::to_bf16(v)),
        gpu_dout(test::to_bf16(dout)), gpu_out(s.q_size());
    DeviceBuffer<float> gpu_lse(s.lse_size());
    gpu_out.poison(), gpu_lse.poison();
    forward(version, gpu_out.data(), gpu_lse.data(), gpu_q.data(), gpu_k.data(), gpu_v.data(), s.B, s.T, s.NH, s.NKV,
            s.hd);
    const double e_out = rel_error(test::from_bf16(gpu_out.download()), out),
                 e_lse = rel_error(gpu_lse.download(), lse);
    bool ok = e_out < 1e-2 && e_lse < 1e-5;
    printf("version %d, %s: forward out error %.2e, lse error %.2e", version, s.name, e_out, e_lse);
    if (version == 2) {  // the backward, on the CPU's (rounded) out and lse
        const auto out_rounded = test::bf16_rounded(out);
        attention_backward_cpu<float>(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(),
                                      out_rounded.data(), lse.data(), s.B, s.T, s.NH, s.NKV, s.hd);
        DeviceBuffer<bf16> o(test::to_bf16(out_rounded)), gq(s.q_size()), gk(s.kv_size()), gv(s.kv_size());
        DeviceBuffer<float> l(lse), scratch(attention_backward_scratch_floats(s.B, s.T, s.NH, s.hd));
        gq.poison(), gk.poison(), gv.poison(), scratch.poison();
        attention_backward_cuda(gq.data(), gk.data(), gv.data(), scratch.data(), gpu_dout.data(), gpu_q.data(),
                                gpu_k.data(), gpu_v.data(), o.data(), l.data(), s.B, s.T, s.NH, s.NKV, s.hd);
        const double e_dq = rel_error(test::from_bf16(gq.download()), dq),
                     e_dk = rel_error(test::from_bf16(gk.download()), dk),
                     e_dv = rel_error(test::from_bf16(gv.download()), dv);
        printf(", backward dq %.2e dk %.2e dv %.2e", e_dq, e_dk, e_dv);
        ok = ok && e_dq < 1e-2 && e_dk < 1e-2 && e_dv < 1e-2;
    }
    printf(" %s\n", ok ? "ok" : "FAILED");
    return ok;
}

int main(int argc, char** argv) {
    if (!dev::gpu_or_skip("dev/attention")) return 0;
    const int only = argc > 1 ? atoi(argv[1]) : 0;
    const double peak = dev::measured_bf16_tflops();
    printf("measured bf16 matmul rate: %.0f TFLOP/s\n", peak);
    const Shape checks[] = {{"B=2 T=100 NH=4 NKV=2 hd=64", 2, 100, 4, 2, 64},
                            {"B=1 T=130 NH=4 NKV=1 hd=128", 1, 130, 4, 1, 128}};
    const Shape timed[] = {{"350m-like B=8 T=1024", 8, 1024, 16, 16, 64},
                           {"350m-like B=2 T=4096", 2, 4096, 16, 16, 64},
                           {"8b-like B=8 T=1024", 8, 1024, 32, 8, 128},
                           {"8b-like B=2 T=4096", 2, 4096, 32, 8, 128}};
    for (int version = 1; version <= 2; version++) {
        if (only && version != only) continue;
        for (const Shape& s : checks)
            if (!check(version, s, 10 * version + s.hd)) return 1;
        // version 1 is slow (seconds at T = 4096): a few repetitions are enough to rank it
        const int reps = version == 1 ? 3 : 20, warmup = version == 1 ? 1 : 3;
        for (const Shape& s : timed) {
            DeviceBuffer<bf16> q(s.q_size()), k(s.kv_size()), v(s.kv_size()), out(s.q_size()), dout(s.q_size());
            DeviceBuffer<bf16> dq(s.q_size()), dk(s.kv_size()), dv(s.kv_size());
            DeviceBuffer<float> lse(s.lse_size()), scratch(attention_backward_scratch_floats(s.B, s.T, s.NH, s.hd));
            dev::dev_fill_random_bf16<<<1024, 256>>>(q.data(), q.size(), 1);
            dev::dev_fill_random_bf16<<<1024, 256>>>(k.data(), k.size(), 2);
            dev::dev_fill_random_bf16<<<1024, 256>>>(v.data(), v.size(), 3);
            dev::dev_fill_random_bf16<<<1024, 256>>>(dout.data(), dout.size(), 4);
            CUDA_CHECK_LAUNCH();
            const double fwd_flops = 4.0 * s.B * s.NH * (double)s.T * s.T * s.hd / 2;
            const std::string c = std::string("v") + std::to_string(version) + " " + s.name;
            auto run_forward = [&] {
                forward(version, out.data(), lse.data(), q.data(), k.data(), v.data(), s.B, s.T, s.NH, s.NKV, s.hd);
            };
            const float fms = dev::median_ms(run_forward, reps, warmup);
            dev::print_summary("attention_forward", c, fms, fwd_flops / (fms * 1e-3) / 1e12, peak, "TFLOP/s");
            if (version != 2) continue;  // out and lse now hold the forward's, as the backward needs
            const float bms = dev::median_ms(
                [&] {
                    attention_backward_cuda(dq.data(), dk.data(), dv.data(), scratch.data(), dout.data(), q.data(),
                                            k.data(), v.data(), out.data(), lse.data(), s.B, s.T, s.NH, s.NKV, s.hd);
                },
                reps, warmup);
            dev::print_summary("attention_backward", c, bms, 2.5 * fwd_flops / (bms * 1e-3) / 1e12, peak, "TFLOP/s");
        }
    }
    return 0;
}
