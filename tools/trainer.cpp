// trainer.cpp: the training loop (see trainer.h): setup and validation of a run, the step, evaluation,
// checkpoints, samples and the final report.
#include "trainer.h"

#include <omp.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>

#include "../kernels/common.h"
#include "../layers/model.h"
#include "../layers/optimizer.h"
#include "../layers/model_core.h"
#include "../layers/wtacrs.h"
#include "cuda_run.h"
#include "dataloader.h"
#include "hf_llama.h"
#include "hf_peft.h"
#include "metrics.h"
#include "progress.h"
#include "sampler.h"
#include "tokenizer.h"
#include "train_method.h"

namespace llmq {

void add_train_flags(FlagSet& f, TrainOptions& o) {
    f.add("model", &o.model, "model preset", {"tiny", "60m", "130m", "350m", "1b", "7b"});
    f.add("dim", &o.dim, "override the preset's hidden size (0: keep)");
    f.add("ffn-dim", &o.ffn_dim, "override the preset's SwiGLU inner size (0: keep)");
    f.add("n-layers", &o.n_layers, "override the preset's layer count (0: keep)");
    f.add("n-heads", &o.n_heads, "override the preset's attention heads (0: keep)");
    f.add("n-kv-heads", &o.n_kv_heads, "override the preset's key/value heads (0: keep)");
    f.add("max-seq-len", &o.max_seq_len, "override the preset's longest sequence (0: keep)");
    f.add("data", &o.data, "shard directory, glob or prefix (*_train_*.bin, *_val_*.bin)");
    f.add("encoding", &o.encoding, "tokenizer the shards came from: gpt2, cl100k_base, o200k_base, none");
    f.add("vocab", &o.vocab, "tokenizer vocabulary file (instead of --encoding)");
    f.add("steps", &o.steps, "optimizer steps in all");
    f.add("batch", &o.batch, "sequences per micro-batch (B)");
    f.add("seq", &o.seq, "tokens per sequence (T)");
    f.add("grad-accum", &o.grad_accum, "micro-batches per optimizer step");
    f.add("lr", &o.lr, "peak learning rate");
    f.add("min-lr-ratio", &o.min_lr_ratio, "the cosine decays to lr * this");
    f.add("warmup", &o.warmup, "linear warmup steps");
    f.add("weight-decay", &o.weight_decay, "AdamW weight decay (2-D weights)");
    f.add("grad-clip", &o.grad_clip, "clip the global gradient norm to this (0: off)");
    f.add("optimizer", &o.optimizer, "AdamW with fp32 states (8 bytes/param) or block-wise 8-bit states (~2.03)",
          {"adamw", "adamw8bit"});
    f.add("method", &o.method, "what trains: full (every weight), lora (adapters on the frozen base), qlora (adapters "
          "on the quantized base), relora (lora merged into the base every --relora-every steps), galore (every "
          "weight; the attention and MLP linears with GaLore's projected Adam of rank --rank), loqt (one trained "
          "factor on an NF4 base, merged and re-projected on the gradient at growing intervals), loqt-nq (the same on "
          "an fp32 base), switchlora (lora with s = 1/r whose adapter vectors are switched for candidates at a "
          "decaying rate, folding each swap into the base)",
          {"full", "lora", "qlora", "relora", "galore", "loqt", "loqt-nq", "switchlora"});
    f.add("rank", &o.rank, "adapter rank r (galore: the rank of the gradient projections)");
    f.add("alpha", &o.alpha, "adapter scale: LoRA adds (alpha / r) B A x, LoQT alpha B A x (0: the method's default, "
          "lora 16, switchlora 1, loqt 0.5)");
    f.add("lora-dropout", &o.lora_dropout, "lora family: dropout probability on the adapters' input (peft's "
          "lora_dropout; training forwards only)");
    f.add("layerwise", &o.layerwise, "--method full: 1 updates each layer's Linear weights during the backward, as "
          "soon as their gradient is formed, so no full gradient buffer is held (needs --grad-clip 0, --grad-accum 1)");
    f.add("train-rest", &o.train_rest, "lora family: 1 also trains the embeddings, norms and lm_head in full with "
          "AdamW (as ReLoRA's, SwitchLoRA's and LoQT's pretraining do); 0 trains the adapters alone (peft fine-tuning)");
    f.add("lora-targets", &o.lora_targets, "the linears that get adapters (never lm_head)", {"attn", "mlp", "all-linear"});
    f.add("weights", &o.weights, "base weights of the attention and MLP linears: bf16 (unquantized, fp32 on the CPU) or "
          "a quantized format (frozen; qlora: nf4 unless another is given)", {"bf16", "nf4", "fp4", "int4", "int3", "int2"});
    f.add("quant-block", &o.quant_block, "quantization block (nf4/fp4, over the flattened weight) or group (int, along "
          "the input) size");
    f.add("double-quant", &o.double_quant, "1: quantize the nf4/fp4 absmax too (bnb's nested quantization)");
    f.add("relora-every", &o.relora_every, "relora: merge the adapters into the base and restart them every N steps");
    f.add("relora-rewarmup", &o.relora_rewarmup, "relora: re-warm the lr linearly over N steps after each merge");
    f.add("relora-prune", &o.relora_prune, "relora: fraction of the adapters' optimizer state zeroed at each merge");
    f.add("init", &o.init, "lora/qlora on a quantized base: how the adapters start: plain (B = 0), loftq (alternating "
          "SVD of the weight error), cloq (closed form minimising the calibrated output error)",
          {"plain", "loftq", "cloq"});
    f.add("quantizer", &o.quantizer, "how a lora/qlora base is quantized: rtn (round to nearest) or gptq (with "
          "calibration)", {"rtn", "gptq"});
    f.add("calib-tokens", &o.calib_tokens, "--init loftq|cloq, --quantizer gptq: calibration tokens from the train "
          "split");
    f.add("init-compare", &o.init_compare, "1: log every initialisation's calibrated error per layer (costs their work)");
    f.add("switch-interval", &o.switch_interval, "switchlora: steps between a vector's switches at the start (grows "
          "x1/0.3 every 10% of the run)");
    f.add("switch-freeze", &o.switch_freeze, "switchlora: updates a switched vector's counterpart sits out");
    f.add("galore-every", &o.galore_every, "galore: recompute each linear's projection (SVD of its gradient) every N "
          "steps");
    f.add("galore-scale", &o.galore_scale, "galore: the factor on the projected-back Adam update (the paper's alpha)");
    f.add("loqt-tau", &o.loqt_tau, "loqt: merge at steps 0, tau, then at gaps tau + floor(psi^k)");
    f.add("loqt-psi", &o.loqt_psi, "loqt: growth of the merge gaps (see --loqt-tau)");
    f.add("loqt-quant-p", &o.loqt_quant_p, "loqt: 1 stores the frozen projection P in NF4");
    f.add("loqt-ec-iters", &o.loqt_ec_iters, "loqt: error-compensation iterations at each merge (0: none)");
    f.add("on-nan", &o.on_nan, "on a non-finite loss or gradient: stop (exit 1) or skip the step", {"stop", "skip"});
    f.add("device", &o.device, "where to train (auto: cuda when a GPU is present and the GPU backend runs the "
          "other flags, else cpu)", {"auto", "cpu", "cuda"});
    f.add("profile", &o.profile, "cuda: a short run for Nsight: N steps (the schedule over N), steps 3..N between "
          "cudaProfilerStart/Stop (nsys profile --capture-range=cudaProfilerApi), NVTX ranges on every layer and op, "
          "no evaluation or samples (0: off)");
    f.add("threads", &o.threads, "CPU threads (0: OpenMP's default)");
    f.add("out", &o.out, "output directory: metrics.jsonl, loss.svg, checkpoints");
    f.add("log-every", &o.log_every, "print a step line every N steps");
    f.add("eval-every", &o.eval_every, "val loss every N steps (0: only at the end)");
    f.add("val-batches", &o.val_batches, "val batches per evaluation, at most the whole val split (0: none)");
    f.add("ckpt-every", &o.ckpt_every, "write DIR/latest.ckpt every N steps (0: only at the end)");
    f.add("ckpt-keep-every", &o.ckpt_keep_every, "also keep DIR/ckpt_step_NNNNNN.ckpt every N steps (0: never)");
    f.add("resume", &o.resume, "continue from a checkpoint: a file, DIR or DIR/latest");
    f.add("init-from", &o.init_from, "start from a Hugging Face LLaMA directory (config.json + safetensors) "
          "instead of the preset and a random init");
    f.add("sample-every", &o.sample_every, "print a sample every N steps (0: only at the end)");
    f.add("sample-tokens", &o.sample_tokens, "tokens per sample (0: no samples)");
    f.add("seed", &o.seed, "seed of the init, the data order and the samples");
    f.add("wtacrs", &o.wtacrs, "WTA-CRS: keep this fraction of rows for sampled weight gradients (0: off, exact)");
    f.add("wtacrs-layers", &o.wtacrs_layers, "Linears sampled by --wtacrs: comma list of attn-out, mlp, qkv, all, "
          "or q,k,v,o,gate,up,down");
    f.add("recompute", &o.recompute, "activation recomputation: none, or mlp (keep no gate/up per layer: the backward "
          "recomputes them, 2 of a layer's 7 products once more; same losses)");
}

void apply_checkpoint_flags(FlagSet& flags, const CheckpointInfo& info) {
    std::string seq = info.flag("seq");
    if (flags.was_set("seq") && !seq.empty()) {
        std::vector<std::pair<std::string, std::string>> now = flags.values();
        for (const auto& kv : now)
            LLMQ_CHECK(kv.first != "seq" || kv.second == seq,
                       "--seq %s differs from the checkpoint's %s (the data position counts windows of --seq)",
                       kv.second.c_str(), seq.c_str());
    }
    for (const auto& kv : info.flags)
        if (kv.first != "resume" && flags.has(kv.first) && !flags.was_set(kv.first)) flags.set(kv.first, kv.second);
}

ModelConfig model_config_for(const TrainOptions& o, int vocab_size) {
    ModelConfig c = ModelConfig::preset(o.model, vocab_size);
    if (o.dim > 0) c.dim = o.dim;
    if (o.ffn_dim > 0) c.ffn_dim = o.ffn_dim;
    if (o.n_layers > 0) c.n_layers = o.n_layers;
    if (o.n_heads > 0) c.n_heads = o.n_heads;
    if (o.n_kv_heads > 0) c.n_kv_heads = o.n_kv_heads;
    if (o.max_seq_len > 0) c.max_seq_len = o.max_seq_len;
    if (o.dim || o.ffn_dim || o.n_layers || o.n_heads || o.n_kv_heads) c.name = o.model + "-custom";
    c.validate();
    return c;
}

namespace {

void check_options(const TrainOptions& o) {
    LLMQ_CHECK(o.steps > 0, "--steps %d must be positive", o.steps);
    LLMQ_CHECK(o.batch > 0, "--batch %d must be positive", o.batch);
    LLMQ_CHECK(o.seq > 0, "--seq %d must be positive", o.seq);
    LLMQ_CHECK(o.grad_accum > 0, "--grad-accum %d must be positive", o.grad_accum);
    LLMQ_CHECK(o.lr > 0, "--lr %g must be positive", o.lr);
    LLMQ_CHECK(o.min_lr_ratio >= 0 && o.min_lr_ratio <= 1, "--min-lr-ratio %g must be in [0, 1]", o.min_lr_ratio);
    LLMQ_CHECK(o.warmup >= 0, "--warmup %d must not be negative", o.warmup);
    LLMQ_CHECK(o.weight_decay >= 0, "--weight-decay %g must not be negative", o.weight_decay);
    LLMQ_CHECK(o.threads >= 0, "--threads %d must not be negative", o.threads);
    check_method_options(o);  // --method and its flags (tools/train_method.h)
    LLMQ_CHECK(o.log_every > 0, "--log-every %d must be positive", o.log_every);
    for (auto [name, v] : {std::pair<const char*, int>{"eval-every", o.eval_every}, {"val-batches", o.val_batches},
                           {"ckpt-every", o.ckpt_every}, {"ckpt-keep-every", o.ckpt_keep_every},
                           {"sample-every", o.sample_every}, {"sample-tokens", o.sample_tokens}})
        LLMQ_CHECK(v >= 0, "--%s %d must not be negative", name, v);
    LLMQ_CHECK(o.wtacrs >= 0 && o.wtacrs <= 1, "--wtacrs %g must be in [0, 1] (0: off)", o.wtacrs);
    LLMQ_CHECK(o.recompute == "none" || o.recompute == "mlp", "--recompute '%s' is unknown (none, mlp)",
               o.recompute.c_str());
    LLMQ_CHECK(o.profile >= 0, "--profile %d must not be negative", o.profile);
    LLMQ_CHECK(o.profile == 0 || o.device == "cuda", "--profile %d needs --device cuda (it profiles the GPU backend)",
               o.profile);
    if (o.device == "cuda") {
        const std::string why = cuda_unsupported(o);
        LLMQ_CHECK(why.empty(), "--device cuda: %s; use --device cpu", why.c_str());
    }
}

// --wtacrs-layers as module short names (q,k,v,o,gate,up,down); an unknown name is an error naming the flag.
std::vector<std::string> wtacrs_modules(const std::string& spec) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= spec.size()) {
        size_t end = spec.find(',', start);
        if (end == std::string::npos) end = spec.size();
        std::string name = spec.substr(start, end - start);
        std::vector<std::string> add;
        if (name == "attn-out") add = {"o"};
        else if (name == "mlp") add = {"gate", "up", "down"};
        else if (name == "qkv") add = {"q", "k", "v"};
        else if (name == "all") add = {"q", "k", "v", "o", "gate", "up", "down"};
        else if (name == "q" || name == "k" || name == "v" || name == "o" || name == "gate" || name == "up" ||
                 name == "down") add = {name};
        else LLMQ_CHECK(false, "--wtacrs-layers: unknown layer '%s' (attn-out, mlp, qkv, all, q, k, v, o, gate, up, down)",
                        name.c_str());
        for (const std::string& a : add)
            if (std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
        start = end + 1;
    }
    return out;
}

// One WTA-CRS sampler per group of the --wtacrs-layers Linears that read one input -- the chosen ones of q,k,v
// (norm1), o (att), the chosen ones of gate,up (norm2), down (hidden) in each layer -- sharing one SampledRows, so
// that input's rows are kept once (layers/linear.h). Seeded from --seed and the group's first Linear; named by
// the group's Linears joined with '+' (the checkpoint's section names them).
NamedSamplers attach_wtacrs_samplers(Model& model, const TrainOptions& o, int T) {
    const std::vector<std::string> mods = wtacrs_modules(o.wtacrs_layers);
    const std::vector<std::vector<std::string>> groups = {{"q", "k", "v"}, {"o"}, {"gate", "up"}, {"down"}};
    // named_linears: per layer q,k,v,o,gate,up,down (then lm_head, never sampled); i numbers them in that order
    auto linears = named_linears(model);
    NamedSamplers samplers;
    for (size_t layer_start = 0; layer_start + 7 <= linears.size(); layer_start += 7)
        for (const std::vector<std::string>& group : groups) {
            std::vector<size_t> members;  // indices into linears
            for (size_t i = layer_start; i < layer_start + 7; i++) {
                const std::string& name = linears[i].first;
                std::string module = name.substr(name.rfind('.') + 1);  // q_proj -> q
                module = module.substr(0, module.find("_proj"));
                if (std::find(group.begin(), group.end(), module) != group.end() &&
                    std::find(mods.begin(), mods.end(), module) != mods.end())
                    members.push_back(i);
            }
            if (members.empty()) continue;
            const uint64_t seed = o.seed ^ (0xC2B2AE3D27D4EB4Full * (members[0] + 1));
            auto sampler = std::make_shared<WtaCrsSampler<float>>(o.wtacrs, seed, T);
            auto rows = std::make_shared<SampledRows<float>>();
            rows->readers = (int)members.size();
            std::string name = linears[members[0]].first;
            for (size_t m = 0; m < members.size(); m++) {
                Linear<float>* lin = linears[members[m]].second;
                lin->sampler = sampler;
                lin->kept_rows = rows;
                if (m > 0) name += "+" + linears[members[m]].first.substr(linears[members[m]].first.rfind('.') + 1);
            }
            samplers.emplace_back(name, sampler);
        }
    return samplers;
}

double available_memory_bytes() {
    std::ifstream in("/proc/meminfo");
    std::string key;
    double kb;
    while (in >> key >> kb) {
        if (key == "MemAvailable:") return kb * 1024.0;
        in.ignore(256, '\n');
    }
    return (double)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGE_SIZE);
}

void check_memory(const ModelConfig& c, const TrainOptions& o) {
    // params, grads, AdamW m and v (8-bit: ~2.03 bytes per parameter for both moments)
    double state = (8.0 + (o.optimizer == "adamw8bit" ? 2.04 : 8.0)) * c.num_params();
    // the activation plan of a training step, keeping every layer input (what WTA-CRS drops only lowers it)
    const std::vector<uint8_t> dropped(c.n_layers, o.recompute == "mlp" ? kDropGateUp : 0);
    // (on --device cuda the activations live on the GPU: ModelCuda checks them against its memory)
    double acts = o.device == "cuda" ? 0.0
                                     : (double)Activations<float>::bytes_for(c, o.batch, o.seq, dropped,
                                                                             kDefaultClassifierChunk);
    double avail = available_memory_bytes(), GiB = 1024.0 * 1024.0 * 1024.0;
    LLMQ_CHECK(state < avail, "--model %s: parameters, gradients and AdamW state need %.1f GiB, more than the %.1f GiB "
               "of memory available", o.model.c_str(), state / GiB, avail / GiB);
    LLMQ_CHECK(state + acts < avail,
               "--batch %d x --seq %d: activations need about %.1f GiB (+ %.1f GiB of parameters, gradients and "
               "AdamW), more than the %.1f GiB available; lower --batch (and raise --grad-accum) or --seq",
               o.batch, o.seq, acts / GiB, state / GiB, avail / GiB);
}

bool all_finite(const float* x, size_t n) {
    int bad = 0;
#pragma omp parallel for reduction(| : bad)
    for (size_t i = 0; i < n; i++) bad |= !std::isfinite(x[i]);
    return !bad;
}

// "nan", "inf" or "-inf": the first non-finite value of x (n), or "" when all are finite.
std::string first_non_finite(const float* x, size_t n) {
    if (all_finite(x, n)) return "";
    for (size_t i = 0; i < n; i++)
        if (!std::isfinite(x[i])) return std::isnan(x[i]) ? "nan" : x[i] > 0 ? "inf" : "-inf";
    return "";
}

// SIGINT / SIGTERM: the first sets the flag the loop polls between steps, the second exits at once.
volatile sig_atomic_t g_interrupt_signal = 0;

void on_interrupt(int sig) {
    if (g_interrupt_signal) _exit(130);
    g_interrupt_signal = sig;
    const char msg[] = "\ninterrupt: finishing the step and writing a checkpoint (again to quit at once)\n";
    ssize_t ignored = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)ignored;
}

// Installs on_interrupt for the lifetime of a train() call and restores the previous handlers after.
struct InterruptGuard {
    struct sigaction old_int {}, old_term {};
    InterruptGuard() {
        g_interrupt_signal = 0;
        struct sigaction sa {};
        sa.sa_handler = on_interrupt;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &old_int);
        sigaction(SIGTERM, &sa, &old_term);
    }
    ~InterruptGuard() {
        sigaction(SIGINT, &old_int, nullptr);
        sigaction(SIGTERM, &old_term, nullptr);
    }
};

std::unique_ptr<Tokenizer> load_tokenizer(const TrainOptions& o) {
    if (!o.vocab.empty()) return std::make_unique<Tokenizer>(Tokenizer::from_file(o.vocab));
    if (o.encoding.empty() || o.encoding == "none") return nullptr;
    return std::make_unique<Tokenizer>(Tokenizer::from_encoding(o.encoding));
}

}  // namespace

std::string describe_non_finite(Model& model, double loss) {
    std::vector<std::string> parts;
    if (!std::isfinite(loss)) {
        std::string s = format("loss is %g", loss);
        const Activations<float>& acts = model.core().activations();
        for (const ActivationTensor& t : acts.tensors)  // (gate and up hold gradients by now: not the forward's)
            if (!t.overwritten_by_backward && t.offset + t.size <= acts.buffer.size() &&
                !all_finite(acts.buffer.data() + t.offset, t.size)) {
                s += " (first non-finite activation: " + t.name + ")";
                break;
            }
        parts.push_back(s);
    }
    for (const ParamTensor& t : model.tensors()) {
        std::string kind = first_non_finite(model.params() + t.offset, t.size);
        if (!kind.empty()) {
            parts.push_back("parameter " + t.name + " is " + kind);
            break;
        }
    }
    for (size_t i = 0; i < model.tensors().size(); i++) {  // (with --layerwise only the held gradients)
        const ParamTensor& t = model.tensors()[i];
        const float* grad = model.core().grad_of(i);
        std::string kind = grad ? first_non_finite(grad, t.size) : "";
        if (!kind.empty()) {
            parts.push_back("gradient of " + t.name + " is " + kind);
            break;
        }
    }
    std::string out;
    for (const std::string& p : parts) out += (out.empty() ? "" : "; ") + p;
    return out;
}

TrainResult train(const TrainOptions& options, FILE* log) {
    check_options(options);
    TrainOptions o = options;
    if (o.profile > 0) {  // a short run for Nsight: nothing but training steps
        o.steps = std::min(o.steps, o.profile);
        o.eval_every = o.val_batches = o.ckpt_every = o.ckpt_keep_every = o.sample_every = o.sample_tokens = 0;
    }
    if (o.threads > 0) omp_set_num_threads(o.threads);
    const int B = o.batch, T = o.seq;
    TrainResult result;

    // ---- data, tokenizer, model shape
    CheckpointInfo ckpt;
    std::string ckpt_path;
    if (!o.resume.empty()) {
        ckpt_path = resolve_checkpoint_path(o.resume);
        ckpt = read_checkpoint_info(ckpt_path);
    }
    DataLoader train_data(o.data, "train", B, T, o.seed, /*shuffle=*/true);
    std::unique_ptr<DataLoader> val_data;
    if (o.val_batches > 0 && !DataLoader::find_shards(o.data, "val").empty())
        val_data = std::make_unique<DataLoader>(o.data, "val", B, T, o.seed, /*shuffle=*/false);
    std::unique_ptr<Tokenizer> tok = load_tokenizer(o);
    int vocab = train_data.vocab_size();
    if (tok) {
        LLMQ_CHECK(vocab == 0 || (uint32_t)vocab == tok->vocab_size(),
                   "--encoding %s has %u tokens but the shards of %s say %d: pass the tokenizer the shards came from "
                   "(--encoding or --vocab)", tok->name().c_str(), tok->vocab_size(), o.data.c_str(), vocab);
        vocab = (int)tok->vocab_size();
    }
    LLMQ_CHECK(vocab > 0, "%s: the shard headers do not give the vocabulary size; name the tokenizer (--encoding)",
               o.data.c_str());
    // the model's shape: the checkpoint's when resuming, else --init-from's config.json, else the preset's
    const bool init_from_hf = !o.init_from.empty() && ckpt_path.empty();
    ModelConfig cfg = !ckpt_path.empty() ? ckpt.config
                      : init_from_hf      ? read_hf_config(o.init_from)
                                          : model_config_for(o, vocab);
    if (init_from_hf) {
        LLMQ_CHECK(!(o.dim || o.ffn_dim || o.n_layers || o.n_heads || o.n_kv_heads),
                   "--init-from %s: the model's shape comes from its config.json; drop --dim, --ffn-dim, --n-layers, "
                   "--n-heads and --n-kv-heads", o.init_from.c_str());
        if (o.max_seq_len > 0) cfg.max_seq_len = o.max_seq_len;  // RoPE tables: no need for all of HF's positions
    }
    if (!ckpt_path.empty() && ckpt.flag("init-from").empty() && !ckpt.flags.empty()) {
        // a run from a preset: the shape flags (the checkpoint's unless given again) must still describe it
        ModelConfig want = model_config_for(o, cfg.vocab_size);
        LLMQ_CHECK(want.describe() == cfg.describe() && want.max_seq_len == cfg.max_seq_len,
                   "--resume %s: the checkpoint's model is %s, max_seq_len %d, but the flags describe %s, "
                   "max_seq_len %d (--model, --dim, ...)", ckpt_path.c_str(), cfg.describe().c_str(), cfg.max_seq_len,
                   want.describe().c_str(), want.max_seq_len);
    }
    if (!ckpt_path.empty() || init_from_hf)  // a vocabulary padded past the tokenizer's is fine; a smaller one not
        LLMQ_CHECK(vocab <= cfg.vocab_size, "%s: the model's vocabulary has %d tokens but the data (%s, %s) has %d",
                   init_from_hf ? ("--init-from " + o.init_from).c_str() : ("--resume " + ckpt_path).c_str(),
                   cfg.vocab_size, o.data.c_str(), tok ? tok->name().c_str() : "shard header", vocab);
    LLMQ_CHECK(T <= cfg.max_seq_len, "--seq %d is longer than the model's max_seq_len %d (--max-seq-len)", T,
               cfg.max_seq_len);
    check_memory(cfg, o);
    train_data.set_vocab_limit(vocab);
    if (val_data) val_data->set_vocab_limit(vocab);

    // ---- model, optimizer, state
    Model model(cfg, o.seed);
    if (init_from_hf) load_hf_weights(o.init_from, model);
    model.core().set_recompute_mlp(o.recompute == "mlp");
    OptimizerConfig ocfg;
    ocfg.lr = o.lr;
    ocfg.min_lr_ratio = o.min_lr_ratio;
    ocfg.warmup_steps = o.warmup;
    ocfg.total_steps = o.steps;
    ocfg.weight_decay = o.weight_decay;
    ocfg.grad_clip = o.grad_clip;
    ocfg.eight_bit = o.optimizer == "adamw8bit";
    // what trains and how it steps (tools/train_method.h): full, the lora family, galore, loqt
    TrainMethod method(model, o, &ocfg);
    Rng rng(o.seed);  // the training Rng (--lora-dropout draws its masks from it); checkpointed
    int64_t step = 0;
    CheckpointInfo resumed;  // with the state sections, WTA-CRS's restored once its samplers are set up
    if (!ckpt_path.empty()) {
        resumed = method.load(ckpt_path);  // a qlora base is quantized from the loaded, never trained, weights
        step = ckpt.state.step;
        train_data.set_position({ckpt.state.data_epoch, ckpt.state.data_index});
        rng.state = ckpt.state.rng_state;
        LLMQ_CHECK(step < o.steps, "%s: the checkpoint is at step %lld and --steps is %d: nothing left to do (raise "
                   "--steps)", ckpt_path.c_str(), (long long)step, o.steps);
    } else {
        method.start_fresh();
    }
    result.first_step = step;
    // WTA-CRS: one sampler per group of chosen Linears reading one input (wtacrs_samplers); their Rng and ||dY||
    // proxy are checkpointed (a "wtacrs" state section), so a resumed run draws the same rows
    NamedSamplers samplers = o.wtacrs > 0 ? attach_wtacrs_samplers(model, o, T) : NamedSamplers{};
    if (!ckpt_path.empty()) {
        const StateSection* wtacrs_state = resumed.section("wtacrs");
        LLMQ_CHECK(samplers.empty() || wtacrs_state, "%s: --wtacrs %g, but the checkpoint holds no WTA-CRS sampler "
                   "state (it was written without --wtacrs): resume with --wtacrs 0", ckpt_path.c_str(), o.wtacrs);
        if (!samplers.empty()) restore_wtacrs_state(samplers, wtacrs_state->bytes, ckpt_path.c_str());
    }
    const size_t wtacrs_count = samplers.size();
    // --device cuda: the GPU model trains; model and method stay its host mirror (tools/cuda_run.h)
    std::unique_ptr<CudaRun> gpu;
    if (o.device == "cuda") gpu = std::make_unique<CudaRun>(model, *method.model_optimizer(), o, step);
    MetricsLog metrics(o.out, ckpt_path.empty() ? -1 : step);
    FlagValues flag_values;
    {
        TrainOptions copy = o;
        FlagSet fs;
        add_train_flags(fs, copy);
        flag_values = fs.values();
    }

    if (gpu) fprintf(log, "device: cuda, %s: bf16 activations and weights, fp32 masters, gradients and AdamW\n",
                     gpu->device_name().c_str());
    fprintf(log, "model: %s\n", cfg.describe().c_str());
    fprintf(log, "train data: %s\n", train_data.description().c_str());
    fprintf(log, "val data: %s\n", val_data ? val_data->description().c_str() : "none (no *_val_*.bin shards)");
    fprintf(log, "tokenizer: %s, vocab %d\n", tok ? tok->name().c_str() : "none", vocab);
    fprintf(log, "batch %d x seq %d x grad-accum %d = %d tokens/step, %d steps, lr %g, %d threads\n", B, T,
            o.grad_accum, B * T * o.grad_accum, o.steps, o.lr, omp_get_max_threads());
    if (!ckpt_path.empty()) fprintf(log, "resumed from %s at step %lld\n", ckpt_path.c_str(), (long long)step);
    if (init_from_hf) fprintf(log, "initialised from %s\n", o.init_from.c_str());
    if (o.recompute == "mlp")
        fprintf(log, "recompute: mlp: gate and up are not kept per layer; the backward recomputes them\n");
    if (wtacrs_count)
        fprintf(log, "wtacrs: ratio %g on %s: weight gradients from %zu samples of rows (Linears reading one input "
                "share one); the inputs only they read are not kept (mem_activations counts the kept rows, "
                "wtacrs_kept_bytes alone)\n", o.wtacrs, o.wtacrs_layers.c_str(), wtacrs_count);

    std::vector<int> inputs((size_t)B * T), targets((size_t)B * T);
    int val_batch_count = 0;
    if (val_data) {
        // whole batches only, so no window counts twice (one wrapped batch when the split is shorter)
        uint64_t full = std::max<uint64_t>(1, val_data->num_windows() / B);
        val_batch_count = (int)std::min<uint64_t>(o.val_batches, full);
        // the entropy of the val targets' own unigram distribution: the best any context-free model can do
        std::vector<uint64_t> counts(vocab, 0);
        val_data->reset();
        for (int b = 0; b < val_batch_count; b++) {
            val_data->next_batch(inputs.data(), targets.data());
            for (int t : targets) counts[t]++;
        }
        double n = (double)val_batch_count * B * T, h = 0;
        for (uint64_t c : counts)
            if (c) h -= c / n * std::log(c / n);
        result.unigram_entropy = h;
        fprintf(log, "unigram entropy of val tokens: %.4f nats (%.0f tokens)\n", h, n);
    }
    auto evaluate = [&]() {
        double sum = 0;
        val_data->reset();
        for (int b = 0; b < val_batch_count; b++) {
            val_data->next_batch(inputs.data(), targets.data());
            sum += gpu ? gpu->evaluate_batch(inputs.data(), targets.data())
                       : model.forward(inputs.data(), targets.data(), B, T);
        }
        return sum / val_batch_count;
    };
    // DIR/latest.ckpt when `latest`, and a kept DIR/ckpt_step_N.ckpt at multiples of --ckpt-keep-every
    auto save = [&](int64_t at_step, bool latest) {
        if (!latest && !(o.ckpt_keep_every > 0 && at_step % o.ckpt_keep_every == 0)) return;
        if (gpu) gpu->sync_to_host();
        TrainState st{at_step, train_data.position().epoch, train_data.position().index, rng.state};
        std::vector<StateSection> sections;
        if (!samplers.empty()) sections.push_back({"wtacrs", wtacrs_state_bytes(samplers)});
        if (latest) method.save(o.out + "/latest.ckpt", st, flag_values, sections);
        if (o.ckpt_keep_every > 0 && at_step % o.ckpt_keep_every == 0)
            method.save(o.out + format("/ckpt_step_%06lld.ckpt", (long long)at_step), st, flag_values, sections);
    };
    auto sample = [&](int64_t at_step) {
        if (!tok || o.sample_tokens <= 0) return;
        if (gpu) gpu->sync_to_host();  // the CPU model samples
        int start = train_data.eot_id() >= 0 ? train_data.eot_id() : (int)tok->eot_id();
        Rng sample_rng(o.seed ^ (0x5A3C9E1Dull * (uint64_t)(at_step + 1)));
        SampleOptions so;
        so.tokens = o.sample_tokens;
        so.max_context = T;
        std::vector<uint32_t> ids = generate(model, {(uint32_t)start}, so, sample_rng);
        fprintf(log, "sample at step %lld:\n%s\n---\n", (long long)at_step, tok->decode(ids).c_str());
    };

    // ---- the loop
    const bool tty_bar = log == stdout && isatty(fileno(stderr));
    Progress bar("train", o.steps, Progress::Count, "step", log == stdout ? stderr : log);
    bar.update((double)step);
    // memory by component: weights, gradients, optimizer state (the method's), activations (+ layer scratch)
    method.describe(log);
    const MethodMemory held = gpu ? MethodMemory{gpu->weight_bytes(), gpu->gradient_bytes(), gpu->optimizer_bytes(), 0}
                                  : method.memory();
    const float micro_scale = 1.0f / o.grad_accum;
    InterruptGuard interrupt_guard;
    for (; step < o.steps; step++) {
        double t0 = now_seconds();
        if (gpu && o.profile > 0 && step == std::min<int64_t>(result.first_step + 2, o.steps - 1))
            gpu->profiler_range(true);  // after two warm-up steps
        double loss = 0;
        float norm = NAN;
        if (gpu) {
            gpu->zero_grad();
            for (int micro = 0; micro < o.grad_accum; micro++) {
                train_data.next_batch(inputs.data(), targets.data());
                loss += gpu->micro_batch(inputs.data(), targets.data());
            }
            norm = gpu->grad_norm();
        } else {
            method.zero_grad();
            method.begin_step((int)step);
            for (int micro = 0; micro < o.grad_accum; micro++) {
                train_data.next_batch(inputs.data(), targets.data());
                method.begin_micro_batch(rng);  // adapter dropout's masks
                loss += model.forward(inputs.data(), targets.data(), B, T);
                model.backward(micro_scale);
                method.end_micro_batch();
            }
        }
        loss /= o.grad_accum;
        const bool finite = std::isfinite(loss) && (gpu ? std::isfinite(norm) : method.grads_finite());
        const float lr = method.lr((int)step);
        if (!finite) {
            std::string what = gpu ? format("loss %g, gradient norm %g", loss, norm) : describe_non_finite(model, loss);
            LLMQ_CHECK(o.on_nan == "skip" && !method.merging(), "step %lld: %s; stopping (%s)", (long long)step + 1,
                       what.c_str(), method.merging() ? "a LoQT merge step's gradient sets the projections"
                                                      : "--on-nan skip skips such steps");
            fprintf(log, "step %lld: %s; skipping the update (--on-nan skip)\n", (long long)step + 1, what.c_str());
            result.skipped_steps++;
        }
        if (gpu) {
            if (finite) gpu->apply_update(step, lr, norm);
        } else {
            norm = method.finish_step((int)step, !finite, log);
        }
        double dt = now_seconds() - t0;
        double tokens_per_s = (double)B * T * o.grad_accum / dt;
        // activations include the Linears' scratch and WTA-CRS's kept rows (reported apart too)
        const size_t act_bytes = gpu ? gpu->activation_bytes() : model.activation_bytes();
        size_t kept = 0;
        for (auto& L : model.core().layers())
            for (const Linear<float>* lin : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) kept += lin->kept_sample_bytes();
        size_t mem = held.weights + held.grads + held.optimizer + act_bytes;
        if (step == result.first_step && (wtacrs_count || o.recompute != "none")) {
            // the same run keeping every input and recomputing nothing: the plan with nothing dropped, no kept rows
            const Activations<float>& plan = model.core().activations();
            const size_t plain = act_bytes - plan.bytes() - kept + Activations<float>::bytes_for(cfg, B, T, {},
                                                                                                 (int)plan.logit_rows);
            fprintf(log, "activations: %s, %.2fx less than the %s they would take without --wtacrs and --recompute\n",
                    human_bytes((double)act_bytes).c_str(), (double)plain / act_bytes, human_bytes((double)plain).c_str());
        }
        result.losses.push_back((float)loss);
        metrics.log({{"step", (double)step + 1}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm},
                     {"tokens_per_s", tokens_per_s}, {"mem_bytes", (double)mem},
                     {"mem_weights", (double)held.weights}, {"mem_grads", (double)held.grads},
                     {"mem_optimizer", (double)held.optimizer}, {"mem_activations", (double)act_bytes},
                     {"wtacrs_kept_bytes", (double)kept}, {"step_s", dt},
                     {"device_mem_peak", gpu ? (double)gpu->device_peak_bytes() : 0.0},
                     {"skipped", finite ? 0.0 : 1.0}});
        bar.update((double)step + 1);
        if ((step + 1) % o.log_every == 0 || step == result.first_step || step + 1 == o.steps) {
            if (tty_bar) fputs("\r\033[K", stderr);
            fprintf(log, "step %5lld/%d | loss %.4f | lr %.2e | norm %.3f | %.0f tok/s | mem %s%s | %.0f ms\n",
                    (long long)step + 1, o.steps, loss, lr, norm, tokens_per_s, human_bytes((double)mem).c_str(),
                    gpu ? (" (GPU peak " + human_bytes((double)gpu->device_peak_bytes()) + ")").c_str() : "", dt * 1e3);
            fflush(log);
        }
        bool last = step + 1 == o.steps;
        if (val_data && val_batch_count > 0 && o.eval_every > 0 && (step + 1) % o.eval_every == 0 && !last) {
            double vl = evaluate();
            metrics.log({{"step", (double)step + 1}, {"val_loss", vl}});
            metrics.write_plot("llmq " + cfg.name + ": loss");
            fprintf(log, "step %5lld/%d | val loss %.4f\n", (long long)step + 1, o.steps, vl);
        }
        if (o.sample_every > 0 && (step + 1) % o.sample_every == 0 && !last) sample(step + 1);
        if (!last && g_interrupt_signal) {
            save(step + 1, true);
            metrics.write_plot("llmq " + cfg.name + ": loss");
            bar.finish();
            fprintf(log, "interrupted at step %lld: checkpoint written to %s/latest.ckpt\n", (long long)step + 1,
                    o.out.c_str());
            result.interrupted = true;
            return result;
        }
        if (!last) save(step + 1, o.ckpt_every > 0 && (step + 1) % o.ckpt_every == 0);
    }
    bar.finish();
    if (gpu && o.profile > 0) gpu->profiler_range(false);

    // ---- the end: final evaluation, plot, checkpoint, sample
    if (val_data && val_batch_count > 0) {
        result.val_loss = evaluate();
        metrics.log({{"step", (double)o.steps}, {"val_loss", result.val_loss},
                     {"unigram_entropy", result.unigram_entropy}});
        fprintf(log, "final val loss %.4f nats, unigram entropy of val tokens %.4f nats: %.4f below\n",
                result.val_loss, result.unigram_entropy, result.unigram_entropy - result.val_loss);
    }
    metrics.write_plot("llmq " + cfg.name + ": loss");
    save(o.steps, true);
    fprintf(log, "wrote %s, %s/loss.svg, %s/latest.ckpt\n", metrics.path().c_str(), o.out.c_str(), o.out.c_str());
    if (method.adapter_fits_original_base()) {  // the adapters alone, as peft loads them onto the base model
        PeftExportOptions pe;
        pe.base_model_name_or_path = o.init_from;
        save_peft_adapter(o.out + "/adapter", model, pe);
        fprintf(log, "wrote %s/adapter (peft LoRA: adapter_model.safetensors, adapter_config.json)\n", o.out.c_str());
    } else if (method.has_adapters()) {
        fprintf(log, "no peft adapter written: the adapters alone on the original base would not give this model (the "
                "run changed the base or trained other tensors); ./convert llmq-to-hf %s/latest.ckpt DIR exports the "
                "merged model\n", o.out.c_str());
    }
    if (result.skipped_steps) fprintf(log, "skipped %d steps with a non-finite loss\n", result.skipped_steps);
    sample(o.steps);
    return result;
}

}  // namespace llmq
