// Tests of the ./quantize program (tools/quantize_main.cpp), run as a child process from the repository root after
// `make` built it, on a tiny llmq checkpoint and HF directory written here: the table (one row per attention/MLP
// linear with the weight error the library computes for it, totals), the bitsandbytes file it writes (codes
// bit-identical to round-to-nearest of the checkpoint's weights, quant_state dtype from the source), GPTQ's
// table with output errors below round-to-nearest's, --help, and bad input (one "error:" line naming the flag or
// file, exit status 1).
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "../quant/quantized_weight.h"
#include "../tools/bnb_safetensors.h"
#include "../tools/checkpoint.h"
#include "../tools/hf_llama.h"
#include "../tools/hf_peft.h"
#include "train_test_util.h"

using namespace llmq;
using namespace llmq_test;

namespace {

ModelConfig tiny_config() {
    ModelConfig c;
    c.vocab_size = 64, c.dim = 64, c.ffn_dim = 128, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2;
    c.max_seq_len = 32, c.tied_embeddings = true;
    return c;
}

struct QuantizeCli : ::testing::Test {
    std::string dir, ckpt, hf, data;
    std::unique_ptr<Model> model;
    void SetUp() override {
        ASSERT_TRUE(file_exists("./quantize")) << "./quantize is not built: run `make quantize` from the repo root";
        dir = temp_dir("quantize");
        ckpt = dir + "/tiny.ckpt";
        hf = dir + "/hf";
        model = std::make_unique<Model>(tiny_config(), 21);
        save_checkpoint(ckpt, *model, nullptr, TrainState{}, {});
        save_hf_llama(hf, *model, Dtype::BF16);
        data = markov_corpus("quantize_data", 8, 3000, 300, 64);
    }
    RunResult quantize(const std::string& flags) { return run_command("./quantize --threads 1 " + flags); }
    void expect_error(const RunResult& r, std::vector<std::string> needles) {
        EXPECT_EQ(r.exit_code, 1) << r.output;
        EXPECT_NE(r.output.find("error: "), std::string::npos) << r.output;
        for (const std::string& n : needles) EXPECT_NE(r.output.find(n), std::string::npos) << n << "\n" << r.output;
    }
};

// The whitespace-separated fields of the output line that starts with `start`.
std::vector<std::string> fields_of_line(const std::string& output, const std::string& start) {
    std::istringstream in(output);
    for (std::string line; std::getline(in, line);)
        if (line.compare(0, start.size(), start) == 0) {
            std::istringstream f(line);
            std::vector<std::string> out;
            for (std::string w; f >> w;) out.push_back(w);
            return out;
        }
    ADD_FAILURE() << "no line starting with '" << start << "' in\n" << output;
    return {};
}

}  // namespace

TEST_F(QuantizeCli, RtnTableAndBitsandbytesFile) {
    const std::string out = dir + "/tiny-nf4.safetensors";
    RunResult r = quantize("--checkpoint " + ckpt + " --format nf4 --double-quant 1 --out " + out);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const QuantSpec spec{QuantFormat::NF4, 64, true, true};
    int rows = 0;
    for (auto& [name, linear] : named_linears(*model)) {
        if (name == "lm_head") {
            EXPECT_EQ(r.output.find("lm_head"), std::string::npos) << r.output;
            continue;
        }
        // the row: name, shape, bits/weight, relative weight error as the library computes it
        const int64_t n = (int64_t)linear->out * linear->in;
        std::vector<float> deq(n);
        dequantize_cpu(quantize_cpu(linear->weight, linear->out, linear->in, spec), deq.data());
        double e = 0, w = 0;
        for (int64_t i = 0; i < n; i++) e += std::pow((double)linear->weight[i] - deq[i], 2), w += std::pow(linear->weight[i], 2);
        std::vector<std::string> f = fields_of_line(r.output, name + " ");
        ASSERT_EQ(f.size(), 4u) << r.output;
        EXPECT_EQ(f[1], std::to_string(linear->out) + "x" + std::to_string(linear->in));
        EXPECT_EQ(f[2], format("%.3f", 8.0 * storage_bytes(spec, linear->out, linear->in) / n));
        EXPECT_EQ(f[3], format("%.5f", std::sqrt(e / w))) << name;
        rows++;
    }
    EXPECT_EQ(rows, 14);
    std::vector<std::string> total = fields_of_line(r.output, "total (14 linears");
    ASSERT_EQ(total.size(), 7u) << r.output;
    EXPECT_NE(r.output.find("wrote " + out), std::string::npos) << r.output;

    // the file: every linear's codes bit-identical to round-to-nearest of the checkpoint's weights
    Model back(tiny_config(), 5);
    EXPECT_EQ(load_bnb_model(out, back), 14u);
    for (auto& [name, linear] : named_linears(back)) {
        if (name == "lm_head") continue;
        auto* fq = dynamic_cast<const FormatQuantizedWeight*>(linear->quant.get());
        ASSERT_TRUE(fq) << name;
        const float* w = model->params() + model->tensor(name + ".weight").offset;
        const QuantizedTensor q = quantize_cpu(w, linear->out, linear->in, spec);
        EXPECT_EQ(fq->tensor().codes, q.codes) << name;
        EXPECT_EQ(fq->tensor().absmax_codes, q.absmax_codes) << name;
        EXPECT_EQ(fq->tensor().absmax_scales, q.absmax_scales) << name;
    }
    const SafeTensorsFile f = SafeTensorsFile::open(out);
    EXPECT_EQ(f.at("model.embed_tokens.weight").dtype, Dtype::F32);  // from an llmq checkpoint: fp32 as trained
    EXPECT_FALSE(f.find("lm_head.weight"));                           // tied

    // from an HF directory in bf16: the plain tensors stay bf16, the quant_state says so
    const std::string out2 = dir + "/hf-fp4.safetensors";
    r = quantize("--hf " + hf + " --format fp4 --block 128 --out " + out2);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const SafeTensorsFile g = SafeTensorsFile::open(out2);
    EXPECT_EQ(g.at("model.norm.weight").dtype, Dtype::BF16);
    Dtype dtype = Dtype::F32;
    const QuantizedTensor q = read_bnb_weight(g, "model.layers.1.mlp.down_proj.weight", &dtype);
    EXPECT_EQ(dtype, Dtype::BF16);
    EXPECT_EQ(q.spec.format, QuantFormat::FP4);
    EXPECT_EQ(q.spec.block, 128);
    EXPECT_EQ(q.rows, 64);
    EXPECT_EQ(q.cols, 128);
}

TEST_F(QuantizeCli, GptqTableShowsOutputErrorsBelowRoundToNearest) {
    RunResult r = quantize("--checkpoint " + ckpt + " --format int3 --block 32 --symmetric 0 --method gptq --calib-data " +
                           data + " --calib-tokens 512 --calib-seq 32 --eval-data " + data + " --eval-tokens 256");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("calibration: 512 tokens in 16 sequences"), std::string::npos) << r.output;
    for (const char* module : {"model.layers.0.self_attn.q_proj ", "model.layers.1.mlp.down_proj "}) {
        std::vector<std::string> f = fields_of_line(r.output, module);
        ASSERT_EQ(f.size(), 6u) << r.output;
        EXPECT_LE(std::stod(f[4]), std::stod(f[5])) << r.output;  // output err <= rtn out err
    }
    std::vector<std::string> total = fields_of_line(r.output, "total (14 linears");
    ASSERT_EQ(total.size(), 9u) << r.output;
    EXPECT_LT(std::stod(total[7]), std::stod(total[8])) << r.output;
    EXPECT_NE(r.output.find("4.250"), std::string::npos) << r.output;  // int3 asym group 32: 3 + 40/32 bits
    std::vector<std::string> loss = fields_of_line(r.output, "val loss on 256 tokens of " + data + ":");
    ASSERT_EQ(loss.size(), 13u) << r.output;
    EXPECT_GT(std::stod(loss[7]), 0) << r.output;  // before
    EXPECT_GT(std::stod(loss[9]), 0) << r.output;  // quantized

    // rtn with calibration data reports the output error too, but no rtn column
    r = quantize("--checkpoint " + ckpt + " --format int4 --calib-data " + data + " --calib-tokens 64 --calib-seq 32");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(fields_of_line(r.output, "model.layers.0.mlp.up_proj ").size(), 5u) << r.output;
}

TEST_F(QuantizeCli, HelpListsEveryFlag) {
    RunResult r = quantize("--help");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    for (const char* flag : {"--checkpoint", "--hf", "--format nf4|fp4|int4|int3|int2", "--block", "--double-quant",
                             "--symmetric", "--method rtn|gptq", "--calib-data", "--calib-split", "--calib-tokens",
                             "--calib-seq", "--seed", "--percdamp", "--act-order", "--eval-data", "--eval-tokens",
                             "--out", "--threads"})
        EXPECT_NE(r.output.find(flag), std::string::npos) << flag << "\n" << r.output;
    EXPECT_NE(r.output.find("(default: 64)"), std::string::npos) << r.output;
}

TEST_F(QuantizeCli, BadInputIsOneErrorNamingTheFlagOrFile) {
    const std::string c = "--checkpoint " + ckpt + " ";
    expect_error(quantize(""), {"--checkpoint FILE", "--hf DIR"});
    expect_error(quantize("--checkpoint " + dir + "/missing.ckpt"), {dir + "/missing.ckpt"});
    expect_error(quantize("--hf " + dir + "/nohf"), {dir + "/nohf"});
    expect_error(quantize(c + "--hf " + hf), {"exactly one of --checkpoint"});
    expect_error(quantize(c + "--format nf5"), {"--format", "nf5"});
    expect_error(quantize(c + "--block 48"), {"--block 48", "power of two"});
    expect_error(quantize(c + "--format int4 --block 128"),
                 {"--block 128 does not fit model.layers.0.self_attn.q_proj", "(64, 64)"});
    expect_error(quantize(c + "--format int4 --double-quant 1"), {"--double-quant 1", "nf4/fp4 only"});
    expect_error(quantize(c + "--symmetric 0"), {"--symmetric 0", "nf4"});
    expect_error(quantize(c + "--method gptq"), {"--method gptq", "--calib-data"});
    expect_error(quantize(c + "--method gptq --double-quant 1 --calib-data " + data), {"--double-quant 1"});
    expect_error(quantize(c + "--method gptq --calib-data " + dir + "/nodata"), {"--calib-data", dir + "/nodata"});
    expect_error(quantize(c + "--calib-data " + data + " --calib-tokens 100000"), {"--calib-data", "windows"});
    expect_error(quantize(c + "--calib-data " + data + " --calib-seq 64"), {"--calib-seq 64", "max_seq_len 32"});
    expect_error(quantize(c + "--format int4 --block 32 --out " + dir + "/x.safetensors"), {"--out", "nf4 or fp4"});
    expect_error(quantize(c + "--block 32 --out " + dir + "/x.safetensors"), {"--out", "block 32", "64"});
    expect_error(quantize(c + "--eval-data " + dir + "/noeval"), {"--eval-data", dir + "/noeval"});
    expect_error(quantize(c + "--frobnicate 1"), {"--frobnicate"});
    EXPECT_FALSE(file_exists(dir + "/x.safetensors"));
    // a corrupt checkpoint
    write_text(dir + "/bad.ckpt", "LLMQCKPT garbage");
    expect_error(quantize("--checkpoint " + dir + "/bad.ckpt"), {dir + "/bad.ckpt"});
}
