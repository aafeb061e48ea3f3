// model_cuda.cu: ModelCuda (model_cuda.h), the GPU twin of model_core.cpp. Only kernels/ ops compute; this
// file plans the buffers and wires the ops in the CPU model's order.
#include "model_cuda.h"

#include <algorithm>
#include <cmath>
#include <string>

#include <cuda_profiler_api.h>

#include "../kernels/adamw_cuda.h"
#include "../kernels/attention_cuda.h"
#include "../kernels/crossentropy_cuda.h"
#include "../kernels/embedding_cuda.h"
#include "../kernels/matmul_cuda.h"
#include "../kernels/rmsnorm_cuda.h"
#include "../kernels/rope.h"
#include "../kernels/rope_cuda.h"
#include "../kernels/swiglu_cuda.h"
#include "../kernels/cuda_common.h"
#include "../tools/float16.h"

namespace llmq {

namespace {

// One layer's weights (bf16 copies), their fp32 gradients, and its saved activations.
struct LayerView {
    bf16 *ln1, *q, *k, *v, *o, *ln2, *gate, *up, *down;
    float *dln1, *dq, *dk, *dv, *d_o, *dln2, *dgate, *dup, *ddown;
    // activations: residual is the layer's input (the residual stream before it); q, k are stored roped
    bf16 *residual, *norm1, *aq, *ak, *av, *att, *mid, *norm2, *agate, *aup, *hidden;
    float *rstd1, *lse, *rstd2;
};

// Carves one allocation into named arrays: add() records where each pointer goes, allocate() places them
// (each 256-byte aligned, so every array takes the 128-bit kernel paths).
template <typename T>
class Carver {
  public:
    void add(T** ptr, size_t n) { parts_.push_back({ptr, n}); }
    size_t bytes() const {
        size_t total = 0;
        for (auto& p : parts_) total += (p.n + kAlign - 1) / kAlign * kAlign;
        return total * sizeof(T);
    }
    void allocate(DeviceBuffer<T>& buf) {
        constexpr size_t align = kAlign;
        buf.resize(bytes() / sizeof(T));
        size_t at = 0;
        for (auto& p : parts_) {
            *p.ptr = buf.data() + at;
            at += (p.n + align - 1) / align * align;
        }
        parts_.clear();
    }

  private:
    static constexpr size_t kAlign = 256 / sizeof(T);
    struct Part {
        T** ptr;
        size_t n;
    };
    std::vector<Part> parts_;
};

}  // namespace

struct ModelCudaBuffers {
    DeviceBuffer<float> master, grads, m, v;  // (P) each
    DeviceBuffer<bf16> weights;               // (P) the bf16 copy of master
    DeviceBuffer<bf16> acts;                  // every bf16 activation and backward scratch, carved
    DeviceBuffer<float> stats;                // fp32 activations and scratch, carved
    DeviceBuffer<int> tokens, targets;        // (N)
    Blas blas;
    EmbeddingBackwardPlan embedding_plan;
    std::vector<LayerView> layers;
    bf16 *embed = nullptr, *normf = nullptr, *head = nullptr;
    float *dembed = nullptr, *dnormf = nullptr, *dhead = nullptr;
    // the final norm and classifier
    bf16 *final_residual = nullptr, *normed = nullptr, *logits = nullptr;
    float *rstdf = nullptr, *losses = nullptr;
    // backward scratch (bf16), one set shared by every layer
    bf16 *dres = nullptr, *dnorm = nullptr, *branch = nullptr, *dhidden = nullptr, *datt = nullptr, *dq = nullptr,
         *dk = nullptr, *dv = nullptr;
    float *rope_cos = nullptr, *rope_sin = nullptr, *norm_scratch = nullptr, *attention_scratch = nullptr,
          *sumsq = nullptr;
    DeviceBuffer<double> sumsq_scratch;  // the gradient norm's per-block partials
    std::vector<int> host_targets;
};

ModelCuda::ModelCuda(const ModelConfig& config, const float* params)
    : config_(config), tensors_(parameter_layout(config)) {
    config_.validate();
    std::string why;
    LLMQ_CHECK(cuda_device_count(&why) > 0, "--device cuda: no CUDA GPU (%s)", why.c_str());
    num_params_ = tensors_.back().offset + tensors_.back().size;
    d_.reset(new ModelCudaBuffers);  // its cuBLASLt handle and workspace need the GPU
    size_t free = 0, total = 0;
    CUDA_CHECK(cudaMemGetInfo(&free, &total));
    const double state = 18.0 * num_params_, GiB = 1073741824.0;  // fp32 master, grad, m, v + the bf16 copy
    LLMQ_CHECK(state < free, "--model %s: its %zu parameters need %.2f GiB on the GPU (fp32 masters, gradients and "
               "AdamW state, bf16 weights), more than the %.2f GiB free (of %.1f GiB)", config_.name.c_str(),
               num_params_, state / GiB, free / GiB, total / GiB);
    ModelCudaBuffers& d = *d_;
    const std::vector<float> host(params, params + num_params_);
    d.master.upload(host);
    std::vector<bf16> copy(num_params_);
    for (size_t i = 0; i < num_params_; i++) {
        __nv_bfloat16_raw raw;
        raw.x = float_to_bf16(host[i]);  // round to nearest for the first copy; AdamW rounds stochastically
        copy[i] = raw;
    }
    d.weights.upload(copy);
    d.grads.resize(num_params_);
    d.grads.zero();
    d.m.resize(num_params_);
    d.m.zero();
    d.v.resize(num_params_);
    d.v.zero();

    auto offset_of = [&](const std::string& name) {
        for (const ParamTensor& t : tensors_)
            if (t.name == name) return t.offset;
        throw Error(format("model %s: no parameter tensor named '%s'", config_.name.c_str(), name.c_str()));
    };
    auto W = [&](const std::string& name) { return d.weights.data() + offset_of(name); };
    auto G = [&](const std::string& name) { return d.grads.data() + offset_of(name); };
    const std::string head = config_.tied_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
    d.embed = W("model.embed_tokens.weight"), d.dembed = G("model.embed_tokens.weight");
    d.normf = W("model.norm.weight"), d.dnormf = G("model.norm.weight");
    d.head = W(head), d.dhead = G(head);
    d.layers.resize(config_.n_layers);
    for (int l = 0; l < config_.n_layers; l++) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        LayerView& L = d.layers[l];
        L.ln1 = W(p + "input_layernorm.weight"), L.dln1 = G(p + "input_layernorm.weight");
        L.q = W(p + "self_attn.q_proj.weight"), L.dq = G(p + "self_attn.q_proj.weight");
        L.k = W(p + "self_attn.k_proj.weight"), L.dk = G(p + "self_attn.k_proj.weight");
        L.v = W(p + "self_attn.v_proj.weight"), L.dv = G(p + "self_attn.v_proj.weight");
        L.o = W(p + "self_attn.o_proj.weight"), L.d_o = G(p + "self_attn.o_proj.weight");
        L.ln2 = W(p + "post_attention_layernorm.weight"), L.dln2 = G(p + "post_attention_layernorm.weight");
        L.gate = W(p + "mlp.gate_proj.weight"), L.dgate = G(p + "mlp.gate_proj.weight");
        L.up = W(p + "mlp.up_proj.weight"), L.dup = G(p + "mlp.up_proj.weight");
        L.down = W(p + "mlp.down_proj.weight"), L.ddown = G(p + "mlp.down_proj.weight");
    }
    d.sumsq_scratch.resize(sum_squares_scratch_count(num_params_));
}

ModelCuda::~ModelCuda() = default;

void ModelCuda::plan(int B, int T) {
    if (B == B_ && T == T_) return;
    const ModelConfig& c = config_;
    const int hd = c.head_dim();
    const size_t N = (size_t)B * T, C = c.dim, F = c.ffn_dim, V = c.vocab_size, QD = (size_t)c.n_heads * hd,
                 KD = (size_t)c.n_kv_heads * hd;
    ModelCudaBuffers& d = *d_;
    Carver<bf16> b;
    Carver<float> f;
    for (LayerView& L : d.layers) {
        b.add(&L.residual, N * C), b.add(&L.norm1, N * C), b.add(&L.aq, N * QD), b.add(&L.ak, N * KD);
        b.add(&L.av, N * KD), b.add(&L.att, N * QD), b.add(&L.mid, N * C), b.add(&L.norm2, N * C);
        b.add(&L.agate, N * F), b.add(&L.aup, N * F), b.add(&L.hidden, N * F);
        f.add(&L.rstd1, N), f.add(&L.lse, N * c.n_heads), f.add(&L.rstd2, N);
    }
    b.add(&d.final_residual, N * C), b.add(&d.normed, N * C), b.add(&d.logits, N * V);
    b.add(&d.dres, N * C), b.add(&d.dnorm, N * C), b.add(&d.branch, N * C), b.add(&d.dhidden, N * F);
    b.add(&d.datt, N * QD), b.add(&d.dq, N * QD), b.add(&d.dk, N * KD), b.add(&d.dv, N * KD);
    f.add(&d.rstdf, N), f.add(&d.losses, N), f.add(&d.rope_cos, (size_t)T * hd / 2), f.add(&d.rope_sin, (size_t)T * hd / 2);
    f.add(&d.norm_scratch, rmsnorm_backward_scratch_floats((int)N, (int)C));
    f.add(&d.attention_scratch, attention_backward_scratch_floats(B, T, c.n_heads, hd));
    f.add(&d.sumsq, 1);
    d.acts.resize(0), d.stats.resize(0);  // free the old plan first: the new one may need the room
    size_t free = 0, total = 0;
    CUDA_CHECK(cudaMemGetInfo(&free, &total));
    const double need = (double)b.bytes() + f.bytes(), GiB = 1073741824.0;
    LLMQ_CHECK(need < free, "--batch %d x --seq %d: the GPU activations need %.2f GiB, more than the %.2f GiB free on "
               "the GPU (of %.1f GiB); lower --batch (and raise --grad-accum) or --seq", B, T, need / GiB, free / GiB,
               total / GiB);
    b.allocate(d.acts);
    f.allocate(d.stats);
    d.tokens.resize(N), d.targets.resize(N);

    std::vector<float> cos((size_t)T * hd / 2), sin(cos.size());
    rope_tables_cpu<float>(cos.data(), sin.data(), T, hd, c.rope_theta);
    CUDA_CHECK(cudaMemcpy(d.rope_cos, cos.data(), cos.size() * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d.rope_sin, sin.data(), sin.size() * 4, cudaMemcpyHostToDevice));
    B_ = B, T_ = T;
}

float ModelCuda::forward(const int* tokens, const int* targets, int B, int T) {
    const ModelConfig& c = config_;
    LLMQ_CHECK(B > 0 && T > 0, "model forward: batch %d x sequence %d must be positive", B, T);
    LLMQ_CHECK(T <= c.max_seq_len, "model forward: sequence length %d exceeds max_seq_len %d", T, c.max_seq_len);
    LLMQ_CHECK(targets, "GPU model forward: needs targets (sampling runs on the CPU model)");
    const int N = B * T, C = c.dim, V = c.vocab_size;
    for (int i = 0; i < N; i++) {
        LLMQ_CHECK(tokens[i] >= 0 && tokens[i] < V, "model forward: token id %d at position %d is outside the "
                   "vocabulary [0, %d)", tokens[i], i, V);
        LLMQ_CHECK(targets[i] == kIgnoreIndex || (targets[i] >= 0 && targets[i] < V), "model forward: target id %d "
                   "at position %d is outside the vocabulary [0, %d) and is not the ignore index %d", targets[i], i,
                   V, kIgnoreIndex);
    }
    NvtxRange range("forward");
    plan(B, T);
    ModelCudaBuffers& d = *d_;
    d.host_targets.assign(targets, targets + N);
    d.tokens.upload(std::vector<int>(tokens, tokens + N));
    d.targets.upload(d.host_targets);
    d.embedding_plan.build(tokens, N, V);  // the backward's buckets, while the tokens are on the host

    {
        NvtxRange r("embedding");
        embedding_forward_cuda(d.layers[0].residual, d.tokens.data(), d.embed, N, C);
        rmsnorm_forward_cuda(d.layers[0].norm1, d.layers[0].rstd1, d.layers[0].residual, d.layers[0].ln1, N, C,
                             c.norm_eps);
    }
    for (int l = 0; l < c.n_layers; l++) forward_layer(l);

    NvtxRange r("classifier");
    valid_targets_ = 0;
    for (int i = 0; i < N; i++) valid_targets_ += targets[i] != kIgnoreIndex;
    const float grad_scale = valid_targets_ > 0 ? 1.0f / valid_targets_ : 0.0f;
    matmul_forward_cuda(d.blas, d.logits, d.normed, d.head, N, C, V);  // logits (N,V)
    // the fused classifier: per-row losses, and dlogits of the mean loss in place of the logits
    crossentropy_forward_backward_cuda(d.losses, d.logits, d.logits, d.targets.data(), N, V, kIgnoreIndex, grad_scale);
    std::vector<float> losses(N);
    CUDA_CHECK(cudaMemcpy(losses.data(), d.losses, N * sizeof(float), cudaMemcpyDeviceToHost));
    have_dlogits_ = true;
    double sum = 0;
    for (float x : losses) sum += x;
    return valid_targets_ > 0 ? (float)(sum / valid_targets_) : 0.0f;
}

// One block, as model_core.cpp: mid = x + o(attn(rope(q n1), rope(k n1), v n1)); out = mid + down(swiglu).
// The layer's input norm1 was computed by whoever wrote its residual (the fused residual + norm kernel);
// this layer writes the next layer's residual and norm1 (or the final norm's) the same way.
void ModelCuda::forward_layer(int l) {
    const ModelConfig& c = config_;
    ModelCudaBuffers& d = *d_;
    LayerView& L = d.layers[l];
    const int B = B_, T = T_, N = B * T, C = c.dim, F = c.ffn_dim, hd = c.head_dim(), QD = c.n_heads * hd,
              KD = c.n_kv_heads * hd;
    NvtxRange layer("layer " + std::to_string(l));
    {
        NvtxRange r("attention");
        matmul_forward_cuda(d.blas, L.aq, L.norm1, L.q, N, C, QD);
        matmul_forward_cuda(d.blas, L.ak, L.norm1, L.k, N, C, KD);
        matmul_forward_cuda(d.blas, L.av, L.norm1, L.v, N, C, KD);
        rope_forward_cuda(L.aq, L.aq, d.rope_cos, d.rope_sin, B, T, c.n_heads, hd);
        rope_forward_cuda(L.ak, L.ak, d.rope_cos, d.rope_sin, B, T, c.n_kv_heads, hd);
        attention_forward_cuda(L.att, L.lse, L.aq, L.ak, L.av, B, T, c.n_heads, c.n_kv_heads, hd);
        matmul_forward_cuda(d.blas, d.branch, L.att, L.o, N, QD, C);
        residual_rmsnorm_forward_cuda(L.mid, L.norm2, L.rstd2, L.residual, d.branch, L.ln2, N, C, c.norm_eps);
    }
    NvtxRange r("mlp");
    matmul_forward_cuda(d.blas, L.agate, L.norm2, L.gate, N, C, F);
    matmul_forward_cuda(d.blas, L.aup, L.norm2, L.up, N, C, F);
    swiglu_forward_cuda(L.hidden, L.agate, L.aup, (size_t)N * F);
    matmul_forward_cuda(d.blas, d.branch, L.hidden, L.down, N, F, C);
    const bool last = l + 1 == c.n_layers;
    bf16* next_residual = last ? d.final_residual : d.layers[l + 1].residual;
    bf16* next_norm = last ? d.normed : d.layers[l + 1].norm1;
    float* next_rstd = last ? d.rstdf : d.layers[l + 1].rstd1;
    const bf16* next_weight = last ? d.normf : d.layers[l + 1].ln1;
    residual_rmsnorm_forward_cuda(next_residual, next_norm, next_rstd, L.mid, d.branch, next_weight, N, C, c.norm_eps);
}

void ModelCuda::zero_grad() { d_->grads.zero(); }

void ModelCuda::backward() {
    LLMQ_CHECK(have_dlogits_, "GPU model backward: needs a forward since the last backward");
    have_dlogits_ = false;
    const ModelConfig& c = config_;
    ModelCudaBuffers& d = *d_;
    const int N = B_ * T_, C = c.dim, V = c.vocab_size;
    NvtxRange range("backward");
    {
        NvtxRange r("classifier");
        // dlogits (N,V) sit where the logits were: d(normed) = dlogits W_head, dW_head += dlogits^T normed
        matmul_backward_input_cuda(d.blas, d.dnorm, d.logits, d.head, N, C, V, false);
        matmul_backward_weight_cuda(d.blas, d.dhead, d.logits, d.normed, N, C, V);
        CUDA_CHECK(cudaMemsetAsync(d.dres, 0, (size_t)N * C * sizeof(bf16)));
        rmsnorm_backward_cuda(d.dres, d.dnormf, d.norm_scratch, d.dnorm, d.final_residual, d.normf, d.rstdf, N, C);
    }
    for (int l = c.n_layers - 1; l >= 0; l--) backward_layer(l);
    NvtxRange r("embedding");
    embedding_backward_cuda(d.dembed, d.dres, d.embedding_plan, C);
}

// model_core.cpp's layer backward. dres holds d(loss)/d(layer output) on entry and d/d(layer input) on exit.
void ModelCuda::backward_layer(int l) {
    const ModelConfig& c = config_;
    ModelCudaBuffers& d = *d_;
    LayerView& L = d.layers[l];
    const int B = B_, T = T_, N = B * T, C = c.dim, F = c.ffn_dim, hd = c.head_dim(), QD = c.n_heads * hd,
              KD = c.n_kv_heads * hd;
    NvtxRange layer("layer " + std::to_string(l) + " backward");
    {
        NvtxRange r("mlp");
        matmul_backward_input_cuda(d.blas, d.dhidden, d.dres, L.down, N, F, C, false);
        matmul_backward_weight_cuda(d.blas, L.ddown, d.dres, L.hidden, N, F, C);
        // in place: dgate over gate, dup over up (the saved pre-activations are spent after this)
        swiglu_backward_cuda(L.agate, L.aup, d.dhidden, L.agate, L.aup, (size_t)N * F);
        matmul_backward_input_cuda(d.blas, d.dnorm, L.agate, L.gate, N, C, F, false);
        matmul_backward_input_cuda(d.blas, d.dnorm, L.aup, L.up, N, C, F, true);
        matmul_backward_weight_cuda(d.blas, L.dgate, L.agate, L.norm2, N, C, F);
        matmul_backward_weight_cuda(d.blas, L.dup, L.aup, L.norm2, N, C, F);
        rmsnorm_backward_cuda(d.dres, L.dln2, d.norm_scratch, d.dnorm, L.mid, L.ln2, L.rstd2, N, C);
    }
    NvtxRange r("attention");
    matmul_backward_input_cuda(d.blas, d.datt, d.dres, L.o, N, QD, C, false);
    matmul_backward_weight_cuda(d.blas, L.d_o, d.dres, L.att, N, QD, C);
    attention_backward_cuda(d.dq, d.dk, d.dv, d.attention_scratch, d.datt, L.aq, L.ak, L.av, L.att, L.lse, B, T,
                            c.n_heads, c.n_kv_heads, hd);
    // the inverse rotation, in place: dq and dk become the gradients of the pre-rope q and k
    rope_backward_overwrite_cuda(d.dq, d.dq, d.rope_cos, d.rope_sin, B, T, c.n_heads, hd);
    rope_backward_overwrite_cuda(d.dk, d.dk, d.rope_cos, d.rope_sin, B, T, c.n_kv_heads, hd);
    matmul_backward_input_cuda(d.blas, d.dnorm, d.dq, L.q, N, C, QD, false);
    matmul_backward_input_cuda(d.blas, d.dnorm, d.dk, L.k, N, C, KD, true);
    matmul_backward_input_cuda(d.blas, d.dnorm, d.dv, L.v, N, C, KD, true);
    matmul_backward_weight_cuda(d.blas, L.dq, d.dq, L.norm1, N, C, QD);
    matmul_backward_weight_cuda(d.blas, L.dk, d.dk, L.norm1, N, C, KD);
    matmul_backward_weight_cuda(d.blas, L.dv, d.dv, L.norm1, N, C, KD);
    rmsnorm_backward_cuda(d.dres, L.dln1, d.norm_scratch, d.dnorm, L.residual, L.ln1, L.rstd1, N, C);
}

float ModelCuda::grad_norm() {
    LLMQ_CHECK(B_ > 0, "GPU model grad_norm: no forward has planned the scratch yet");
    ModelCudaBuffers& d = *d_;
    NvtxRange r("grad norm");
    sum_squares_cuda(d.sumsq, d.sumsq_scratch.data(), d.grads.data(), num_params_);
    float sumsq = 0;
    CUDA_CHECK(cudaMemcpy(&sumsq, d.sumsq, sizeof(float), cudaMemcpyDeviceToHost));
    return std::sqrt(sumsq);
}

// each tensor its own rounding stream: element indices restart at 0 in every tensor
uint32_t ModelCuda::tensor_seed(uint32_t seed, size_t tensor) const {
    return seed ^ (uint32_t)((tensor + 1) * 0x9E3779B9u);
}

void ModelCuda::adamw_step(float lr, float beta1, float beta2, float eps, float weight_decay, int step,
                           float grad_scale, uint32_t seed) {
    ModelCudaBuffers& d = *d_;
    NvtxRange r("adamw");
    for (size_t i = 0; i < tensors_.size(); i++) {
        const ParamTensor& t = tensors_[i];
        adamw_update_cuda(d.master.data() + t.offset, d.weights.data() + t.offset, d.grads.data() + t.offset,
                          d.m.data() + t.offset, d.v.data() + t.offset, t.size, lr, beta1, beta2, eps,
                          t.decay ? weight_decay : 0.0f, step, grad_scale, tensor_seed(seed, i));
    }
}

void ModelCuda::upload_state(const float* params, const float* m, const float* v, uint32_t seed) {
    ModelCudaBuffers& d = *d_;
    const size_t bytes = num_params_ * sizeof(float);
    CUDA_CHECK(cudaMemcpy(d.master.data(), params, bytes, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d.m.data(), m, bytes, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d.v.data(), v, bytes, cudaMemcpyHostToDevice));
    for (size_t i = 0; i < tensors_.size(); i++) {
        const ParamTensor& t = tensors_[i];
        stochastic_round_cuda(d.weights.data() + t.offset, d.master.data() + t.offset, t.size, tensor_seed(seed, i));
    }
}

void ModelCuda::download_optimizer_state(std::vector<float>& m, std::vector<float>& v) const {
    m = d_->m.download();
    v = d_->v.download();
}

static size_t g_device_peak = 0;

size_t ModelCuda::device_bytes_in_use() {
    size_t free = 0, total = 0;
    CUDA_CHECK(cudaMemGetInfo(&free, &total));
    g_device_peak = std::max(g_device_peak, total - free);
    return total - free;
}

size_t ModelCuda::device_bytes_peak() {
    device_bytes_in_use();
    return g_device_peak;
}

std::string ModelCuda::device_name() {
    int device = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    cudaDeviceProp p;
    CUDA_CHECK(cudaGetDeviceProperties(&p, device));
    return format("%s (%.0f GiB)", p.name, p.totalGlobalMem / 1073741824.0);
}

void ModelCuda::profiler_range(bool on) { CUDA_CHECK(on ? cudaProfilerStart() : cudaProfilerStop()); }

std::vector<float> ModelCuda::download_params() const { return d_->master.download(); }
std::vector<float> ModelCuda::download_grads() const { return d_->grads.download(); }
size_t ModelCuda::parameter_bytes() const { return d_->master.bytes() + d_->weights.bytes(); }
size_t ModelCuda::gradient_bytes() const { return d_->grads.bytes(); }
size_t ModelCuda::optimizer_bytes() const { return d_->m.bytes() + d_->v.bytes(); }
size_t ModelCuda::activation_bytes() const { return d_->acts.bytes() + d_->stats.bytes(); }

}  // namespace llmq
