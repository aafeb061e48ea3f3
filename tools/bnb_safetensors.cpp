// bnb_safetensors: NF4/FP4 weights in bitsandbytes' safetensors layout, write and strict read (bnb_safetensors.h).
#include "bnb_safetensors.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>

#include "../kernels/common.h"
#include "../layers/model_core.h"
#include "../quant/dynamic_map.h"
#include "../quant/fourbit.h"
#include "../quant/quantized_weight.h"
#include "hf_llama.h"
#include "hf_peft.h"
#include "json.h"

namespace llmq {

std::string bnb_quant_state_key(QuantFormat f) {
    LLMQ_CHECK(f == QuantFormat::NF4 || f == QuantFormat::FP4,
               "bitsandbytes 4-bit layout: format %s is not nf4 or fp4", format_name(f));
    return std::string("quant_state.bitsandbytes__") + format_name(f);
}

void check_bnb_spec(const QuantSpec& spec, const std::string& what) {
    LLMQ_CHECK(spec.format == QuantFormat::NF4 || spec.format == QuantFormat::FP4,
               "%s: bitsandbytes' 4-bit layout holds nf4 or fp4 weights, not %s", what.c_str(),
               format_name(spec.format));
    const bool pow2 = spec.block > 0 && (spec.block & (spec.block - 1)) == 0;
    LLMQ_CHECK(pow2 && spec.block >= 64 && spec.block <= 4096,
               "%s: block %d: bitsandbytes' 4-bit kernels take blocks of 64, 128, ..., 4096", what.c_str(), spec.block);
}

const char* bnb_dtype_name(Dtype d) {
    switch (d) {
        case Dtype::F32: return "float32";
        case Dtype::BF16: return "bfloat16";
        case Dtype::F16: return "float16";
        default: break;
    }
    throw Error(format("bitsandbytes quant_state: dtype %s is not F32, BF16 or F16", dtype_name(d)));
}

namespace {

// Python's repr of a float: the shortest decimal that reads back to the same double ("0.5", "1.0", "1e-05").
std::string python_float(double x) {
    char buf[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, x);
        if (strtod(buf, nullptr) == x) break;
    }
    std::string s = buf;
    if (s.find_first_of(".en") == std::string::npos) s += ".0";
    return s;
}

template <typename T>
const void* keep_vector(std::deque<std::vector<T>>& keep, std::vector<T> v) {
    keep.push_back(std::move(v));
    return keep.back().data();
}

bool near(float a, float b) { return std::fabs(a - b) <= 1e-6f * std::fmax(1.0f, std::fabs(b)); }

std::string shape_text(const std::vector<int64_t>& shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

}  // namespace

void append_bnb_weight(const std::string& name, const QuantizedTensor& q, Dtype dtype,
                       std::vector<SafeTensorToWrite>& out, BnbBuffers& keep) {
    check_bnb_spec(q.spec, name);
    LLMQ_CHECK(tensor_bytes(q) == storage_bytes(q.spec, q.rows, q.cols),
               "%s: the quantized tensor holds %zu bytes, its spec and shape (%lld, %lld) need %zu", name.c_str(),
               tensor_bytes(q), (long long)q.rows, (long long)q.cols, storage_bytes(q.spec, q.rows, q.cols));
    const int64_t blocks = q.num_blocks();
    out.push_back({name, Dtype::U8, {q.numel() / 2, 1}, q.codes.data()});
    const float* table = fourbit_code(q.spec.format);
    out.push_back({name + ".quant_map", Dtype::F32, {16}, keep_vector(keep.floats, std::vector<float>(table, table + 16))});
    std::string json = format("{\"quant_type\": \"%s\", \"blocksize\": %d, \"dtype\": \"%s\", \"shape\": [%lld, %lld]",
                              format_name(q.spec.format), q.spec.block, bnb_dtype_name(dtype), (long long)q.rows,
                              (long long)q.cols);
    if (q.spec.double_quant) {
        const DynamicMap& map = dynamic_map_signed();
        out.push_back({name + ".absmax", Dtype::U8, {blocks}, q.absmax_codes.data()});
        out.push_back({name + ".nested_absmax", Dtype::F32, {(int64_t)q.absmax_scales.size()}, q.absmax_scales.data()});
        out.push_back({name + ".nested_quant_map", Dtype::F32, {256},
                       keep_vector(keep.floats, std::vector<float>(map.begin(), map.end()))});
        json += format(", \"nested_blocksize\": %d, \"nested_dtype\": \"float32\", \"nested_offset\": %s",
                       kDoubleQuantGroup, python_float(q.absmax_offset).c_str());
    } else {
        out.push_back({name + ".absmax", Dtype::F32, {blocks}, q.absmax.data()});
    }
    json += "}";
    out.push_back({name + "." + bnb_quant_state_key(q.spec.format), Dtype::U8, {(int64_t)json.size()},
                   keep_vector(keep.bytes, std::vector<uint8_t>(json.begin(), json.end()))});
}

QuantizedTensor read_bnb_weight(const SafeTensorsFile& f, const std::string& name, Dtype* dtype_out) {
    auto fail = [&](const std::string& key, const std::string& problem) {
        return Error(f.source() + ": " + key + ": " + problem);
    };
    // the packed quant_state names the format
    const SafeTensorInfo* qs = nullptr;
    QuantFormat fmt = QuantFormat::NF4;
    for (QuantFormat c : {QuantFormat::NF4, QuantFormat::FP4})
        if (const SafeTensorInfo* t = f.find(name + "." + bnb_quant_state_key(c))) {
            if (qs) throw fail(t->name, "a second quant_state for the same weight (" + qs->name + ")");
            qs = t, fmt = c;
        }
    if (!qs) throw fail(name + ".quant_state.bitsandbytes__nf4", "missing (nor is there a __fp4 one)");
    if (qs->dtype != Dtype::U8 || qs->shape.size() != 1)
        throw fail(qs->name, format("must be a 1-D U8 tensor (JSON bytes), is %s %s", dtype_name(qs->dtype),
                                    shape_text(qs->shape).c_str()));
    const JsonValue state = [&] {
        try {
            return parse_json(std::string((const char*)f.bytes(*qs), qs->end - qs->begin), "JSON");
        } catch (const Error& e) {
            throw fail(qs->name, e.what());
        }
    }();
    if (!state.is_object()) throw fail(qs->name, "the quant_state JSON is not an object");
    static const std::set<std::string> kKeys = {"quant_type", "blocksize", "dtype", "shape", "nested_blocksize",
                                                "nested_dtype", "nested_offset"};
    for (const JsonValue::Member& m : state.as_object())
        if (!kKeys.count(m.first)) throw fail(qs->name, "unknown quant_state field \"" + m.first + "\"");

    QuantizedTensor q;
    Dtype dtype = Dtype::F32;
    double offset = 0;
    try {
        const std::string type = state.at("quant_type").as_string();
        LLMQ_CHECK(type == format_name(fmt), "quant_type \"%s\" differs from the key's %s", type.c_str(),
                   format_name(fmt));
        q.spec.format = fmt;
        const int64_t block = state.at("blocksize").as_int();
        LLMQ_CHECK(block > 0 && block <= (1 << 20), "blocksize %lld is out of range", (long long)block);
        q.spec.block = (int)block;
        const std::string dt = state.at("dtype").as_string();
        if (dt == "float32") dtype = Dtype::F32;
        else if (dt == "bfloat16") dtype = Dtype::BF16;
        else if (dt == "float16") dtype = Dtype::F16;
        else throw Error("dtype \"" + dt + "\" is not float32, bfloat16 or float16");
        const JsonValue& shape = state.at("shape");
        LLMQ_CHECK(shape.is_array() && shape.size() == 2, "shape must be [out, in]");
        q.rows = shape.at(0).as_int();
        q.cols = shape.at(1).as_int();
        LLMQ_CHECK(q.rows > 0 && q.cols > 0 && q.rows <= (1 << 24) && q.cols <= (1 << 24), "shape [%lld, %lld] is out of range",
                   (long long)q.rows, (long long)q.cols);
        q.spec.double_quant = state.find("nested_offset") || state.find("nested_blocksize") || state.find("nested_dtype");
        if (q.spec.double_quant) {
            const int64_t nb = state.at("nested_blocksize").as_int();
            LLMQ_CHECK(nb == kDoubleQuantGroup, "nested_blocksize %lld: llmq's double quantization uses %d",
                       (long long)nb, kDoubleQuantGroup);
            const std::string ndt = state.at("nested_dtype").as_string();
            LLMQ_CHECK(ndt == "float32", "nested_dtype \"%s\" is not float32", ndt.c_str());
            offset = state.at("nested_offset").as_number();
        }
        check_spec(q.spec, q.rows, q.cols);
    } catch (const Error& e) {
        throw fail(qs->name, e.what());
    }

    // one tensor of the group with exactly this dtype and shape
    auto need = [&](const std::string& key, Dtype dtype, std::vector<int64_t> shape) -> const uint8_t* {
        const SafeTensorInfo* t = f.find(key);
        if (!t) throw fail(key, "missing");
        if (t->dtype != dtype || t->shape != shape)
            throw fail(key, format("is %s %s, expected %s %s", dtype_name(t->dtype), shape_text(t->shape).c_str(),
                                   dtype_name(dtype), shape_text(shape).c_str()));
        return f.bytes(*t);
    };
    const int64_t blocks = q.num_blocks(), groups = (blocks + kDoubleQuantGroup - 1) / kDoubleQuantGroup;
    const uint8_t* codes = need(name, Dtype::U8, {q.numel() / 2, 1});
    q.codes.assign(codes, codes + q.numel() / 2);
    std::vector<float> table(16);
    std::memcpy(table.data(), need(name + ".quant_map", Dtype::F32, {16}), 16 * sizeof(float));
    for (int i = 0; i < 16; i++)
        if (!near(table[i], fourbit_code(fmt)[i]))
            throw fail(name + ".quant_map", format("entry %d is %.9g, %s's table has %.9g", i, table[i],
                                                   format_name(fmt), fourbit_code(fmt)[i]));
    std::set<std::string> allowed = {name, name + ".quant_map", name + ".absmax", qs->name};
    if (q.spec.double_quant) {
        const uint8_t* a = need(name + ".absmax", Dtype::U8, {blocks});
        q.absmax_codes.assign(a, a + blocks);
        q.absmax_scales.resize(groups);
        std::memcpy(q.absmax_scales.data(), need(name + ".nested_absmax", Dtype::F32, {groups}), groups * sizeof(float));
        std::vector<float> map(256);
        std::memcpy(map.data(), need(name + ".nested_quant_map", Dtype::F32, {256}), 256 * sizeof(float));
        for (int i = 0; i < 256; i++)
            if (!near(map[i], dynamic_map_signed()[i]))
                throw fail(name + ".nested_quant_map", format("entry %d is %.9g, the signed dynamic map has %.9g", i,
                                                              map[i], dynamic_map_signed()[i]));
        q.absmax_offset = (float)offset;
        allowed.insert({name + ".nested_absmax", name + ".nested_quant_map"});
    } else {
        q.absmax.resize(blocks);
        std::memcpy(q.absmax.data(), need(name + ".absmax", Dtype::F32, {blocks}), blocks * sizeof(float));
    }
    for (const SafeTensorInfo& t : f.tensors())
        if (t.name.compare(0, name.size() + 1, name + ".") == 0 && !allowed.count(t.name))
            throw fail(t.name, std::string("not part of bitsandbytes' layout for a ") +
                                   (q.spec.double_quant ? "double-quantized" : "plain") + " 4-bit weight");
    for (float v : q.spec.double_quant ? q.absmax_scales : q.absmax)
        if (!std::isfinite(v) || v < 0) throw fail(name + (q.spec.double_quant ? ".nested_absmax" : ".absmax"),
                                                   format("holds %g (absmax values are finite and >= 0)", v));
    if (dtype_out) *dtype_out = dtype;
    return q;
}

std::map<std::string, QuantizedTensor> read_bnb_weights(const SafeTensorsFile& f) {
    std::map<std::string, QuantizedTensor> out;
    for (const SafeTensorInfo& t : f.tensors())
        for (QuantFormat c : {QuantFormat::NF4, QuantFormat::FP4}) {
            const std::string suffix = "." + bnb_quant_state_key(c);
            if (t.name.size() > suffix.size() && t.name.compare(t.name.size() - suffix.size(), suffix.size(), suffix) == 0) {
                const std::string name = t.name.substr(0, t.name.size() - suffix.size());
                if (!out.count(name)) out.emplace(name, read_bnb_weight(f, name));
            }
        }
    return out;
}

bool is_bnb_key(const std::string& key, const std::map<std::string, QuantizedTensor>& weights) {
    for (const auto& [name, q] : weights)
        if (key == name || (key.size() > name.size() && key.compare(0, name.size() + 1, name + ".") == 0)) return true;
    return false;
}

void save_bnb_model(const std::string& path, const Model& model, const std::map<std::string, QuantizedTensor>& quantized,
                    Dtype dtype) {
    bnb_dtype_name(dtype);  // F32, BF16 or F16
    std::vector<SafeTensorToWrite> out;
    BnbBuffers keep;
    std::vector<std::vector<uint16_t>> narrow;
    size_t found = 0;
    for (const ParamTensor& t : model.tensors()) {
        auto it = quantized.find(t.name);
        if (it != quantized.end()) {
            const QuantizedTensor& q = it->second;
            LLMQ_CHECK(t.shape.size() == 2 && q.rows == t.shape[0] && q.cols == t.shape[1],
                       "%s: %s is quantized as (%lld, %lld), the model's tensor has %zu elements", path.c_str(),
                       t.name.c_str(), (long long)q.rows, (long long)q.cols, t.size);
            append_bnb_weight(t.name, q, dtype, out, keep);
            found++;
            continue;
        }
        SafeTensorToWrite w;
        w.name = t.name;
        w.dtype = dtype;
        w.shape.assign(t.shape.begin(), t.shape.end());
        w.data = float_data_as(dtype, model.params() + t.offset, t.size, narrow);
        out.push_back(w);
    }
    LLMQ_CHECK(found == quantized.size(), "%s: %zu of the %zu quantized tensors are not tensors of the model",
               path.c_str(), quantized.size() - found, quantized.size());
    write_safetensors(path, out, {{"format", "pt"}});
}

size_t load_bnb_model(const std::string& path, Model& model) {
    const SafeTensorsFile f = SafeTensorsFile::open(path);
    const std::map<std::string, QuantizedTensor> quantized = read_bnb_weights(f);
    std::map<std::string, Linear<float>*> linear_of;  // tensor name -> its Linear
    for (auto& [module, linear] : named_linears(model)) linear_of[module + ".weight"] = linear;
    std::set<std::string> names;
    for (const ParamTensor& t : model.tensors()) {
        names.insert(t.name);
        float* dst = model.params() + t.offset;
        auto q = quantized.find(t.name);
        if (q == quantized.end()) {
            const SafeTensorInfo* info = f.find(t.name);
            LLMQ_CHECK(info, "%s: %s: missing", path.c_str(), t.name.c_str());
            const std::vector<int64_t> shape(t.shape.begin(), t.shape.end());
            LLMQ_CHECK(info->shape == shape, "%s: %s: shape %s, the model needs %s", path.c_str(), t.name.c_str(),
                       shape_text(info->shape).c_str(), shape_text(shape).c_str());
            const std::vector<float> v = f.to_float(t.name);
            std::memcpy(dst, v.data(), t.size * sizeof(float));
            continue;
        }
        auto lin = linear_of.find(t.name);
        LLMQ_CHECK(lin != linear_of.end() && lin->second != &model.core().lm_head(),
                   "%s: %s is 4-bit quantized; llmq quantizes only the attention and MLP linears", path.c_str(),
                   t.name.c_str());
        const Linear<float>& L = *lin->second;
        LLMQ_CHECK(q->second.rows == L.out && q->second.cols == L.in, "%s: %s: quantized shape [%lld, %lld], the model "
                   "needs [%d, %d]", path.c_str(), t.name.c_str(), (long long)q->second.rows, (long long)q->second.cols,
                   L.out, L.in);
        dequantize_cpu(q->second, dst);
        lin->second->quant = std::make_shared<FormatQuantizedWeight>(q->second);
        lin->second->dweight = nullptr;  // a quantized base is frozen
    }
    for (const SafeTensorInfo& t : f.tensors())
        LLMQ_CHECK(names.count(t.name) || is_bnb_key(t.name, quantized), "%s: %s: not a tensor of this model (%s)",
                   path.c_str(), t.name.c_str(), model.config().describe().c_str());
    for (const auto& [name, q] : quantized)
        LLMQ_CHECK(names.count(name), "%s: %s: not a tensor of this model", path.c_str(), name.c_str());
    return quantized.size();
}

}  // namespace llmq
