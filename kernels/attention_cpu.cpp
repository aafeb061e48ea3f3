// attention_cpu.cpp: causal grouped-query attention, flash-attention contract (see attention.h).
//
// Forward, per (b, h, t): s_u = scale * q_t . k_u for u <= t, lse_t = log sum_u exp(s_u),
// out_t = sum_u p_u v_u with p_u = exp(s_u - lse_t). Only lse is kept.
// Backward recomputes p from q, k and lse, then with D_t = dout_t . out_t (= sum_u p_u dout_t . v_u):
//   dv_u += p_u dout_t,   ds_u = p_u (dout_t . v_u - D_t),   dq_t += scale sum_u ds_u k_u,
//   dk_u += scale ds_u q_t.
// Threads split the backward by (b, kv head): each owns the dk/dv rows of its kv head and the dq
// rows of the query heads that read it, so there are no races and the sums run in a fixed order
// (bitwise identical for any thread count).
#include "attention.h"

#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include "common.h"
#include "cpu_parallel.h"

namespace llmq {

template <typename Real>
void attention_forward_cpu(Real* out, Real* lse, const Real* q, const Real* k, const Real* v, int B, int T,
                           int n_heads, int n_kv_heads, int head_dim) {
    LLMQ_CHECK(n_kv_heads > 0 && n_heads % n_kv_heads == 0, "attention: n_kv_heads %d does not divide n_heads %d",
               n_kv_heads, n_heads);
    const int NH = n_heads, NKV = n_kv_heads, hd = head_dim, group = NH / NKV;
    const Real scale = Real(1) / std::sqrt((Real)hd);
#pragma omp parallel if (parallel_worth((long long)B * n_heads * T * T / 2 * head_dim))
    {
        std::vector<Real> score(T);  // this thread's scores of one query row
#pragma omp for collapse(3) schedule(dynamic, 16)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++)
                for (int t = 0; t < T; t++) {
                    const int kvh = h / group;
                    const Real* qt = q + (((size_t)b * T + t) * NH + h) * hd;
                    Real maxs = -std::numeric_limits<Real>::infinity();
                    for (int u = 0; u <= t; u++) {
                        const Real* ku = k + (((size_t)b * T + u) * NKV + kvh) * hd;
                        Real dot = 0;
                        for (int i = 0; i < hd; i++) dot += qt[i] * ku[i];
                        score[u] = dot * scale;
                        if (score[u] > maxs) maxs = score[u];
                    }
                    Real sum = 0;
                    for (int u = 0; u <= t; u++) {
                        score[u] = std::exp(score[u] - maxs);
                        sum += score[u];
                    }
                    const Real inv = Real(1) / sum;
                    Real* ot = out + (((size_t)b * T + t) * NH + h) * hd;
                    for (int i = 0; i < hd; i++) ot[i] = 0;
                    for (int u = 0; u <= t; u++) {
                        const Real* vu = v + (((size_t)b * T + u) * NKV + kvh) * hd;
                        const Real p = score[u] * inv;
                        for (int i = 0; i < hd; i++) ot[i] += p * vu[i];
                    }
                    lse[((size_t)b * NH + h) * T + t] = maxs + std::log(sum);
                }
    }
}

template <typename Real>
void attention_backward_cpu(Real* dq, Real* dk, Real* dv, const Real* dout, const Real* q, const Real* k,
                            const Real* v, const Real* out, const Real* lse, int B, int T, int n_heads,
                            int n_kv_heads, int head_dim) {
    LLMQ_CHECK(n_kv_heads > 0 && n_heads % n_kv_heads == 0, "attention: n_kv_heads %d does not divide n_heads %d",
               n_kv_heads, n_heads);
    const int NH = n_heads, NKV = n_kv_heads, hd = head_dim, group = NH / NKV;
    const Real scale = Real(1) / std::sqrt((Real)hd);
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if (parallel_worth((long long)B * n_heads * T * T * head_dim))
    for (int b = 0; b < B; b++)
        for (int kvh = 0; kvh < NKV; kvh++)
            for (int h = kvh * group; h < (kvh + 1) * group; h++)
                for (int t = 0; t < T; t++) {
                    const size_t qo = (((size_t)b * T + t) * NH + h) * hd;
                    const Real* qt = q + qo;
                    const Real* dout_t = dout + qo;
                    const Real* ot = out + qo;
                    Real* dqt = dq + qo;
                    const Real lse_t = lse[((size_t)b * NH + h) * T + t];
                    Real D = 0;
                    for (int i = 0; i < hd; i++) D += dout_t[i] * ot[i];
                    for (int u = 0; u <= t; u++) {
                        const size_t ko = (((size_t)b * T + u) * NKV + kvh) * hd;
                        const Real* ku = k + ko;
                        const Real* vu = v + ko;
                        Real s = 0, dp = 0;
                        for (int i = 0; i < hd; i++) {
                            s += qt[i] * ku[i];
                            dp += dout_t[i] * vu[i];
                        }
                        const Real p = std::exp(s * scale - lse_t);
                        const Real ds = p * (dp - D) * scale;  // gradient of the unscaled dot product
                        Real* dku = dk + ko;
                        Real* dvu = dv + ko;
                        for (int i = 0; i < hd; i++) {
                            dvu[i] += p * dout_t[i];
                            dku[i] += ds * qt[i];
                            dqt[i] += ds * ku[i];
                        }
                    }
                }
}

#define LLMQ_INSTANTIATE(Real)                                                                                    \
    template void attention_forward_cpu<Real>(Real*, Real*, const Real*, const Real*, const Real*, int, int, int, \
                                              int, int);                                                          \
    template void attention_backward_cpu<Real>(Real*, Real*, Real*, const Real*, const Real*, const Real*,        \
                                               const Real*, const Real*, const Real*, int, int, int, int, int);
LLMQ_INSTANTIATE(float)
LLMQ_INSTANTIATE(double)
#undef LLMQ_INSTANTIATE

}  // namespace llmq
