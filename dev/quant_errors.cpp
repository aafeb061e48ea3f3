// quant_errors: prints, for every weight format of quant/, the storage (bits per weight from the formula and
// from the actual buffers), the reconstruction error on Gaussian weights and the CPU reference's speed; and the
// 8-bit Adam state size and step speed. A report, not a test: the numbers go into the README.
#include <cmath>
#include <cstdio>
#include <vector>

#include "../kernels/common.h"
#include "../quant/adam8bit.h"
#include "../quant/formats.h"

using namespace llmq;

int main() {
    const int64_t rows = 1024, cols = 1024, n = rows * cols;
    Rng rng(1);
    std::vector<float> w(n), out(n);
    for (float& x : w) x = 0.02f * rng.normal();
    double norm = 0;
    for (float x : w) norm += (double)x * x;
    std::printf("weights (%lld, %lld) ~ N(0, 0.02^2)\n", (long long)rows, (long long)cols);
    std::printf("%-6s %-5s %5s %3s | %8s %8s | %9s | %8s %8s\n", "format", "sym", "block", "dq", "bits/w", "actual",
                "rel.rms", "quant ms", "deq ms");
    const QuantSpec specs[] = {
        {QuantFormat::NF4, 64}, {QuantFormat::NF4, 64, true, true}, {QuantFormat::NF4, 128},
        {QuantFormat::FP4, 64}, {QuantFormat::FP4, 64, true, true}, {QuantFormat::INT4, 64, true},
        {QuantFormat::INT4, 64, false}, {QuantFormat::INT4, 128, false}, {QuantFormat::INT3, 64, true},
        {QuantFormat::INT3, 64, false}, {QuantFormat::INT2, 64, true}, {QuantFormat::INT2, 64, false},
    };
    for (const QuantSpec& spec : specs) {
        double t0 = now_seconds();
        QuantizedTensor q = quantize_cpu(w.data(), rows, cols, spec);
        double t1 = now_seconds();
        dequantize_cpu(q, out.data());
        double t2 = now_seconds();
        double err = 0;
        for (int64_t i = 0; i < n; i++) err += std::pow((double)out[i] - w[i], 2);
        std::printf("%-6s %-5s %5d %3s | %8.4f %8.4f | %9.5f | %8.1f %8.1f\n", format_name(spec.format),
                    is_int_format(spec.format) ? (spec.symmetric ? "sym" : "asym") : "-", spec.block,
                    spec.double_quant ? "yes" : "no", bits_per_weight(spec), tensor_bytes(q) * 8.0 / n,
                    std::sqrt(err / norm), (t1 - t0) * 1e3, (t2 - t1) * 1e3);
    }
    std::vector<float> g(n);
    for (float& x : g) x = 1e-3f * rng.normal();
    Adam8bitState s = adam8bit_init(n);
    Adam8bitHyper h;
    adam8bit_step_cpu(w.data(), g.data(), s, h, 1);
    double t0 = now_seconds();
    const int steps = 5;
    for (int t = 2; t < 2 + steps; t++) adam8bit_step_cpu(w.data(), g.data(), s, h, t);
    double dt = (now_seconds() - t0) / steps;
    std::printf("8-bit Adam: %lld params, state %.5f bytes/param, CPU step %.1f ms (%.1f M params/s)\n", (long long)n,
                (double)s.state_bytes() / n, dt * 1e3, n / dt / 1e6);
    return 0;
}
