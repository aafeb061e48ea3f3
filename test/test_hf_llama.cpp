// Tests of tools/hf_llama.h: config.json parsing (top-level and nested RoPE settings, defaults, refusals),
// weights from one file or a sharded index in BF16/F16/F32, tied and untied heads, the errors naming file
// and key (missing tensor, shape mismatch, bad dtype, unexpected tensor), the exact f32 export -> import round
// trip, and the Meta <-> HF q/k permutation (against an independent interleaved-RoPE reference, and through
// whole-model logits). Fixtures are small models written by the test itself.
#include <gtest/gtest.h>

#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "../kernels/common.h"
#include "../kernels/rope.h"
#include "../layers/model.h"
#include "../tools/float16.h"
#include "../tools/hf_llama.h"
#include "../tools/json.h"
#include "../tools/safetensors.h"

using namespace llmq;

namespace {

std::string temp_dir() {
    char tmpl[] = "/tmp/llmq_hf_XXXXXX";
    const char* dir = mkdtemp(tmpl);
    EXPECT_NE(dir, nullptr);
    return dir ? dir : "/tmp";
}

ModelConfig small_config(bool tied) {
    ModelConfig c;
    c.vocab_size = 29;
    c.dim = 32;
    c.ffn_dim = 40;
    c.n_layers = 2;
    c.n_heads = 4;  // head_dim 8: the permutation is not its own inverse
    c.n_kv_heads = 2;
    c.max_seq_len = 16;
    c.rope_theta = 5000.0f;
    c.norm_eps = 1e-5f;
    c.tied_embeddings = tied;
    c.init_std = 0.2f;
    return c;
}

// A model with every parameter random (norms too, so a norm loaded wrong changes the logits).
std::unique_ptr<Model> random_model(bool tied, uint64_t seed) {
    std::unique_ptr<Model> m(new Model(small_config(tied), seed));
    Rng rng(seed + 1);
    for (const ParamTensor& t : m->tensors())
        if (t.shape.size() == 1)
            for (size_t i = 0; i < t.size; i++) m->params()[t.offset + i] = 1 + 0.2f * rng.normal();
    return m;
}

std::vector<float> logits_of(Model& m, uint64_t seed = 5) {
    const int T = 7, V = m.config().vocab_size;
    Rng rng(seed);
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

// The model's tensors as F32 SafeTensorToWrite views (for hand-built fixture files).
std::vector<SafeTensorToWrite> f32_views(const Model& m) {
    std::vector<SafeTensorToWrite> out;
    for (const ParamTensor& t : m.tensors())
        out.push_back({t.name, Dtype::F32, std::vector<int64_t>(t.shape.begin(), t.shape.end()), m.params() + t.offset});
    return out;
}

void write_text(const std::string& path, const std::string& text) {
    FILE* f = fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    fwrite(text.data(), 1, text.size(), f);
    fclose(f);
}

// Expects fn to throw an Error whose message holds every part.
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

const char* kConfigBase =
    "\"vocab_size\": 29, \"hidden_size\": 32, \"intermediate_size\": 40, \"num_hidden_layers\": 2, "
    "\"num_attention_heads\": 4, \"max_position_embeddings\": 16, \"rms_norm_eps\": 1e-05";

}  // namespace

// ---------------------------------------------------------------- config.json

TEST(HfConfig, TopLevelRopeThetaAndDefaults) {
    const ModelConfig c = parse_hf_config(
        parse_json(std::string("{") + kConfigBase + ", \"rope_theta\": 500000.0, \"rope_scaling\": null}"), "cfg");
    EXPECT_EQ(c.vocab_size, 29);
    EXPECT_EQ(c.dim, 32);
    EXPECT_EQ(c.ffn_dim, 40);
    EXPECT_EQ(c.n_layers, 2);
    EXPECT_EQ(c.n_heads, 4);
    EXPECT_EQ(c.n_kv_heads, 4);  // num_key_value_heads absent: = heads
    EXPECT_EQ(c.max_seq_len, 16);
    EXPECT_EQ(c.rope_theta, 500000.0f);
    EXPECT_EQ(c.norm_eps, 1e-5f);
    EXPECT_FALSE(c.tied_embeddings);  // transformers' default
}

TEST(HfConfig, NestedRopeParametersAndGqa) {
    const ModelConfig c = parse_hf_config(
        parse_json(std::string("{") + kConfigBase +
                   ", \"num_key_value_heads\": 2, \"tie_word_embeddings\": true, "
                   "\"rope_parameters\": {\"rope_theta\": 1234.5, \"rope_type\": \"default\"}}"),
        "cfg");
    EXPECT_EQ(c.rope_theta, 1234.5f);
    EXPECT_EQ(c.n_kv_heads, 2);
    EXPECT_TRUE(c.tied_embeddings);
    // no rope setting at all: 10000
    EXPECT_EQ(parse_hf_config(parse_json(std::string("{") + kConfigBase + "}"), "cfg").rope_theta, 10000.0f);
}

TEST(HfConfig, RefusesWhatLlmqDoesNotCompute) {
    auto parse = [](const std::string& extra) { parse_hf_config(parse_json(std::string("{") + kConfigBase + extra + "}"), "dir/config.json"); };
    expect_error([&] { parse(", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0}"); },
                 {"dir/config.json", "rope_scaling", "llama3"});
    expect_error([&] { parse(", \"rope_parameters\": {\"rope_theta\": 1e4, \"rope_type\": \"yarn\"}"); },
                 {"dir/config.json", "rope_parameters", "yarn"});
    expect_error([&] { parse(", \"attention_bias\": true"); }, {"dir/config.json", "attention_bias"});
    expect_error([&] { parse(", \"hidden_act\": \"gelu\""); }, {"dir/config.json", "hidden_act"});
    expect_error([&] { parse(", \"head_dim\": 16"); }, {"dir/config.json", "head_dim"});
    expect_error([&] { parse(", \"num_key_value_heads\": 3"); }, {"dir/config.json", "n_kv_heads"});
    expect_error([&] { parse(", \"num_key_value_heads\": \"2\""); }, {"dir/config.json", "num_key_value_heads", "number"});
    expect_error([] { parse_hf_config(parse_json("{\"vocab_size\": 29}"), "dir/config.json"); },
                 {"dir/config.json", "hidden_size", "missing"});
}

TEST(HfConfig, WrittenConfigReadsBackTheSameModel) {
    for (bool tied : {false, true}) {
        const ModelConfig c = small_config(tied);
        const JsonValue j = parse_json(hf_config_json(c, Dtype::BF16), "written");
        const ModelConfig back = parse_hf_config(j, "written");
        EXPECT_EQ(back.describe(), ModelConfig(back).describe());
        EXPECT_EQ(back.dim, c.dim);
        EXPECT_EQ(back.ffn_dim, c.ffn_dim);
        EXPECT_EQ(back.n_layers, c.n_layers);
        EXPECT_EQ(back.n_heads, c.n_heads);
        EXPECT_EQ(back.n_kv_heads, c.n_kv_heads);
        EXPECT_EQ(back.vocab_size, c.vocab_size);
        EXPECT_EQ(back.max_seq_len, c.max_seq_len);
        EXPECT_EQ(back.rope_theta, c.rope_theta);
        EXPECT_EQ(back.norm_eps, c.norm_eps);
        EXPECT_EQ(back.tied_embeddings, tied);
        EXPECT_EQ(j.at("architectures").at(0).as_string(), "LlamaForCausalLM");
        EXPECT_EQ(j.at("torch_dtype").as_string(), "bfloat16");
        EXPECT_EQ(j.at("rope_parameters").at("rope_theta").as_number(), 5000.0);
    }
}

// ---------------------------------------------------------------- weights

TEST(HfWeights, F32ExportImportRoundTripIsExact) {
    for (bool tied : {false, true}) {
        auto m = random_model(tied, 11 + tied);
        const std::string dir = temp_dir() + "/out/nested";  // export creates the directories
        save_hf_llama(dir, *m, Dtype::F32);
        const SafeTensorsFile f = SafeTensorsFile::open(dir + "/model.safetensors");
        EXPECT_EQ(f.find("lm_head.weight") != nullptr, !tied);
        EXPECT_EQ(f.metadata().at("format"), "pt");
        HfModel back = load_hf_llama(dir);
        EXPECT_EQ(back.dtype, Dtype::F32);
        EXPECT_EQ(back.model->config().tied_embeddings, tied);
        ASSERT_EQ(back.model->num_params(), m->num_params());
        EXPECT_EQ(std::memcmp(back.model->params(), m->params(), sizeof(float) * m->num_params()), 0);
        EXPECT_EQ(max_abs_diff(logits_of(*back.model), logits_of(*m)), 0.0f);
    }
}

TEST(HfWeights, SixteenBitFilesLoadAsTheRoundedValues) {
    for (Dtype d : {Dtype::BF16, Dtype::F16}) {
        auto m = random_model(false, 21);
        const std::string dir = temp_dir();
        save_hf_llama(dir, *m, d);
        EXPECT_EQ(SafeTensorsFile::open(dir + "/model.safetensors").at("model.norm.weight").dtype, d);
        HfModel back = load_hf_llama(dir);
        EXPECT_EQ(back.dtype, d);
        size_t changed = 0;
        for (size_t i = 0; i < m->num_params(); i++) {
            const float x = m->params()[i];
            const float want = d == Dtype::BF16 ? bf16_to_float(float_to_bf16(x)) : f16_to_float(float_to_f16(x));
            ASSERT_EQ(back.model->params()[i], want) << dtype_name(d) << " element " << i;
            changed += want != x;
        }
        EXPECT_GT(changed, m->num_params() / 2);  // the file really held 16-bit values
        // and exporting the loaded model in the same dtype gives the same bytes
        const std::string again = temp_dir();
        save_hf_llama(again, *back.model, d);
        EXPECT_EQ(read_file_bytes(dir + "/model.safetensors"), read_file_bytes(again + "/model.safetensors"));
    }
}

TEST(HfWeights, ShardedIndex) {
    auto m = random_model(false, 31);
    const std::string dir = temp_dir();
    write_text(dir + "/config.json", hf_config_json(m->config(), Dtype::F32));
    std::vector<SafeTensorToWrite> all = f32_views(*m), first, second;
    std::string map;
    for (size_t i = 0; i < all.size(); i++) {
        const bool in_first = i % 3 != 0;  // interleaved, so neither file is a prefix of the layout
        (in_first ? first : second).push_back(all[i]);
        map += format("%s\"%s\": \"%s\"", map.empty() ? "" : ", ", all[i].name.c_str(),
                      in_first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors");
    }
    write_safetensors(dir + "/model-00001-of-00002.safetensors", first, {{"format", "pt"}});
    write_safetensors(dir + "/model-00002-of-00002.safetensors", second, {{"format", "pt"}});
    write_text(dir + "/model.safetensors.index.json", "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {" + map + "}}");
    const HfWeightFiles w = open_hf_weights(dir);
    EXPECT_TRUE(w.sharded);
    EXPECT_EQ(w.files.size(), 2u);
    HfModel back = load_hf_llama(dir);
    EXPECT_EQ(std::memcmp(back.model->params(), m->params(), sizeof(float) * m->num_params()), 0);

    // the index sends a tensor to a shard that lacks it; then to a shard that does not exist
    std::string bad = map;
    const std::string moved = "\"model.norm.weight\": \"model-00002-of-00002.safetensors\"";
    const size_t at = bad.find("\"model.norm.weight\": \"model-00001-of-00002.safetensors\"");
    ASSERT_NE(at, std::string::npos);
    bad.replace(at, moved.size(), moved);
    write_text(dir + "/model.safetensors.index.json", "{\"weight_map\": {" + bad + "}}");
    expect_error([&] { load_hf_llama(dir); }, {"model-00002-of-00002.safetensors", "model.norm.weight"});
    write_text(dir + "/model.safetensors.index.json", "{\"weight_map\": {\"model.norm.weight\": \"nope.safetensors\"}}");
    expect_error([&] { load_hf_llama(dir); }, {"nope.safetensors", "model.norm.weight"});
}

TEST(HfWeights, ErrorsNameTheFileAndKey) {
    auto m = random_model(false, 41);
    const std::string dir = temp_dir(), st = dir + "/model.safetensors";
    write_text(dir + "/config.json", hf_config_json(m->config(), Dtype::F32));
    const std::string victim = "model.layers.1.mlp.up_proj.weight";

    std::vector<SafeTensorToWrite> missing;
    for (const SafeTensorToWrite& t : f32_views(*m))
        if (t.name != victim) missing.push_back(t);
    write_safetensors(st, missing);
    expect_error([&] { load_hf_llama(dir); }, {st, victim, "missing"});

    std::vector<SafeTensorToWrite> reshaped = f32_views(*m);
    for (SafeTensorToWrite& t : reshaped)
        if (t.name == victim) t.shape = {t.shape[1], t.shape[0]};
    write_safetensors(st, reshaped);
    expect_error([&] { load_hf_llama(dir); }, {st, victim, "shape [32, 40]", "[40, 32]"});

    std::vector<SafeTensorToWrite> ints = f32_views(*m);
    for (SafeTensorToWrite& t : ints)
        if (t.name == victim) t.dtype = Dtype::I32;  // same byte size as F32
    write_safetensors(st, ints);
    expect_error([&] { load_hf_llama(dir); }, {st, victim, "I32"});

    std::vector<SafeTensorToWrite> extra = f32_views(*m);
    std::vector<float> bias(32, 0.5f);
    extra.push_back({"model.layers.0.self_attn.q_proj.bias", Dtype::F32, {32}, bias.data()});
    write_safetensors(st, extra);
    expect_error([&] { load_hf_llama(dir); }, {st, "q_proj.bias", "unexpected"});

    std::vector<float> poisoned(m->params(), m->params() + m->num_params());
    const ParamTensor& up = m->tensor(victim);
    poisoned[up.offset + 17] = NAN;
    std::vector<SafeTensorToWrite> nan_file = f32_views(*m);
    for (SafeTensorToWrite& t : nan_file)
        if (t.name == victim) t.data = poisoned.data() + up.offset;
    write_safetensors(st, nan_file);
    expect_error([&] { load_hf_llama(dir); }, {st, victim, "non-finite", "element 17"});
    expect_error([&] { save_hf_llama(temp_dir(), m->config(), m->tensors(), poisoned.data(), Dtype::BF16); },
                 {victim, "non-finite", "element 17"});

    // old checkpoints' rotary buffers are the one tolerated extra
    std::vector<SafeTensorToWrite> rotary = f32_views(*m);
    rotary.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", Dtype::F32, {4}, bias.data()});
    write_safetensors(st, rotary);
    EXPECT_NO_THROW(load_hf_llama(dir));

    expect_error([&] { load_hf_llama(temp_dir()); }, {"config.json"});
    const std::string empty = temp_dir();
    write_text(empty + "/config.json", hf_config_json(m->config(), Dtype::F32));
    expect_error([&] { load_hf_llama(empty); }, {empty, "model.safetensors"});
}

TEST(HfWeights, TiedHeadPresentMustEqualTheEmbedding) {
    auto m = random_model(true, 51);
    const std::string dir = temp_dir(), st = dir + "/model.safetensors";
    write_text(dir + "/config.json", hf_config_json(m->config(), Dtype::F32));
    std::vector<SafeTensorToWrite> with_head = f32_views(*m);
    const ParamTensor& e = m->tensor("model.embed_tokens.weight");
    with_head.push_back({"lm_head.weight", Dtype::F32, {e.shape[0], e.shape[1]}, m->params() + e.offset});
    write_safetensors(st, with_head);
    HfModel ok = load_hf_llama(dir);
    EXPECT_EQ(max_abs_diff(logits_of(*ok.model), logits_of(*m)), 0.0f);

    std::vector<float> other(m->params() + e.offset, m->params() + e.offset + e.size);
    other[3] += 1.0f;
    with_head.back().data = other.data();
    write_safetensors(st, with_head);
    expect_error([&] { load_hf_llama(dir); }, {st, "lm_head.weight", "tie_word_embeddings"});
}

TEST(HfWeights, LoadIntoExistingModelChecksTheConfig) {
    auto m = random_model(false, 61);
    const std::string dir = temp_dir();
    save_hf_llama(dir, *m, Dtype::F32);
    Model target(small_config(false), 3);
    load_hf_weights(dir, target);
    EXPECT_EQ(std::memcmp(target.params(), m->params(), sizeof(float) * m->num_params()), 0);
    Model tied(small_config(true), 3);
    expect_error([&] { load_hf_weights(dir, tied); }, {dir + "/config.json", "untied", "tied"});
    ModelConfig other_theta = small_config(false);
    other_theta.rope_theta = 10000.0f;
    Model theta(other_theta, 3);
    expect_error([&] { load_hf_weights(dir, theta); }, {dir + "/config.json", "rope_theta 5000"});
}

// ---------------------------------------------------------------- RoPE layouts

TEST(HfRopeLayout, PermutationAndInverse) {
    const int heads = 3, hd = 8, cols = 5;
    Rng rng(71);
    std::vector<float> w((size_t)heads * hd * cols);
    for (float& x : w) x = rng.normal();
    std::vector<float> p = w;
    permute_qk_meta_to_hf(p.data(), heads, hd, cols);
    EXPECT_NE(p, w);
    // Meta row 2i+j of head h is HF row j*hd/2 + i (the HF script's view/transpose/reshape)
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < hd / 2; i++)
            for (int j = 0; j < 2; j++)
                for (int c = 0; c < cols; c++)
                    ASSERT_EQ(p[((size_t)h * hd + j * hd / 2 + i) * cols + c], w[((size_t)h * hd + 2 * i + j) * cols + c]);
    std::vector<float> back = p;
    permute_qk_hf_to_meta(back.data(), heads, hd, cols);
    EXPECT_EQ(back, w);
    std::vector<float> twice = p;  // for hd = 8 the permutation is not an involution: applying it twice is wrong
    permute_qk_meta_to_hf(twice.data(), heads, hd, cols);
    EXPECT_NE(twice, w);
}

// The point of the permutation: Meta's interleaved RoPE on W x equals, row for row through the permutation,
// HF's rotate_half RoPE (kernels/rope.h) on permute(W) x. The reference below is Meta's formulation written
// out independently (complex rotation of pairs (2i, 2i+1) by t * theta^(-2i/hd)).
TEST(HfRopeLayout, MetaInterleavedRopeEqualsHfRopeOnPermutedRows) {
    const int heads = 2, hd = 8, C = 6, T = 5;
    const double theta = 5000.0;
    Rng rng(81);
    std::vector<float> w_meta((size_t)heads * hd * C), x((size_t)T * C);
    for (float& v : w_meta) v = rng.normal();
    for (float& v : x) v = rng.normal();
    std::vector<float> w_hf = w_meta;
    permute_qk_meta_to_hf(w_hf.data(), heads, hd, C);

    auto project = [&](const std::vector<float>& w) {  // q (T, heads*hd) = x W^T, in double
        std::vector<double> q((size_t)T * heads * hd, 0.0);
        for (int t = 0; t < T; t++)
            for (int r = 0; r < heads * hd; r++)
                for (int c = 0; c < C; c++) q[(size_t)t * heads * hd + r] += (double)x[(size_t)t * C + c] * w[(size_t)r * C + c];
        return q;
    };
    std::vector<double> q_meta = project(w_meta), q_hf = project(w_hf);
    for (int t = 0; t < T; t++)  // Meta's rotation, in place
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < hd / 2; i++) {
                double* p = &q_meta[((size_t)t * heads + h) * hd + 2 * i];
                const double a = t * std::pow(theta, -2.0 * i / hd), re = p[0], im = p[1];
                p[0] = re * std::cos(a) - im * std::sin(a);
                p[1] = re * std::sin(a) + im * std::cos(a);
            }
    std::vector<double> cos((size_t)T * hd / 2), sin((size_t)T * hd / 2), out(q_hf.size(), NAN);
    rope_tables_cpu<double>(cos.data(), sin.data(), T, hd, theta);
    rope_forward_cpu<double>(out.data(), q_hf.data(), cos.data(), sin.data(), 1, T, heads, hd);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < hd / 2; i++)
                for (int j = 0; j < 2; j++)
                    ASSERT_NEAR(out[((size_t)t * heads + h) * hd + j * hd / 2 + i],
                                q_meta[((size_t)t * heads + h) * hd + 2 * i + j], 1e-9)
                        << "t " << t << " head " << h << " pair " << i;
}

TEST(HfRopeLayout, MetaLayoutFileReproducesHfLogits) {
    auto m = random_model(false, 91);
    const ModelConfig& c = m->config();
    const std::vector<float> want = logits_of(*m);
    // write the same model with q/k rows in Meta's layout
    std::vector<float> meta(m->params(), m->params() + m->num_params());
    for (const ParamTensor& t : m->tensors()) {
        const bool q = t.name.find("q_proj") != std::string::npos, k = t.name.find("k_proj") != std::string::npos;
        if (q || k) permute_qk_hf_to_meta(meta.data() + t.offset, q ? c.n_heads : c.n_kv_heads, c.head_dim(), c.dim);
    }
    const std::string dir = temp_dir();
    save_hf_llama(dir, c, m->tensors(), meta.data(), Dtype::F32);

    HfModel as_meta = load_hf_llama(dir, QkLayout::Meta);
    EXPECT_EQ(max_abs_diff(logits_of(*as_meta.model), want), 0.0f);
    HfModel as_hf = load_hf_llama(dir, QkLayout::HF);  // the wrong layout: attention scores change
    EXPECT_GT(max_abs_diff(logits_of(*as_hf.model), want), 1e-3f);
}
