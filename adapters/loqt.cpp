// loqt.cpp: LoQT's wrapped Linears, merge schedule, gradient-SVD projections and error compensation
// (see loqt.h). Products through kernels/matmul.h, quantization through quant/, the SVD through adapters/svd.h.
#include "loqt.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "../kernels/adamw.h"
#include "../kernels/common.h"
#include "../kernels/matmul.h"
#include "../layers/state_bytes.h"
#include "../tools/hf_peft.h"
#include "svd.h"

namespace llmq {

std::vector<int> loqt_merge_schedule(int tau, float psi, int total_steps) {
    LLMQ_CHECK(tau > 0, "--loqt-tau %d must be positive", tau);
    LLMQ_CHECK(psi > 0, "--loqt-psi %g must be positive", psi);
    std::vector<int> steps = {0};
    int64_t next = tau;
    for (int k = 1; next <= total_steps; k++) {
        steps.push_back((int)next);
        next += tau + (int64_t)std::floor(std::pow((double)psi, (double)k));
    }
    return steps;
}

bool loqt_merges_at(const LoqtOptions& o, int step) {
    if (step == 0) return true;  // always: the factors need a P to train at all (the reference skips it too when
                                 // total_steps <= tau, leaving them zero)
    if (step + o.tau >= o.total_steps) return false;
    // walk the schedule (as loqt_merge_schedule, without materialising it)
    int64_t next = o.tau;
    for (int k = 1; next <= step; k++) {
        if (next == step) return true;
        next += o.tau + (int64_t)std::floor(std::pow((double)o.psi, (double)k));
    }
    return false;
}

namespace {

double sum_sq_diff(const float* a, const float* b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)a[i] - (double)b[i];
        s += d * d;
    }
    return s;
}

// pinv (n,m) of a full-rank (m,n) matrix through its thin SVD: V diag(1/S) U^T (singular values below
// 1e-6 of the largest are dropped, so a zero P gives a zero pinv)
std::vector<float> pinv_of(const float* a, int m, int n) {
    std::vector<double> ad(a, a + (size_t)m * n);
    const Svd sv = svd_thin(ad.data(), m, n, "LoQT: pseudo-inverse of the frozen factor");
    std::vector<float> p((size_t)n * m, 0.0f);
    const int k = (int)sv.k;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) {
            double s = 0;
            for (int q = 0; q < k; q++)
                if (sv.S[q] > 1e-6 * sv.S[0]) s += sv.Vt[(size_t)q * n + i] / sv.S[q] * sv.U[(size_t)j * k + q];
            p[(size_t)i * m + j] = (float)s;
        }
    return p;
}

}  // namespace

LoqtCompensation loqt_compensate(const float* W, int out, int in, const float* P, int r, bool p_is_A, float s,
                                 const QuantSpec& spec, int iters) {
    const size_t n = (size_t)out * in;
    LoqtCompensation res;
    std::vector<float> deq(n), R(n), C(n), what(W, W + n);
    res.q = quantize_weight(W, out, in, spec);
    res.q->dequantize(deq.data());
    res.error_plain = res.error = std::sqrt(sum_sq_diff(W, deq.data(), n));
    res.trained.assign(p_is_A ? (size_t)out * r : (size_t)r * in, 0.0f);
    if (iters <= 0) return res;
    // pinv(P_hat): (in,r) for P = A (r,in); (r,out) for P = B (out,r)
    const std::vector<float> pinv = p_is_A ? pinv_of(P, r, in) : pinv_of(P, out, r);
    std::vector<float> T(res.trained.size());
    double best = INFINITY;
    for (int it = 0; it < iters; it++) {
        std::shared_ptr<FormatQuantizedWeight> q = quantize_weight(what.data(), out, in, spec);
        q->dequantize(deq.data());
        for (size_t i = 0; i < n; i++) R[i] = W[i] - deq[i];  // the quantization residual
        if (p_is_A) {
            // T = B (out,r) = R (out,in) pinv (in,r) / s;  C = s B A (out,in)
            gemm_cpu(false, false, out, r, in, 1.0f / s, R.data(), in, pinv.data(), r, 0.0f, T.data(), r);
            gemm_cpu(false, false, out, in, r, s, T.data(), r, P, in, 0.0f, C.data(), in);
        } else {
            // T = A (r,in) = pinv (r,out) R (out,in) / s;  C = s B A (out,in)
            gemm_cpu(false, false, r, in, out, 1.0f / s, pinv.data(), out, R.data(), in, 0.0f, T.data(), in);
            gemm_cpu(false, false, out, in, r, s, P, r, T.data(), in, 0.0f, C.data(), in);
        }
        const double err = std::sqrt(sum_sq_diff(R.data(), C.data(), n));  // ||W - (deq Q + C)||_F
        if (err < best) {
            best = err;
            res.q = q;
            res.trained = T;
            res.error = err;
        }
        for (size_t i = 0; i < n; i++) what[i] = W[i] - C[i];  // W_hat = W - s T P
    }
    return res;
}

LoqtAdapters::LoqtAdapters(Model& model, const LoqtOptions& o) : model_(model), options_(o) {
    LLMQ_CHECK(o.rank > 0, "--rank %d must be positive", o.rank);
    LLMQ_CHECK(o.alpha > 0, "--alpha %g must be positive", o.alpha);
    LLMQ_CHECK(o.ec_iters >= 0, "--loqt-ec-iters %d must not be negative", o.ec_iters);
    LLMQ_CHECK(o.base_spec.format == QuantFormat::NF4, "LoQT: the base format is NF4 (got %s)",
               format_name(o.base_spec.format));
    loqt_merge_schedule(o.tau, o.psi, 0);  // validates tau and psi
    // 1. layout: trained factors in one buffer, frozen ones in another, module order
    size_t toff = 0, foff = 0;
    auto tensor = [](const std::string& name, size_t& offset, int rows, int cols) {
        ParamTensor t;
        t.name = name;
        t.offset = offset;
        t.shape = {rows, cols};
        t.size = (size_t)rows * cols;
        t.decay = true;  // 2-D, as the model's matrices
        offset += t.size;
        return t;
    };
    std::vector<std::string> wrapped_weights;
    for (auto& [name, lin] : named_linears(model)) {
        if (name == "lm_head") continue;
        LLMQ_CHECK(lin->weight && lin->dweight && !lin->quant && lin->adapters.empty(),
                   "LoQT: %s is already frozen, quantized or adapted", name.c_str());
        LLMQ_CHECK(o.rank <= std::min(lin->in, lin->out), "--rank %d exceeds %s's smaller side (%d x %d)", o.rank,
                   name.c_str(), lin->out, lin->in);
        Wrapped w;
        w.name = name;
        w.lin = lin;
        w.weight_slot = lin->weight;
        w.grad_slot = lin->dweight;
        w.p_is_A = lin->in <= lin->out;  // the frozen P spans the smaller side
        const std::string A = "base_model.model." + name + ".lora_A.weight", B = "base_model.model." + name + ".lora_B.weight";
        w.trained_offset = toff;
        w.frozen_offset = foff;
        if (w.p_is_A) {
            trained_.push_back(tensor(B, toff, lin->out, o.rank));
            frozen_.push_back(tensor(A, foff, o.rank, lin->in));
        } else {
            trained_.push_back(tensor(A, toff, o.rank, lin->in));
            frozen_.push_back(tensor(B, foff, lin->out, o.rank));
        }
        if (o.quantize_p) {
            const ParamTensor& f = frozen_.back();
            try {
                check_spec(o.base_spec, f.shape[0], f.shape[1]);
            } catch (const Error& e) {
                throw Error(format("--loqt-quant-p: %s's frozen factor: %s", name.c_str(), e.what()));
            }
        }
        wrapped_weights.push_back(name + ".weight");
        wrapped_.push_back(std::move(w));
    }
    for (const ParamTensor& t : model.tensors())
        if (std::find(wrapped_weights.begin(), wrapped_weights.end(), t.name) == wrapped_weights.end())
            model_trained_.push_back(t);
    params_.assign(toff, 0.0f);
    grads_.assign(toff, 0.0f);
    frozen_params_.assign(foff, 0.0f);
    // 2. attach: one adapter per wrapped Linear, its frozen factor without a gradient; bases frozen (quantized)
    for (Wrapped& w : wrapped_) {
        LoraAdapter<float> ad;
        ad.rank = o.rank;
        ad.scale = o.alpha;
        ad.A = factor_A(w);
        ad.B = factor_B(w);
        (w.p_is_A ? ad.dB : ad.dA) = grads_.data() + w.trained_offset;
        w.lin->adapters.push_back(ad);
        w.lin->dweight = nullptr;
        if (o.quantize_base) set_base(w, quantize_weight(w.weight_slot, w.lin->out, w.lin->in, o.base_spec));
    }
}

float* LoqtAdapters::factor_A(Wrapped& w) {
    return w.p_is_A ? frozen_params_.data() + w.frozen_offset : params_.data() + w.trained_offset;
}
float* LoqtAdapters::factor_B(Wrapped& w) {
    return w.p_is_A ? params_.data() + w.trained_offset : frozen_params_.data() + w.frozen_offset;
}

void LoqtAdapters::set_base(Wrapped& w, std::shared_ptr<FormatQuantizedWeight> q) {
    w.base = std::move(q);
    w.lin->quant = w.base;
    w.base->dequantize(w.weight_slot);  // the model's slot mirrors deq(base): the fp32 view of merge steps
}

void LoqtAdapters::zero_grad() { std::fill(grads_.begin(), grads_.end(), 0.0f); }

size_t LoqtAdapters::num_model_trained() const {
    size_t n = 0;
    for (const ParamTensor& t : model_trained_) n += t.size;
    return n;
}

size_t LoqtAdapters::base_bytes() const {
    size_t b = 0;
    for (const Wrapped& w : wrapped_)
        if (w.base) b += tensor_bytes(w.base->tensor());
    return b;
}

size_t LoqtAdapters::frozen_bytes() const {
    size_t b = 0;
    for (const ParamTensor& t : frozen_)
        b += options_.quantize_p ? storage_bytes(options_.base_spec, t.shape[0], t.shape[1]) : 4 * t.size;
    return b;
}

int LoqtAdapters::count_p_is_A() const {
    int c = 0;
    for (const Wrapped& w : wrapped_) c += w.p_is_A;
    return c;
}

void LoqtAdapters::begin_merge() {
    LLMQ_CHECK(!merging_, "LoQT: begin_merge twice");
    const float s = options_.alpha;
    const int r = options_.rank;
    for (Wrapped& w : wrapped_) {
        Linear<float>& lin = *w.lin;
        float *A = factor_A(w), *B = factor_B(w);
        const size_t n = (size_t)lin.out * lin.in;
        if (options_.quantize_base) {
            // W_full (out,in) = deq(W) + s B (out,r) A (r,in);  W <- Q(W_full)
            w.full.assign(w.weight_slot, w.weight_slot + n);
            gemm_cpu(false, false, lin.out, lin.in, r, s, B, r, A, lin.in, 1.0f, w.full.data(), lin.in);
            set_base(w, quantize_weight(w.full.data(), lin.out, lin.in, options_.base_spec));
        } else {
            gemm_cpu(false, false, lin.out, lin.in, r, s, B, r, A, lin.in, 1.0f, w.weight_slot, lin.in);  // W += s B A
        }
        std::fill(A, A + (size_t)r * lin.in, 0.0f);
        std::fill(B, B + (size_t)lin.out * r, 0.0f);
        // this step only: an fp32 view of the base (the slot holds deq(W)) and a gradient slot for dW
        lin.quant = nullptr;
        lin.weight = w.weight_slot;
        lin.dweight = w.grad_slot;
    }
    merging_ = true;
}

LoqtMergeReport LoqtAdapters::finish_merge() {
    LLMQ_CHECK(merging_, "LoQT: finish_merge without begin_merge");
    const int r = options_.rank;
    LoqtMergeReport rep;
    double err2 = 0, plain2 = 0, norm2 = 0;
    for (Wrapped& w : wrapped_) {
        Linear<float>& lin = *w.lin;
        const int out = lin.out, in = lin.in;
        // P = the top-r singular vectors of dW (out,in) on the frozen factor's side
        std::vector<double> dw(w.grad_slot, w.grad_slot + (size_t)out * in);
        const Svd sv = svd_thin(dw.data(), out, in, ("LoQT merge: gradient of " + w.name).c_str());
        float* P = w.p_is_A ? factor_A(w) : factor_B(w);
        if (w.p_is_A)
            for (size_t i = 0; i < (size_t)r * in; i++) P[i] = (float)sv.Vt[i];  // (r,in): rows of Vt
        else
            for (int o = 0; o < out; o++)
                for (int j = 0; j < r; j++) P[(size_t)o * r + j] = (float)sv.U[(size_t)o * sv.k + j];  // (out,r)
        const int prow = w.p_is_A ? r : out, pcol = w.p_is_A ? in : r;
        if (options_.quantize_p) dequantize_cpu(quantize_cpu(P, prow, pcol, options_.base_spec), P);  // P_hat
        if (options_.quantize_base) {
            LoqtCompensation c =
                loqt_compensate(w.full.data(), out, in, P, r, w.p_is_A, options_.alpha, options_.base_spec,
                                options_.ec_iters);
            set_base(w, c.q);
            std::copy(c.trained.begin(), c.trained.end(), params_.begin() + w.trained_offset);
            err2 += c.error * c.error;
            plain2 += c.error_plain * c.error_plain;
            norm2 += sum_squares_cpu(w.full.data(), w.full.size());
            std::vector<float>().swap(w.full);
        }
        lin.quant = w.base;  // null in loqt-nq: the slot is the base
        lin.dweight = nullptr;
        std::fill(w.grad_slot, w.grad_slot + (size_t)out * in, 0.0f);
        rep.layers++;
    }
    if (norm2 > 0) rep.rel_error = std::sqrt(err2 / norm2), rep.rel_error_plain = std::sqrt(plain2 / norm2);
    merging_ = false;
    return rep;
}

std::vector<uint8_t> LoqtAdapters::serialize() const {
    LLMQ_CHECK(!merging_, "LoQT: a checkpoint in the middle of a merge step");
    StateWriter w;
    w.put<uint32_t>(kStateVersion);
    w.put<uint32_t>((uint32_t)wrapped_.size());
    w.put<uint32_t>((uint32_t)options_.rank);
    w.put<uint8_t>(options_.quantize_base ? 1 : 0);
    w.put<uint8_t>(options_.quantize_p ? 1 : 0);
    w.put_vec(frozen_params_);
    for (const Wrapped& x : wrapped_)
        if (x.base) put_quantized_tensor(w, x.base->tensor());
    return w.bytes;
}

void LoqtAdapters::deserialize(const std::vector<uint8_t>& bytes, const char* what) {
    StateReader rd(bytes, what, "LoQT state");
    const uint32_t version = rd.get<uint32_t>();
    LLMQ_CHECK(version == kStateVersion, "%s: LoQT state version %u, this build reads version %u", what, version,
               kStateVersion);
    const uint32_t n = rd.get<uint32_t>(), rank = rd.get<uint32_t>();
    const bool qb = rd.get<uint8_t>() != 0, qp = rd.get<uint8_t>() != 0;
    LLMQ_CHECK(n == wrapped_.size() && (int)rank == options_.rank,
               "%s: LoQT state wraps %u Linears at rank %u, this run %zu at rank %d", what, n, rank, wrapped_.size(),
               options_.rank);
    LLMQ_CHECK(qb == options_.quantize_base && qp == options_.quantize_p,
               "%s: LoQT state has a%s base and %s frozen factors, this run a%s base and %s ones (--method, "
               "--loqt-quant-p)", what, qb ? "n NF4" : "n fp32", qp ? "NF4" : "fp32",
               options_.quantize_base ? "n NF4" : "n fp32", options_.quantize_p ? "NF4" : "fp32");
    std::vector<float> frozen = rd.get_vec<float>();
    LLMQ_CHECK(frozen.size() == frozen_params_.size(), "%s: LoQT state has %zu frozen-factor values, this run %zu",
               what, frozen.size(), frozen_params_.size());
    std::vector<std::shared_ptr<FormatQuantizedWeight>> bases;
    if (qb)
        for (Wrapped& x : wrapped_) {
            QuantizedTensor q = get_quantized_tensor(rd, x.name);
            const QuantSpec& want = options_.base_spec;
            LLMQ_CHECK(q.spec.format == want.format && q.spec.block == want.block &&
                           q.spec.double_quant == want.double_quant && q.rows == x.lin->out && q.cols == x.lin->in,
                       "%s: LoQT base of %s is %s block %d%s (%lld x %lld), this run's %s block %d%s (%d x %d) "
                       "(--quant-block, --double-quant)", what, x.name.c_str(), format_name(q.spec.format),
                       q.spec.block, q.spec.double_quant ? " double-quantized" : "", (long long)q.rows,
                       (long long)q.cols, format_name(want.format), want.block, want.double_quant ? " double-quantized" : "",
                       x.lin->out, x.lin->in);
            bases.push_back(std::make_shared<FormatQuantizedWeight>(std::move(q)));
        }
    rd.expect_end();
    std::copy(frozen.begin(), frozen.end(), frozen_params_.begin());  // in place: the adapters point into it
    for (size_t i = 0; i < bases.size(); i++) set_base(wrapped_[i], bases[i]);
}

std::unique_ptr<AdamW> loqt_model_optimizer(const LoqtAdapters& loqt, const OptimizerConfig& c) {
    return std::make_unique<AdamW>(c, loqt.model_trained_tensors());  // states for those tensors alone
}

float loqt_optimizer_step(LoqtAdapters& loqt, Model& model, AdamW& factor_opt, AdamW& model_opt, float grad_clip,
                          int step) {
    return joint_step({{&factor_opt, loqt.params(), loqt.grads(), loqt.num_params(), &loqt.tensors()},
                       {&model_opt, model.params(), model.grads(), model.num_params(), &loqt.model_trained_tensors()}},
                      grad_clip, step);
}

}  // namespace llmq
