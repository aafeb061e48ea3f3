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
        IntGrid grid = int_grid(w + g * group, group, bits, spec.symmetric);
        q.scales[g] = grid.scale;
        if (!spec.symmetric) q.zeros[g] = (uint8_t)grid.zero;
        for (int64_t i = g * group; i < (g + 1) * group; i++) codes[i] = int_code(w[i], grid, bits);
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
        IntGrid grid{q.scales[g], q.spec.symmetric ? implicit_zero : (float)q.zeros[g]};
        for (int64_t i = g * group; i < (g + 1) * group; i++) out[i] = int_dequant(packed_code_at(q.codes.data(), i, bits), grid);
    }
}

}  // namespace llmq
