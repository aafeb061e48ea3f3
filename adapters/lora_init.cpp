// lora_init: plain / LoftQ / CLoQ starts of LoRA adapters on a quantized base (lora_init.h).
#include "lora_init.h"

#include <cmath>
#include <limits>
#include <map>

#include "../kernels/common.h"
#include "../kernels/matmul.h"
#include "../tools/hf_peft.h"
#include "svd.h"

namespace llmq {

LoraInit parse_lora_init(const std::string& name, const char* what) {
    if (name == "plain") return LoraInit::Plain;
    if (name == "loftq") return LoraInit::Loftq;
    if (name == "cloq") return LoraInit::Cloq;
    throw Error(format("%s: '%s' is not one of plain|loftq|cloq", what, name.c_str()));
}

namespace {

void check_rank(int out, int in, int rank, const char* what) {
    LLMQ_CHECK(rank >= 1 && rank <= std::min(out, in), "%s: rank %d must be in [1, min(out %d, in %d)]", what, rank,
               out, in);
}

// B (out,r) = P_r diag(sqrt(sigma_r / s)), A (r,in) = diag(sqrt(sigma_r / s)) Vt_r, so s B A = P_r Sigma_r Vt_r.
// p (out, ldp) holds the left singular vectors in its first r columns, vt (>= r, in) the right ones in its rows.
void split_factors(const double* p, int ldp, const double* sigma, const double* vt, int out, int in, int rank,
                   float scale, float* A, float* B) {
    for (int j = 0; j < rank; j++) {
        const double f = std::sqrt(sigma[j] / scale);
        for (int c = 0; c < in; c++) A[(size_t)j * in + c] = (float)(f * vt[(size_t)j * in + c]);
        for (int i = 0; i < out; i++) B[(size_t)i * rank + j] = (float)(f * p[(size_t)i * ldp + j]);
    }
}

// E = W - deq Q (out,in) in double
std::vector<double> residual(const float* w, const QuantizedTensor& q) {
    std::vector<float> deq(q.numel());
    dequantize_cpu(q, deq.data());
    std::vector<double> e(deq.size());
    for (size_t i = 0; i < e.size(); i++) e[i] = (double)w[i] - deq[i];
    return e;
}

}  // namespace

void truncated_svd_factors(const double* e, int out, int in, int rank, float scale, float* A, float* B,
                           const char* what) {
    check_rank(out, in, rank, what);
    const Svd s = svd_thin(e, out, in, what);
    split_factors(s.U.data(), (int)s.k, s.S.data(), s.Vt.data(), out, in, rank, scale, A, B);
}

// The closed form, in our (out,in) layout. For any D (out,in): ||X D^T||_F^2 = tr(D H D^T). Write the damped
// H = U S U^T (eigendecomposition, S > 0) and R = S^(1/2) U^T (in,in), so H = R^T R and tr(D H D^T) = ||D R^T||_F^2.
// With M = s B A and E = W - deq Q, the error of Q + M is D = M - E:
//     ||X (deq Q + M - W)^T||_F = ||M R^T - Y||_F,   Y = E R^T = E U S^(1/2)   (out,in).
// R is invertible, so M -> Z = M R^T maps the rank-<=r matrices onto themselves: minimising over M is minimising
// ||Z - Y||_F over rank-r Z, whose optimum is Y's truncated SVD Z* = [Y]_r = P_r Sigma_r V_r^T (Eckart-Young), i.e.
//     M* = [E R^T]_r R^(-T) = P_r Sigma_r (V_r^T S^(-1/2) U^T).
// (methods.md's "A B^T = R^-1 [R (W - Q)]_r" is the transpose of this, in the paper's (in,out) layout.) Split:
// B = P_r Sigma_r^(1/2) / sqrt(s), A = Sigma_r^(1/2) V_r^T S^(-1/2) U^T / sqrt(s).
void cloq_factors(const double* e, int out, int in, int rank, float scale, const std::vector<double>& h,
                  double percdamp, float* A, float* B, const char* what) {
    check_rank(out, in, rank, what);
    LLMQ_CHECK(h.size() == (size_t)in * in, "%s: CLoQ needs the (%d, %d) calibration Hessian of the layer's input, got "
               "%zu entries", what, in, in, h.size());
    std::vector<double> hd(h);
    double mean_diag = 0;
    for (int i = 0; i < in; i++) mean_diag += hd[(size_t)i * in + i] / in;
    for (int i = 0; i < in; i++) hd[(size_t)i * in + i] += percdamp * mean_diag;
    const SymmetricEigen eig = symmetric_eigen(hd.data(), in, what);  // w ascending, eigenvector j = column j of V
    LLMQ_CHECK(eig.w[0] > 1e-12 * std::max(eig.w[in - 1], 0.0),
               "%s: CLoQ's calibration Hessian is not positive definite after damping (eigenvalues %g .. %g); raise "
               "the damping or calibrate on more tokens", what, eig.w[0], eig.w[in - 1]);
    // Y = E U S^(1/2): scale U's columns, then one product
    std::vector<double> us(eig.V);
    for (int i = 0; i < in; i++)
        for (int j = 0; j < in; j++) us[(size_t)i * in + j] *= std::sqrt(eig.w[j]);
    std::vector<double> y((size_t)out * in);
    gemm_cpu<double>(false, false, out, in, in, 1.0, e, in, us.data(), in, 0.0, y.data(), in);
    const Svd s = svd_thin(y.data(), out, in, what);
    // V_r^T S^(-1/2) U^T (r,in): scale the rows' entries, then multiply by U^T
    std::vector<double> t((size_t)rank * in), vt((size_t)rank * in);
    for (int j = 0; j < rank; j++)
        for (int k = 0; k < in; k++) t[(size_t)j * in + k] = s.Vt[(size_t)j * in + k] / std::sqrt(eig.w[k]);
    gemm_cpu<double>(false, true, rank, in, in, 1.0, t.data(), in, eig.V.data(), in, 0.0, vt.data(), in);
    split_factors(s.U.data(), (int)s.k, s.S.data(), vt.data(), out, in, rank, scale, A, B);
}

LayerInit plain_init(const float* w, int out, int in, const LayerQuantizer& quant) {
    LayerInit r;
    r.q = quant(w, out, in);
    return r;
}

LayerInit loftq_init(const float* w, int out, int in, int rank, float scale, const LayerQuantizer& quant, int iters,
                     const char* what) {
    check_rank(out, in, rank, what);
    LLMQ_CHECK(iters >= 1, "%s: LoftQ needs at least 1 iteration, got %d", what, iters);
    const size_t n = (size_t)out * in;
    LayerInit best, cur;
    double best_err = std::numeric_limits<double>::infinity();
    std::vector<float> target(w, w + n);  // W - s B A of the previous iterate (W at first)
    cur.A.resize((size_t)rank * in), cur.B.resize((size_t)out * rank);
    for (int t = 0; t < iters; t++) {
        cur.q = quant(target.data(), out, in);
        const std::vector<double> e = residual(w, cur.q);
        truncated_svd_factors(e.data(), out, in, rank, scale, cur.A.data(), cur.B.data(), what);
        const std::vector<float> adapted = adapted_weight(cur, rank, scale);
        const double err = sq_distance(w, adapted.data(), n);
        if (err < best_err) best_err = err, best = cur;
        // target = W - s B A
        std::copy(w, w + n, target.begin());
        gemm_cpu(false, false, out, in, rank, -scale, cur.B.data(), rank, cur.A.data(), in, 1.0f, target.data(), in);
    }
    return best;
}

LayerInit cloq_init(const float* w, int out, int in, int rank, float scale, const LayerQuantizer& quant,
                    const std::vector<double>& h, double percdamp, const char* what) {
    check_rank(out, in, rank, what);
    LayerInit r = plain_init(w, out, in, quant);
    const std::vector<double> e = residual(w, r.q);
    r.A.resize((size_t)rank * in), r.B.resize((size_t)out * rank);
    cloq_factors(e.data(), out, in, rank, scale, h, percdamp, r.A.data(), r.B.data(), what);
    return r;
}

std::vector<float> adapted_weight(const LayerInit& init, int rank, float scale) {
    const int out = (int)init.q.rows, in = (int)init.q.cols;
    std::vector<float> m(init.q.numel());
    dequantize_cpu(init.q, m.data());
    if (!init.B.empty())  // deq Q (out,in) += s B (out,r) A (r,in)
        gemm_cpu(false, false, out, in, rank, scale, init.B.data(), rank, init.A.data(), in, 1.0f, m.data(), in);
    return m;
}

double InitErrors::weight_rel() const { return std::sqrt(weight_err_sq / weight_sq); }
double InitErrors::calibrated_rel() const { return out_sq < 0 ? -1 : std::sqrt(out_err_sq / out_sq); }

InitErrors init_errors(const float* w, const LayerInit& init, int rank, float scale, const HessianAccumulator* acc) {
    const int64_t out = init.q.rows, in = init.q.cols;
    const std::vector<float> m = adapted_weight(init, rank, scale);
    InitErrors r;
    r.weight_sq = sq_distance(w, nullptr, m.size());
    r.weight_err_sq = sq_distance(w, m.data(), m.size());
    if (acc) {
        r.out_sq = calibrated_sq_norm(*acc, w, nullptr, out, in);
        r.out_err_sq = calibrated_sq_norm(*acc, m.data(), w, out, in);
    }
    return r;
}

namespace {

// module name -> index of its lora_A tensor in lora.tensors() (its lora_B follows it)
std::map<std::string, size_t> adapter_tensors(const LoraAdapters& lora) {
    std::map<std::string, size_t> a_tensor;
    const std::string prefix = "base_model.model.", suffix = ".lora_A.weight";
    for (size_t i = 0; i < lora.tensors().size(); i++) {
        const std::string& t = lora.tensors()[i].name;
        if (t.size() > suffix.size() && t.compare(t.size() - suffix.size(), suffix.size(), suffix) == 0)
            a_tensor[t.substr(prefix.size(), t.size() - prefix.size() - suffix.size())] = i;
    }
    return a_tensor;
}

LayerInit make_init(LoraInit which, const Linear<float>& lin, const LayerQuantizer& quant,
                    const std::vector<double>& h, const LoraInitOptions& o, const char* what) {
    const int rank = lin.adapters.back().rank;
    const float scale = lin.adapters.back().scale;
    switch (which) {
        case LoraInit::Plain: return plain_init(lin.weight, lin.out, lin.in, quant);
        case LoraInit::Loftq: return loftq_init(lin.weight, lin.out, lin.in, rank, scale, quant, o.loftq_iters, what);
        case LoraInit::Cloq: return cloq_init(lin.weight, lin.out, lin.in, rank, scale, quant, h, o.percdamp, what);
    }
    return LayerInit{};
}

}  // namespace

std::vector<LoraInitReport> init_adapters_for_quantized_base(Model& model, LoraAdapters& lora, const QuantSpec& spec,
                                                             const LoraInitOptions& o,
                                                             const CalibrationHessians* hessians) {
    const std::map<std::string, size_t> a_tensor = adapter_tensors(lora);
    std::vector<LoraInitReport> reports;
    quantize_model_linears(model, [&](const std::string& name, Linear<float>& lin) -> QuantizedTensor {
        auto it = a_tensor.find(name);
        const bool adapted = it != a_tensor.end();
        const bool needs_h = o.gptq || (adapted && (o.init == LoraInit::Cloq || o.compare));
        LLMQ_CHECK(hessians || !needs_h, "%s: %s needs the calibration statistics of the layer's input "
                   "(calibrate_hessians); none were given", name.c_str(),
                   o.gptq ? "GPTQ" : o.init == LoraInit::Cloq ? "CLoQ" : "comparing the initialisations");
        // at() names a module missing from the statistics
        const HessianAccumulator* acc = hessians && (needs_h || hessians->has(name)) ? &hessians->at(name) : nullptr;
        const std::vector<double> h = needs_h ? acc->hessian() : std::vector<double>();
        LayerQuantizer quant{spec, o.gptq ? &h : nullptr, GptqOptions{}};
        quant.gptq.percdamp = o.percdamp;
        if (!adapted) return quant(lin.weight, lin.out, lin.in);  // not adapted: the plain base
        const ParamTensor &ta = lora.tensors()[it->second], &tb = lora.tensors()[it->second + 1];
        LLMQ_CHECK(!lin.adapters.empty() && lin.adapters.back().A == lora.params() + ta.offset,
                   "%s: the Linear's last adapter is not the one LoraAdapters laid out for it", name.c_str());
        const int rank = lin.adapters.back().rank;
        const float scale = lin.adapters.back().scale;
        LoraInitReport rep;
        rep.name = name;
        auto record = [&](LoraInit which, const InitErrors& e) {
            double& slot = which == LoraInit::Plain ? rep.plain : which == LoraInit::Loftq ? rep.loftq : rep.cloq;
            slot = e.calibrated_rel();
        };
        LayerInit chosen = make_init(o.init, lin, quant, h, o, name.c_str());
        const InitErrors ce = init_errors(lin.weight, chosen, rank, scale, acc);
        rep.weight_rel = ce.weight_rel();
        record(o.init, ce);
        for (LoraInit other : {LoraInit::Plain, LoraInit::Loftq, LoraInit::Cloq})
            if (acc && other != o.init && (o.compare || other == LoraInit::Plain)) {
                const LayerInit alt = make_init(other, lin, quant, h, o, name.c_str());
                record(other, init_errors(lin.weight, alt, rank, scale, acc));
            }
        reports.push_back(rep);
        if (chosen.B.empty()) {
            std::fill(lora.params() + tb.offset, lora.params() + tb.offset + tb.size, 0.0f);  // plain: A as drawn
        } else {
            std::copy(chosen.A.begin(), chosen.A.end(), lora.params() + ta.offset);
            std::copy(chosen.B.begin(), chosen.B.end(), lora.params() + tb.offset);
        }
        return std::move(chosen.q);
    });
    return reports;
}

}  // namespace llmq
