// fourbit_cpu: NF4/FP4 blockwise quantize/dequantize and double quantization of the absmax (fourbit.h).
#include <algorithm>
#include <cmath>

#include "../kernels/common.h"
#include "dynamic_map.h"
#include "fourbit.h"

namespace llmq {

const float kNF4Code[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
    -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
    0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
    0.7229568362236023f, 1.0f};

const float kFP4Code[16] = {
    0.0f, 5.208333333e-03f, 0.66666667f, 1.0f, 0.33333333f, 0.5f, 0.16666667f, 0.25f,
    -0.0f, -5.208333333e-03f, -0.66666667f, -1.0f, -0.33333333f, -0.5f, -0.16666667f, -0.25f};

// FP4 magnitudes in ascending order and the 3-bit code of each
static const uint8_t kFP4SortedCodes[8] = {0, 1, 6, 7, 4, 5, 2, 3};

const float* fourbit_code(QuantFormat f) {
    LLMQ_CHECK(f == QuantFormat::NF4 || f == QuantFormat::FP4, "fourbit: %s is not a 4-bit float format",
               format_name(f));
    return f == QuantFormat::NF4 ? kNF4Code : kFP4Code;
}

// Index in [0, count) of the nearest of `count` ascending values, ties to the lower index.
static int nearest_sorted(float x, int count, float (*value)(int)) {
    int lo = 0, hi = count - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if ((double)x > ((double)value(mid) + (double)value(mid + 1)) * 0.5) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

uint8_t quantize_4bit_value(QuantFormat f, float normalized) {
    if (f == QuantFormat::NF4) return (uint8_t)nearest_sorted(normalized, 16, [](int i) { return kNF4Code[i]; });
    uint8_t sign = normalized < 0 ? 8 : 0;
    int rank = nearest_sorted(std::fabs(normalized), 8, [](int i) { return kFP4Code[kFP4SortedCodes[i]]; });
    return (uint8_t)(sign | kFP4SortedCodes[rank]);
}

// (absmax - mean) in groups of 256 -> uint8 codes of the signed dynamic map + one fp32 scale per group
static void double_quantize(const std::vector<float>& absmax, QuantizedTensor& q) {
    double sum = 0;
    for (float a : absmax) sum += a;
    q.absmax_offset = (float)(sum / absmax.size());
    size_t blocks = absmax.size(), groups = (blocks + kDoubleQuantGroup - 1) / kDoubleQuantGroup;
    q.absmax_codes.assign(blocks, 0);
    q.absmax_scales.assign(groups, 0.0f);
    const DynamicMap& map = dynamic_map_signed();
    for (size_t g = 0; g < groups; g++) {
        size_t begin = g * kDoubleQuantGroup, end = std::min(blocks, begin + kDoubleQuantGroup);
        float scale = 0.0f;
        for (size_t i = begin; i < end; i++) scale = std::fmax(scale, std::fabs(absmax[i] - q.absmax_offset));
        float inv = scale > 0 ? 1.0f / scale : 0.0f;
        q.absmax_scales[g] = scale;
        for (size_t i = begin; i < end; i++) q.absmax_codes[i] = quantize_to_map(map, (absmax[i] - q.absmax_offset) * inv);
    }
}

QuantizedTensor quantize_4bit_cpu(const float* w, int64_t rows, int64_t cols, const QuantSpec& spec) {
    LLMQ_CHECK(!is_int_format(spec.format), "quantize_4bit_cpu: %s is not nf4/fp4", format_name(spec.format));
    check_spec(spec, rows, cols);
    QuantizedTensor q;
    q.spec = spec;
    q.rows = rows;
    q.cols = cols;
    const int64_t n = rows * cols, block = spec.block, blocks = n / block;
    for (int64_t i = 0; i < n; i++)
        LLMQ_CHECK(std::isfinite(w[i]), "quantize %s: weight (%lld, %lld) has a non-finite value at row %lld col %lld",
                   format_name(spec.format), (long long)rows, (long long)cols, (long long)(i / cols),
                   (long long)(i % cols));
    q.codes.assign(n / 2, 0);
    std::vector<float> absmax(blocks);
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        const float* x = w + b * block;
        float amax = 0.0f;
        for (int64_t i = 0; i < block; i++) amax = std::fmax(amax, std::fabs(x[i]));
        float inv = amax > 0 ? 1.0f / amax : 0.0f;
        uint8_t* out = q.codes.data() + b * block / 2;
        for (int64_t j = 0; j < block / 2; j++)
            out[j] = (uint8_t)(quantize_4bit_value(spec.format, x[2 * j] * inv) << 4 |
                               quantize_4bit_value(spec.format, x[2 * j + 1] * inv));
        absmax[b] = amax;
    }
    if (spec.double_quant) double_quantize(absmax, q);
    else q.absmax = std::move(absmax);
    return q;
}

std::vector<float> block_absmax(const QuantizedTensor& q) {
    if (!q.spec.double_quant) return q.absmax;
    size_t groups = (q.absmax_codes.size() + kDoubleQuantGroup - 1) / kDoubleQuantGroup;
    LLMQ_CHECK(q.absmax_scales.size() == groups, "%s double quantization: %zu scales for %zu absmax codes (need %zu)",
               format_name(q.spec.format), q.absmax_scales.size(), q.absmax_codes.size(), groups);
    const DynamicMap& map = dynamic_map_signed();
    std::vector<float> absmax(q.absmax_codes.size());
    for (size_t i = 0; i < absmax.size(); i++)
        absmax[i] = map[q.absmax_codes[i]] * q.absmax_scales[i / kDoubleQuantGroup] + q.absmax_offset;
    return absmax;
}

void dequantize_4bit_cpu(const QuantizedTensor& q, float* out) {
    const float* code = fourbit_code(q.spec.format);
    const int64_t n = q.numel(), block = q.spec.block;
    LLMQ_CHECK((int64_t)q.codes.size() == n / 2, "dequantize %s: %zu code bytes for a (%lld, %lld) weight",
               format_name(q.spec.format), q.codes.size(), (long long)q.rows, (long long)q.cols);
    std::vector<float> absmax = block_absmax(q);
    LLMQ_CHECK((int64_t)absmax.size() == n / block, "dequantize %s: %zu absmax values for %lld blocks",
               format_name(q.spec.format), absmax.size(), (long long)(n / block));
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < n / 2; j++) {
        float a = absmax[2 * j / block];
        out[2 * j] = code[q.codes[j] >> 4] * a;
        out[2 * j + 1] = code[q.codes[j] & 15] * a;
    }
}

}  // namespace llmq
