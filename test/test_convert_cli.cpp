// Tests of the ./convert program (tools/convert_main.cpp), run as a child process from the repository root
// (`make test` builds the programs first): inspect lists the tensors, roundtrip reproduces the file bytes
// (and changes dtype on request), logits prints the model's logits (with and without an adapter), lora-random
// writes a peft adapter and a merged model, and bad input is one "error:" line with exit status 1.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "../kernels/common.h"
#include "../layers/model.h"
#include "../tools/checkpoint.h"
#include "../tools/hf_llama.h"
#include "../tools/hf_peft.h"
#include "../tools/json.h"
#include "../tools/safetensors.h"

using namespace llmq;

namespace {

std::string temp_dir() {
    char tmpl[] = "/tmp/llmq_convert_XXXXXX";
    const char* d = mkdtemp(tmpl);
    EXPECT_TRUE(d);
    return d ? d : "/tmp";
}

struct RunResult {
    int status = -1;
    std::string out, err;
};

RunResult run_convert(const std::string& args) {
    static const std::string dir = temp_dir();
    EXPECT_TRUE(std::filesystem::exists("./convert")) << "./convert is missing: run from the repository root after make";
    const std::string out = dir + "/stdout", err = dir + "/stderr";
    const int rc = system(("./convert " + args + " > '" + out + "' 2> '" + err + "'").c_str());
    RunResult r;
    r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    r.out = read_file_bytes(out);
    r.err = read_file_bytes(err);
    return r;
}

ModelConfig small_config() {
    ModelConfig c;
    c.vocab_size = 19;
    c.dim = 16;
    c.ffn_dim = 24;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.max_seq_len = 8;
    c.tied_embeddings = false;
    c.init_std = 0.3f;
    return c;
}

std::vector<std::vector<float>> parse_logits(const std::string& text) {
    std::vector<std::vector<float>> rows;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        rows.emplace_back();
        float v;
        while (ls >> v) rows.back().push_back(v);
    }
    return rows;
}

}  // namespace

TEST(ConvertCli, InspectRoundtripLogitsAndLora) {
    Model m(small_config(), 3);
    const std::string base = temp_dir();
    save_hf_llama(base, m, Dtype::BF16);

    RunResult r = run_convert("inspect " + base);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_NE(r.out.find("model.layers.1.mlp.down_proj.weight"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("BF16"), std::string::npos);
    EXPECT_NE(r.out.find(format("parameters: %zu", m.num_params())), std::string::npos) << r.out;

    const std::string same = temp_dir() + "/same", f32 = temp_dir() + "/f32";
    ASSERT_EQ(run_convert("roundtrip " + base + " " + same).status, 0);
    EXPECT_EQ(read_file_bytes(same + "/model.safetensors"), read_file_bytes(base + "/model.safetensors"));
    ASSERT_EQ(run_convert("roundtrip " + base + " " + f32 + " --dtype f32").status, 0);
    EXPECT_EQ(SafeTensorsFile::open(f32 + "/model.safetensors").at("lm_head.weight").dtype, Dtype::F32);

    // logits: the printed values are the loaded model's (9 significant digits: float exact)
    HfModel loaded = load_hf_llama(base);
    const int tokens[] = {3, 1, 4, 1, 5};
    loaded.model->forward(tokens, nullptr, 1, 5);
    r = run_convert("logits " + base + " --tokens 3,1,4,1,5");
    ASSERT_EQ(r.status, 0) << r.err;
    const auto rows = parse_logits(r.out);
    ASSERT_EQ(rows.size(), 5u);
    for (int t = 0; t < 5; t++) {
        ASSERT_EQ(rows[t].size(), 19u);
        for (int v = 0; v < 19; v++) ASSERT_EQ(rows[t][v], loaded.model->logits()[t * 19 + v]);
    }

    // lora-random: the adapter through --adapter gives the merged model's logits
    const std::string adapter = temp_dir(), merged = temp_dir();
    r = run_convert("lora-random " + base + " " + adapter + " --targets q_proj,down_proj:2:5 --r 3 --alpha 6 --std 0.3 --merged " + merged);
    ASSERT_EQ(r.status, 0) << r.err;
    const JsonValue cfg = parse_json_file(adapter + "/adapter_config.json");
    EXPECT_EQ(cfg.at("r").as_int(), 3);
    EXPECT_EQ(cfg.at("lora_alpha").as_number(), 6.0);
    const auto with_adapter = parse_logits(run_convert("logits " + base + " --tokens 3,1,4,1,5 --adapter " + adapter).out);
    const auto of_merged = parse_logits(run_convert("logits " + merged + " --tokens 3,1,4,1,5").out);
    ASSERT_EQ(with_adapter.size(), 5u);
    ASSERT_EQ(of_merged.size(), 5u);
    float diff = 0, effect = 0;
    for (int t = 0; t < 5; t++)
        for (int v = 0; v < 19; v++) {
            diff = std::max(diff, std::fabs(with_adapter[t][v] - of_merged[t][v]));
            effect = std::max(effect, std::fabs(with_adapter[t][v] - rows[t][v]));
        }
    EXPECT_LT(diff, 1e-5f);
    EXPECT_GT(effect, 1e-2f);
}

TEST(ConvertCli, ErrorsAreOneLineAndExitOne) {
    const std::string empty = temp_dir();
    const std::vector<std::string> cases = {"frobnicate",        "inspect " + empty, "roundtrip " + empty,
                                            "logits " + empty + " --tokens 1", "roundtrip a b --dtype f8",
                                            "logits x --bogus 1"};
    for (const std::string& args : cases) {
        RunResult r = run_convert(args);
        EXPECT_EQ(r.status, 1) << args;
        EXPECT_EQ(r.err.compare(0, 7, "error: "), 0) << args << ": " << r.err;
        EXPECT_TRUE(r.out.empty()) << args;
    }
    EXPECT_NE(run_convert("inspect " + empty).err.find(empty + "/config.json"), std::string::npos);
    EXPECT_NE(run_convert("roundtrip a b --dtype f8").err.find("--dtype: dtype 'f8'"), std::string::npos);
}

TEST(ConvertCli, HfToLlmqAndBackIsExactInF32) {
    ModelConfig c = small_config();
    c.tied_embeddings = true;  // the tied case too: lm_head is left out both ways
    c.init_std = 0.02f;        // config.json's initializer_range, which read_hf_config reads back as this
    Model m(c, 9);
    const std::string hf = temp_dir(), ckpt = temp_dir() + "/m.ckpt", back = temp_dir() + "/back";
    save_hf_llama(hf, m, Dtype::F32);

    RunResult r = run_convert("hf-to-llmq " + hf + " " + ckpt);
    ASSERT_EQ(r.status, 0) << r.err;
    const CheckpointInfo info = read_checkpoint_info(ckpt);
    EXPECT_EQ(info.config.describe(), read_hf_config(hf).describe());
    EXPECT_EQ(info.state.step, 0);
    Model loaded(info.config, 1);
    load_checkpoint(ckpt, loaded, nullptr);
    ASSERT_EQ(loaded.num_params(), m.num_params());
    for (size_t i = 0; i < m.num_params(); i++) ASSERT_EQ(loaded.params()[i], m.params()[i]) << i;

    r = run_convert("llmq-to-hf " + ckpt + " " + back);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(read_file_bytes(back + "/model.safetensors"), read_file_bytes(hf + "/model.safetensors"));
    EXPECT_EQ(read_file_bytes(back + "/config.json"), read_file_bytes(hf + "/config.json"));
    ASSERT_EQ(run_convert("llmq-to-hf " + ckpt + " " + back + "16 --dtype bf16").status, 0);
    EXPECT_EQ(SafeTensorsFile::open(back + "16/model.safetensors").at("model.embed_tokens.weight").dtype, Dtype::BF16);

    r = run_convert("llmq-to-hf " + hf + "/absent.ckpt " + back);
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find(hf + "/absent.ckpt"), std::string::npos) << r.err;
    r = run_convert("hf-to-llmq " + ckpt + " x.ckpt");
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find(ckpt + "/config.json"), std::string::npos) << r.err;
}
