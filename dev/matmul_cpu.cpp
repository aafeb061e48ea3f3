// dev/matmul_cpu.cpp: the road to the CPU SGEMM in kernels/matmul_cpu.cpp, llm.c dev/ style.
//
//   version 1: naive triple loop i-j-k (the dot-product form; strided reads of B)
//   version 2: loop-reordered i-k-j (the inner loop streams a row of B and a row of C; vectorises) + OpenMP
//   version 3: cache-blocked + packed + register-tiled + OpenMP: llmq::gemm_cpu itself
//
// Every version is checked against version 1 on the same random inputs (all four transpose
// combinations, sizes that are not multiples of any block), then the selected version is timed on the
// linear layers of the tiny and 60m models (N = 4096 rows): forward out = inp W^T (A normal, B transposed),
// backward-input dinp += dout W (normal, normal) and backward-weight dW += dout^T inp (transposed, normal),
// with 1 thread and with all threads (the fastest of the runs made in 0.5 s). Each timing is printed
// with its GFLOP/s and its ratio to the machine's peak, measured in the same run by a loop of 12
// independent chains of 8-wide fp32 FMAs per thread (register-only: the FMA units' throughput, i.e.
// cores x FMA ports x 8 lanes x 2 flops x clock, with no memory traffic at all).
//
// build: make build/dev/matmul_cpu
// run:   ./build/dev/matmul_cpu [version=3] [max_seconds_per_case=20]
//        (cases whose estimated time exceeds max_seconds_per_case are skipped: versions 1 and 2 would
//        take minutes on the vocabulary-sized products)
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../kernels/common.h"
#include "../kernels/matmul.h"

using namespace llmq;

// ----------------------------------------------------------------------------------------------------
// the versions; all compute C(M,N) = alpha op(A) op(B) + beta C, row-major, like llmq::gemm_cpu

static float elem(const float* X, int ld, bool trans, int r, int c) {
    return trans ? X[(size_t)c * ld + r] : X[(size_t)r * ld + c];
}

void gemm_v1(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
             float beta, float* C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0.0;  // double so that version 1 is the reference
            for (int k = 0; k < K; k++) acc += (double)elem(A, lda, ta, i, k) * elem(B, ldb, tb, k, j);
            float prev = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
            C[(size_t)i * ldc + j] = prev + alpha * (float)acc;
        }
}

void gemm_v2(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
             float beta, float* C, int ldc) {
    // op(B) is materialised row-major once so the inner loop is contiguous for either transpose
    std::vector<float> Bn((size_t)K * N);
    for (int k = 0; k < K; k++)
        for (int j = 0; j < N; j++) Bn[(size_t)k * N + j] = elem(B, ldb, tb, k, j);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < M; i++) {
        float* c = C + (size_t)i * ldc;
        for (int j = 0; j < N; j++) c[j] = beta == 0.0f ? 0.0f : beta * c[j];
        for (int k = 0; k < K; k++) {
            float a = alpha * elem(A, lda, ta, i, k);
            const float* b = &Bn[(size_t)k * N];
            for (int j = 0; j < N; j++) c[j] += a * b[j];
        }
    }
}

void gemm_v3(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
             float beta, float* C, int ldc) {
    gemm_cpu<float>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

typedef void (*gemm_fn)(bool, bool, int, int, int, float, const float*, int, const float*, int, float, float*, int);
static gemm_fn versions[] = {nullptr, gemm_v1, gemm_v2, gemm_v3};
static const char* version_names[] = {"", "naive i-j-k", "loop-reordered i-k-j + OpenMP",
                                      "cache-blocked + packed + OpenMP (llmq::gemm_cpu)"};

// ----------------------------------------------------------------------------------------------------
// peak: 12 independent chains of 8-wide FMAs per thread (enough to cover FMA latency x ports)

typedef float v8f __attribute__((vector_size(32)));

// The best of many short (~10 ms) runs over 0.5 s, like the GEMM timings: on a shared machine
// the fastest run is the one least disturbed.
static double fma_peak_gflops(int threads) {
    const long iters = 2000000;
    double best = 0.0;
    for (double start = now_seconds(); now_seconds() - start < 0.5;) {
        double t0 = now_seconds();
        float sink = 0.0f;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
        {
            v8f acc[12];
            v8f x = {1.0000001f, 1.0000001f, 1.0000001f, 1.0000001f, 1.0000001f, 1.0000001f, 1.0000001f, 1.0000001f};
            v8f y = x * 1e-7f;
            for (int i = 0; i < 12; i++) acc[i] = x * (float)(i + omp_get_thread_num());
            for (long it = 0; it < iters; it++) {
#pragma GCC unroll 12
                for (int i = 0; i < 12; i++)
                    acc[i] = acc[i] * x + y;  // one FMA (contracted; without -ffast-math it cannot be elided)
            }
            for (int i = 0; i < 12; i++)
                for (int l = 0; l < 8; l++) sink += acc[i][l];
        }
        double dt = now_seconds() - t0;
        if (sink == 12345.0f) printf(" ");  // use the result
        best = std::max(best, 2.0 * 8 * 12 * iters * threads / dt * 1e-9);
    }
    return best;
}

// ----------------------------------------------------------------------------------------------------

static std::vector<float> randn(size_t n, Rng& rng) {
    std::vector<float> x(n);
    for (auto& e : x) e = rng.normal();
    return x;
}

static bool check_version(int v, Rng& rng) {
    const int M = 77, N = 45, K = 601;  // odd sizes: partial register tiles and k blocks (KC = 512)
    bool ok = true;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (float beta : {0.0f, 1.0f}) {
                int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;  // padded strides
                auto A = randn((size_t)(ta ? K : M) * lda, rng), B = randn((size_t)(tb ? N : K) * ldb, rng);
                auto C0 = randn((size_t)M * ldc, rng);
                if (beta == 0.0f) std::fill(C0.begin(), C0.end(), NAN);  // must be ignored
                auto Cref = C0, Cv = C0;
                gemm_v1(ta, tb, M, N, K, 0.7f, A.data(), lda, B.data(), ldb, beta, Cref.data(), ldc);
                versions[v](ta, tb, M, N, K, 0.7f, A.data(), lda, B.data(), ldb, beta, Cv.data(), ldc);
                double max_err = 0.0;
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        double r = Cref[(size_t)i * ldc + j], g = Cv[(size_t)i * ldc + j];
                        double err = std::fabs(r - g) / (1.0 + std::fabs(r));
                        if (!(err <= max_err)) max_err = std::isnan(err) ? INFINITY : err;
                    }
                bool pass = max_err < 1e-4;
                ok &= pass;
                printf("  check v%d ta=%d tb=%d beta=%.0f: max rel err %.2e %s\n", v, ta, tb, beta, max_err,
                       pass ? "ok" : "FAIL");
            }
    return ok;
}

int main(int argc, char** argv) {
    int v = argc > 1 ? atoi(argv[1]) : 3;
    if (v < 1 || v > 3) {
        fprintf(stderr, "error: version must be 1, 2 or 3 (got %s)\n", argv[1]);
        return 1;
    }
    // versions 1 and 2 would take minutes on the vocabulary-sized products: cases whose estimated
    // time exceeds this are skipped (the estimate is from a small warm-up of the same version)
    double max_seconds = argc > 2 ? atof(argv[2]) : 20.0;
    printf("version %d: %s\n", v, version_names[v]);
    Rng rng(1337);
    if (!check_version(v, rng)) {
        fprintf(stderr, "error: version %d disagrees with version 1\n", v);
        return 1;
    }

    const int max_threads = omp_get_max_threads();
    std::vector<int> thread_counts = {1};
    if (max_threads > 1) thread_counts.push_back(max_threads);
    if (max_threads > 63) return fprintf(stderr, "error: more than 63 threads\n"), 1;
    double peak[64] = {};
    for (int t : thread_counts) {
        peak[t] = fma_peak_gflops(t);
        printf("peak (8-wide fp32 FMA loop, %d thread%s): %.1f GFLOP/s\n", t, t > 1 ? "s" : "", peak[t]);
    }

    struct Shape {
        const char* model;
        int N, C, OC;
    };
    const Shape shapes[] = {{"tiny", 4096, 128, 128},  {"tiny", 4096, 128, 352},   {"tiny", 4096, 128, 50257},
                            {"60m", 4096, 512, 512},   {"60m", 4096, 512, 1376},   {"60m", 4096, 512, 50257}};
    printf("%-5s %5s %5s %6s %-9s %3s %10s %9s %6s\n", "model", "N", "C", "OC", "product", "thr", "ms", "GFLOP/s",
           "%peak");
    double rate_estimate[64] = {};  // GFLOP/s of this version per thread count, from its last measured case
    for (const Shape& s : shapes) {
        auto inp = randn((size_t)s.N * s.C, rng), w = randn((size_t)s.OC * s.C, rng);
        auto dout = randn((size_t)s.N * s.OC, rng);
        std::vector<float> out((size_t)s.N * s.OC), dinp((size_t)s.N * s.C), dw((size_t)s.OC * s.C);
        const double gflop = 2.0 * s.N * s.C * s.OC * 1e-9;
        for (int product = 0; product < 3; product++) {
            for (int t : thread_counts) {
                if (rate_estimate[t] > 0.0 && gflop / rate_estimate[t] > max_seconds) {
                    printf("%-5s %5d %5d %6d %-9s %3d   (skipped: over %.0f s)\n", s.model, s.N, s.C, s.OC,
                           product == 0 ? "forward" : product == 1 ? "bwd-input" : "bwd-weight", t, max_seconds);
                    continue;
                }
                omp_set_num_threads(t);
                auto run = [&]() {
                    if (product == 0)  // out (N,OC) = inp (N,C) @ w (OC,C)^T
                        versions[v](false, true, s.N, s.OC, s.C, 1.0f, inp.data(), s.C, w.data(), s.C, 0.0f,
                                    out.data(), s.OC);
                    else if (product == 1)  // dinp (N,C) += dout (N,OC) @ w (OC,C)
                        versions[v](false, false, s.N, s.C, s.OC, 1.0f, dout.data(), s.OC, w.data(), s.C, 1.0f,
                                    dinp.data(), s.C);
                    else  // dw (OC,C) += dout^T (OC,N) @ inp (N,C)
                        versions[v](true, false, s.OC, s.C, s.N, 1.0f, dout.data(), s.OC, inp.data(), s.C, 1.0f,
                                    dw.data(), s.C);
                };
                // the fastest of the runs made in ~0.5 s after one warm-up (the machine is shared:
                // the minimum is the least disturbed); a run over 0.5 s is its own measurement
                double t0 = now_seconds();
                run();
                double best = now_seconds() - t0;
                if (best < 0.5) {
                    const double start = now_seconds();
                    best = INFINITY;
                    do {
                        t0 = now_seconds();
                        run();
                        best = std::min(best, now_seconds() - t0);
                    } while (now_seconds() - start < 0.5);
                }
                double ms = best * 1e3, rate = gflop / (ms * 1e-3);
                rate_estimate[t] = std::max(rate, 1e-3);
                printf("%-5s %5d %5d %6d %-10s %3d %10.2f %9.1f %5.0f%%\n", s.model, s.N, s.C, s.OC,
                       product == 0 ? "forward" : product == 1 ? "bwd-input" : "bwd-weight", t, ms, rate,
                       100.0 * rate / peak[t]);
                fflush(stdout);
            }
        }
    }
    omp_set_num_threads(max_threads);
    return 0;
}
