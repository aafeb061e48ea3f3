// quantized_weight.cpp: see quantized_weight.h.
#include "quantized_weight.h"

#include "../kernels/common.h"

namespace llmq {

std::shared_ptr<FormatQuantizedWeight> quantize_weight(const float* w, int out, int in, const QuantSpec& spec) {
    return std::make_shared<FormatQuantizedWeight>(quantize_cpu(w, out, in, spec));
}

size_t attach_quantized_base(Linear<float>& linear, QuantizedTensor q) {
    LLMQ_CHECK(q.rows == linear.out && q.cols == linear.in, "a (%lld, %lld) quantized weight for a (%d, %d) Linear",
               (long long)q.rows, (long long)q.cols, linear.out, linear.in);
    const size_t bytes = tensor_bytes(q);
    linear.quant = std::make_shared<FormatQuantizedWeight>(std::move(q));
    linear.dweight = nullptr;
    return bytes;
}

void put_quantized_tensor(StateWriter& w, const QuantizedTensor& q) {
    w.put<uint8_t>((uint8_t)q.spec.format);
    w.put<int32_t>(q.spec.block);
    w.put<uint8_t>(q.spec.symmetric ? 1 : 0);
    w.put<uint8_t>(q.spec.double_quant ? 1 : 0);
    w.put<int64_t>(q.rows);
    w.put<int64_t>(q.cols);
    w.put_vec(q.codes);
    w.put_vec(q.absmax);
    w.put_vec(q.absmax_codes);
    w.put_vec(q.absmax_scales);
    w.put<float>(q.absmax_offset);
    w.put_vec(q.scales);
    w.put_vec(q.zeros);
}

QuantizedTensor get_quantized_tensor(StateReader& r, const std::string& name) {
    QuantizedTensor q;
    const uint8_t format = r.get<uint8_t>();
    LLMQ_CHECK(format <= (uint8_t)QuantFormat::INT2, "%s: %s of %s has an unknown format code %u", r.what, r.state,
               name.c_str(), format);
    q.spec.format = (QuantFormat)format;
    q.spec.block = r.get<int32_t>();
    q.spec.symmetric = r.get<uint8_t>() != 0;
    q.spec.double_quant = r.get<uint8_t>() != 0;
    q.rows = r.get<int64_t>();
    q.cols = r.get<int64_t>();
    q.codes = r.get_vec<uint8_t>();
    q.absmax = r.get_vec<float>();
    q.absmax_codes = r.get_vec<uint8_t>();
    q.absmax_scales = r.get_vec<float>();
    q.absmax_offset = r.get<float>();
    q.scales = r.get_vec<float>();
    q.zeros = r.get_vec<uint8_t>();
    LLMQ_CHECK(q.rows > 0 && q.cols > 0, "%s: %s of %s is corrupt (shape %lld x %lld)", r.what, r.state, name.c_str(),
               (long long)q.rows, (long long)q.cols);
    try {
        check_spec(q.spec, q.rows, q.cols);
    } catch (const Error& e) {
        throw Error(llmq::format("%s: %s of %s is corrupt: %s", r.what, r.state, name.c_str(), e.what()));
    }
    LLMQ_CHECK(tensor_bytes(q) == storage_bytes(q.spec, q.rows, q.cols), "%s: %s of %s is corrupt (%zu bytes, its "
               "shape needs %zu)", r.what, r.state, name.c_str(), tensor_bytes(q), storage_bytes(q.spec, q.rows, q.cols));
    return q;
}

}  // namespace llmq
