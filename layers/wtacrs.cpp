// wtacrs.cpp: the WTA-CRS selection and the ||dY|| proxy (see wtacrs.h for what and why).
#include "wtacrs.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

namespace llmq {

int wtacrs_k(int N, double ratio) {
    LLMQ_CHECK(N >= 0 && ratio >= 0 && ratio <= 1, "wtacrs: N %d must be >= 0 and ratio %g in [0, 1]", N, ratio);
    return std::min(std::max((int)std::floor(N * ratio), 10), N);
}

template <typename Real>
int wtacrs_select(const std::vector<double>& p, int k, Rng& rng, std::vector<int>& rows, std::vector<Real>& weights) {
    const int N = (int)p.size();
    rows.clear();
    weights.clear();
    double total = 0;
    for (double v : p) {
        LLMQ_CHECK(v >= 0 && std::isfinite(v), "wtacrs: probability %g is not a finite non-negative number", v);
        total += v;
    }
    if (total <= 0 || k <= 0) return 0;  // every row has x = 0 (or nothing to draw): the exact sum is 0
    if (k >= N) {                          // every row once, exactly
        for (int i = 0; i < N; i++) rows.push_back(i), weights.push_back(Real(1));
        return N;
    }
    // the k most probable rows, descending (ties by index, so the choice is deterministic)
    std::vector<int> order(N);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [&](int a, int b) { return p[a] != p[b] ? p[a] > p[b] : a < b; });
    // c winners leave k - c draws for the residual mass 1 - P_c: minimise (1 - P_c) / (k - c); c = 0 gives 1/k
    int c_best = 0;
    double best = 1.0 / k, P = 0;
    for (int c = 1; c < k; c++) {
        P += p[order[c - 1]] / total;
        double v = (1.0 - P) / (k - c);
        if (v < best) best = v, c_best = c;
    }
    for (int c = 0; c < c_best; c++) rows.push_back(order[c]), weights.push_back(Real(1));
    // residual: the non-winners' mass summed directly (not 1 - P_C, which cancels), a CDF over them
    std::vector<char> winner(N, 0);
    for (int c = 0; c < c_best; c++) winner[order[c]] = 1;
    std::vector<int> idx;
    std::vector<double> cdf;
    double mass = 0;
    for (int i = 0; i < N; i++)
        if (!winner[i] && p[i] > 0) mass += p[i], idx.push_back(i), cdf.push_back(mass);
    if (idx.empty()) return c_best;  // all mass in the winners: the rest have x = 0 and contribute 0
    const int draws = k - c_best;
    for (int s = 0; s < draws; s++) {
        double u = (rng.next_u64() >> 11) * (1.0 / 9007199254740992.0) * mass;  // [0, mass), 53 bits
        size_t j = std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin();
        if (j >= idx.size()) j = idx.size() - 1;
        rows.push_back(idx[j]);
        weights.push_back((Real)(mass / (draws * p[idx[j]])));  // (1 - P_C) / ((k - c) p_j), unnormalised p
    }
    return c_best;
}

template <typename Real>
WtaCrsSampler<Real>::WtaCrsSampler(double ratio, uint64_t seed, int period, double decay)
    : rng(seed), ratio_(ratio), decay_(decay), period_(period) {
    LLMQ_CHECK(ratio > 0 && ratio <= 1, "wtacrs: ratio %g must be in (0, 1]", ratio);
    LLMQ_CHECK(period >= 0 && decay >= 0 && decay < 1, "wtacrs: period %d must be >= 0 and decay %g in [0, 1)",
               period, decay);
}

template <typename Real>
void WtaCrsSampler<Real>::select(const Real* inp, int N, int C, std::vector<int>& rows, std::vector<Real>& weights) {
    // g: the proxy per position, floored at a fraction of the mean of the observed ones; 1 before any
    double mean = 0;
    int seen = 0;
    for (double g : proxy_)
        if (g > 0) mean += g, seen++;
    mean = seen ? mean / seen : 1.0;
    p_.resize(N);
    for (int i = 0; i < N; i++) {
        const Real* x = inp + (size_t)i * C;
        double s = 0;
        for (int c = 0; c < C; c++) s += (double)x[c] * x[c];
        size_t pos = period_ > 0 ? (size_t)(i % period_) : (size_t)i;
        double g = pos < proxy_.size() && proxy_[pos] > 0 ? proxy_[pos] : mean;
        p_[i] = std::sqrt(s) * std::max(g, kProxyFloor * mean);
    }
    last_winners_ = wtacrs_select<Real>(p_, wtacrs_k(N, ratio_), rng, rows, weights);
}

template <typename Real>
void WtaCrsSampler<Real>::observe_output_norms(const std::vector<double>& sq_norms) {
    const int N = (int)sq_norms.size();
    size_t need = period_ > 0 ? (size_t)std::min(N, period_) : (size_t)N;
    if (proxy_.size() < need) proxy_.resize(need, 0.0);
    // the mean ||dY_i|| over the rows at each position this backward, then the EMA (first value taken as is)
    std::vector<double> sum(proxy_.size(), 0.0);
    std::vector<int> count(proxy_.size(), 0);
    for (int i = 0; i < N; i++) {
        size_t pos = period_ > 0 ? (size_t)(i % period_) : (size_t)i;
        sum[pos] += std::sqrt(sq_norms[i]), count[pos]++;
    }
    for (size_t t = 0; t < proxy_.size(); t++) {
        if (!count[t]) continue;
        double g = sum[t] / count[t];
        proxy_[t] = proxy_[t] > 0 ? decay_ * proxy_[t] + (1 - decay_) * g : g;
    }
}

template <typename Real>
void WtaCrsSampler<Real>::append_state(StateWriter& out) const {
    out.put<uint64_t>(rng.state);
    out.put<uint32_t>((uint32_t)proxy_.size());
    out.put_array(proxy_.data(), proxy_.size());
}

template <typename Real>
void WtaCrsSampler<Real>::restore_state(StateReader& in) {
    rng.state = in.get<uint64_t>();
    proxy_.resize(in.get<uint32_t>());
    in.get_array(proxy_.data(), proxy_.size());
    for (double g : proxy_)
        LLMQ_CHECK(std::isfinite(g) && g >= 0, "%s: WTA-CRS sampler state is corrupt (proxy value %g)", in.what, g);
}

std::vector<uint8_t> wtacrs_state_bytes(const NamedSamplers& samplers) {
    StateWriter out;
    out.put<uint32_t>((uint32_t)samplers.size());
    for (const auto& [name, sampler] : samplers) {
        out.put_str(name);
        sampler->append_state(out);
    }
    return out.bytes;
}

void restore_wtacrs_state(const NamedSamplers& samplers, const std::vector<uint8_t>& bytes, const char* what) {
    StateReader in(bytes, what, "WTA-CRS sampler state");
    const uint32_t count = in.get<uint32_t>();
    LLMQ_CHECK(count == samplers.size(), "%s: the checkpoint holds %u WTA-CRS samplers, this run has %zu (--wtacrs-layers "
               "must match the run that wrote it)", what, count, samplers.size());
    for (const auto& [name, sampler] : samplers) {
        const std::string stored = in.get_str();
        LLMQ_CHECK(stored == name, "%s: the checkpoint's WTA-CRS sampler '%s' is '%s' in this run (--wtacrs-layers must "
                   "match the run that wrote it)", what, stored.c_str(), name.c_str());
        sampler->restore_state(in);
    }
    in.expect_end();
}

template int wtacrs_select<float>(const std::vector<double>&, int, Rng&, std::vector<int>&, std::vector<float>&);
template int wtacrs_select<double>(const std::vector<double>&, int, Rng&, std::vector<int>&, std::vector<double>&);
template class WtaCrsSampler<float>;
template class WtaCrsSampler<double>;

}  // namespace llmq
