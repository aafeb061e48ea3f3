// hf_llama.cpp: HF LLaMA config.json parsing and writing, weight loading (single file or sharded, BF16/F16/F32,
// tied or untied head, Meta or HF q/k layout) and export (see hf_llama.h for the rules).
#include "hf_llama.h"

#include <sys/stat.h>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <set>

#include "../kernels/common.h"
#include "float16.h"

namespace llmq {

namespace {

bool file_exists(const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0;
}

// ---- config.json fields, each error naming the file and key

const JsonValue* field(const JsonValue& j, const char* key) {
    const JsonValue* v = j.find(key);
    return v && !v->is_null() ? v : nullptr;
}

int64_t int_field(const JsonValue& j, const char* key, const std::string& src, int64_t fallback, bool required) {
    const JsonValue* v = field(j, key);
    if (!v) {
        LLMQ_CHECK(!required, "%s: key '%s' is missing", src.c_str(), key);
        return fallback;
    }
    LLMQ_CHECK(v->is_number(), "%s: key '%s' must be a number, got %s", src.c_str(), key,
               JsonValue::type_name(v->type()));
    const double d = v->as_number();
    LLMQ_CHECK(d == (double)(int64_t)d && d >= 0 && d <= 2147483647.0, "%s: key '%s' must be a whole number >= 0, got %g",
               src.c_str(), key, d);
    return (int64_t)d;
}

double number_field(const JsonValue& j, const char* key, const std::string& src, double fallback) {
    const JsonValue* v = field(j, key);
    if (!v) return fallback;
    LLMQ_CHECK(v->is_number(), "%s: key '%s' must be a number, got %s", src.c_str(), key,
               JsonValue::type_name(v->type()));
    return v->as_number();
}

bool bool_field(const JsonValue& j, const char* key, const std::string& src, bool fallback) {
    const JsonValue* v = field(j, key);
    if (!v) return fallback;
    LLMQ_CHECK(v->is_bool(), "%s: key '%s' must be true or false, got %s", src.c_str(), key,
               JsonValue::type_name(v->type()));
    return v->as_bool();
}

std::string string_field(const JsonValue& j, const char* key, const std::string& src, const std::string& fallback) {
    const JsonValue* v = field(j, key);
    if (!v) return fallback;
    LLMQ_CHECK(v->is_string(), "%s: key '%s' must be a string, got %s", src.c_str(), key,
               JsonValue::type_name(v->type()));
    return v->as_string();
}

// rope_scaling / rope_parameters: only plain RoPE ("default") is what llmq computes.
void check_rope_type(const JsonValue& rope, const char* key, const std::string& src) {
    LLMQ_CHECK(rope.is_object(), "%s: key '%s' must be an object or null", src.c_str(), key);
    std::string type = string_field(rope, "rope_type", src, string_field(rope, "type", src, "default"));
    LLMQ_CHECK(type == "default", "%s: key '%s' has rope_type '%s'; only unscaled RoPE ('default') is supported",
               src.c_str(), key, type.c_str());
}

// The shortest decimal that reads back as the same float, with a '.' or exponent so Python reads a float.
std::string float_json(float f) {
    char buf[64];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if (strtof(buf, nullptr) == f) break;
    }
    std::string s = buf;
    if (s.find_first_of(".eE") == std::string::npos) s += ".0";
    return s;
}

const char* torch_dtype_name(Dtype d) {
    switch (d) {
        case Dtype::BF16: return "bfloat16";
        case Dtype::F16: return "float16";
        case Dtype::F32: return "float32";
        default: throw Error(format("HF export: weight dtype %s is not one of BF16, F16, F32", dtype_name(d)));
    }
}

std::string shape_str(const std::vector<int64_t>& s) {
    std::string out = "[";
    for (size_t i = 0; i < s.size(); i++) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
}

// The index of the first NaN or infinity in x (n), or -1.
long long first_non_finite(const float* x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!std::isfinite(x[i])) return (long long)i;
    return -1;
}

// Meta row 2i+j of a head <-> HF row j*hd/2 + i. to_hf picks the direction.
void permute_qk(float* w, int n_heads, int head_dim, int cols, bool to_hf) {
    LLMQ_CHECK(head_dim % 2 == 0 && n_heads > 0 && cols > 0, "q/k permutation: head_dim %d must be even", head_dim);
    const int half = head_dim / 2;
    std::vector<float> head((size_t)head_dim * cols);
    for (int h = 0; h < n_heads; h++) {
        float* rows = w + (size_t)h * head_dim * cols;
        std::memcpy(head.data(), rows, sizeof(float) * head.size());
        for (int i = 0; i < half; i++)
            for (int j = 0; j < 2; j++) {
                const int meta = 2 * i + j, hf = j * half + i;
                const int dst = to_hf ? hf : meta, src = to_hf ? meta : hf;
                std::memcpy(rows + (size_t)dst * cols, &head[(size_t)src * cols], sizeof(float) * cols);
            }
    }
}

}  // namespace

// ---------------------------------------------------------------- config

ModelConfig parse_hf_config(const JsonValue& j, const std::string& src) {
    LLMQ_CHECK(j.is_object(), "%s: must be a JSON object", src.c_str());
    const std::string model_type = string_field(j, "model_type", src, "llama");
    LLMQ_CHECK(model_type == "llama", "%s: key 'model_type' is '%s'; only 'llama' is supported", src.c_str(),
               model_type.c_str());
    const std::string act = string_field(j, "hidden_act", src, "silu");
    LLMQ_CHECK(act == "silu", "%s: key 'hidden_act' is '%s'; llmq's MLP is SwiGLU ('silu')", src.c_str(), act.c_str());
    for (const char* key : {"attention_bias", "mlp_bias"})
        LLMQ_CHECK(!bool_field(j, key, src, false), "%s: key '%s' is true; llmq's LLaMA has no biases", src.c_str(), key);
    if (const JsonValue* s = field(j, "rope_scaling")) check_rope_type(*s, "rope_scaling", src);

    ModelConfig c;
    c.name = "hf";
    c.vocab_size = (int)int_field(j, "vocab_size", src, 0, true);
    c.dim = (int)int_field(j, "hidden_size", src, 0, true);
    c.ffn_dim = (int)int_field(j, "intermediate_size", src, 0, true);
    c.n_layers = (int)int_field(j, "num_hidden_layers", src, 0, true);
    c.n_heads = (int)int_field(j, "num_attention_heads", src, 0, true);
    c.n_kv_heads = (int)int_field(j, "num_key_value_heads", src, c.n_heads, false);
    c.max_seq_len = (int)int_field(j, "max_position_embeddings", src, 2048, false);
    c.norm_eps = (float)number_field(j, "rms_norm_eps", src, 1e-6);
    c.tied_embeddings = bool_field(j, "tie_word_embeddings", src, false);
    double theta = number_field(j, "rope_theta", src, 10000.0);
    if (const JsonValue* rp = field(j, "rope_parameters")) {  // transformers >= 5 nests it here
        check_rope_type(*rp, "rope_parameters", src);
        theta = number_field(*rp, "rope_theta", src, theta);
    }
    c.rope_theta = (float)theta;
    LLMQ_CHECK(c.n_heads > 0 && c.dim % c.n_heads == 0, "%s: key 'num_attention_heads' %d does not divide hidden_size %d",
               src.c_str(), c.n_heads, c.dim);
    const int64_t hd = int_field(j, "head_dim", src, c.head_dim(), false);
    LLMQ_CHECK(hd == c.head_dim(), "%s: key 'head_dim' is %lld; llmq needs hidden_size / num_attention_heads = %d",
               src.c_str(), (long long)hd, c.head_dim());
    try {
        c.validate();
    } catch (const Error& e) {
        throw Error(src + ": " + e.what());
    }
    return c;
}

ModelConfig read_hf_config(const std::string& dir) {
    const std::string path = dir + "/config.json";
    return parse_hf_config(parse_json_file(path), path);
}

std::string hf_config_json(const ModelConfig& c, Dtype dtype) {
    std::string s = "{\n";
    auto kv = [&](const char* key, const std::string& value) { s += format("  \"%s\": %s,\n", key, value.c_str()); };
    kv("architectures", "[\"LlamaForCausalLM\"]");
    kv("model_type", "\"llama\"");
    kv("attention_bias", "false");
    kv("attention_dropout", "0.0");
    kv("head_dim", std::to_string(c.head_dim()));
    kv("hidden_act", "\"silu\"");
    kv("hidden_size", std::to_string(c.dim));
    kv("initializer_range", float_json(c.init_std));
    kv("intermediate_size", std::to_string(c.ffn_dim));
    kv("max_position_embeddings", std::to_string(c.max_seq_len));
    kv("mlp_bias", "false");
    kv("num_attention_heads", std::to_string(c.n_heads));
    kv("num_hidden_layers", std::to_string(c.n_layers));
    kv("num_key_value_heads", std::to_string(c.n_kv_heads));
    kv("pretraining_tp", "1");
    kv("rms_norm_eps", float_json(c.norm_eps));
    // both spellings of the RoPE settings: top level (transformers 4) and rope_parameters (transformers 5)
    kv("rope_parameters", format("{\"rope_theta\": %s, \"rope_type\": \"default\"}", float_json(c.rope_theta).c_str()));
    kv("rope_scaling", "null");
    kv("rope_theta", float_json(c.rope_theta));
    kv("tie_word_embeddings", c.tied_embeddings ? "true" : "false");
    kv("dtype", format("\"%s\"", torch_dtype_name(dtype)));  // transformers >= 4.56; torch_dtype before
    kv("torch_dtype", format("\"%s\"", torch_dtype_name(dtype)));
    kv("use_cache", "true");
    s += format("  \"vocab_size\": %d\n}\n", c.vocab_size);
    return s;
}

// ---------------------------------------------------------------- weight files

const SafeTensorsFile* HfWeightFiles::find(const std::string& name) const {
    auto it = where.find(name);
    return it == where.end() ? nullptr : &files[it->second];
}

HfWeightFiles open_hf_weights(const std::string& dir) {
    HfWeightFiles w;
    const std::string single = dir + "/model.safetensors", index = dir + "/model.safetensors.index.json";
    if (file_exists(single)) {
        w.files.push_back(SafeTensorsFile::open(single));
        for (const SafeTensorInfo& t : w.files[0].tensors()) w.where[t.name] = 0;
        return w;
    }
    LLMQ_CHECK(file_exists(index), "%s: neither model.safetensors nor model.safetensors.index.json exists",
               dir.c_str());
    w.sharded = true;
    const JsonValue j = parse_json_file(index);
    const JsonValue* map = j.find("weight_map");
    LLMQ_CHECK(map && map->is_object(), "%s: key 'weight_map' is missing or not an object", index.c_str());
    std::map<std::string, size_t> shard_index;  // shard file name -> index into files
    for (const JsonValue::Member& m : map->as_object()) {
        LLMQ_CHECK(m.second.is_string(), "%s: weight_map entry '%s' must be a file name", index.c_str(), m.first.c_str());
        const std::string& shard = m.second.as_string();
        LLMQ_CHECK(!shard.empty() && shard.find('/') == std::string::npos && shard != "." && shard != "..",
                   "%s: weight_map entry '%s' names '%s', not a file beside the index", index.c_str(), m.first.c_str(),
                   shard.c_str());
        auto it = shard_index.find(shard);
        if (it == shard_index.end()) {
            const std::string path = dir + "/" + shard;
            LLMQ_CHECK(file_exists(path), "%s: shard '%s' (of tensor '%s') does not exist", index.c_str(), path.c_str(),
                       m.first.c_str());
            it = shard_index.emplace(shard, w.files.size()).first;
            w.files.push_back(SafeTensorsFile::open(path));
        }
        LLMQ_CHECK(w.files[it->second].find(m.first), "%s: tensor '%s' listed in %s is absent",
                   w.files[it->second].source().c_str(), m.first.c_str(), index.c_str());
        w.where[m.first] = it->second;
    }
    return w;
}

// ---------------------------------------------------------------- permutation

void permute_qk_meta_to_hf(float* w, int n_heads, int head_dim, int cols) { permute_qk(w, n_heads, head_dim, cols, true); }
void permute_qk_hf_to_meta(float* w, int n_heads, int head_dim, int cols) { permute_qk(w, n_heads, head_dim, cols, false); }

// ---------------------------------------------------------------- loading

namespace {

// load_hf_weights; returns the embedding table's dtype.
Dtype load_weights(const std::string& dir, Model& model, QkLayout layout) {
    const ModelConfig& c = model.config();
    const HfWeightFiles w = open_hf_weights(dir);
    std::set<std::string> expected;
    for (const ParamTensor& t : model.tensors()) {
        expected.insert(t.name);
        const SafeTensorsFile* f = w.find(t.name);
        LLMQ_CHECK(f, "%s: tensor '%s' is missing", (w.sharded ? dir + "/model.safetensors.index.json" : dir + "/model.safetensors").c_str(),
                   t.name.c_str());
        const SafeTensorInfo& info = f->at(t.name);
        const std::vector<int64_t> want(t.shape.begin(), t.shape.end());
        LLMQ_CHECK(info.shape == want, "%s: tensor '%s' has shape %s; config.json implies %s", f->source().c_str(),
                   t.name.c_str(), shape_str(info.shape).c_str(), shape_str(want).c_str());
        LLMQ_CHECK(info.dtype == Dtype::F32 || info.dtype == Dtype::BF16 || info.dtype == Dtype::F16,
                   "%s: tensor '%s' has dtype %s; only BF16, F16 and F32 weights load", f->source().c_str(),
                   t.name.c_str(), dtype_name(info.dtype));
        const std::vector<float> values = f->to_float(t.name);
        const long long bad = first_non_finite(values.data(), t.size);
        LLMQ_CHECK(bad < 0, "%s: tensor '%s' holds a non-finite value (%g at element %lld)", f->source().c_str(),
                   t.name.c_str(), values[bad], bad);
        float* dst = model.params() + t.offset;
        std::memcpy(dst, values.data(), sizeof(float) * t.size);
        const bool is_q = t.name.find(".self_attn.q_proj.weight") != std::string::npos;
        const bool is_k = t.name.find(".self_attn.k_proj.weight") != std::string::npos;
        if (layout == QkLayout::Meta && (is_q || is_k))
            permute_qk_meta_to_hf(dst, is_q ? c.n_heads : c.n_kv_heads, c.head_dim(), c.dim);
    }
    for (const auto& [name, index] : w.where) {
        if (expected.count(name)) continue;
        const SafeTensorsFile& f = w.files[index];
        const std::string inv_freq = ".rotary_emb.inv_freq";  // a buffer of old checkpoints, recomputed here
        if (name.size() > inv_freq.size() && name.compare(name.size() - inv_freq.size(), inv_freq.size(), inv_freq) == 0)
            continue;
        if (name == "lm_head.weight" && c.tied_embeddings) {
            // some exports keep the tied head; accept it only when it really is the embedding table
            const std::vector<float> head = f.to_float(name);
            const ParamTensor& e = model.tensor("model.embed_tokens.weight");
            LLMQ_CHECK(f.at(name).numel() == (int64_t)e.size &&
                           std::memcmp(head.data(), model.params() + e.offset, sizeof(float) * e.size) == 0,
                       "%s: tensor 'lm_head.weight' differs from model.embed_tokens.weight, but config.json has "
                       "tie_word_embeddings true",
                       f.source().c_str());
            continue;
        }
        throw Error(format("%s: unexpected tensor '%s' (not part of a LLaMA model with this config.json)",
                           f.source().c_str(), name.c_str()));
    }
    return w.find("model.embed_tokens.weight")->at("model.embed_tokens.weight").dtype;
}

}  // namespace

void load_hf_weights(const std::string& dir, Model& model, QkLayout layout) {
    const ModelConfig want = read_hf_config(dir), &have = model.config();
    LLMQ_CHECK(want.vocab_size == have.vocab_size && want.dim == have.dim && want.ffn_dim == have.ffn_dim &&
                   want.n_layers == have.n_layers && want.n_heads == have.n_heads &&
                   want.n_kv_heads == have.n_kv_heads && want.tied_embeddings == have.tied_embeddings,
               "%s/config.json: describes %s; the model is %s", dir.c_str(), want.describe().c_str(),
               have.describe().c_str());
    // same shapes but another rope_theta or eps would compute another function: also a mismatch
    LLMQ_CHECK(want.rope_theta == have.rope_theta && want.norm_eps == have.norm_eps,
               "%s/config.json: rope_theta %g, rms_norm_eps %g; the model has %g, %g", dir.c_str(), want.rope_theta,
               want.norm_eps, have.rope_theta, have.norm_eps);
    load_weights(dir, model, layout);
}

HfModel load_hf_llama(const std::string& dir, QkLayout layout) {
    HfModel m;
    m.model.reset(new Model(read_hf_config(dir), 0));
    m.dtype = load_weights(dir, *m.model, layout);
    return m;
}

// ---------------------------------------------------------------- export

Dtype parse_weight_dtype(const std::string& name, const std::string& flag) {
    std::string n;
    for (char ch : name) n += (char)tolower((unsigned char)ch);
    if (n == "bf16" || n == "bfloat16") return Dtype::BF16;
    if (n == "f16" || n == "fp16" || n == "float16") return Dtype::F16;
    if (n == "f32" || n == "fp32" || n == "float32") return Dtype::F32;
    throw Error(format("%s: dtype '%s' is not one of bf16, f16, f32", flag.c_str(), name.c_str()));
}

void make_dirs(const std::string& dir) {
    for (size_t pos = 1; pos <= dir.size(); pos++) {
        if (pos < dir.size() && dir[pos] != '/') continue;
        const std::string part = dir.substr(0, pos);
        if (mkdir(part.c_str(), 0755) != 0 && errno != EEXIST)
            throw Error(format("%s: cannot create directory: %s", part.c_str(), strerror(errno)));
    }
    struct stat st;
    LLMQ_CHECK(stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode), "%s: not a directory", dir.c_str());
}

const void* float_data_as(Dtype dtype, const float* src, size_t n, std::vector<std::vector<uint16_t>>& keep) {
    if (dtype == Dtype::F32) return src;
    LLMQ_CHECK(dtype == Dtype::BF16 || dtype == Dtype::F16, "export: dtype %s is not one of F32, BF16, F16",
               dtype_name(dtype));
    keep.emplace_back(n);
    for (size_t i = 0; i < n; i++) keep.back()[i] = dtype == Dtype::BF16 ? float_to_bf16(src[i]) : float_to_f16(src[i]);
    return keep.back().data();
}

void write_text_file(const std::string& path, const std::string& text) {
    const std::string tmp = path + ".tmp";
    FILE* f = fopen(tmp.c_str(), "wb");
    LLMQ_CHECK(f, "%s: cannot create: %s", tmp.c_str(), strerror(errno));
    const bool ok = fwrite(text.data(), 1, text.size(), f) == text.size();
    if (fclose(f) != 0 || !ok || rename(tmp.c_str(), path.c_str()) != 0) {
        const int err = errno;
        remove(tmp.c_str());
        throw Error(format("%s: write failed: %s", path.c_str(), strerror(err)));
    }
}

void save_hf_llama(const std::string& dir, const ModelConfig& config, const std::vector<ParamTensor>& tensors,
                   const float* params, Dtype dtype) {
    torch_dtype_name(dtype);  // refuses any other dtype before anything is written
    make_dirs(dir);
    std::vector<std::vector<uint16_t>> narrow;  // the 16-bit copies, alive until written
    std::vector<SafeTensorToWrite> out;
    for (const ParamTensor& t : tensors) {
        SafeTensorToWrite w;
        w.name = t.name;
        w.dtype = dtype;
        w.shape.assign(t.shape.begin(), t.shape.end());
        // a diverged run's NaNs would make a file every tool loads and no tool can use: refuse it here
        const long long bad = first_non_finite(params + t.offset, t.size);
        LLMQ_CHECK(bad < 0, "HF export to %s: parameter '%s' holds a non-finite value (%g at element %lld)",
                   dir.c_str(), t.name.c_str(), params[t.offset + bad], bad);
        w.data = float_data_as(dtype, params + t.offset, t.size, narrow);
        out.push_back(w);
    }
    write_safetensors(dir + "/model.safetensors", out, {{"format", "pt"}});
    write_text_file(dir + "/config.json", hf_config_json(config, dtype));
}

void save_hf_llama(const std::string& dir, const Model& model, Dtype dtype) {
    save_hf_llama(dir, model.config(), model.tensors(), model.params(), dtype);
}

}  // namespace llmq
