// adam8bit_cpu: the fused blockwise 8-bit Adam step, its fp32 fallback and state serialisation (adam8bit.h).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "../kernels/common.h"
#include "adam8bit.h"
#include "adam8bit_update.h"
#include "dynamic_map.h"

namespace llmq {

size_t Adam8bitState::state_bytes() const {
    return m_codes.size() + v_codes.size() + (m_absmax.size() + v_absmax.size() + m32.size() + v32.size()) * sizeof(float);
}

Adam8bitState adam8bit_init(int64_t n, int64_t min_8bit_size) {
    LLMQ_CHECK(n > 0, "adam8bit: tensor of %lld elements (must be positive)", (long long)n);
    Adam8bitState s;
    s.n = n;
    s.eight_bit = n >= min_8bit_size;
    if (s.eight_bit) {
        // zero moments: the code of 0.0 in each map, absmax 0
        s.m_codes.assign(n, quantize_to_map(dynamic_map_signed(), 0.0f));
        s.v_codes.assign(n, quantize_to_map(dynamic_map_unsigned(), 0.0f));
        s.m_absmax.assign(s.num_blocks(), 0.0f);
        s.v_absmax.assign(s.num_blocks(), 0.0f);
    } else {
        s.m32.assign(n, 0.0f);
        s.v32.assign(n, 0.0f);
    }
    return s;
}

static void check_state(const Adam8bitState& s) {
    size_t n = (size_t)s.n, nb = (size_t)s.num_blocks();
    bool ok = s.eight_bit ? s.m_codes.size() == n && s.v_codes.size() == n && s.m_absmax.size() == nb &&
                                s.v_absmax.size() == nb
                          : s.m32.size() == n && s.v32.size() == n;
    LLMQ_CHECK(s.n > 0 && ok, "adam8bit: state buffers do not match its %lld elements", (long long)s.n);
}

Adam8bitStepConstants adam8bit_step_constants(const Adam8bitHyper& h, int step) {
    LLMQ_CHECK(step >= 1, "adam8bit: step %d must be >= 1 (steps are 1-based)", step);
    LLMQ_CHECK(h.lr > 0 && h.eps > 0 && h.weight_decay >= 0, "adam8bit: lr %g and eps %g must be > 0, weight decay %g >= 0",
               h.lr, h.eps, h.weight_decay);
    LLMQ_CHECK(h.beta1 >= 0 && h.beta1 < 1 && h.beta2 >= 0 && h.beta2 < 1, "adam8bit: betas (%g, %g) must be in [0, 1)",
               h.beta1, h.beta2);
    Adam8bitStepConstants k;
    k.beta1 = h.beta1, k.beta2 = h.beta2, k.one_minus_beta1 = 1.0f - h.beta1, k.one_minus_beta2 = 1.0f - h.beta2;
    k.lr = h.lr, k.eps = h.eps;
    k.c1 = (float)(1.0 - std::pow((double)h.beta1, step)), k.c2 = (float)(1.0 - std::pow((double)h.beta2, step));
    k.decay = adam8bit_math::fma(-h.lr, h.weight_decay, 1.0f);
    return k;
}

void adam8bit_step_cpu(float* param, const float* grad, Adam8bitState& s, const Adam8bitHyper& h, int step,
                       float grad_scale) {
    const Adam8bitStepConstants k = adam8bit_step_constants(h, step);
    check_state(s);
    // the per-element update (adam8bit_update.h) is shared with the GPU kernel; a non-finite g changes nothing
    if (!s.eight_bit) {
        for (int64_t i = 0; i < s.n; i++) adam8bit_update(param[i], s.m32[i], s.v32[i], grad[i] * grad_scale, k);
        return;
    }
    const DynamicMap& smap = dynamic_map_signed();
    const DynamicMap& umap = dynamic_map_unsigned();
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < s.num_blocks(); b++) {
        const int64_t begin = b * kAdam8bitBlock, count = std::min<int64_t>(kAdam8bitBlock, s.n - begin);
        float m[kAdam8bitBlock], v[kAdam8bitBlock];
        float m_max = 0.0f, v_max = 0.0f;
        for (int64_t j = 0; j < count; j++) {
            int64_t i = begin + j;
            m[j] = smap[s.m_codes[i]] * s.m_absmax[b];
            v[j] = umap[s.v_codes[i]] * s.v_absmax[b];
            adam8bit_update(param[i], m[j], v[j], grad[i] * grad_scale, k);
            m_max = adam8bit_math::max_abs(m_max, m[j]);
            v_max = adam8bit_math::max_abs(v_max, v[j]);
        }
        s.m_absmax[b] = m_max;
        s.v_absmax[b] = v_max;
        for (int64_t j = 0; j < count; j++) {
            s.m_codes[begin + j] = quantize_to_map(smap, adam8bit_normalized(m[j], m_max));
            s.v_codes[begin + j] = quantize_to_map(umap, adam8bit_normalized(v[j], v_max));
        }
    }
}

static std::vector<float> moment(const Adam8bitState& s, bool first) {
    check_state(s);
    if (!s.eight_bit) return first ? s.m32 : s.v32;
    const DynamicMap& map = first ? dynamic_map_signed() : dynamic_map_unsigned();
    const std::vector<uint8_t>& codes = first ? s.m_codes : s.v_codes;
    const std::vector<float>& absmax = first ? s.m_absmax : s.v_absmax;
    std::vector<float> out(s.n);
    for (int64_t i = 0; i < s.n; i++) out[i] = map[codes[i]] * absmax[i / kAdam8bitBlock];
    return out;
}
std::vector<float> adam8bit_m(const Adam8bitState& s) { return moment(s, true); }
std::vector<float> adam8bit_v(const Adam8bitState& s) { return moment(s, false); }

static const uint32_t kStateMagic = 0x31533841;  // "A8S1" little-endian
static const size_t kHeaderBytes = 4 + 8 + 4 + 4;

size_t adam8bit_serialized_bytes(const Adam8bitState& s) { return kHeaderBytes + s.state_bytes(); }

template <typename T>
static void put(std::vector<uint8_t>& out, const T* data, size_t count) {
    const uint8_t* bytes = reinterpret_cast<const uint8_t*>(data);
    out.insert(out.end(), bytes, bytes + count * sizeof(T));
}

void adam8bit_serialize(const Adam8bitState& s, std::vector<uint8_t>& out) {
    check_state(s);
    uint32_t eight_bit = s.eight_bit, block = kAdam8bitBlock;
    put(out, &kStateMagic, 1);
    put(out, &s.n, 1);
    put(out, &eight_bit, 1);
    put(out, &block, 1);
    if (s.eight_bit) {
        put(out, s.m_codes.data(), s.m_codes.size());
        put(out, s.v_codes.data(), s.v_codes.size());
        put(out, s.m_absmax.data(), s.m_absmax.size());
        put(out, s.v_absmax.data(), s.v_absmax.size());
    } else {
        put(out, s.m32.data(), s.m32.size());
        put(out, s.v32.data(), s.v32.size());
    }
}

// Copies count T's from data at *offset, checking there are that many bytes left.
template <typename T>
static void get(const uint8_t* data, size_t size, size_t* offset, T* dst, size_t count, const char* what) {
    size_t bytes = count * sizeof(T);
    LLMQ_CHECK(*offset <= size && size - *offset >= bytes,
               "%s: 8-bit Adam state truncated at byte %zu (need %zu more bytes, %zu left)", what, *offset, bytes,
               *offset <= size ? size - *offset : 0);
    std::memcpy(dst, data + *offset, bytes);
    *offset += bytes;
}

Adam8bitState adam8bit_deserialize(const uint8_t* data, size_t size, size_t* offset, const char* what) {
    uint32_t magic = 0, eight_bit = 0, block = 0;
    Adam8bitState s;
    get(data, size, offset, &magic, 1, what);
    LLMQ_CHECK(magic == kStateMagic, "%s: not an 8-bit Adam state (bad magic 0x%08x at byte %zu)", what, magic,
               *offset - 4);
    get(data, size, offset, &s.n, 1, what);
    get(data, size, offset, &eight_bit, 1, what);
    get(data, size, offset, &block, 1, what);
    LLMQ_CHECK(s.n > 0 && eight_bit <= 1, "%s: 8-bit Adam state header is corrupt (n %lld, flag %u)", what,
               (long long)s.n, eight_bit);
    LLMQ_CHECK(block == kAdam8bitBlock, "%s: 8-bit Adam state has block size %u (this build uses %d)", what, block,
               kAdam8bitBlock);
    s.eight_bit = eight_bit;
    // check the whole payload is present before allocating it (n alone bounds it first: no overflow)
    size_t left = size - *offset;
    size_t payload = (uint64_t)s.n > left ? SIZE_MAX
                     : s.eight_bit       ? 2 * (size_t)s.n + 8 * (size_t)s.num_blocks()
                                         : 8 * (size_t)s.n;
    LLMQ_CHECK(left >= payload, "%s: 8-bit Adam state of %lld elements truncated (%zu of %zu bytes)", what,
               (long long)s.n, left, payload);
    if (s.eight_bit) {
        s.m_codes.resize(s.n);
        s.v_codes.resize(s.n);
        s.m_absmax.resize(s.num_blocks());
        s.v_absmax.resize(s.num_blocks());
        get(data, size, offset, s.m_codes.data(), s.m_codes.size(), what);
        get(data, size, offset, s.v_codes.data(), s.v_codes.size(), what);
        get(data, size, offset, s.m_absmax.data(), s.m_absmax.size(), what);
        get(data, size, offset, s.v_absmax.data(), s.v_absmax.size(), what);
    } else {
        s.m32.resize(s.n);
        s.v32.resize(s.n);
        get(data, size, offset, s.m32.data(), s.m32.size(), what);
        get(data, size, offset, s.v32.data(), s.v32.size(), what);
    }
    return s;
}

}  // namespace llmq
