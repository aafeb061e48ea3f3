// convert: Hugging Face LLaMA checkpoints and peft adapters in and out of llmq (tools/hf_llama.h, hf_peft.h).
//
//   ./convert inspect DIR                 config, parameter count, every tensor with dtype and shape
//   ./convert roundtrip IN OUT [--dtype bf16|f16|f32] [--meta-qk]
//                                         import IN, export OUT (dtype: IN's unless given; --meta-qk: IN's q/k
//                                         rows are in Meta's interleaved RoPE layout, OUT gets HF's)
//   ./convert logits DIR --tokens 1,2,3 [--adapter ADIR] [--meta-qk]
//                                         llmq's fp32 CPU logits of one sequence, one line per position
//   ./convert lora-random BASE OUT --targets q_proj,v_proj [--r 4] [--alpha 8] [--seed 1] [--std 0.02]
//                                  [--merged MDIR] [--dtype f32]
//                                         attaches random LoRA adapters (A and B nonzero) to BASE, writes them in
//                                         peft's layout to OUT and, with --merged, BASE with them folded in;
//                                         a target may carry its own rank and alpha: model.layers.0.mlp.up_proj:2:3
//   ./convert hf-to-llmq IN_DIR OUT.ckpt  an HF directory as an llmq checkpoint (weights only, step 0): for
//                                         ./train sample; to train from HF weights use ./train --init-from
//   ./convert llmq-to-hf CKPT OUT_DIR [--dtype bf16|f16|f32]   (an adapter run: the merged model)
//                                         an llmq checkpoint (a file, DIR or DIR/latest) as an HF directory
//                                         (default f32: exact)
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "../kernels/common.h"
#include "checkpoint.h"
#include "hf_llama.h"
#include "hf_peft.h"
#include "train_method.h"

using namespace llmq;

namespace {

const char* kUsage =
    "usage: ./convert inspect DIR\n"
    "       ./convert roundtrip IN_DIR OUT_DIR [--dtype bf16|f16|f32] [--meta-qk]\n"
    "       ./convert logits DIR --tokens 1,2,3 [--adapter ADAPTER_DIR] [--meta-qk]\n"
    "       ./convert lora-random BASE_DIR OUT_DIR --targets q_proj,v_proj[:r[:alpha]] [--r 4] [--alpha 8] [--seed 1]\n"
    "                             [--std 0.02] [--merged MERGED_DIR] [--dtype f32]\n"
    "       ./convert hf-to-llmq IN_DIR OUT.ckpt\n"
    "       ./convert llmq-to-hf CKPT OUT_DIR [--dtype bf16|f16|f32]\n";

// Positional arguments and --flag value pairs (--meta-qk takes none).
struct Args {
    std::vector<std::string> positional;
    std::map<std::string, std::string> flags;
    bool has(const std::string& f) const { return flags.count(f) > 0; }
    std::string get(const std::string& f, const std::string& fallback) const {
        auto it = flags.find(f);
        return it == flags.end() ? fallback : it->second;
    }
};

Args parse_args(int argc, char** argv, const std::vector<std::string>& known) {
    Args a;
    for (int i = 2; i < argc; i++) {
        std::string s = argv[i];
        if (s.compare(0, 2, "--") != 0) {
            a.positional.push_back(s);
            continue;
        }
        bool ok = false;
        for (const std::string& k : known) ok = ok || k == s;
        LLMQ_CHECK(ok, "%s: unknown flag for '%s'\n%s", s.c_str(), argv[1], kUsage);
        if (s == "--meta-qk") {
            a.flags[s] = "1";
            continue;
        }
        LLMQ_CHECK(i + 1 < argc, "%s: needs a value", s.c_str());
        a.flags[s] = argv[++i];
    }
    return a;
}

long parse_long(const std::string& s, const std::string& flag) {
    char* end = nullptr;
    errno = 0;
    long v = strtol(s.c_str(), &end, 10);
    LLMQ_CHECK(!s.empty() && *end == 0 && errno == 0, "%s: '%s' is not an integer", flag.c_str(), s.c_str());
    return v;
}

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    size_t start = 0;
    for (size_t i = 0; i <= s.size(); i++)
        if (i == s.size() || s[i] == ',') {
            if (i > start) out.push_back(s.substr(start, i - start));
            start = i + 1;
        }
    return out;
}

QkLayout layout_of(const Args& a) { return a.has("--meta-qk") ? QkLayout::Meta : QkLayout::HF; }

void need_positional(const Args& a, size_t n, const char* cmd) {
    LLMQ_CHECK(a.positional.size() == n, "%s takes %zu path argument(s), got %zu\n%s", cmd, n, a.positional.size(), kUsage);
}

void inspect(const Args& a) {
    need_positional(a, 1, "inspect");
    const std::string& dir = a.positional[0];
    const ModelConfig c = read_hf_config(dir);
    printf("config: %s\n", c.describe().c_str());
    printf("rope_theta %g, rms_norm_eps %g, max_position_embeddings %d, head_dim %d\n", c.rope_theta, c.norm_eps,
           c.max_seq_len, c.head_dim());
    printf("parameters: %zu\n", c.num_params());
    const HfWeightFiles w = open_hf_weights(dir);
    for (const SafeTensorsFile& f : w.files) {
        printf("%s (%zu tensors)\n", f.source().c_str(), f.tensors().size());
        for (const SafeTensorInfo& t : f.tensors()) {
            std::string shape;
            for (size_t i = 0; i < t.shape.size(); i++) shape += (i ? ", " : "") + std::to_string(t.shape[i]);
            printf("  %-52s %-5s [%s]\n", t.name.c_str(), dtype_name(t.dtype), shape.c_str());
        }
    }
}

void roundtrip(const Args& a) {
    need_positional(a, 2, "roundtrip");
    const bool keep_dtype = !a.has("--dtype");
    Dtype dtype = keep_dtype ? Dtype::F32 : parse_weight_dtype(a.get("--dtype", ""), "--dtype");  // a typo fails first
    HfModel m = load_hf_llama(a.positional[0], layout_of(a));
    if (keep_dtype) dtype = m.dtype;
    save_hf_llama(a.positional[1], *m.model, dtype);
    printf("wrote %s (%s, %s)\n", a.positional[1].c_str(), m.model->config().describe().c_str(), dtype_name(dtype));
}

void logits(const Args& a) {
    need_positional(a, 1, "logits");
    LLMQ_CHECK(a.has("--tokens"), "logits: --tokens 1,2,3 is required");
    std::vector<int> tokens;
    for (const std::string& t : split(a.get("--tokens", ""))) tokens.push_back((int)parse_long(t, "--tokens"));
    LLMQ_CHECK(!tokens.empty(), "--tokens: no token ids");
    HfModel m = load_hf_llama(a.positional[0], layout_of(a));
    AdapterStore store;
    if (a.has("--adapter")) load_peft_adapter(a.get("--adapter", ""), *m.model, store);
    const int T = (int)tokens.size(), V = m.model->config().vocab_size;
    m.model->forward(tokens.data(), nullptr, 1, T);
    const float* lg = m.model->logits();
    for (int t = 0; t < T; t++)
        for (int v = 0; v < V; v++) printf("%.9g%c", lg[(size_t)t * V + v], v + 1 == V ? '\n' : ' ');
}

void lora_random(const Args& a) {
    need_positional(a, 2, "lora-random");
    LLMQ_CHECK(a.has("--targets"), "lora-random: --targets (e.g. q_proj,v_proj) is required");
    HfModel m = load_hf_llama(a.positional[0]);
    Rng rng((uint64_t)parse_long(a.get("--seed", "1"), "--seed"));
    AdapterStore store;
    const int r = (int)parse_long(a.get("--r", "4"), "--r");
    const float alpha = strtof(a.get("--alpha", "8").c_str(), nullptr);
    const float std_ = strtof(a.get("--std", "0.02").c_str(), nullptr);
    for (const std::string& target : split(a.get("--targets", ""))) {  // module[:r[:alpha]]
        const size_t c1 = target.find(':'), c2 = c1 == std::string::npos ? c1 : target.find(':', c1 + 1);
        const int tr = c1 == std::string::npos ? r : (int)parse_long(target.substr(c1 + 1, c2 - c1 - 1), "--targets");
        const float talpha = c2 == std::string::npos ? alpha : strtof(target.c_str() + c2 + 1, nullptr);
        attach_random_lora(*m.model, {target.substr(0, c1)}, tr, talpha, std_, rng, store);
    }
    PeftExportOptions opt;
    opt.base_model_name_or_path = a.positional[0];
    opt.dtype = parse_weight_dtype(a.get("--dtype", "f32"), "--dtype");
    save_peft_adapter(a.positional[1], *m.model, opt);
    printf("wrote adapter %s (r %d, alpha %g)\n", a.positional[1].c_str(), r, alpha);
    if (a.has("--merged")) {
        save_hf_llama_merged(a.get("--merged", ""), *m.model, opt.dtype);
        printf("wrote merged model %s\n", a.get("--merged", "").c_str());
    }
}

void hf_to_llmq(const Args& a) {
    need_positional(a, 2, "hf-to-llmq");
    HfModel m = load_hf_llama(a.positional[0]);
    save_checkpoint(a.positional[1], *m.model, nullptr, TrainState{}, {});
    printf("wrote %s (%s, from %s weights)\n", a.positional[1].c_str(), m.model->config().describe().c_str(),
           dtype_name(m.dtype));
}

void llmq_to_hf(const Args& a) {
    need_positional(a, 2, "llmq-to-hf");
    const Dtype dtype = parse_weight_dtype(a.get("--dtype", "f32"), "--dtype");
    const std::string path = resolve_checkpoint_path(a.positional[0]);
    const CheckpointInfo info = read_checkpoint_info(path);
    Model model(info.config, 0);
    // an adapter run exports merged: W (dequantized when the base was quantized) + s B A, a plain HF model
    std::unique_ptr<TrainMethod> method = load_checkpoint_for_inference(path, info, model);
    if (method->has_adapters()) save_hf_llama_merged(a.positional[1], model, dtype);
    else save_hf_llama(a.positional[1], model, dtype);
    printf("wrote %s (%s, %s, step %lld of %s)\n", a.positional[1].c_str(), info.config.describe().c_str(),
           dtype_name(dtype), (long long)info.state.step, path.c_str());
}

}  // namespace

int main(int argc, char** argv) {
    try {
        LLMQ_CHECK(argc >= 2, "no subcommand\n%s", kUsage);
        const std::string cmd = argv[1];
        if (cmd == "inspect") {
            inspect(parse_args(argc, argv, {}));
        } else if (cmd == "roundtrip") {
            roundtrip(parse_args(argc, argv, {"--dtype", "--meta-qk"}));
        } else if (cmd == "logits") {
            logits(parse_args(argc, argv, {"--tokens", "--adapter", "--meta-qk"}));
        } else if (cmd == "lora-random") {
            lora_random(parse_args(argc, argv, {"--targets", "--r", "--alpha", "--seed", "--std", "--merged", "--dtype"}));
        } else if (cmd == "hf-to-llmq") {
            hf_to_llmq(parse_args(argc, argv, {}));
        } else if (cmd == "llmq-to-hf") {
            llmq_to_hf(parse_args(argc, argv, {"--dtype"}));
        } else if (cmd == "-h" || cmd == "--help" || cmd == "help") {
            printf("%s", kUsage);
        } else {
            throw Error(format("unknown subcommand '%s'\n%s", cmd.c_str(), kUsage));
        }
    } catch (const Error& e) {
        fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
