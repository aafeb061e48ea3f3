// hf_peft.cpp: LoRA adapters to and from peft's directory layout, and the merged export (see hf_peft.h).
#include "hf_peft.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>

#include "../kernels/common.h"
#include "../kernels/matmul.h"
#include "../layers/model_core.h"
#include "hf_llama.h"
#include "json.h"

namespace llmq {

namespace {

const char* kPrefix = "base_model.model.";
const char* kModuleKinds[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                              "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

std::string short_name(const std::string& module) { return module.substr(module.rfind('.') + 1); }

// Whether a pattern key (peft's rank_pattern / alpha_pattern, a regex we read as a literal with escaped dots)
// names module: equal to it, or a suffix after a dot.
bool pattern_matches(std::string key, const std::string& module) {
    std::string lit;
    for (size_t i = 0; i < key.size(); i++) {
        if (key[i] == '\\' && i + 1 < key.size()) i++;
        lit += key[i];
    }
    return module == lit || (module.size() > lit.size() && module.compare(module.size() - lit.size(), lit.size(), lit) == 0 &&
                             module[module.size() - lit.size() - 1] == '.');
}

std::string escaped_pattern(const std::string& module) {  // layers.0.self_attn.q_proj -> layers\\.0\\.self_attn...
    std::string s;
    for (char ch : module) s += ch == '.' ? std::string("\\\\.") : std::string(1, ch);
    return s;
}

std::string json_string_list(const std::vector<std::string>& items) {
    std::string s = "[";
    for (size_t i = 0; i < items.size(); i++) s += (i ? ", \"" : "\"") + items[i] + "\"";
    return s + "]";
}

std::string number_json(double v) {
    char buf[64];
    snprintf(buf, sizeof buf, "%.17g", v);
    return buf;
}

// lora_alpha for an adapter: scale * r, but as the float a user wrote (alpha 4, r 3 stores scale 1.3333334f,
// and 1.3333334f * 3 is 4.0000001) whenever that float gives back the same fp32 scale.
double alpha_of(const LoraAdapter<float>& a) {
    const double exact = (double)a.scale * a.rank, rounded = (double)(float)exact;
    for (int digits = 1; digits <= 9; digits++) {  // the shortest decimal that still gives the scale
        char buf[32];
        snprintf(buf, sizeof buf, "%.*g", digits, rounded);
        const double d = strtod(buf, nullptr);
        if ((float)(d / a.rank) == a.scale) return d;
    }
    return exact;
}

}  // namespace

std::vector<std::pair<std::string, Linear<float>*>> named_linears(Model& model) {
    std::vector<std::pair<std::string, Linear<float>*>> out;
    ModelCore<float>& core = model.core();
    for (size_t l = 0; l < core.layers().size(); l++) {
        TransformerLayer<float>& L = core.layers()[l];
        Linear<float>* lins[] = {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down};
        for (int k = 0; k < 7; k++) out.push_back({"model.layers." + std::to_string(l) + "." + kModuleKinds[k], lins[k]});
    }
    out.push_back({"lm_head", &core.lm_head()});
    return out;
}

float* AdapterStore::add(std::vector<float> values) {
    buffers.push_back(std::move(values));
    return buffers.back().data();
}

void attach_random_lora(Model& model, const std::vector<std::string>& modules, int r, float alpha, float init_std,
                        Rng& rng, AdapterStore& store) {
    LLMQ_CHECK(r > 0, "LoRA: rank %d must be positive", r);
    auto linears = named_linears(model);
    for (const std::string& want : modules) {
        bool found = false;
        for (auto& [name, lin] : linears) {
            if (name != want && short_name(name) != want) continue;
            found = true;
            LoraAdapter<float> a;
            a.rank = r;
            a.scale = alpha / r;
            std::vector<float> A((size_t)r * lin->in), B((size_t)lin->out * r);
            for (float& x : A) x = init_std * rng.normal();
            for (float& x : B) x = init_std * rng.normal();
            a.A = store.add(std::move(A));
            a.B = store.add(std::move(B));
            lin->adapters.push_back(a);
        }
        LLMQ_CHECK(found, "LoRA: no module named '%s' (e.g. q_proj or model.layers.0.self_attn.q_proj)", want.c_str());
    }
}

void save_peft_adapter(const std::string& dir, Model& model, const PeftExportOptions& opt) {
    LLMQ_CHECK(opt.dtype == Dtype::F32 || opt.dtype == Dtype::BF16 || opt.dtype == Dtype::F16,
               "peft export: adapter dtype %s is not one of F32, BF16, F16", dtype_name(opt.dtype));
    struct Entry {
        std::string module;
        const LoraAdapter<float>* a;
        const Linear<float>* lin;
    };
    std::vector<Entry> entries;
    for (auto& [name, lin] : named_linears(model)) {
        LLMQ_CHECK(lin->adapters.size() <= 1,
                   "peft export: %s has %zu adapters; peft holds one per module (merge the others first)",
                   name.c_str(), lin->adapters.size());
        if (!lin->adapters.empty()) entries.push_back({name, &lin->adapters[0], lin});
    }
    LLMQ_CHECK(!entries.empty(), "peft export to %s: the model has no LoRA adapter attached", dir.c_str());

    // ranks and alphas: the first adapter's are the defaults, the others go to rank_pattern / alpha_pattern
    const int r0 = entries[0].a->rank;
    const double alpha0 = alpha_of(*entries[0].a);
    std::string rank_pattern, alpha_pattern;
    std::map<std::string, int> per_kind;  // short name -> modules carrying an adapter
    for (const Entry& e : entries) {
        const double alpha = alpha_of(*e.a);
        // peft matches pattern keys as `.*\.key$` in older versions: drop the leading "model." so a dot precedes
        const std::string key = escaped_pattern(e.module.compare(0, 6, "model.") == 0 ? e.module.substr(6) : e.module);
        if (e.a->rank != r0) rank_pattern += format("%s\"%s\": %d", rank_pattern.empty() ? "" : ", ", key.c_str(), e.a->rank);
        if (alpha != alpha0)
            alpha_pattern += format("%s\"%s\": %s", alpha_pattern.empty() ? "" : ", ", key.c_str(), number_json(alpha).c_str());
        per_kind[short_name(e.module)]++;
    }
    // target_modules: short names when each kind is adapted in every place it exists, else full module names
    std::vector<std::string> targets;
    bool every_place = true;
    for (auto& [kind, count] : per_kind)
        every_place = every_place && count == (kind == "lm_head" ? 1 : model.config().n_layers);
    for (const Entry& e : entries)
        if (!every_place) targets.push_back(e.module);
    if (every_place)
        for (auto& [kind, count] : per_kind) targets.push_back(kind);

    // the tensors
    std::vector<std::vector<uint16_t>> narrow;
    std::vector<SafeTensorToWrite> tensors;
    auto add = [&](const std::string& name, const float* src, int rows, int cols) {
        SafeTensorToWrite t;
        t.name = kPrefix + name;
        t.dtype = opt.dtype;
        t.shape = {rows, cols};
        t.data = float_data_as(opt.dtype, src, (size_t)rows * cols, narrow);
        tensors.push_back(t);
    };
    for (const Entry& e : entries) {
        add(e.module + ".lora_A.weight", e.a->A, e.a->rank, e.lin->in);
        add(e.module + ".lora_B.weight", e.a->B, e.lin->out, e.a->rank);
    }
    make_dirs(dir);
    write_safetensors(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});

    std::string cfg = "{\n";
    auto kv = [&](const char* key, const std::string& value) { cfg += format("  \"%s\": %s,\n", key, value.c_str()); };
    kv("alpha_pattern", "{" + alpha_pattern + "}");
    kv("base_model_name_or_path", "\"" + opt.base_model_name_or_path + "\"");
    kv("bias", "\"none\"");
    kv("fan_in_fan_out", "false");
    kv("inference_mode", "true");
    kv("init_lora_weights", "true");
    kv("layers_pattern", "null");
    kv("layers_to_transform", "null");
    kv("lora_alpha", number_json(alpha0));
    kv("lora_dropout", format("%.7g", entries.front().lin->adapter_dropout));  // 0.1f as 0.1
    kv("modules_to_save", "null");
    kv("peft_type", "\"LORA\"");
    kv("r", std::to_string(r0));
    kv("rank_pattern", "{" + rank_pattern + "}");
    kv("revision", "null");
    kv("target_modules", json_string_list(targets));
    kv("task_type", "\"CAUSAL_LM\"");
    kv("use_dora", "false");
    cfg += "  \"use_rslora\": false\n}\n";
    write_text_file(dir + "/adapter_config.json", cfg);
}

void load_peft_adapter(const std::string& dir, Model& model, AdapterStore& store) {
    const std::string cfg_path = dir + "/adapter_config.json", st_path = dir + "/adapter_model.safetensors";
    const JsonValue cfg = parse_json_file(cfg_path);
    auto get = [&](const char* key) -> const JsonValue* {
        const JsonValue* v = cfg.find(key);
        return v && !v->is_null() ? v : nullptr;
    };
    auto number = [&](const char* key) {
        const JsonValue* v = get(key);
        LLMQ_CHECK(v && v->is_number(), "%s: key '%s' must be a number", cfg_path.c_str(), key);
        return v->as_number();
    };
    const JsonValue* type = get("peft_type");
    LLMQ_CHECK(type && type->is_string() && type->as_string() == "LORA", "%s: key 'peft_type' must be \"LORA\"",
               cfg_path.c_str());
    for (const char* key : {"use_dora", "fan_in_fan_out"}) {
        const JsonValue* v = get(key);
        LLMQ_CHECK(!v || (v->is_bool() && !v->as_bool()), "%s: key '%s' must be false (not supported)", cfg_path.c_str(), key);
    }
    const JsonValue* bias = get("bias");
    LLMQ_CHECK(!bias || (bias->is_string() && bias->as_string() == "none"), "%s: key 'bias' must be \"none\"",
               cfg_path.c_str());
    const JsonValue* save = get("modules_to_save");
    LLMQ_CHECK(!save || save->size() == 0, "%s: key 'modules_to_save' is not supported", cfg_path.c_str());
    const JsonValue* rslora = get("use_rslora");
    const bool use_rslora = rslora && rslora->is_bool() && rslora->as_bool();
    const double r0 = number("r"), alpha0 = number("lora_alpha");
    auto pattern = [&](const char* key, const std::string& module, double fallback) {
        const JsonValue* p = get(key);
        if (!p) return fallback;
        LLMQ_CHECK(p->is_object(), "%s: key '%s' must be an object", cfg_path.c_str(), key);
        for (const JsonValue::Member& m : p->as_object())
            if (pattern_matches(m.first, module)) {
                LLMQ_CHECK(m.second.is_number(), "%s: key '%s' entry '%s' must be a number", cfg_path.c_str(), key,
                           m.first.c_str());
                return m.second.as_number();
            }
        return fallback;
    };

    const SafeTensorsFile f = SafeTensorsFile::open(st_path);
    std::set<std::string> used;
    for (auto& [module, lin] : named_linears(model)) {
        const std::string a_name = kPrefix + module + ".lora_A.weight", b_name = kPrefix + module + ".lora_B.weight";
        const SafeTensorInfo *ta = f.find(a_name), *tb = f.find(b_name);
        if (!ta && !tb) continue;
        LLMQ_CHECK(ta && tb, "%s: tensor '%s' has no partner '%s'", st_path.c_str(), (ta ? a_name : b_name).c_str(),
                   (ta ? b_name : a_name).c_str());
        const int r = (int)pattern("rank_pattern", module, r0);
        const double alpha = pattern("alpha_pattern", module, alpha0);
        LLMQ_CHECK(r > 0, "%s: rank %d for module '%s' must be positive", cfg_path.c_str(), r, module.c_str());
        LLMQ_CHECK(ta->shape == std::vector<int64_t>({r, lin->in}), "%s: tensor '%s' must have shape [%d, %d] (r, in)",
                   st_path.c_str(), a_name.c_str(), r, lin->in);
        LLMQ_CHECK(tb->shape == std::vector<int64_t>({lin->out, r}), "%s: tensor '%s' must have shape [%d, %d] (out, r)",
                   st_path.c_str(), b_name.c_str(), lin->out, r);
        LoraAdapter<float> a;
        a.rank = r;
        a.scale = (float)(use_rslora ? alpha / std::sqrt((double)r) : alpha / r);
        a.A = store.add(f.to_float(a_name));
        a.B = store.add(f.to_float(b_name));
        lin->adapters.push_back(a);
        used.insert(a_name);
        used.insert(b_name);
    }
    for (const SafeTensorInfo& t : f.tensors())
        LLMQ_CHECK(used.count(t.name), "%s: tensor '%s' is not a LoRA factor of any module of this model",
                   st_path.c_str(), t.name.c_str());
}

void save_hf_llama_merged(const std::string& dir, Model& model, Dtype dtype) {
    const ModelConfig& c = model.config();
    std::vector<float> merged(model.params(), model.params() + model.num_params());
    for (auto& [name, lin] : named_linears(model)) {
        if (lin->adapters.empty() && !lin->quant) continue;
        LLMQ_CHECK(!(name == "lm_head" && c.tied_embeddings),
                   "merged export to %s: an adapter on the tied lm_head would change the embedding table too",
                   dir.c_str());
        // the module's tensor in the copy (by name: a quantized base need not point into the buffer)
        const ParamTensor& t = model.tensor(name + ".weight");
        float* w = merged.data() + t.offset;
        if (lin->quant) {  // QLoRA / LoQT: the base the forward uses is the dequantized one
            LLMQ_CHECK(lin->quant->rows() == lin->out && lin->quant->cols() == lin->in,
                       "merged export to %s: %s's quantized base is (%d, %d), the layer (%d, %d)", dir.c_str(),
                       name.c_str(), lin->quant->rows(), lin->quant->cols(), lin->out, lin->in);
            lin->quant->dequantize(w);
        }
        for (const LoraAdapter<float>& a : lin->adapters)           // W (out,in) += scale B (out,r) A (r,in)
            gemm_cpu(false, false, lin->out, lin->in, a.rank, a.scale, a.B, a.rank, a.A, lin->in, 1.0f, w, lin->in);
    }
    save_hf_llama(dir, c, model.tensors(), merged.data(), dtype);
}

}  // namespace llmq
