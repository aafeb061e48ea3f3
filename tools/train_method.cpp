// train_method.cpp: each --method's parts, optimizer step, checkpoint state and report (see train_method.h).
#include "train_method.h"

#include <cmath>

#include "../adapters/galore.h"
#include "../adapters/lora.h"
#include "../adapters/lora_init.h"
#include "../adapters/loqt.h"
#include "../adapters/relora.h"
#include "../adapters/switchlora.h"
#include "../kernels/adamw.h"
#include "../kernels/common.h"
#include "../layers/model_core.h"
#include "../quant/calibration.h"
#include "../quant/quantized_weight.h"
#include "flags.h"
#include "hf_peft.h"

namespace llmq {

namespace {

bool is_lora_family(const std::string& m) { return m == "lora" || m == "qlora" || m == "relora" || m == "switchlora"; }
bool is_loqt(const std::string& m) { return m == "loqt" || m == "loqt-nq"; }

bool finite(const float* x, size_t n) { return std::isfinite(sum_squares_cpu(x, n)); }  // NaN and inf propagate

// The model's quantized bases, by HF module name (the Linears whose quant slot holds quant/'s format).
std::vector<std::pair<std::string, const QuantizedTensor*>> quantized_bases(Model& model) {
    std::vector<std::pair<std::string, const QuantizedTensor*>> bases;
    for (auto& [name, lin] : named_linears(model))
        if (auto* q = dynamic_cast<const FormatQuantizedWeight*>(lin->quant.get())) bases.emplace_back(name, &q->tensor());
    return bases;
}

ReloraOptions relora_options(const TrainOptions& o) { return {o.relora_every, o.relora_rewarmup, o.relora_prune}; }

LoqtOptions loqt_options(const TrainOptions& o) {
    LoqtOptions lo;
    lo.rank = o.rank, lo.alpha = method_alpha(o);
    lo.quantize_base = o.method == "loqt";
    lo.base_spec.block = o.quant_block;
    lo.base_spec.double_quant = o.double_quant != 0;
    lo.quantize_p = o.loqt_quant_p != 0;
    lo.ec_iters = o.loqt_ec_iters;
    lo.tau = o.loqt_tau, lo.psi = o.loqt_psi, lo.total_steps = o.steps;
    return lo;
}

// What a LoQT run trains and holds, in one line.
void log_loqt_setup(FILE* log, const LoqtAdapters& q, const std::string& method, size_t model_params) {
    const LoqtOptions& lo = q.options();
    std::vector<int> merges;
    for (int s : loqt_merge_schedule(lo.tau, lo.psi, lo.total_steps))
        if (loqt_merges_at(lo, s)) merges.push_back(s);
    std::string list;
    for (size_t i = 0; i < merges.size() && i < 6; i++) list += (i ? "," : "") + std::to_string(merges[i]);
    if (merges.size() > 6) list += ",...";
    const int a_frozen = q.count_p_is_A();
    const std::string base = lo.quantize_base ? format("NF4 block %d%s", lo.base_spec.block,
                                                       lo.base_spec.double_quant ? " double-quantized" : "")
                                              : "fp32";
    fprintf(log, "method %s: rank %d, s = alpha = %g on %zu Linears, base %s; trains B (out,r) of %d Linears (in <= "
            "out, A frozen) and A (r,in) of %d (out < in, B frozen): %zu factor parameters, plus %zu embedding, norm and "
            "lm_head parameters (%.2f%% of the model's %zu); frozen P %s (%s); weights: base codes and scales %s, "
            "factors %s; merges at 0-based steps %s (%zu in %d steps), error compensation %d iterations\n",
            method.c_str(), lo.rank, lo.alpha, q.num_wrapped(), base.c_str(), a_frozen, (int)q.num_wrapped() - a_frozen,
            q.num_params(), q.num_model_trained(), 100.0 * (q.num_params() + q.num_model_trained()) / model_params,
            model_params, lo.quantize_p ? "NF4" : "fp32", human_bytes((double)q.frozen_bytes()).c_str(),
            human_bytes((double)q.base_bytes()).c_str(), human_bytes(4.0 * q.num_params() + q.frozen_bytes()).c_str(),
            list.c_str(), merges.size(), lo.total_steps, lo.quantize_base ? lo.ec_iters : 0);
}

}  // namespace

void check_method_options(const TrainOptions& o) {
    LLMQ_CHECK(o.method != "full" || o.weights == "bf16",
               "--weights %s: a quantized base is frozen, so --method full would train nothing of it; use --method "
               "qlora (or lora)", o.weights.c_str());
    LLMQ_CHECK(o.double_quant == 0 || o.double_quant == 1, "--double-quant %d must be 0 or 1", o.double_quant);
    LLMQ_CHECK(o.method != "relora" || o.weights == "bf16",
               "--method relora merges the adapters into the base, which needs it unquantized: drop --weights %s",
               o.weights.c_str());
    LLMQ_CHECK(o.method != "galore" || (o.weights == "bf16" && o.optimizer == "adamw"),
               "--method galore trains every weight with fp32 projected moments: %s", o.weights != "bf16" ?
               "a quantized base (--weights) is frozen; drop --weights" : "8-bit GaLore states are not implemented; "
               "use --optimizer adamw");
    LLMQ_CHECK(o.galore_every > 0 && o.galore_scale > 0, "--galore-every %d and --galore-scale %g must be positive",
               o.galore_every, o.galore_scale);
    LLMQ_CHECK(!is_loqt(o.method) || o.weights == "bf16", "--method %s keeps its own base (loqt: NF4 with --quant-block and "
               "--double-quant; loqt-nq: fp32): drop --weights %s", o.method.c_str(), o.weights.c_str());
    LLMQ_CHECK(o.loqt_tau > 0, "--loqt-tau %d must be positive", o.loqt_tau);
    LLMQ_CHECK(o.loqt_psi > 0, "--loqt-psi %g must be positive", o.loqt_psi);
    LLMQ_CHECK(o.loqt_quant_p == 0 || o.loqt_quant_p == 1, "--loqt-quant-p %d must be 0 or 1", o.loqt_quant_p);
    LLMQ_CHECK(o.loqt_ec_iters >= 0, "--loqt-ec-iters %d must not be negative", o.loqt_ec_iters);
    LLMQ_CHECK(o.rank > 0, "--rank %d must be positive", o.rank);
    LLMQ_CHECK(o.alpha >= 0, "--alpha %g must not be negative (0: the method's default)", o.alpha);
    LLMQ_CHECK(o.lora_dropout >= 0 && o.lora_dropout < 1, "--lora-dropout %g must lie in [0, 1)", o.lora_dropout);
    LLMQ_CHECK(o.lora_dropout == 0 || o.wtacrs == 0, "--lora-dropout %g with --wtacrs %g is not supported (the sampled "
               "rows would need the dropped input): drop one", o.lora_dropout, o.wtacrs);
    const bool quantized_lora = (o.method == "lora" && o.weights != "bf16") || o.method == "qlora";
    LLMQ_CHECK((o.init == "plain" && o.quantizer == "rtn") || quantized_lora, "--init %s --quantizer %s start adapters "
               "on a quantized base: use --method qlora (or lora with --weights)", o.init.c_str(), o.quantizer.c_str());
    LLMQ_CHECK(o.train_rest == 0 || o.train_rest == 1, "--train-rest %d must be 0 or 1", o.train_rest);
    LLMQ_CHECK(o.layerwise == 0 || o.layerwise == 1, "--layerwise %d must be 0 or 1", o.layerwise);
    LLMQ_CHECK(!o.layerwise || o.method == "full", "--layerwise 1 is for --method full (got --method %s)",
               o.method.c_str());
    LLMQ_CHECK(!o.layerwise || (o.grad_clip == 0 && o.grad_accum == 1 && o.on_nan == "stop"),
               "--layerwise 1 updates each layer during the backward, before the other gradients exist: it needs "
               "--grad-clip 0 (a global norm needs every gradient first), --grad-accum 1 and --on-nan stop (an "
               "updated layer cannot be skipped); got --grad-clip %g --grad-accum %d --on-nan %s", o.grad_clip,
               o.grad_accum, o.on_nan.c_str());
    LLMQ_CHECK(!o.train_rest || is_lora_family(o.method),
               "--train-rest 1 is for --method lora, qlora, relora, switchlora (full, galore and loqt train those "
               "tensors anyway)");
    LLMQ_CHECK(o.calib_tokens > 0, "--calib-tokens %d must be positive", o.calib_tokens);
    LLMQ_CHECK(o.init_compare == 0 || o.init_compare == 1, "--init-compare %d must be 0 or 1", o.init_compare);
    LLMQ_CHECK(o.method != "switchlora" || (o.weights == "bf16" && o.optimizer == "adamw"),
               "--method switchlora folds every switch into an fp32 base with fp32 moments: %s",
               o.weights != "bf16" ? "drop --weights" : "use --optimizer adamw");
    LLMQ_CHECK(o.switch_interval > 0 && o.switch_freeze >= 0, "--switch-interval %d must be positive and "
               "--switch-freeze %d not negative", o.switch_interval, o.switch_freeze);
    LLMQ_CHECK(o.relora_every > 0, "--relora-every %d must be positive", o.relora_every);
    LLMQ_CHECK(o.relora_rewarmup >= 0, "--relora-rewarmup %d must not be negative", o.relora_rewarmup);
    LLMQ_CHECK(o.relora_prune >= 0 && o.relora_prune <= 1, "--relora-prune %g must lie in [0, 1]", o.relora_prune);
}

float method_alpha(const TrainOptions& o) {
    if (o.alpha > 0) return o.alpha;
    return is_loqt(o.method) ? 0.5f : o.method == "switchlora" ? 1.0f : 16.0f;
}

TrainMethod::TrainMethod(Model& model, const TrainOptions& o, const OptimizerConfig* optimizer)
    : model_(model), o_(o) {
    if (optimizer) ocfg_ = *optimizer;
    if (is_lora_family(o.method))
        lora_ = std::make_unique<LoraAdapters>(
            model, LoraOptions{o.rank, method_alpha(o), o.lora_targets, o.lora_dropout, o.train_rest != 0},
            o.seed ^ 0x10A4ull);
    else if (is_loqt(o.method))
        loqt_ = std::make_unique<LoqtAdapters>(model, loqt_options(o));  // wraps (and in loqt quantizes) the Linears
    if (!optimizer) return;
    if (o.method == "switchlora") {  // re-initialises A, B and the bases (W0 - s B A: the outputs do not move)
        SwitchLoraOptions so;
        so.total_steps = o.steps;
        so.interval0 = (float)o.switch_interval;
        so.freeze_steps = o.switch_freeze;
        so.seed = o.seed ^ 0x5A17C4ull;
        OptimizerConfig c = ocfg_;
        if (o.train_rest) c.grad_clip = 0;  // clip_jointly clips the adapters and the rest by one norm
        switch_ = std::make_unique<SwitchLora>(*lora_, so, c);
    } else if (lora_) {
        OptimizerConfig c = ocfg_;
        if (o.train_rest) c.grad_clip = 0;  // joint_step clips the adapters and the rest by one norm
        trained_opt_ = std::make_unique<AdamW>(c, lora_->tensors());
    } else if (loqt_) {
        OptimizerConfig c = ocfg_;
        c.grad_clip = 0;  // loqt_optimizer_step clips the factors and the unwrapped tensors by one norm
        trained_opt_ = std::make_unique<AdamW>(c, loqt_->tensors());
        model_opt_ = loqt_model_optimizer(*loqt_, c);
    } else if (o.method == "galore") {
        galore_ = std::make_unique<GaloreOptimizer>(ocfg_, GaloreOptions{o.rank, o.galore_every, o.galore_scale},
                                                    model.tensors());
    } else {
        model_opt_ = std::make_unique<AdamW>(ocfg_, model.tensors());
        if (o.layerwise)  // the layer Linears' updates, during the backward (the rest in finish_step)
            model.core().set_layerwise_update([this](size_t i, float* w, const float* g, size_t n) {
                const double sum_squares = sum_squares_cpu(g, n);
                if (!std::isfinite(sum_squares)) {  // not applied; grads_finite says so, the run stops (--on-nan stop)
                    layerwise_non_finite_ = true;
                    return;
                }
                layerwise_sum_squares_ += sum_squares;
                model_opt_->update_tensor(i, w, g, layerwise_step_);
            });
    }
    if (lora_ && o.train_rest) {
        for (const ParamTensor& t : model.tensors())
            if (!is_attention_mlp_weight(t)) rest_.push_back(t);
        OptimizerConfig c = ocfg_;
        c.grad_clip = 0;
        model_opt_ = std::make_unique<AdamW>(c, rest_);  // (LoraAdapters left lm_head its gradient)
    }
}

TrainMethod::~TrainMethod() = default;

float* TrainMethod::trained_params() const {
    return lora_ ? lora_->params() : loqt_ ? loqt_->params() : nullptr;
}

size_t TrainMethod::trained_count() const {
    return lora_ ? lora_->num_params() : loqt_ ? loqt_->num_params() : 0;
}

bool TrainMethod::has_adapters() const { return lora_ || loqt_; }

bool TrainMethod::adapter_fits_original_base() const {
    return (o_.method == "lora" || o_.method == "qlora") && o_.init != "loftq" && o_.quantizer == "rtn" &&
           !o_.train_rest;
}

CheckpointInfo TrainMethod::load(const std::string& path) {
    const CheckpointInfo header = read_checkpoint_info(path);
    const std::string written_by = header.flag("method", "full");
    LLMQ_CHECK(header.flags.empty() || written_by == o_.method,
               "%s: written by --method %s, but this run is --method %s: a checkpoint resumes (or loads) only as the "
               "method that wrote it", path.c_str(), written_by.c_str(), o_.method.c_str());
    AdapterSection section{trained_params(), trained_count(), trained_opt_.get()};
    CheckpointInfo info = load_checkpoint(path, model_, model_opt_.get(), trained_count() ? &section : nullptr);
    auto state_of = [&](const char* name, const char* what) {
        const StateSection* s = info.section(name);
        LLMQ_CHECK(s, "%s: --method %s, but the checkpoint holds no %s state section", path.c_str(), o_.method.c_str(),
                   what);
        return s;
    };
    if (galore_) {
        const StateSection* s = state_of("galore", "GaLore");
        galore_->deserialize(s->bytes.data(), s->bytes.size(), path.c_str());
    }
    if (loqt_) loqt_->deserialize(state_of("loqt", "LoQT")->bytes, path.c_str());
    if (switch_) {
        const StateSection* s = state_of("switchlora", "SwitchLoRA");
        switch_->deserialize(s->bytes.data(), s->bytes.size(), path.c_str());
    }
    quantize_base(&info, path);
    return info;
}

void TrainMethod::start_fresh() { quantize_base(nullptr, ""); }

void TrainMethod::quantize_base(const CheckpointInfo* resumed, const std::string& path) {
    if (loqt_) {  // LoQT quantized its own bases when it wrapped the Linears (or took them from the checkpoint)
        quant_bytes_ = loqt_->base_bytes();
        base_format_ = loqt_->options().quantize_base ? "nf4" : "bf16";
        return;
    }
    const std::string weights = o_.method == "qlora" && o_.weights == "bf16" ? "nf4" : o_.weights;
    if (weights == "bf16" || quant_bytes_) return;
    QuantSpec spec;
    spec.format = parse_format(weights, "--weights");
    spec.block = o_.quant_block;
    spec.double_quant = o_.double_quant != 0;
    base_format_ = weights;
    // plain + round-to-nearest codes follow from the fp32 weights alone; the others need their checkpoint copy
    base_in_section_ = o_.init != "plain" || o_.quantizer != "rtn";
    if (resumed && base_in_section_) {
        const StateSection* s = resumed->section("quantized_base");
        LLMQ_CHECK(s, "%s: --init %s --quantizer %s, but the checkpoint holds no quantized_base section", path.c_str(),
                   o_.init.c_str(), o_.quantizer.c_str());
        restore_quantized_base(s->bytes, path.c_str());
    } else if (!base_in_section_) {
        quant_bytes_ = quantize_model_linears(model_, spec);
    } else {
        LLMQ_CHECK(lora_, "--init %s needs adapters (--method lora or qlora)", o_.init.c_str());
        const int vocab = model_.config().vocab_size;
        CalibrationSet set = load_calibration_set(o_.data, "train", o_.calib_tokens, o_.seq, o_.seed ^ 0xCA11Bull, vocab);
        CalibrationHessians h = calibrate_hessians(model_, set, attention_mlp_modules(model_));
        LoraInitOptions io;
        io.init = parse_lora_init(o_.init, "--init");
        io.gptq = o_.quantizer == "gptq";
        io.compare = o_.init_compare != 0;
        init_report_ = init_adapters_for_quantized_base(model_, *lora_, spec, io, &h);
        for (auto& [name, q] : quantized_bases(model_)) quant_bytes_ += tensor_bytes(*q);
    }
}

// "quantized_base" section: u32 count, then per quantized Linear: str name, the tensor (quant/quantized_weight.h)
std::vector<uint8_t> TrainMethod::quantized_base_bytes() const {
    StateWriter w;
    const auto bases = quantized_bases(model_);
    w.put<uint32_t>((uint32_t)bases.size());
    for (auto& [name, q] : bases) {
        w.put_str(name);
        put_quantized_tensor(w, *q);
    }
    return w.bytes;
}

void TrainMethod::restore_quantized_base(const std::vector<uint8_t>& bytes, const char* what) {
    StateReader r(bytes, what, "quantized base");
    const uint32_t n = r.get<uint32_t>();
    auto linears = named_linears(model_);
    LLMQ_CHECK(n <= linears.size(), "%s: quantized base of %u Linears, the model has %zu", what, n, linears.size());
    for (uint32_t i = 0; i < n; i++) {
        const std::string name = r.get_str();
        Linear<float>* lin = nullptr;
        for (auto& [lname, l] : linears)
            if (lname == name) lin = l;
        LLMQ_CHECK(lin, "%s: quantized base of '%s', which this model does not have", what, name.c_str());
        quant_bytes_ += attach_quantized_base(*lin, get_quantized_tensor(r, name));
    }
    r.expect_end();
}

void TrainMethod::save(const std::string& path, const TrainState& state, const FlagValues& flags,
                       std::vector<StateSection> extra) const {
    AdapterSection section{trained_params(), trained_count(), trained_opt_.get()};
    if (galore_) extra.push_back({"galore", galore_->serialize()});
    if (loqt_) extra.push_back({"loqt", loqt_->serialize()});
    if (switch_) extra.push_back({"switchlora", switch_->serialize()});
    if (base_in_section_) extra.push_back({"quantized_base", quantized_base_bytes()});
    save_checkpoint(path, model_, model_opt_.get(), state, flags, trained_count() ? &section : nullptr, extra);
}

MethodMemory TrainMethod::memory() const {
    MethodMemory m;
    const size_t P = model_.num_params();
    // LoQT holds its trained and frozen factors in fp32 (the frozen ones NF4-rounded with --loqt-quant-p)
    const size_t adapters = lora_ ? 4 * lora_->num_params() : loqt_ ? 4 * (loqt_->num_params() + loqt_->num_frozen()) : 0;
    m.weights = 4 * P + quant_bytes_ + adapters;
    m.grads = model_.core().gradient_bytes() + 4 * trained_count();  // (--layerwise: the compact buffer + scratch)
    for (const AdamW* opt : {model_opt_.get(), trained_opt_.get()})
        if (opt) m.optimizer += opt->state_bytes();
    if (galore_) m.optimizer += galore_->state_bytes();
    if (switch_) {  // the candidate pools are weights in waiting; the rest of its state is the optimizer's
        m.weights += switch_->pool_bytes();
        m.optimizer += switch_->state_bytes() - switch_->pool_bytes();
    }
    size_t rest = 0;
    for (const ParamTensor& t : rest_) rest += t.size;
    m.trained_params = lora_ ? lora_->num_params() + rest : loqt_ ? loqt_->num_params() + loqt_->num_model_trained() : P;
    return m;
}

void TrainMethod::describe(FILE* log) const {
    if (quant_bytes_ && !loqt_)
        fprintf(log, "base weights: %s, block %d%s: %s of codes and scales\n", base_format_.c_str(), o_.quant_block,
                o_.double_quant ? ", double-quantized absmax" : "", human_bytes((double)quant_bytes_).c_str());
    const size_t P = model_.num_params();
    if (lora_) {
        const size_t trained = memory().trained_params;
        fprintf(log, "method %s: rank %d, alpha %g on %s: %zu trainable parameters%s (%.2f%% of the model's %zu)\n",
                o_.method.c_str(), o_.rank, method_alpha(o_), o_.lora_targets.c_str(), trained,
                rest_.empty() ? "" : " (adapters, embeddings, norms and lm_head)", 100.0 * trained / P, P);
    }
    if (loqt_) log_loqt_setup(log, *loqt_, o_.method, P);
    if (galore_) fprintf(log, "%s\n", galore_->describe().c_str());
    if (switch_) fprintf(log, "%s\n", switch_->describe().c_str());
    if (o_.layerwise)
        fprintf(log, "layerwise: each layer Linear's weight is updated during the backward from a shared scratch; "
                "gradients held for the embeddings, norms (and lm_head) only: %s instead of %s\n",
                human_bytes((double)model_.core().gradient_bytes()).c_str(), human_bytes(4.0 * P).c_str());
    if (!init_report_.empty()) {
        // per layer: ||W - deq Q - s B A|| / ||W|| and the calibrated ||X (deq Q + s B A - W)^T|| / ||X W^T||
        fprintf(log, "init %s (%s %s, %d calibration tokens): relative weight error, calibrated output error of plain / "
                "loftq / cloq (-: not computed; --init-compare 1 computes all)\n", o_.init.c_str(), o_.quantizer.c_str(),
                base_format_.c_str(), o_.calib_tokens);
        auto cell = [](double v) { return v < 0 ? std::string("-") : format("%.4f", v); };
        for (const LoraInitReport& r : init_report_)
            fprintf(log, "  %-40s weight %.4f  calibrated %s / %s / %s\n", r.name.c_str(), r.weight_rel,
                    cell(r.plain).c_str(), cell(r.loftq).c_str(), cell(r.cloq).c_str());
    }
    const MethodMemory m = memory();
    fprintf(log, "memory: weights %s, gradients %s, optimizer state %s (%s, %.2f bytes per trained parameter)\n",
            human_bytes((double)m.weights).c_str(), human_bytes((double)m.grads).c_str(),
            human_bytes((double)m.optimizer).c_str(), galore_ ? "galore" : o_.optimizer.c_str(),
            (double)m.optimizer / m.trained_params);
}

void TrainMethod::zero_grad() {
    model_.zero_grad();
    if (lora_) lora_->zero_grad();
    if (loqt_) loqt_->zero_grad();
}

void TrainMethod::begin_step(int step) {
    layerwise_step_ = step, layerwise_sum_squares_ = 0, layerwise_non_finite_ = false;
    if (loqt_ && loqt_->merges_at(step)) loqt_->begin_merge();  // this step's gradient gives the new projections
}

void TrainMethod::begin_micro_batch(Rng& rng) {
    if (lora_ && o_.lora_dropout > 0) lora_->set_dropout_seed(rng.next_u64() | 1);
}

void TrainMethod::end_micro_batch() {
    if (lora_) lora_->set_dropout_seed(0);
}

bool TrainMethod::merging() const { return loqt_ && loqt_->merging(); }

bool TrainMethod::grads_finite() const {
    if (lora_ && rest_.empty()) return finite(lora_->grads(), lora_->num_params());
    // the model's gradient buffer as held (--layerwise: the compact one; its layer Linears' were checked as they came)
    const bool model_finite = !layerwise_non_finite_ && finite(model_.grads(), model_.core().num_grads());
    if (lora_) return finite(lora_->grads(), lora_->num_params()) && model_finite;
    return model_finite && (!loqt_ || finite(loqt_->grads(), loqt_->num_params()));
}

float TrainMethod::lr(int step) const {
    return lr_at_step(ocfg_, step) * (o_.method == "relora" ? relora_lr_scale(relora_options(o_), step) : 1.0f);
}

float TrainMethod::finish_step(int step, bool skip, FILE* log) {
    LLMQ_CHECK(model_opt_ || trained_opt_ || galore_ || switch_, "TrainMethod: built without an optimizer (inference "
               "only)");
    const ReloraOptions relora = relora_options(o_);
    if (o_.method == "relora")
        for (AdamW* opt : {trained_opt_.get(), model_opt_.get()})
            if (opt) opt->set_lr_scale(relora_lr_scale(relora, step));
    float norm = NAN;
    if (skip) {
        LLMQ_CHECK(!merging(), "step %d: non-finite gradients at a LoQT merge step, whose gradient sets the "
                   "projections; stopping", step + 1);
    } else if (merging()) {
        const LoqtMergeReport mr = loqt_->finish_merge();
        if (loqt_->options().quantize_base)
            fprintf(log, "step %d: loqt merged and re-projected %d Linears; NF4 reconstruction error %.3f%% of ||W|| "
                    "(%.3f%% without compensation); no update this step\n", step + 1, mr.layers, 100 * mr.rel_error,
                    100 * mr.rel_error_plain);
        else
            fprintf(log, "step %d: loqt merged and re-projected %d Linears; no update this step\n", step + 1, mr.layers);
    } else if (loqt_) {
        norm = loqt_optimizer_step(*loqt_, model_, *trained_opt_, *model_opt_, o_.grad_clip, step);
    } else if (galore_) {
        norm = galore_->step(model_, step);
    } else if (switch_) {  // the switches come after clipping, before the update, as the authors' loop does them
        if (!rest_.empty())
            norm = clip_jointly({{nullptr, lora_->params(), lora_->grads(), lora_->num_params(), &lora_->tensors()},
                                 {nullptr, model_.params(), model_.grads(), model_.num_params(), &rest_}},
                                o_.grad_clip, step);
        switch_->switch_vectors(step);
        const float adapter_norm = switch_->step(step);
        if (rest_.empty()) norm = adapter_norm;
        else model_opt_->step(model_.params(), model_.grads(), model_.num_params(), rest_, step);
    } else if (lora_ && !rest_.empty()) {
        norm = joint_step({{trained_opt_.get(), lora_->params(), lora_->grads(), lora_->num_params(), &lora_->tensors()},
                           {model_opt_.get(), model_.params(), model_.grads(), model_.num_params(), &rest_}},
                          o_.grad_clip, step);
    } else if (lora_) {
        norm = trained_opt_->step(lora_->params(), lora_->grads(), lora_->num_params(), lora_->tensors(), step);
    } else if (o_.layerwise) {  // the layer Linears were updated in the backward; now the held gradients' tensors
        double sum_squares = layerwise_sum_squares_;
        const std::vector<ParamTensor>& tensors = model_.tensors();
        for (size_t i = 0; i < tensors.size(); i++)
            if (const float* g = model_.core().grad_of(i)) {
                sum_squares += sum_squares_cpu(g, tensors[i].size);
                model_opt_->update_tensor(i, model_.params() + tensors[i].offset, g, step);
            }
        model_opt_->end_step();
        norm = (float)std::sqrt(sum_squares);
    } else {
        norm = model_opt_->step(model_, step);
    }
    if (o_.method == "relora" && relora_merges_after(relora, step)) {
        relora_merge(*lora_, *trained_opt_, relora, step, o_.seed);
        fprintf(log, "step %d: relora merged the adapters into the base and restarted them\n", step + 1);
    }
    return norm;
}

TrainOptions options_of_checkpoint(const CheckpointInfo& info) {
    TrainOptions o;
    FlagSet flags;
    add_train_flags(flags, o);
    for (const auto& kv : info.flags)
        if (flags.has(kv.first)) flags.set(kv.first, kv.second);
    return o;
}

std::unique_ptr<TrainMethod> load_checkpoint_for_inference(const std::string& path, const CheckpointInfo& info,
                                                          Model& model) {
    auto method = std::make_unique<TrainMethod>(model, options_of_checkpoint(info), nullptr);
    method->load(path);
    return method;
}

}  // namespace llmq
