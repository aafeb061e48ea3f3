// switchlora_optimizer.cpp: per-vector-step AdamW for SwitchLoRA (see switchlora_optimizer.h). The element
// update is kernels/adamw.h's adamw_element, the one AdamW formula of llmq.
#include "switchlora_optimizer.h"

#include <algorithm>
#include <cmath>

#include "../kernels/adamw.h"
#include "../kernels/common.h"
#include "../kernels/cpu_parallel.h"

namespace llmq {

SwitchLoraOptimizer::SwitchLoraOptimizer(const OptimizerConfig& config, const std::vector<ParamTensor>& tensors)
    : config_(config), tensors_(tensors) {
    LLMQ_CHECK(!config.eight_bit, "switchlora: the optimizer keeps fp32 states (8-bit AdamW is not supported)");
    LLMQ_CHECK(config.total_steps > 0 && config.lr > 0, "switchlora: optimizer needs total_steps > 0 and lr > 0");
    LLMQ_CHECK(!tensors.empty() && tensors.size() % 2 == 0, "switchlora: %zu adapter tensors, expected (A, B) pairs",
               tensors.size());
    rank_ = tensors[0].shape.at(0);
    size_t n = 0;
    for (size_t l = 0; l < tensors.size() / 2; l++) {
        const ParamTensor &a = tensors[2 * l], &b = tensors[2 * l + 1];
        LLMQ_CHECK(a.shape.size() == 2 && b.shape.size() == 2 && a.shape[0] == rank_ && b.shape[1] == rank_,
                   "switchlora: %s / %s are not A (%d,in), B (out,%d)", a.name.c_str(), b.name.c_str(), rank_, rank_);
        n = std::max({n, a.offset + a.size, b.offset + b.size});
    }
    m_.assign(n, 0.0f);
    v_.assign(n, 0.0f);
    steps_.assign(tensors.size() * (size_t)rank_, 0);
    frozen_.assign(steps_.size(), 0);
}

void SwitchLoraOptimizer::reset_and_freeze(size_t layer, LoraFactor f, int index, int freeze_steps) {
    LLMQ_CHECK(layer < num_layers() && index >= 0 && index < rank_ && freeze_steps >= 0,
               "switchlora: no vector %d of layer %zu to reset (rank %d, %zu layers)", index, layer, rank_,
               num_layers());
    const ParamTensor& t = tensors_[2 * layer + (size_t)f];
    const int cols = t.shape[1];
    if (f == LoraFactor::A) {  // row `index`: contiguous
        std::fill_n(m_.begin() + t.offset + (size_t)index * cols, cols, 0.0f);
        std::fill_n(v_.begin() + t.offset + (size_t)index * cols, cols, 0.0f);
    } else {  // column `index` of (out, r)
        for (int o = 0; o < t.shape[0]; o++) {
            const size_t i = t.offset + (size_t)o * cols + index;
            m_[i] = v_[i] = 0.0f;
        }
    }
    steps_[vector_index(layer, f, index)] = 0;
    frozen_[vector_index(layer, f, index)] = freeze_steps;
}

float SwitchLoraOptimizer::step(float* params, const float* grads, size_t n, int step) {
    LLMQ_CHECK(n == m_.size(), "switchlora: optimizer built for %zu parameters, the buffer has %zu", m_.size(), n);
    const float norm = (float)std::sqrt(sum_squares_cpu(grads, n));
    LLMQ_CHECK(std::isfinite(norm), "switchlora: gradient norm is %g at step %d (non-finite gradients)", norm, step);
    const float clip = (config_.grad_clip > 0 && norm > config_.grad_clip) ? config_.grad_clip / norm : 1.0f;
    const float lr = lr_at_step(config_, step);
    const float b1 = config_.beta1, b2 = config_.beta2, eps = config_.eps;
    // every vector's counter advances; a frozen one only counts its freeze down
    std::vector<float> bc1(steps_.size()), bc2(steps_.size());
    std::vector<char> active(steps_.size());
    for (size_t k = 0; k < steps_.size(); k++) {
        steps_[k]++;
        active[k] = frozen_[k] == 0;
        if (!active[k]) frozen_[k]--;
        bc1[k] = adam_bias_correction(b1, steps_[k]);
        bc2[k] = adam_bias_correction(b2, steps_[k]);
    }
    for (size_t l = 0; l < num_layers(); l++) {
        for (int f = 0; f < 2; f++) {
            const ParamTensor& t = tensors_[2 * l + f];
            const int rows = t.shape[0], cols = t.shape[1];
            const float wd = t.decay ? config_.weight_decay : 0.0f;
            const size_t k0 = vector_index(l, (LoraFactor)f, 0);
            // A (r,in): vector = row o; B (out,r): vector = column j
#pragma omp parallel for schedule(static) if (parallel_worth((long long)t.size))
            for (int o = 0; o < rows; o++) {
                const size_t row = t.offset + (size_t)o * cols;
                if (f == 0 && !active[k0 + o]) continue;
                for (int j = 0; j < cols; j++) {
                    const size_t k = k0 + (f == 0 ? o : j), i = row + j;
                    if (f == 0 || active[k])
                        adamw_element(params[i], grads[i] * clip, m_[i], v_[i], lr, b1, b2, eps, wd, bc1[k], bc2[k]);
                }
            }
        }
    }
    return norm;
}

size_t SwitchLoraOptimizer::state_bytes() const {
    return (m_.size() + v_.size()) * sizeof(float) + (steps_.size() + frozen_.size()) * sizeof(int32_t);
}

}  // namespace llmq
