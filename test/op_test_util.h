// op_test_util.h: what the op tests share. Random inputs, NaN poison, float/double conversion, the
// finite-difference gradient check and the float-vs-double comparison.
//
// Gradient checks: every op is reduced to a scalar loss L = sum(out * w) with fixed random w, so
// dL/dout = w is the dout fed to the backward. The analytic gradient (backward output minus the random
// values the buffer held before, which also proves it accumulates) is compared with central
// differences (L(x + h) - L(x - h)) / 2h of the double forward, h = 1e-5: truncation ~h^2 and
// round-off ~1e-16 |L| / h are both far below the 1e-6 tolerance.
// Error of one element: |analytic - fd| / max(|fd|, 1e-2 * max|fd|): relative, except near-zero
// entries, which are judged against the gradient's scale.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "../kernels/common.h"

namespace llmq::test {

// Normal inputs. Rng::normal returns floats, so these are exactly representable in fp32: the float
// and double instantiations see identical inputs.
inline std::vector<double> randn(size_t n, Rng& rng, double scale = 1.0) {
    std::vector<double> x(n);
    for (auto& e : x) e = rng.normal() * (float)scale;
    return x;
}

template <typename Real>
std::vector<Real> cast(const std::vector<double>& x) {
    return std::vector<Real>(x.begin(), x.end());
}

template <typename Real>
std::vector<double> to_double(const std::vector<Real>& x) {
    return std::vector<double>(x.begin(), x.end());
}

template <typename Real>
std::vector<Real> nans(size_t n) {
    return std::vector<Real>(n, std::numeric_limits<Real>::quiet_NaN());
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0.0;
    for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
    return s;
}

// after - before, elementwise: what a backward added to a buffer that held `before`
inline std::vector<double> added(const std::vector<double>& after, const std::vector<double>& before) {
    std::vector<double> d(after.size());
    for (size_t i = 0; i < d.size(); i++) d[i] = after[i] - before[i];
    return d;
}

// Central differences of loss() with respect to each element of x (restored afterwards), compared
// with `analytic` (see the file comment for the error measure).
inline void expect_gradient_matches_fd(const std::string& name, std::vector<double>& x,
                                       const std::vector<double>& analytic, const std::function<double()>& loss,
                                       double tol = 1e-6, double h = 1e-5) {
    ASSERT_EQ(x.size(), analytic.size()) << name;
    std::vector<double> fd(x.size());
    for (size_t i = 0; i < x.size(); i++) {
        const double x0 = x[i];
        x[i] = x0 + h;
        const double lp = loss();
        x[i] = x0 - h;
        const double lm = loss();
        x[i] = x0;
        fd[i] = (lp - lm) / (2 * h);
    }
    double scale = 0.0;
    for (double g : fd) scale = std::max(scale, std::fabs(g));
    ASSERT_GT(scale, 0.0) << name << ": the loss does not depend on this input (test cannot fail)";
    double worst = 0.0;
    size_t worst_i = 0;
    for (size_t i = 0; i < x.size(); i++) {
        double err = std::fabs(analytic[i] - fd[i]) / std::max(std::fabs(fd[i]), 1e-2 * scale);
        if (!(err <= worst)) {  // NaN is the worst
            worst = std::isnan(err) ? INFINITY : err;
            worst_i = i;
        }
    }
    EXPECT_LE(worst, tol) << name << ": worst element " << worst_i << " analytic " << analytic[worst_i] << " fd "
                          << fd[worst_i];
}

// got (the float run, widened) against ref (the double run): |got - ref| / max(|ref|, rms(ref)).
inline void expect_close(const std::string& name, const std::vector<double>& got, const std::vector<double>& ref,
                         double rtol = 1e-5) {
    ASSERT_EQ(got.size(), ref.size()) << name;
    double ss = 0.0;
    for (double r : ref) ss += r * r;
    const double rms = std::sqrt(ss / std::max<size_t>(1, ref.size()));
    ASSERT_GT(rms, 0.0) << name << ": reference is all zeros (test cannot fail)";
    double worst = 0.0;
    size_t worst_i = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        double err = std::fabs(got[i] - ref[i]) / std::max(std::fabs(ref[i]), rms);
        if (!(err <= worst)) {
            worst = std::isnan(err) ? INFINITY : err;
            worst_i = i;
        }
    }
    EXPECT_LE(worst, rtol) << name << ": worst element " << worst_i << " got " << got[worst_i] << " ref "
                           << ref[worst_i];
}

}  // namespace llmq::test
