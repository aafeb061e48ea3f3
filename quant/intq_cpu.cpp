// intq_cpu: INT4/3/2 group-wise quantize/dequantize, symmetric and asymmetric (intq.h).
#include <algorithm>
#include <cmath>

#include "../kernels/common.h"
#include "intq.h"

namespace llmq {

QuantizedTensor quantize_int_cpu(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec) {
    LLMQ_CHECK(is_int_format(spec.format), "quantize_int_cpu: %s is not int4/int3/int2", format_name(spec.format));
    check_spec(spec, rows, cols);
    QuantizedTensor q;
    q.spec = spec;
    q.rows = rows;
    q.cols = cols;
    const int bits = code_bits(spec.format);
    const int maxq = (1 << bits) - 1;
    const int64_t n = rows * cols, group = spec.block, groups = n / group;
    for (int64_t i = 0; i < n; i++)
        LLMQ_CHECK(std::isfinite(w[i]), "quantize %s: weight (%lld, %lld) has a non-finite value at row %lld col %lld",
                   format_name(spec.format), (long long)rows, (long long)cols, (long long)(i / cols),
                   (long long)(i % cols));
    std::vector<uint8_t> codes(n);
    q.scales.assign(groups, 0.0f);
    if (!spec.symmetric) q.zeros.assign(groups, 0);
    // groups never straddle rows (group divides cols), so group g covers elements [g*group, (g+1)*group)
#pragma omp parallel for schedule(static)
    for (int64_t g = 0; g < groups; g++) {
        const float* x = w + g * group;
        float lo = 0.0f, hi = 0.0f;
        for (int64_t i = 0; i < group; i++) lo = std::fmin(lo, x[i]), hi = std::fmax(hi, x[i]);
        if (lo == hi) lo = -1.0f, hi = 1.0f;  // all zero
        float scale, zero;
        if (spec.symmetric) {
            scale = 2.0f * std::fmax(-lo, hi) / maxq;
            zero = (float)(1 << (bits - 1));
        } else {
            scale = (hi - lo) / maxq;
            zero = std::nearbyint(-lo / scale);
            q.zeros[g] = (uint8_t)zero;
        }
        q.scales[g] = scale;
        for (int64_t i = 0; i < group; i++)
            codes[g * group + i] = (uint8_t)std::clamp(std::nearbyint(x[i] / scale) + zero, 0.0f, (float)maxq);
    }
    q.codes.assign(n * bits / 8, 0);
    pack_codes(codes.data(), n, bits, q.codes.data());
    return q;
}

void dequantize_int_cpu(const QuantizedTensor& q, float* out) {
    LLMQ_CHECK(is_int_format(q.spec.format), "dequantize_int_cpu: %s is not int4/int3/int2", format_name(q.spec.format));
    const int bits = code_bits(q.spec.format);
    const int64_t n = q.numel(), group = q.spec.block, groups = n / group;
    LLMQ_CHECK((int64_t)q.codes.size() == n * bits / 8 && (int64_t)q.scales.size() == groups &&
                   (q.spec.symmetric || (int64_t)q.zeros.size() == groups),
               "dequantize %s: buffers (%zu code bytes, %zu scales, %zu zeros) do not match weight (%lld, %lld) "
               "group %lld",
               format_name(q.spec.format), q.codes.size(), q.scales.size(), q.zeros.size(), (long long)q.rows,
               (long long)q.cols, (long long)group);
    const float implicit_zero = (float)(1 << (bits - 1));
#pragma omp parallel for schedule(static)
    for (int64_t g = 0; g < groups; g++) {
        float scale = q.scales[g], zero = q.spec.symmetric ? implicit_zero : (float)q.zeros[g];
        for (int64_t i = g * group; i < (g + 1) * group; i++)
            out[i] = scale * ((float)packed_code_at(q.codes.data(), i, bits) - zero);
    }
}

}  // namespace llmq
