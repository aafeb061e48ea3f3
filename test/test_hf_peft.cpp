// Tests of tools/hf_peft.h: the peft adapter files (keys, shapes, dtypes, adapter_config.json fields, rank and
// alpha patterns), reading them back onto a fresh model (same logits), the merged export (its logits equal the
// adapter model's, ~1e-5), and the refusals (no adapter, two adapters on a module, tied lm_head merge,
// unknown module or wrong shape in an adapter file).
#include <gtest/gtest.h>

#include <stdlib.h>

#include <cmath>
#include <string>
#include <vector>

#include "../kernels/common.h"
#include "../layers/model.h"
#include "../layers/model_core.h"
#include "../quant/quantized_weight.h"
#include "../tools/hf_llama.h"
#include "../tools/hf_peft.h"
#include "../tools/json.h"
#include "../tools/safetensors.h"

using namespace llmq;

namespace {

std::string temp_dir() {
    char tmpl[] = "/tmp/llmq_peft_XXXXXX";
    const char* dir = mkdtemp(tmpl);
    EXPECT_NE(dir, nullptr);
    return dir ? dir : "/tmp";
}

ModelConfig small_config(bool tied) {
    ModelConfig c;
    c.vocab_size = 23;
    c.dim = 16;
    c.ffn_dim = 24;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.max_seq_len = 8;
    c.tied_embeddings = tied;
    c.init_std = 0.3f;
    return c;
}

std::vector<float> logits_of(Model& m) {
    const int T = 6, V = m.config().vocab_size;
    Rng rng(3);
    std::vector<int> tokens(T);
    for (int& t : tokens) t = (int)rng.below(V);
    m.forward(tokens.data(), nullptr, 1, T);
    return std::vector<float>(m.logits(), m.logits() + (size_t)T * V);
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    float d = 0;
    for (size_t i = 0; i < a.size() && i < b.size(); i++) d = std::max(d, std::fabs(a[i] - b[i]));
    return d;
}

template <typename Fn>
void expect_error(Fn fn, std::initializer_list<std::string> parts) {
    try {
        fn();
        ADD_FAILURE() << "no error; expected one with '" << *parts.begin() << "'";
    } catch (const Error& e) {
        const std::string msg = e.what();
        for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << msg << "' lacks '" << p << "'";
    }
}

const std::vector<std::string> kAll = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

}  // namespace

TEST(HfPeft, AdapterFileKeysShapesAndConfig) {
    Model m(small_config(false), 1);
    AdapterStore store;
    Rng rng(2);
    attach_random_lora(m, {"q_proj", "v_proj", "lm_head"}, 3, 6.0f, 0.1f, rng, store);
    const std::string dir = temp_dir();
    save_peft_adapter(dir, m, {"/base/model", Dtype::F32});

    const SafeTensorsFile f = SafeTensorsFile::open(dir + "/adapter_model.safetensors");
    EXPECT_EQ(f.tensors().size(), 2u * (2 * 2 + 1));  // A and B for q, v of 2 layers and lm_head
    const SafeTensorInfo& qa = f.at("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
    const SafeTensorInfo& vb = f.at("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight");
    const SafeTensorInfo& hb = f.at("base_model.model.lm_head.lora_B.weight");
    EXPECT_EQ(qa.shape, (std::vector<int64_t>{3, 16}));  // (r, in)
    EXPECT_EQ(vb.shape, (std::vector<int64_t>{8, 3}));   // (out = kv_heads * head_dim, r)
    EXPECT_EQ(hb.shape, (std::vector<int64_t>{23, 3}));
    EXPECT_EQ(qa.dtype, Dtype::F32);
    // the bytes are the adapter's factors
    const LoraAdapter<float>& a = m.core().layers()[0].q.adapters[0];
    const std::vector<float> qa_values = f.to_float(qa.name);
    EXPECT_EQ(qa_values, std::vector<float>(a.A, a.A + 3 * 16));

    const JsonValue cfg = parse_json_file(dir + "/adapter_config.json");
    EXPECT_EQ(cfg.at("peft_type").as_string(), "LORA");
    EXPECT_EQ(cfg.at("task_type").as_string(), "CAUSAL_LM");
    EXPECT_EQ(cfg.at("r").as_int(), 3);
    EXPECT_EQ(cfg.at("lora_alpha").as_number(), 6.0);  // scale 2 * r 3
    EXPECT_EQ(cfg.at("bias").as_string(), "none");
    EXPECT_FALSE(cfg.at("fan_in_fan_out").as_bool());
    EXPECT_EQ(cfg.at("base_model_name_or_path").as_string(), "/base/model");
    std::vector<std::string> targets;
    for (const JsonValue& t : cfg.at("target_modules").as_array()) targets.push_back(t.as_string());
    EXPECT_EQ(targets, (std::vector<std::string>{"lm_head", "q_proj", "v_proj"}));
    EXPECT_EQ(cfg.at("rank_pattern").size(), 0u);
}

TEST(HfPeft, PartialCoverageAndMixedRanksUseFullNamesAndPatterns) {
    Model m(small_config(false), 1);
    AdapterStore store;
    Rng rng(4);
    attach_random_lora(m, {"model.layers.1.mlp.up_proj"}, 2, 4.0f, 0.1f, rng, store);
    attach_random_lora(m, {"model.layers.0.self_attn.k_proj"}, 5, 5.0f, 0.1f, rng, store);
    const std::string dir = temp_dir();
    save_peft_adapter(dir, m, {"base", Dtype::BF16});
    const JsonValue cfg = parse_json_file(dir + "/adapter_config.json");
    std::vector<std::string> targets;
    for (const JsonValue& t : cfg.at("target_modules").as_array()) targets.push_back(t.as_string());
    EXPECT_EQ(targets, (std::vector<std::string>{"model.layers.0.self_attn.k_proj", "model.layers.1.mlp.up_proj"}));
    EXPECT_EQ(cfg.at("r").as_int(), 5);  // the first module's (layer 0 k_proj)
    EXPECT_EQ(cfg.at("rank_pattern").at("layers\\.1\\.mlp\\.up_proj").as_int(), 2);
    EXPECT_EQ(cfg.at("alpha_pattern").at("layers\\.1\\.mlp\\.up_proj").as_number(), 4.0);
    EXPECT_EQ(SafeTensorsFile::open(dir + "/adapter_model.safetensors")
                  .at("base_model.model.model.layers.1.mlp.up_proj.lora_A.weight").dtype,
              Dtype::BF16);

    // read back: the same ranks and scales land on the same modules
    Model fresh(small_config(false), 1);
    AdapterStore store2;
    load_peft_adapter(dir, fresh, store2);
    const auto& up = fresh.core().layers()[1].up.adapters;
    const auto& k = fresh.core().layers()[0].k.adapters;
    ASSERT_EQ(up.size(), 1u);
    ASSERT_EQ(k.size(), 1u);
    EXPECT_EQ(up[0].rank, 2);
    EXPECT_EQ(up[0].scale, 2.0f);
    EXPECT_EQ(k[0].rank, 5);
    EXPECT_EQ(k[0].scale, 1.0f);
    EXPECT_TRUE(fresh.core().layers()[0].up.adapters.empty());
}

TEST(HfPeft, ReadBackGivesTheSameLogits) {
    for (bool tied : {false, true}) {
        Model m(small_config(tied), 7);
        const std::vector<float> base = logits_of(m);
        AdapterStore store;
        Rng rng(8);
        attach_random_lora(m, kAll, 4, 8.0f, 0.2f, rng, store);
        const std::vector<float> want = logits_of(m);
        EXPECT_GT(max_abs_diff(want, base), 1e-2f);  // the adapters matter
        const std::string dir = temp_dir();
        save_peft_adapter(dir, m, {"base", Dtype::F32});

        Model fresh(small_config(tied), 7);
        AdapterStore store2;
        load_peft_adapter(dir, fresh, store2);
        EXPECT_EQ(max_abs_diff(logits_of(fresh), want), 0.0f);
    }
}

TEST(HfPeft, MergedExportEqualsTheAdapterModel) {
    for (bool tied : {false, true}) {
        Model m(small_config(tied), 9);
        AdapterStore store;
        Rng rng(10);
        std::vector<std::string> targets = kAll;
        if (!tied) targets.push_back("lm_head");
        attach_random_lora(m, targets, 3, 6.0f, 0.2f, rng, store);
        attach_random_lora(m, {"model.layers.0.mlp.down_proj"}, 2, 1.0f, 0.2f, rng, store);  // two on one module
        const std::vector<float> want = logits_of(m);
        const std::vector<float> before(m.params(), m.params() + m.num_params());
        const std::string dir = temp_dir();
        save_hf_llama_merged(dir, m, Dtype::F32);
        EXPECT_EQ(std::vector<float>(m.params(), m.params() + m.num_params()), before);  // model untouched

        HfModel merged = load_hf_llama(dir);
        for (auto& [name, lin] : named_linears(*merged.model)) EXPECT_TRUE(lin->adapters.empty()) << name;
        const float d = max_abs_diff(logits_of(*merged.model), want);
        EXPECT_LT(d, 1e-5f) << (tied ? "tied" : "untied");
        // and the merge did something: the plain base model is far from it
        Model plain(small_config(tied), 9);
        EXPECT_GT(max_abs_diff(logits_of(plain), want), 1e-2f);
    }
}

// QLoRA / LoQT: an NF4 (or FP4, double-quantized) base with adapters exports as the plain model that computes
// the same: dequantized W + scale B A. Its logits equal the quantized adapter model's, and differ from the
// fp32 model's by the quantization error (so the export really took the quantized base).
TEST(HfPeft, MergedExportOfAQuantizedBaseEqualsTheQuantizedAdapterModel) {
    for (QuantFormat f : {QuantFormat::NF4, QuantFormat::FP4}) {
        Model m(small_config(false), 21);
        const std::vector<float> fp32_logits = logits_of(m);
        QuantSpec spec;
        spec.format = f;
        spec.double_quant = f == QuantFormat::FP4;
        for (auto& [name, lin] : named_linears(m)) {
            if (name == "lm_head") continue;  // QLoRA and LoQT keep the head in full precision
            lin->quant = quantize_weight(lin->weight, lin->out, lin->in, spec);
            lin->dweight = nullptr;  // a quantized base is frozen
        }
        AdapterStore store;
        Rng rng(22);
        attach_random_lora(m, kAll, 4, 8.0f, 0.2f, rng, store);
        const std::vector<float> want = logits_of(m);
        const std::string dir = temp_dir();
        save_hf_llama_merged(dir, m, Dtype::F32);
        HfModel merged = load_hf_llama(dir);
        EXPECT_LT(max_abs_diff(logits_of(*merged.model), want), 1e-5f) << format_name(f);
        // the quantized base, not the fp32 one, went into the export
        for (auto& [name, lin] : named_linears(m)) {
            if (!lin->quant) continue;
            std::vector<float> deq((size_t)lin->out * lin->in);
            lin->quant->dequantize(deq.data());
            float diff = 0;
            for (size_t i = 0; i < deq.size(); i++) diff = std::max(diff, std::fabs(deq[i] - lin->weight[i]));
            EXPECT_GT(diff, 1e-3f) << name;  // 4-bit codes cannot hold a normal(0, 0.3) weight exactly
        }
        Model no_adapter(small_config(false), 21);
        EXPECT_GT(max_abs_diff(logits_of(no_adapter), want), 1e-2f);
        EXPECT_EQ(max_abs_diff(logits_of(no_adapter), fp32_logits), 0.0f);
        // bf16 export: within bf16 rounding of the weights
        const std::string bdir = temp_dir();
        save_hf_llama_merged(bdir, m, Dtype::BF16);
        HfModel bf = load_hf_llama(bdir);
        EXPECT_LT(max_abs_diff(logits_of(*bf.model), want), 5e-2f) << format_name(f);
    }
}

TEST(HfPeft, Refusals) {
    Model m(small_config(true), 11);
    const std::string dir = temp_dir();
    expect_error([&] { save_peft_adapter(dir, m, {"base", Dtype::F32}); }, {dir, "no LoRA adapter"});
    AdapterStore store;
    Rng rng(12);
    attach_random_lora(m, {"q_proj"}, 2, 2.0f, 0.1f, rng, store);
    attach_random_lora(m, {"model.layers.0.self_attn.q_proj"}, 2, 2.0f, 0.1f, rng, store);
    expect_error([&] { save_peft_adapter(dir, m, {"base", Dtype::F32}); }, {"model.layers.0.self_attn.q_proj", "2 adapters"});
    expect_error([&] { attach_random_lora(m, {"qq_proj"}, 2, 2.0f, 0.1f, rng, store); }, {"qq_proj"});

    Model tied(small_config(true), 11);
    attach_random_lora(tied, {"lm_head"}, 2, 2.0f, 0.1f, rng, store);
    expect_error([&] { save_hf_llama_merged(temp_dir(), tied, Dtype::F32); }, {"tied lm_head"});

    // an adapter file that does not fit the model: wrong shape, unknown module
    Model src(small_config(false), 13);
    attach_random_lora(src, {"v_proj"}, 2, 2.0f, 0.1f, rng, store);
    const std::string adir = temp_dir();
    save_peft_adapter(adir, src, {"base", Dtype::F32});
    ModelConfig wider = small_config(false);
    wider.n_kv_heads = 4;  // v_proj out 16 instead of 8
    Model other(wider, 13);
    AdapterStore s2;
    expect_error([&] { load_peft_adapter(adir, other, s2); },
                 {adir + "/adapter_model.safetensors", "model.layers.0.self_attn.v_proj.lora_B.weight", "[16, 2]"});
    ModelConfig shallow = small_config(false);
    shallow.n_layers = 1;
    Model one_layer(shallow, 13);
    expect_error([&] { load_peft_adapter(adir, one_layer, s2); },
                 {adir + "/adapter_model.safetensors", "model.layers.1.self_attn.v_proj", "not a LoRA factor"});
}
