// crossentropy_cpu.cpp: fused softmax + cross-entropy loss + dlogits, one row at a time.
// Per row: lse = max + log sum exp(l - max), loss = lse - l[target],
// dlogits = grad_scale * (exp(l - lse) - onehot(target)). The loss needs l[target] and the gradient
// needs lse, both read before the row is overwritten, so dlogits may alias logits.
#include "crossentropy.h"

#include <cmath>
#include <cstddef>

#include "common.h"
#include "cpu_parallel.h"

namespace llmq {

template <typename Real>
void crossentropy_forward_backward_cpu(Real* losses, Real* dlogits, const Real* logits, const int* targets, int N,
                                       int V, int ignore_index, Real grad_scale) {
    // logits (N,V), targets (N), losses (N), dlogits (N,V) or null
    for (int n = 0; n < N; n++)
        LLMQ_CHECK(targets[n] == ignore_index || (targets[n] >= 0 && targets[n] < V),
                   "crossentropy: target %d of row %d is outside [0, %d) and is not ignore_index %d", targets[n], n, V,
                   ignore_index);
#pragma omp parallel for schedule(static) if (parallel_worth((long long)N * V))
    for (int n = 0; n < N; n++) {
        const Real* l = logits + (size_t)n * V;
        Real* dl = dlogits ? dlogits + (size_t)n * V : nullptr;
        const int target = targets[n];
        if (target == ignore_index) {
            losses[n] = 0;
            if (dl)
                for (int j = 0; j < V; j++) dl[j] = 0;
            continue;
        }
        Real maxl = l[0];
        for (int j = 1; j < V; j++) maxl = l[j] > maxl ? l[j] : maxl;
        Real sum = 0;
        for (int j = 0; j < V; j++) sum += std::exp(l[j] - maxl);
        const Real lse = maxl + std::log(sum);
        losses[n] = lse - l[target];
        if (dl) {
            for (int j = 0; j < V; j++) dl[j] = grad_scale * std::exp(l[j] - lse);
            dl[target] -= grad_scale;
        }
    }
}

template void crossentropy_forward_backward_cpu<float>(float*, float*, const float*, const int*, int, int, int,
                                                       float);
template void crossentropy_forward_backward_cpu<double>(double*, double*, const double*, const int*, int, int, int,
                                                        double);

}  // namespace llmq
