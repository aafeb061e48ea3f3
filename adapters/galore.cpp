// galore.cpp: GaLore's projected Adam (see galore.h): the projection refresh by SVD, the step, the memory formula
// and the checkpoint form of the state.
//
// Checkpoint form (little-endian), version kGaloreStateVersion:
//   u32 magic "GALR"; u32 version; i32 rank; i32 every; f32 scale; i32 updates taken; u32 number of tensors; then
//   per tensor, in layout order: str name (u32 length + bytes); u8 projected; u8 left; i32 m, n, r; u64 moment
//   size K; f32[r min(m,n)] the projection (P (m,r) or Qt (r,n); projected tensors only); f32[K] m; f32[K] v.
// It is the checkpoint's "galore" state section (tools/checkpoint.h); layers/state_bytes.h reads it bounds-checked.
#include "galore.h"

#include <algorithm>
#include <cstring>

#include "../kernels/adamw.h"
#include "../kernels/common.h"
#include "../kernels/cpu_parallel.h"
#include "../kernels/matmul.h"
#include "../layers/state_bytes.h"
#include "svd.h"

namespace llmq {

namespace {
constexpr uint32_t kGaloreMagic = 0x524C4147u;  // "GALR"
constexpr uint32_t kGaloreStateVersion = 1;
}  // namespace

bool galore_projects(const ParamTensor& t) { return is_attention_mlp_weight(t); }

GaloreOptimizer::GaloreOptimizer(const OptimizerConfig& config, const GaloreOptions& options,
                                 const std::vector<ParamTensor>& tensors)
    : config_(config), options_(options) {
    LLMQ_CHECK(!config.eight_bit, "galore: 8-bit states are not implemented (the projected moments are fp32)");
    LLMQ_CHECK(options.rank >= 1, "galore: rank %d must be at least 1", options.rank);
    LLMQ_CHECK(options.every >= 1, "galore: the projection refresh interval %d must be at least 1", options.every);
    LLMQ_CHECK(options.scale > 0, "galore: scale %g must be positive", options.scale);
    AdamW(config, 0);  // validates the schedule fields (lr, warmup, total steps) with AdamW's messages
    size_t max_r = 0, max_w = 0;
    for (const ParamTensor& t : tensors) {
        GaloreSlot s;
        s.tensor = t;
        s.projected = galore_projects(t);
        if (s.projected) {
            s.m = t.shape[0], s.n = t.shape[1];
            s.r = std::min({options.rank, s.m, s.n});
            s.left = s.m < s.n;  // the code's 'std': right projection when shape[0] >= shape[1]
            s.proj.assign((size_t)s.r * std::min(s.m, s.n), 0.0f);
            const size_t k = (size_t)s.r * std::max(s.m, s.n);
            s.exp_avg.assign(k, 0.0f), s.exp_avg_sq.assign(k, 0.0f);
            max_r = std::max(max_r, k), max_w = std::max(max_w, t.size);
        } else {
            s.exp_avg.assign(t.size, 0.0f), s.exp_avg_sq.assign(t.size, 0.0f);
        }
        num_params_ = std::max(num_params_, t.offset + t.size);
        slots_.push_back(std::move(s));
    }
    scratch_r_.resize(max_r), scratch_w_.resize(max_w);
}

void GaloreOptimizer::refresh_projection(GaloreSlot& s, const float* grad) {
    std::vector<double> g(grad, grad + s.tensor.size);
    const Svd d = svd_thin(g.data(), s.m, s.n, s.tensor.name.c_str());
    if (s.left) {  // P = U[:, :r]  (m,r) from U (m,k)
        for (int i = 0; i < s.m; i++)
            for (int j = 0; j < s.r; j++) s.proj[(size_t)i * s.r + j] = (float)d.U[(size_t)i * d.k + j];
    } else {       // Qt = Vt[:r, :]  (r,n)
        for (size_t i = 0; i < (size_t)s.r * s.n; i++) s.proj[i] = (float)d.Vt[i];
    }
}

void GaloreOptimizer::step_projected(GaloreSlot& s, float* param, const float* grad, float lr, float clip_scale) {
    if (t_ % options_.every == 0) refresh_projection(s, grad);
    const int m = s.m, n = s.n, r = s.r;
    float* R = scratch_r_.data();  // (r,n) left, (m,r) right
    float* D = scratch_w_.data();  // (m,n)
    if (s.left) gemm_cpu<float>(true, false, r, n, m, 1.0f, s.proj.data(), r, grad, n, 0.0f, R, n);  // P^T G
    else gemm_cpu<float>(false, true, m, r, n, 1.0f, grad, n, s.proj.data(), n, 0.0f, R, r);         // G Qt^T
    // N = Adam direction of the projected gradient, in place
    adam_direction_cpu<float>(R, R, s.exp_avg.data(), s.exp_avg_sq.data(), s.moment_size(), config_.beta1,
                              config_.beta2, config_.eps, t_ + 1, clip_scale);
    if (s.left) gemm_cpu<float>(false, false, m, n, r, 1.0f, s.proj.data(), r, R, n, 0.0f, D, n);  // P N
    else gemm_cpu<float>(false, false, m, n, r, 1.0f, R, r, s.proj.data(), n, 0.0f, D, n);         // N Qt
    const float wd = s.tensor.decay ? config_.weight_decay : 0.0f, scale = options_.scale;
    const size_t size = s.tensor.size;
#pragma omp parallel for schedule(static) if (parallel_worth((long long)size))
    for (size_t i = 0; i < size; i++) adamw_apply(param[i], scale * D[i], lr, wd);
}

float GaloreOptimizer::step(Model& model, int step) {
    return this->step(model.params(), model.grads(), model.num_params(), step);
}

float GaloreOptimizer::step(float* params, const float* grads, size_t n, int step) {
    LLMQ_CHECK(n == num_params_, "galore: built for a layout of %zu parameters, the buffer has %zu", num_params_, n);
    float clip_scale = 1.0f;
    const float norm = global_grad_norm(config_, grads, n, step, &clip_scale);
    const float lr = lr_at_step(config_, step);
    for (GaloreSlot& s : slots_) {
        const ParamTensor& t = s.tensor;
        if (s.projected) {
            step_projected(s, params + t.offset, grads + t.offset, lr, clip_scale);
        } else {  // the fp32 AdamW update of layers/optimizer.cpp, on this tensor's own moments
            adamw_update_cpu(params + t.offset, grads + t.offset, s.exp_avg.data(), s.exp_avg_sq.data(), t.size, lr,
                             config_.beta1, config_.beta2, config_.eps, t.decay ? config_.weight_decay : 0.0f, t_ + 1,
                             clip_scale);
        }
    }
    t_++;
    return norm;
}

size_t GaloreOptimizer::state_bytes() const {
    size_t floats = 0;
    for (const GaloreSlot& s : slots_) floats += s.proj.size() + s.exp_avg.size() + s.exp_avg_sq.size();
    return floats * sizeof(float);
}

size_t GaloreOptimizer::state_bytes_for(const std::vector<ParamTensor>& tensors, int rank) {
    size_t bytes = 0;
    for (const ParamTensor& t : tensors) {
        if (!galore_projects(t)) {
            bytes += 8 * t.size;
            continue;
        }
        const size_t m = t.shape[0], n = t.shape[1], r = std::min({(size_t)rank, m, n});
        bytes += 4 * r * (2 * std::max(m, n) + std::min(m, n));
    }
    return bytes;
}

std::string GaloreOptimizer::describe() const {
    size_t projected = 0, weights = 0, left = 0, rest = 0;
    for (const GaloreSlot& s : slots_) {
        if (s.projected) projected++, weights += s.tensor.size, left += s.left;
        else rest += s.tensor.size;
    }
    return format("method galore: rank %d, projection refreshed every %d steps, scale %g, on %zu weights "
                  "(q,k,v,o,gate,up,down; %zu projected on the left, %zu on the right; %zu parameters, all trained); "
                  "AdamW on the other %zu parameters (embeddings, norms, lm_head)",
                  options_.rank, options_.every, options_.scale, projected, left, projected - left, weights, rest);
}

std::vector<uint8_t> GaloreOptimizer::serialize() const {
    StateWriter o;
    o.put(kGaloreMagic), o.put(kGaloreStateVersion);
    o.put<int32_t>(options_.rank), o.put<int32_t>(options_.every), o.put<float>(options_.scale);
    o.put<int32_t>(t_);
    o.put<uint32_t>((uint32_t)slots_.size());
    for (const GaloreSlot& s : slots_) {
        o.put_str(s.tensor.name);
        o.put<uint8_t>(s.projected), o.put<uint8_t>(s.left);
        o.put<int32_t>(s.m), o.put<int32_t>(s.n), o.put<int32_t>(s.r);
        o.put<uint64_t>(s.moment_size());
        o.put_array(s.proj.data(), s.proj.size());
        o.put_array(s.exp_avg.data(), s.exp_avg.size());
        o.put_array(s.exp_avg_sq.data(), s.exp_avg_sq.size());
    }
    return o.bytes;
}

void GaloreOptimizer::deserialize(const uint8_t* data, size_t size, const char* what) {
    StateReader in(data, size, what, "GaLore state");
    const uint32_t magic = in.get<uint32_t>(), version = in.get<uint32_t>();
    LLMQ_CHECK(magic == kGaloreMagic, "%s: the GaLore optimizer state is corrupt (bad magic)", what);
    LLMQ_CHECK(version == kGaloreStateVersion, "%s: GaLore state version %u, this build reads version %u", what,
               version, kGaloreStateVersion);
    const int rank = in.get<int32_t>();
    in.get<int32_t>(), in.get<float>();  // every, scale: flags of the run (a resume may change them)
    LLMQ_CHECK(rank == options_.rank, "%s: the GaLore state has rank %d, this run --rank %d", what, rank,
               options_.rank);
    const int steps_taken = in.get<int32_t>();
    LLMQ_CHECK(steps_taken >= 0, "%s: the GaLore state is corrupt (%d updates taken)", what, steps_taken);
    const uint32_t count = in.get<uint32_t>();
    LLMQ_CHECK(count == slots_.size(), "%s: the GaLore state holds %u tensors, this model %zu", what, count,
               slots_.size());
    for (GaloreSlot& s : slots_) {
        const std::string name = in.get_str();
        const bool projected = in.get<uint8_t>() != 0, left = in.get<uint8_t>() != 0;
        const int m = in.get<int32_t>(), n = in.get<int32_t>(), r = in.get<int32_t>();
        const uint64_t k = in.get<uint64_t>();
        LLMQ_CHECK(name == s.tensor.name && projected == s.projected && left == s.left && m == s.m && n == s.n &&
                       r == s.r && k == s.moment_size(),
                   "%s: GaLore state of %s (%s, %d x %d, rank %d, %llu moments) does not match this run's %s (%s, "
                   "%d x %d, rank %d, %zu moments)", what, name.c_str(), projected ? "projected" : "AdamW", m, n, r,
                   (unsigned long long)k, s.tensor.name.c_str(), s.projected ? "projected" : "AdamW", s.m, s.n, s.r,
                   s.moment_size());
        in.get_array(s.proj.data(), s.proj.size());
        in.get_array(s.exp_avg.data(), s.exp_avg.size());
        in.get_array(s.exp_avg_sq.data(), s.exp_avg_sq.size());
    }
    in.expect_end();
    t_ = steps_taken;
}

}  // namespace llmq
