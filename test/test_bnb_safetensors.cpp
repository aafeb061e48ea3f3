// Tests of tools/bnb_safetensors.h: the exact key set, dtypes, shapes and quant_state JSON of bitsandbytes' 4-bit
// layout (plain and double-quantized, NF4 and FP4, with the quant_state dtype), a bit-identical round trip of codes
// and absmax (or absmax codes, nested scales and offset), a whole model written and read back computing the same
// logits, and corrupt files (a missing key, wrong dtype or shape, mismatched or malformed quant_state, a foreign
// code table, a stray key) refused with the file and the key named.
#include <gtest/gtest.h>

#include <cstdio>
#include <functional>

#include "../quant/dynamic_map.h"
#include "../quant/fourbit.h"
#include "../quant/quantized_weight.h"
#include "../tools/bnb_safetensors.h"
#include "../tools/hf_peft.h"
#include "quant_test_util.h"
#include "train_test_util.h"

using namespace llmq;
using namespace llmq_test;

namespace {

const std::string kName = "model.layers.0.self_attn.q_proj.weight";

QuantizedTensor random_quantized(QuantFormat f, int64_t rows, int64_t cols, int block, bool dq, uint64_t seed) {
    Rng rng(seed);
    std::vector<float> w = normal_vector(rng, rows * cols, 0.02f);
    return quantize_cpu(w.data(), rows, cols, QuantSpec{f, block, true, dq});
}

// The file of one weight, after `mutate` edited the tensor list (to corrupt it).
SafeTensorsFile one_weight_file(const QuantizedTensor& q, Dtype dtype,
                                const std::function<void(std::vector<SafeTensorToWrite>&, BnbBuffers&)>& mutate = {}) {
    std::vector<SafeTensorToWrite> t;
    BnbBuffers keep;
    append_bnb_weight(kName, q, dtype, t, keep);
    if (mutate) mutate(t, keep);
    std::vector<uint8_t> bytes = serialize_safetensors(t);
    return SafeTensorsFile::from_bytes(bytes.data(), bytes.size(), "bnb.safetensors");
}

std::string text_of(const SafeTensorsFile& f, const std::string& key) {
    const SafeTensorInfo& t = f.at(key);
    return std::string((const char*)f.bytes(t), t.end - t.begin);
}

SafeTensorToWrite* find(std::vector<SafeTensorToWrite>& t, const std::string& key) {
    for (SafeTensorToWrite& x : t)
        if (x.name == key) return &x;
    ADD_FAILURE() << "no " << key;
    return &t[0];
}

void replace_state(std::vector<SafeTensorToWrite>& t, BnbBuffers& keep, const std::string& key, const std::string& json) {
    keep.bytes.emplace_back(json.begin(), json.end());
    SafeTensorToWrite* s = find(t, kName + "." + key);
    s->data = keep.bytes.back().data();
    s->shape = {(int64_t)json.size()};
}

}  // namespace

TEST(BnbSafetensors, KeysDtypesShapesAndQuantStateAreBitsandbytes) {
    // plain NF4, weight (48, 64), blocks of 64: 48 blocks
    SafeTensorsFile f = one_weight_file(random_quantized(QuantFormat::NF4, 48, 64, 64, false, 1), Dtype::BF16);
    std::vector<std::string> keys;
    for (const SafeTensorInfo& t : f.tensors()) keys.push_back(t.name);
    std::sort(keys.begin(), keys.end());
    EXPECT_EQ(keys, (std::vector<std::string>{kName, kName + ".absmax", kName + ".quant_map",
                                              kName + ".quant_state.bitsandbytes__nf4"}));
    EXPECT_EQ(f.at(kName).dtype, Dtype::U8);
    EXPECT_EQ(f.at(kName).shape, (std::vector<int64_t>{48 * 64 / 2, 1}));
    EXPECT_EQ(f.at(kName + ".absmax").dtype, Dtype::F32);
    EXPECT_EQ(f.at(kName + ".absmax").shape, (std::vector<int64_t>{48}));
    EXPECT_EQ(f.at(kName + ".quant_map").shape, (std::vector<int64_t>{16}));
    EXPECT_EQ(f.at(kName + ".quant_map").dtype, Dtype::F32);
    EXPECT_EQ(f.to_float(kName + ".quant_map")[1], kNF4Code[1]);
    EXPECT_EQ(f.at(kName + ".quant_state.bitsandbytes__nf4").dtype, Dtype::U8);
    EXPECT_EQ(text_of(f, kName + ".quant_state.bitsandbytes__nf4"),
              "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [48, 64]}");

    // double-quantized FP4, (96, 256) blocks of 64: 384 blocks = one full and one partial group of 256
    const QuantizedTensor dq = random_quantized(QuantFormat::FP4, 96, 256, 64, true, 2);
    SafeTensorsFile g = one_weight_file(dq, Dtype::F32);
    keys.clear();
    for (const SafeTensorInfo& t : g.tensors()) keys.push_back(t.name);
    std::sort(keys.begin(), keys.end());
    EXPECT_EQ(keys, (std::vector<std::string>{kName, kName + ".absmax", kName + ".nested_absmax",
                                              kName + ".nested_quant_map", kName + ".quant_map",
                                              kName + ".quant_state.bitsandbytes__fp4"}));
    EXPECT_EQ(g.at(kName + ".absmax").dtype, Dtype::U8);
    EXPECT_EQ(g.at(kName + ".absmax").shape, (std::vector<int64_t>{384}));
    EXPECT_EQ(g.at(kName + ".nested_absmax").dtype, Dtype::F32);
    EXPECT_EQ(g.at(kName + ".nested_absmax").shape, (std::vector<int64_t>{2}));
    EXPECT_EQ(g.at(kName + ".nested_quant_map").shape, (std::vector<int64_t>{256}));
    EXPECT_EQ(g.to_float(kName + ".nested_quant_map")[0], dynamic_map_signed()[0]);
    EXPECT_EQ(g.to_float(kName + ".quant_map")[2], kFP4Code[2]);
    const std::string json = text_of(g, kName + ".quant_state.bitsandbytes__fp4");
    const std::string head = "{\"quant_type\": \"fp4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [96, 256], "
                             "\"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": ";
    ASSERT_EQ(json.compare(0, head.size(), head), 0) << json;
    EXPECT_EQ((float)std::stod(json.substr(head.size())), dq.absmax_offset) << json;
    EXPECT_EQ(json.back(), '}');
}

TEST(BnbSafetensors, RoundTripIsBitIdentical) {
    for (QuantFormat f : {QuantFormat::NF4, QuantFormat::FP4})
        for (bool dq : {false, true})
            for (int block : {64, 256}) {
                const QuantizedTensor q = random_quantized(f, 96, 256, block, dq, 3 + block);
                Dtype dtype = Dtype::F32;
                const QuantizedTensor r = read_bnb_weight(one_weight_file(q, Dtype::F16), kName, &dtype);
                EXPECT_EQ(dtype, Dtype::F16);
                EXPECT_EQ(r.spec.format, f);
                EXPECT_EQ(r.spec.block, block);
                EXPECT_EQ(r.spec.double_quant, dq);
                EXPECT_EQ(r.rows, 96);
                EXPECT_EQ(r.cols, 256);
                EXPECT_EQ(r.codes, q.codes);
                EXPECT_EQ(r.absmax, q.absmax);
                EXPECT_EQ(r.absmax_codes, q.absmax_codes);
                EXPECT_EQ(r.absmax_scales, q.absmax_scales);
                EXPECT_EQ(r.absmax_offset, q.absmax_offset);
                std::vector<float> a(q.numel()), b(q.numel());
                dequantize_cpu(q, a.data());
                dequantize_cpu(r, b.data());
                EXPECT_EQ(a, b);
            }
    // every weight of a file, by name
    SafeTensorsFile f = one_weight_file(random_quantized(QuantFormat::NF4, 8, 64, 64, true, 9), Dtype::BF16);
    std::map<std::string, QuantizedTensor> all = read_bnb_weights(f);
    ASSERT_EQ(all.size(), 1u);
    EXPECT_EQ(all.begin()->first, kName);
}

TEST(BnbSafetensors, CorruptFilesNameTheFileAndTheKey) {
    const QuantizedTensor q = random_quantized(QuantFormat::NF4, 48, 64, 64, false, 4);
    const QuantizedTensor dq = random_quantized(QuantFormat::NF4, 48, 64, 64, true, 4);
    using Edit = std::function<void(std::vector<SafeTensorToWrite>&, BnbBuffers&)>;
    auto expect_refused = [&](const QuantizedTensor& w, const Edit& edit, std::initializer_list<std::string> parts) {
        SafeTensorsFile f = one_weight_file(w, Dtype::F32, edit);
        expect_error([&] { read_bnb_weight(f, kName); }, parts);
        expect_error([&] { read_bnb_weight(f, kName); }, {"bnb.safetensors: "});
    };
    auto drop = [](const std::string& key) {
        return [key](std::vector<SafeTensorToWrite>& t, BnbBuffers&) {
            t.erase(std::remove_if(t.begin(), t.end(), [&](const SafeTensorToWrite& x) { return x.name == key; }), t.end());
        };
    };
    const std::string state = "quant_state.bitsandbytes__nf4";
    expect_refused(q, drop(kName + ".absmax"), {kName + ".absmax: missing"});
    expect_refused(q, drop(kName), {kName + ": missing"});
    expect_refused(q, drop(kName + "." + state), {kName + ".quant_state.bitsandbytes__nf4", "missing"});
    expect_refused(dq, drop(kName + ".nested_absmax"), {kName + ".nested_absmax: missing"});
    expect_refused(dq, drop(kName + ".nested_quant_map"), {kName + ".nested_quant_map: missing"});
    expect_refused(q, [&](auto& t, auto&) { find(t, kName + ".absmax")->shape = {24}; },
                   {kName + ".absmax", "F32 [48]"});
    expect_refused(q, [&](auto& t, auto&) { find(t, kName)->shape = {1536}; }, {kName + ":", "U8 [1536, 1]"});
    expect_refused(q, [&](auto& t, auto& keep) {
        keep.floats.emplace_back(48 * 64 / 8, 0.0f);
        SafeTensorToWrite* w = find(t, kName);
        w->dtype = Dtype::F32, w->shape = {384, 1}, w->data = keep.floats.back().data();
    }, {kName + ":", "is F32"});
    expect_refused(q, [&](auto& t, auto& keep) {
        keep.floats.emplace_back(kFP4Code, kFP4Code + 16);
        find(t, kName + ".quant_map")->data = keep.floats.back().data();
    }, {kName + ".quant_map", "entry 0"});
    expect_refused(q, [&](auto& t, auto& keep) {
        replace_state(t, keep, state, "{\"quant_type\": \"fp4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [48, 64]}");
    }, {state, "differs"});
    expect_refused(q, [&](auto& t, auto& keep) {
        replace_state(t, keep, state, "{\"quant_type\": \"nf4\", \"blocksize\": 48, \"dtype\": \"float32\", \"shape\": [48, 64]}");
    }, {state, "block size 48"});
    expect_refused(q, [&](auto& t, auto& keep) {
        replace_state(t, keep, state, "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"int8\", \"shape\": [48, 64]}");
    }, {state, "int8"});
    expect_refused(q, [&](auto& t, auto& keep) {
        replace_state(t, keep, state, "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": [48]}");
    }, {state, "[out, in]"});
    expect_refused(q, [&](auto& t, auto& keep) { replace_state(t, keep, state, "{\"quant_type\": \"nf4\","); },
                   {state, "invalid JSON"});
    expect_refused(q, [&](auto& t, auto& keep) {
        replace_state(t, keep, state, "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", "
                                      "\"shape\": [48, 64], \"extra\": 1}");
    }, {state, "unknown quant_state field \"extra\""});
    expect_refused(dq, [&](auto& t, auto& keep) {
        replace_state(t, keep, state, "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"float32\", \"shape\": "
                                      "[48, 64], \"nested_blocksize\": 128, \"nested_dtype\": \"float32\", \"nested_offset\": 0.1}");
    }, {state, "nested_blocksize 128"});
    // a plain weight's file with the nested tensors of another: they are not part of its layout
    expect_refused(q, [&](auto& t, auto&) {
        for (const char* k : {".nested_absmax", ".nested_quant_map"}) {
            SafeTensorToWrite x = *find(t, kName + ".absmax");
            x.name = kName + k;
            t.push_back(x);
        }
    }, {kName + ".nested_", "not part of bitsandbytes' layout"});
    // writer: bnb has no INT layout and no blocks of 32
    std::vector<SafeTensorToWrite> t;
    BnbBuffers keep;
    expect_error([&] { append_bnb_weight(kName, random_quantized(QuantFormat::NF4, 8, 64, 32, false, 1), Dtype::F32, t, keep); },
                 {kName, "block 32"});
    Rng rng(1);
    std::vector<float> w = normal_vector(rng, 8 * 64);
    expect_error([&] { append_bnb_weight(kName, quantize_cpu(w.data(), 8, 64, {QuantFormat::INT4, 64, true}), Dtype::F32, t, keep); },
                 {kName, "not int4"});
}

TEST(BnbSafetensors, ModelRoundTripComputesTheSameLogits) {
    ModelConfig c;
    c.vocab_size = 40, c.dim = 64, c.ffn_dim = 128, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2;
    c.max_seq_len = 16, c.tied_embeddings = false;
    Model model(c, 3);
    std::map<std::string, QuantizedTensor> quantized;
    for (auto& [name, linear] : named_linears(model)) {
        if (name == "lm_head") continue;
        QuantizedTensor q = quantize_cpu(linear->weight, linear->out, linear->in, {QuantFormat::NF4, 64, true, true});
        linear->quant = std::make_shared<FormatQuantizedWeight>(q);
        linear->dweight = nullptr;
        quantized.emplace(name + ".weight", std::move(q));
    }
    const std::string dir = temp_dir("bnb"), path = dir + "/model-nf4.safetensors";
    save_bnb_model(path, model, quantized, Dtype::F32);
    Model back(c, 99);
    EXPECT_EQ(load_bnb_model(path, back), 14u);
    EXPECT_EQ(logits_on_random_tokens(back, 12, 5), logits_on_random_tokens(model, 12, 5));
    for (auto& [name, linear] : named_linears(back)) {
        if (name == "lm_head") {
            EXPECT_FALSE(linear->quant);
            continue;
        }
        auto* fq = dynamic_cast<const FormatQuantizedWeight*>(linear->quant.get());
        ASSERT_TRUE(fq) << name;
        EXPECT_EQ(fq->tensor().codes, quantized.at(name + ".weight").codes) << name;
        EXPECT_EQ(fq->tensor().absmax_codes, quantized.at(name + ".weight").absmax_codes) << name;
    }
    // another model: a missing tensor, a shape that does not fit, a tensor it does not have
    ModelConfig more = c;
    more.n_layers = 3;
    Model three(more, 1);
    expect_error([&] { load_bnb_model(path, three); }, {path, "model.layers.2.input_layernorm.weight: missing"});
    ModelConfig wide = c;
    wide.ffn_dim = 192;
    Model w(wide, 1);
    expect_error([&] { load_bnb_model(path, w); }, {path, "model.layers.0.mlp.gate_proj.weight", "[192, 64]"});
    ModelConfig one = c;
    one.n_layers = 1;
    Model m1(one, 1);
    expect_error([&] { load_bnb_model(path, m1); }, {path, "model.layers.1.", "not a tensor of this model"});
    std::remove(path.c_str());
}
