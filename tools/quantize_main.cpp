// quantize: post-training quantization of a model's attention and MLP linears, with a per-layer error report and
// an optional bitsandbytes-layout safetensors file.
//
//   ./quantize --checkpoint out/latest.ckpt --format nf4 [--block 64] [--double-quant 1] [--out model-nf4.safetensors]
//   ./quantize --hf HF_DIR --format int4 --block 128 --method gptq --calib-data data/shards --calib-tokens 8192
//
// Methods (quant/):
//   rtn   round-to-nearest in the chosen format (formats.h): NF4/FP4 blocks over the flattened weight, INT4/3/2
//         groups along the input, symmetric or not;
//   gptq  GPTQ (gptq.h) from each layer's calibration statistics S = X^T X (calibration.h). As the reference
//         runs it, layers go in order: layer l is calibrated on the outputs of layers 0..l-1 already quantized
//         (attached to the model as quantized bases), its seven linears quantized from that one pass.
// With --calib-data (required by gptq, optional for rtn) every layer's output error on the calibration inputs
// X is reported as well, computed from S: ||X (W - deq Q)^T||_F^2 = tr(E S E^T), E = W - deq Q. For gptq the
// table also shows round-to-nearest's output error on the same X, the figure GPTQ is meant to lower.
//
// With --eval-data, the mean next-token loss on the first windows of that data's val split is measured before and
// after quantization (every quantized linear attached), the end-to-end figure the per-layer errors stand for.
//
// Embeddings, norms and lm_head are never quantized. --out writes the whole model in bitsandbytes' 4-bit layout
// (tools/bnb_safetensors.h; nf4/fp4 only); the unquantized tensors keep the source's dtype: F32 from an llmq
// checkpoint, the file's dtype (usually BF16) from an HF directory.
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../kernels/common.h"
#include "../layers/model_core.h"
#include "../quant/calibration.h"
#include "../quant/formats.h"
#include "../quant/gptq.h"
#include "../quant/quantized_weight.h"
#include "bnb_safetensors.h"
#include "checkpoint.h"
#include "dataloader.h"
#include "flags.h"
#include "hf_llama.h"
#include "hf_peft.h"
#include "progress.h"

using namespace llmq;

namespace {

const char* kUsage =
    "usage: ./quantize (--checkpoint FILE | --hf DIR) --format nf4|fp4|int4|int3|int2 [--block N] [--double-quant 1]\n"
    "                  [--symmetric 0] [--method rtn|gptq] [--calib-data DIR --calib-tokens N] [--eval-data DIR]\n"
    "                  [--out FILE.safetensors]\n"
    "Quantizes every attention and MLP linear (not embeddings, norms, lm_head) and prints one row per layer:\n"
    "  weight err  ||W - deq Q||_F / ||W||_F\n"
    "  output err  ||X (W - deq Q)^T||_F / ||X W^T||_F on the calibration inputs X of the layer (with --calib-data)\n"
    "  rtn out err the same for round-to-nearest (--method gptq)\n"
    "and with --eval-data the val loss before and after quantization.\n"
    "flags:\n";

struct Options {
    std::string checkpoint, hf, format = "nf4", method = "rtn", calib_data, calib_split = "train", eval_data, out;
    int block = 64, double_quant = 0, symmetric = 1, calib_seq = 0, act_order = 0, threads = 0;
    int64_t calib_tokens = 4096, eval_tokens = 16384;
    uint64_t seed = 1;
    float percdamp = 0.01f;
};

void add_flags(FlagSet& f, Options& o) {
    f.add("checkpoint", &o.checkpoint, "an llmq checkpoint to quantize: a file, DIR or DIR/latest");
    f.add("hf", &o.hf, "a Hugging Face LLaMA directory to quantize (config.json + safetensors)");
    f.add("format", &o.format, "the quantized format (quant/formats.h)", {"nf4", "fp4", "int4", "int3", "int2"});
    f.add("block", &o.block, "nf4/fp4: block over the flattened weight; int: group along the input (power of two >= 32)");
    f.add("double-quant", &o.double_quant, "1: quantize the nf4/fp4 absmax too (bnb's nested quantization)");
    f.add("symmetric", &o.symmetric, "int formats: 1 symmetric grid (implicit zero), 0 asymmetric (stored zero points)");
    f.add("method", &o.method, "round-to-nearest, or GPTQ from calibration statistics (needs --calib-data)",
          {"rtn", "gptq"});
    f.add("calib-data", &o.calib_data, "token shards for calibration: a directory, glob or prefix (tools/dataloader.h)");
    f.add("calib-split", &o.calib_split, "the split of --calib-data to draw from", {"train", "val"});
    f.add("calib-tokens", &o.calib_tokens, "calibration tokens in all");
    f.add("calib-seq", &o.calib_seq, "tokens per calibration sequence (0: min(512, the model's max_seq_len))");
    f.add("seed", &o.seed, "seed of the calibration windows' order");
    f.add("percdamp", &o.percdamp, "gptq: H += percdamp * mean(diag H) * I");
    f.add("act-order", &o.act_order, "gptq: 1 quantizes columns by decreasing diag H (static groups)");
    f.add("eval-data", &o.eval_data, "token shards whose val split measures the loss before and after quantization");
    f.add("eval-tokens", &o.eval_tokens, "evaluation tokens (whole windows of --calib-seq's length, from the start)");
    f.add("out", &o.out, "write the quantized model here in bitsandbytes' safetensors layout (nf4/fp4)");
    f.add("threads", &o.threads, "CPU threads (0: OpenMP's default)");
}

struct Loaded {
    std::unique_ptr<Model> model;
    Dtype dtype = Dtype::F32;  // the source's weight dtype
    std::string source;
};

Loaded load_model(const Options& o) {
    LLMQ_CHECK(o.checkpoint.empty() != o.hf.empty(), "give exactly one of --checkpoint FILE and --hf DIR (see --help)");
    Loaded l;
    if (!o.hf.empty()) {
        HfModel m = load_hf_llama(o.hf);
        l.model = std::move(m.model);
        l.dtype = m.dtype;
        l.source = o.hf;
        return l;
    }
    l.source = resolve_checkpoint_path(o.checkpoint);
    const CheckpointInfo info = read_checkpoint_info(l.source);
    LLMQ_CHECK(info.adapter_params == 0,
               "--checkpoint %s: the run trained LoRA adapters on a frozen base; quantize the merged model instead "
               "(./convert llmq-to-hf %s DIR, then ./quantize --hf DIR)", l.source.c_str(), l.source.c_str());
    l.model = std::make_unique<Model>(info.config, 0);
    load_checkpoint(l.source, *l.model, nullptr);
    return l;
}

// Every flag-level problem, before any work: one Error naming the flag.
QuantSpec checked_spec(const Options& o, Model& model) {
    QuantSpec spec;
    spec.format = parse_format(o.format, "--format");
    spec.block = o.block;
    spec.double_quant = o.double_quant != 0;
    spec.symmetric = o.symmetric != 0;
    LLMQ_CHECK(o.double_quant == 0 || o.double_quant == 1, "--double-quant %d must be 0 or 1", o.double_quant);
    LLMQ_CHECK(o.symmetric == 0 || o.symmetric == 1, "--symmetric %d must be 0 or 1", o.symmetric);
    LLMQ_CHECK(o.act_order == 0 || o.act_order == 1, "--act-order %d must be 0 or 1", o.act_order);
    LLMQ_CHECK(!spec.double_quant || !is_int_format(spec.format),
               "--double-quant 1: double quantization applies to nf4/fp4 only, not --format %s", o.format.c_str());
    LLMQ_CHECK(spec.symmetric || is_int_format(spec.format),
               "--symmetric 0: --format %s is symmetric by construction (asymmetric grids are for int formats)",
               o.format.c_str());
    const bool gptq = o.method == "gptq";
    LLMQ_CHECK(!gptq || !o.calib_data.empty(), "--method gptq needs calibration text: --calib-data DIR");
    LLMQ_CHECK(!gptq || !spec.double_quant, "--method gptq: --double-quant 1 would re-quantize the absmax GPTQ's "
               "error updates were computed for; drop it");
    LLMQ_CHECK(o.calib_tokens > 0, "--calib-tokens %lld must be positive", (long long)o.calib_tokens);
    LLMQ_CHECK(o.eval_tokens > 0, "--eval-tokens %lld must be positive", (long long)o.eval_tokens);
    LLMQ_CHECK(o.calib_seq >= 0 && o.calib_seq <= model.config().max_seq_len,
               "--calib-seq %d must be in [0, max_seq_len %d]", o.calib_seq, model.config().max_seq_len);
    LLMQ_CHECK(o.percdamp >= 0 && std::isfinite(o.percdamp), "--percdamp %g must be >= 0", o.percdamp);
    if (!o.out.empty()) check_bnb_spec(spec, "--out " + o.out);
    for (auto& [name, linear] : named_linears(model)) {
        if (linear == &model.core().lm_head()) continue;
        try {
            check_spec(spec, linear->out, linear->in);
        } catch (const Error& e) {
            throw Error(format("--block %d does not fit %s: %s", o.block, name.c_str(), e.what()));
        }
        LLMQ_CHECK(!gptq || is_int_format(spec.format) || linear->in % spec.block == 0,
                   "--method gptq --format %s: --block %d must divide the input width %d of %s (GPTQ's groups lie "
                   "in rows)", o.format.c_str(), o.block, linear->in, name.c_str());
    }
    return spec;
}

struct Row {
    std::string name, shape;
    int64_t weights = 0;
    size_t bytes = 0;
    double w_sq = 0, err_sq = 0;                 // ||W||^2, ||W - deq Q||^2
    double out_sq = -1, out_err_sq = 0, rtn_out_err_sq = -1;  // ||X W^T||^2, ||X E^T||^2 (-1: not computed)
};

std::string ratio(double num, double den) {
    return den > 0 ? format("%.5f", std::sqrt(num / den)) : "-";
}

void print_table(const std::vector<Row>& rows, bool calib, bool gptq) {
    printf("%-36s %11s %7s %11s", "module", "shape", "bits/w", "weight err");
    if (calib) printf(" %11s", "output err");
    if (gptq) printf(" %11s", "rtn out err");
    printf("\n");
    Row total;
    total.out_sq = total.rtn_out_err_sq = 0;
    for (const Row& r : rows) {
        printf("%-36s %11s %7.3f %11s", r.name.c_str(), r.shape.c_str(), 8.0 * r.bytes / r.weights,
               ratio(r.err_sq, r.w_sq).c_str());
        if (calib) printf(" %11s", ratio(r.out_err_sq, r.out_sq).c_str());
        if (gptq) printf(" %11s", ratio(r.rtn_out_err_sq, r.out_sq).c_str());
        printf("\n");
        total.weights += r.weights, total.bytes += r.bytes, total.w_sq += r.w_sq, total.err_sq += r.err_sq;
        total.out_sq += std::max(r.out_sq, 0.0), total.out_err_sq += r.out_err_sq;
        total.rtn_out_err_sq += std::max(r.rtn_out_err_sq, 0.0);
    }
    printf("%-36s %11s %7.3f %11s", format("total (%zu linears, pooled)", rows.size()).c_str(),
           human_count((double)total.weights, Progress::Count).c_str(), 8.0 * total.bytes / total.weights,
           ratio(total.err_sq, total.w_sq).c_str());
    if (calib) printf(" %11s", ratio(total.out_err_sq, total.out_sq).c_str());
    if (gptq) printf(" %11s", ratio(total.rtn_out_err_sq, total.out_sq).c_str());
    printf("\n");
}

// Mean next-token loss over the first windows of loader's split (the same windows every call).
double eval_loss(Model& model, DataLoader& loader, int64_t windows) {
    loader.reset();
    std::vector<int> inputs(loader.T()), targets(loader.T());
    double sum = 0;
    for (int64_t i = 0; i < windows; i++) {
        loader.next_batch(inputs.data(), targets.data());
        sum += model.forward(inputs.data(), targets.data(), 1, loader.T());
    }
    return sum / (double)windows;
}

// The modules of each transformer layer, in order: named_linears' names grouped by their "model.layers.N." prefix.
std::vector<std::vector<std::string>> modules_by_layer(Model& model) {
    std::vector<std::vector<std::string>> groups;
    std::string prefix;
    for (const std::string& name : attention_mlp_modules(model)) {
        const size_t dot = name.find('.', std::strlen("model.layers."));
        const std::string p = name.substr(0, dot);
        if (groups.empty() || p != prefix) groups.emplace_back(), prefix = p;
        groups.back().push_back(name);
    }
    return groups;
}

int run(const Options& o) {
    if (o.threads > 0) omp_set_num_threads(o.threads);
    Loaded src = load_model(o);
    Model& model = *src.model;
    const QuantSpec spec = checked_spec(o, model);
    const bool gptq = o.method == "gptq", calib = !o.calib_data.empty();
    printf("model: %s, from %s (%s)\n", model.config().describe().c_str(), src.source.c_str(), dtype_name(src.dtype));
    printf("quantizing to %s, block %d%s%s, method %s\n", o.format.c_str(), o.block,
           is_int_format(spec.format) ? (spec.symmetric ? ", symmetric" : ", asymmetric") : "",
           spec.double_quant ? ", double-quantized absmax" : "", o.method.c_str());

    const int seq = o.calib_seq > 0 ? o.calib_seq : std::min(512, model.config().max_seq_len);
    std::unique_ptr<DataLoader> eval;
    int64_t eval_windows = 0;
    double loss_before = 0;
    if (!o.eval_data.empty()) {
        try {
            eval = std::make_unique<DataLoader>(o.eval_data, "val", 1, seq, 0, /*shuffle=*/false);
            eval->set_vocab_limit(model.config().vocab_size);
        } catch (const Error& e) {
            throw Error(std::string("--eval-data: ") + e.what());
        }
        eval_windows = std::max<int64_t>(1, std::min<int64_t>(o.eval_tokens / seq, (int64_t)eval->num_windows()));
        loss_before = eval_loss(model, *eval, eval_windows);
    }
    CalibrationSet set;
    if (calib) {
        try {
            set = load_calibration_set(o.calib_data, o.calib_split, o.calib_tokens, seq, o.seed, model.config().vocab_size);
        } catch (const Error& e) {
            throw Error(std::string("--calib-data: ") + e.what());
        }
        printf("calibration: %lld tokens in %zu sequences of up to %d from %s (%s split); layers calibrated in order "
               "on the outputs of the quantized layers before them\n",
               (long long)set.tokens, set.sequences.size(), seq, o.calib_data.c_str(), o.calib_split.c_str());
    }
    GptqOptions gopt;
    gopt.percdamp = o.percdamp;
    gopt.act_order = o.act_order != 0;

    std::map<std::string, Linear<float>*> linear_of;
    for (auto& [name, linear] : named_linears(model)) linear_of[name] = linear;
    const std::vector<std::vector<std::string>> layers = modules_by_layer(model);
    size_t n_modules = 0;
    for (const auto& l : layers) n_modules += l.size();

    const double t0 = now_seconds();
    std::vector<Row> rows;
    std::map<std::string, QuantizedTensor> quantized;  // by tensor name, for --out
    {
        Progress bar("quantize", (double)n_modules, Progress::Count, "layers");
        for (const std::vector<std::string>& names : layers) {
            CalibrationHessians hs;
            if (calib) hs = calibrate_hessians(model, set, names);
            for (const std::string& name : names) {
                Linear<float>& L = *linear_of.at(name);
                const float* w = L.weight;
                const int64_t out = L.out, in = L.in, n = out * in;
                const std::vector<double> h = gptq ? hs.at(name).hessian() : std::vector<double>();
                QuantizedTensor q = quantize_rtn_or_gptq(w, out, in, spec, gptq ? &h : nullptr, gopt);
                std::vector<float> deq(n);
                dequantize_cpu(q, deq.data());
                Row r;
                r.name = name;
                r.shape = format("%lldx%lld", (long long)out, (long long)in);
                r.weights = n;
                r.bytes = tensor_bytes(q);
                r.w_sq = sq_distance(w, nullptr, n);
                r.err_sq = sq_distance(w, deq.data(), n);
                if (calib) {
                    const HessianAccumulator& acc = hs.at(name);
                    r.out_sq = calibrated_sq_norm(acc, w, nullptr, out, in);
                    r.out_err_sq = calibrated_sq_norm(acc, w, deq.data(), out, in);
                    if (gptq) {
                        std::vector<float> rtn(n);
                        dequantize_cpu(quantize_cpu(w, out, in, spec), rtn.data());
                        r.rtn_out_err_sq = calibrated_sq_norm(acc, w, rtn.data(), out, in);
                    }
                }
                rows.push_back(r);
                // the next layers' calibration sees this layer quantized, as in GPTQ's sequential pass
                attach_quantized_base(L, q);  // frozen (and nothing trains here)
                if (!o.out.empty()) quantized.emplace(name + ".weight", std::move(q));
                bar.add(1);
            }
        }
        bar.finish();
    }
    print_table(rows, calib, gptq);
    printf("%zu linears quantized in %.1f s\n", rows.size(), now_seconds() - t0);
    if (eval) {
        const double after = eval_loss(model, *eval, eval_windows);
        printf("val loss on %lld tokens of %s: %.4f before, %.4f quantized (%+.4f nats)\n",
               (long long)(eval_windows * seq), o.eval_data.c_str(), loss_before, after, after - loss_before);
    }
    if (!o.out.empty()) {
        save_bnb_model(o.out, model, quantized, src.dtype);
        printf("wrote %s (bitsandbytes %s layout; other tensors %s)\n", o.out.c_str(), o.format.c_str(),
               dtype_name(src.dtype));
    }
    LLMQ_CHECK(fflush(stdout) == 0, "stdout: write failed: %s", strerror(errno));
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    FlagSet flags;
    add_flags(flags, o);
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("%s%s", kUsage, flags.help().c_str());
            return 0;
        }
    try {
        LLMQ_CHECK(argc > 1, "no model given: --checkpoint FILE or --hf DIR (see --help)");
        flags.parse(argc, argv, 1);
        return run(o);
    } catch (const std::exception& e) {
        fflush(stdout);
        fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
