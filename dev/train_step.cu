// dev/train_step.cu: whole training steps of the GPU model (layers/model_cuda.h), llm.c dev/cuda style.
//
// One step is what ./train --device cuda does per update with --grad-accum 1:
//   zero_grad, forward (the loss back on the host), backward, grad_norm (on the host), adamw_step (clip 1.0),
//   then cudaDeviceSynchronize; timed by the wall clock around all of it (host work included: the token checks,
//   the embedding backward's buckets, the uploads), 3 warm-up steps, then the median of 10.
// Each configuration: the preset's shape with vocab 32000 and max_seq_len = T, parameters drawn here directly
// (normal(0, 0.02) for every 2-D tensor, 1 for the norms: Model's initialisation, but drawn in parallel chunks
// so the 1b preset does not wait on one thread, nor hold a CPU Model), fresh random tokens and targets in
// [0, 32000) every step.
//
// FLOPs of a step (model FLOPs, the PaLM appendix B convention: no recomputation counted):
//   flops = B*T * (6*N + 6*L*T*QD)
//   N  = every parameter except the input embedding table (the lm_head counts, it is a matmul; with tied
//        embeddings the one table is counted, as the lm_head); the norms are in N too (negligible)
//   6*L*T*QD per token: causal attention's QK^T and PV are 2 * 2*T*T*hd*NH / 2 flops per sequence per layer
//        forward (the mask halves PaLM's 12*L*T*dim), times 3 for forward + backward: 6*T*T*QD per sequence,
//        QD = NH*hd (= dim for every preset), i.e. 6*L*T*QD per token
// MFU = (flops / step time) / the bf16 cuBLAS rate measured in the same run (dev_cuda.h); the SUMMARY line's
// achieved column is TFLOP/s, so its ratio column is the MFU. dev/peers_torch.py's bench_train_step uses the
// same formula for the same configurations.
// Memory per configuration: what the process holds on the GPU after the steps (cudaMemGetInfo: the CUDA
// context and cuBLAS's workspace included; every ModelCuda buffer is allocated by the first forward, so this is
// the configuration's peak), the model's own parameter / gradient / AdamW / activation bytes, and
// ModelCuda::device_bytes_peak() (the process's high-water mark so far, over every configuration).
//
// Configurations (4096 tokens a step): 60m and 350m at (B,T) = (16,256) and (4,1024); `all` adds 130m and 1b.
// A configuration that fails (llmq::Error, e.g. out of memory) is reported and the rest still run; the exit
// status is 1 if any failed or gave a non-finite loss.
//
// build: make build/dev/train_step
// run:   ./build/dev/train_step [all] [steps=10]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../kernels/cuda_common.h"
#include "../layers/config.h"
#include "../layers/model.h"
#include "../layers/model_cuda.h"
#include "dev_cuda.h"

using namespace llmq;

namespace {

constexpr int kVocab = 32000;
constexpr int kWarmup = 3;
constexpr double kGiB = 1073741824.0;

// Model's initialisation (normal(0, init_std) for 2-D tensors, 1 for norms), drawn in 1M-element chunks, each
// from its own Rng stream, in parallel: the numbers differ from Model(config, seed)'s, which a benchmark allows.
std::vector<float> initial_params(const ModelConfig& c, uint64_t seed) {
    const std::vector<ParamTensor> layout = parameter_layout(c);
    const size_t n = layout.back().offset + layout.back().size;
    std::vector<float> p(n);
    const size_t chunk = size_t(1) << 20;
    const long long chunks = (long long)((n + chunk - 1) / chunk);
#pragma omp parallel for schedule(dynamic)
    for (long long k = 0; k < chunks; k++) {
        Rng rng(Rng::mix(seed + (uint64_t)k * Rng::kGamma));
        const size_t end = std::min(n, (size_t)(k + 1) * chunk);
        for (size_t i = (size_t)k * chunk; i < end; i++) p[i] = c.init_std * rng.normal();
    }
    for (const ParamTensor& t : layout)
        if (t.shape.size() != 2) std::fill(p.begin() + t.offset, p.begin() + t.offset + t.size, 1.0f);
    return p;
}

// model FLOPs of one training step (see the header)
double step_flops(const ModelConfig& c, int B, int T) {
    const double n = (double)c.num_params() - (c.tied_embeddings ? 0.0 : (double)c.vocab_size * c.dim);
    const double qd = (double)c.n_heads * c.head_dim();
    return (double)B * T * (6.0 * n + 6.0 * c.n_layers * (double)T * qd);
}

struct Case {
    const char* preset;
    int B, T;
};

// false when the configuration failed (the reason printed)
bool run_case(const Case& cs, int steps, double peak_tflops) {
    const std::string name = format("%s B%d T%d", cs.preset, cs.B, cs.T);
    try {
        ModelConfig c = ModelConfig::preset(cs.preset, kVocab);
        c.max_seq_len = cs.T;
        const size_t before = ModelCuda::device_bytes_in_use();
        std::unique_ptr<ModelCuda> model;
        {
            const std::vector<float> params = initial_params(c, 1337);
            model.reset(new ModelCuda(c, params.data()));
        }  // the host copy goes before the steps
        const int N = cs.B * cs.T;
        std::vector<int> tokens(N), targets(N);
        Rng rng(42);
        std::vector<double> ms;
        float first_loss = 0, last_loss = 0, norm = 0;
        for (int s = 0; s < kWarmup + steps; s++) {
            for (int i = 0; i < N; i++) tokens[i] = (int)rng.below(kVocab), targets[i] = (int)rng.below(kVocab);
            const double t0 = now_seconds();
            model->zero_grad();
            const float loss = model->forward(tokens.data(), targets.data(), cs.B, cs.T);
            model->backward();
            norm = model->grad_norm();
            const float clip = norm > 1.0f ? 1.0f / norm : 1.0f;
            model->adamw_step(3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, s + 1, clip, (uint32_t)s);
            CUDA_CHECK(cudaDeviceSynchronize());
            const double t1 = now_seconds();
            if (s == 0) first_loss = loss;
            last_loss = loss;
            if (s >= kWarmup) ms.push_back((t1 - t0) * 1e3);
        }
        std::sort(ms.begin(), ms.end());
        const double med = ms[ms.size() / 2];
        const double tflops = step_flops(c, cs.B, cs.T) / (med * 1e-3) / 1e12;
        const size_t in_use = ModelCuda::device_bytes_in_use();
        dev::print_summary("train_step", "llmq " + name, (float)med, tflops, peak_tflops, "TFLOP/s");
        printf("  %s: %s; %.2f ms/step (min %.2f, max %.2f), %.0f tokens/s, MFU %.1f%%, loss %.3f -> %.3f, "
               "grad norm %.3f\n", name.c_str(), c.describe().c_str(), med, ms.front(), ms.back(), N / (med * 1e-3),
               100.0 * tflops / peak_tflops, first_loss, last_loss, norm);
        printf("  %s: GPU memory %.2f GiB in use after the steps (%.2f GiB before the model), process peak %.2f GiB; "
               "model: parameters %.2f, gradients %.2f, AdamW %.2f, activations %.2f GiB\n", name.c_str(),
               in_use / kGiB, before / kGiB, ModelCuda::device_bytes_peak() / kGiB, model->parameter_bytes() / kGiB,
               model->gradient_bytes() / kGiB, model->optimizer_bytes() / kGiB, model->activation_bytes() / kGiB);
        fflush(stdout);
        if (!std::isfinite(first_loss) || !std::isfinite(last_loss) || !std::isfinite(norm)) {
            printf("  %s: FAILED: non-finite loss or gradient norm\n", name.c_str());
            return false;
        }
        return true;
    } catch (const Error& e) {
        printf("  %s: FAILED: %s\n", name.c_str(), e.what());
        fflush(stdout);
        cudaGetLastError();  // clear a sticky launch error's record so the next configuration can try
        return false;
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (!dev::gpu_or_skip("dev/train_step")) return 0;
    bool all = false;
    int steps = 10;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "all")) {
            all = true;
        } else if (atoi(argv[i]) > 0) {
            steps = atoi(argv[i]);
        } else {
            fprintf(stderr, "usage: %s [all] [steps=10]\n", argv[0]);
            return 2;
        }
    }
    const double peak = dev::measured_bf16_tflops();
    printf("measured bf16 matmul: %.0f TFLOP/s; %d warm-up steps, median of %d\n", peak, kWarmup, steps);
    std::vector<Case> cases = {{"60m", 16, 256}, {"60m", 4, 1024}, {"350m", 16, 256}, {"350m", 4, 1024}};
    if (all) {
        cases.insert(cases.begin() + 2, {{"130m", 16, 256}, {"130m", 4, 1024}});
        cases.push_back({"1b", 16, 256});
        cases.push_back({"1b", 4, 1024});
    }
    int failed = 0;
    for (const Case& cs : cases) failed += !run_case(cs, steps, peak);
    return failed ? 1 : 0;
}
