// gptq_errors: GPTQ against round-to-nearest on synthetic calibration data, and the CPU reference's speed.
// A report, not a test. Inputs X (n, in) are heavy-tailed (normal / sqrt(uniform)), mixed by a dense random
// matrix (correlated channels) with 3 channels scaled 20x (LLM-style outlier features); W ~ N(0, 1).
// The calibrated error is ||X (Q - W)^T||_F, computed from S = X^T X (quant/calibration.h calibrated_sq_norm).
//   build/dev/gptq_errors [out in samples]     (default 1024 1024 2048)
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../kernels/common.h"
#include "../quant/calibration.h"
#include "../quant/gptq.h"

using namespace llmq;

int main(int argc, char** argv) {
    const int64_t out = argc > 1 ? atoll(argv[1]) : 1024, in = argc > 2 ? atoll(argv[2]) : 1024,
                  n = argc > 3 ? atoll(argv[3]) : 2048;
    Rng rng(1);
    std::vector<float> z(n * in), mix(in * in), x(n * in, 0.0f), w(out * in);
    for (float& v : z) v = rng.normal() / std::sqrt(0.05f + rng.uniform());
    for (int64_t i = 0; i < in; i++)
        for (int64_t j = 0; j < in; j++) mix[i * in + j] = (i == j) + 0.6f * rng.normal() / std::sqrt((float)in);
#pragma omp parallel for schedule(static)
    for (int64_t s = 0; s < n; s++)
        for (int64_t k = 0; k < in; k++)
            for (int64_t j = 0; j < in; j++) x[s * in + j] += z[s * in + k] * mix[k * in + j];
    for (int64_t c : {5 % in, 77 % in, 200 % in})
        for (int64_t s = 0; s < n; s++) x[s * in + c] *= 20.0f;
    for (float& v : w) v = rng.normal();

    double t0 = now_seconds();
    HessianAccumulator acc(in);
    acc.add(x.data(), n);
    std::vector<double> h = acc.hessian();
    std::printf("W (%lld, %lld), %lld calibration rows; Hessian accumulation %.2f s\n", (long long)out, (long long)in,
                (long long)n, now_seconds() - t0);
    std::printf("%-5s %-4s %5s %9s | %12s %12s %7s | %8s\n", "fmt", "sym", "group", "act_order", "rtn err",
                "gptq err", "ratio", "gptq s");
    const QuantSpec specs[] = {{QuantFormat::INT4, 128, true}, {QuantFormat::INT4, 64, false},
                               {QuantFormat::INT3, 64, false}, {QuantFormat::INT2, 64, false},
                               {QuantFormat::NF4, 64, true}};
    std::vector<float> q(out * in);
    for (const QuantSpec& spec : specs) {
        dequantize_cpu(quantize_cpu(w.data(), out, in, spec), q.data());
        const double rtn = std::sqrt(calibrated_sq_norm(acc, q.data(), w.data(), out, in));
        for (bool act_order : {false, true}) {
            GptqOptions opt;
            opt.act_order = act_order;
            GptqStats stats;
            dequantize_cpu(gptq_quantize_cpu(w.data(), out, in, h, spec, opt, &stats), q.data());
            const double e = std::sqrt(calibrated_sq_norm(acc, q.data(), w.data(), out, in));
            std::printf("%-5s %-4s %5d %9d | %12.4g %12.4g %7.3f | %8.3f\n", format_name(spec.format),
                        spec.symmetric ? "sym" : "asym", spec.block, act_order, rtn, e, e / rtn, stats.seconds);
        }
    }
    return 0;
}
