// sim.h: a host simulator of the CUDA subset llmq's kernels use, so a kernel's real source can run (slowly)
// on a machine without a GPU (dev/cudasim/run.sh). Each block runs with one fiber (ucontext) per thread;
// __syncthreads and __syncwarp are real barriers (a warp's lanes, or the block's threads, all arrive before
// any leaves, and mismatched arrivals abort), __shfl_xor_sync exchanges values through them, and dynamic
// shared memory starts as NaN bytes, so reading what nobody wrote shows up in the results.
// What it cannot tell: timing, races the scheduling order happens to hide (REVERSE=1 runs the threads in
// the opposite order; identical results in both orders are a weak race check), and anything architectural
// (alignment faults, register limits, shared memory limits). It is a CPU-side check, not a GPU test.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#undef __global__
#undef __device__
#undef __host__
#define __global__
#define __device__
#define __host__
#define __launch_bounds__(...)

namespace sim {

struct Fiber {
    ucontext_t ctx;
    int state;  // kRunnable, kAtBlockBarrier, kAtWarpBarrier, kDone
    std::vector<char> stack;
};
enum { kRunnable, kAtBlockBarrier, kAtWarpBarrier, kDone };

inline std::vector<Fiber> fibers;
inline ucontext_t scheduler;
inline int current = 0;
inline uint3 block_idx, grid_dim, block_dim;
inline std::function<void()> thread_body;
inline std::vector<double> shuffle_slot(1024);
inline void* smem = nullptr;  // the current block's dynamic shared memory

inline void fiber_entry() {
    thread_body();
    fibers[current].state = kDone;
}
inline void wait_at(int barrier) {
    fibers[current].state = barrier;
    swapcontext(&fibers[current].ctx, &scheduler);
}
template <typename T>
T shfl_xor(T x, int lane_mask) {
    shuffle_slot[current] = (double)x;
    wait_at(kAtWarpBarrier);
    const T y = (T)shuffle_slot[current ^ lane_mask];
    wait_at(kAtWarpBarrier);  // everyone has read before the next shuffle writes
    return y;
}

inline void fail(const char* what, int a, int b) {
    fprintf(stderr, "cudasim: block (%u,%u): %s (%d of %d)\n", block_idx.x, block_idx.y, what, a, b);
    abort();
}

inline void run_block(int n) {
    static const bool reverse = getenv("REVERSE") != nullptr;
    if ((int)fibers.size() < n) fibers.resize(n);
    for (int i = 0; i < n; i++) {
        Fiber& f = fibers[i];
        f.stack.resize(1 << 18);
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack.data();
        f.ctx.uc_stack.ss_size = f.stack.size();
        f.ctx.uc_link = &scheduler;
        makecontext(&f.ctx, fiber_entry, 0);
        f.state = kRunnable;
    }
    for (;;) {
        for (int j = 0; j < n; j++) {  // run every runnable thread up to its next barrier (or its end)
            current = reverse ? n - 1 - j : j;
            if (fibers[current].state == kRunnable) swapcontext(&scheduler, &fibers[current].ctx);
        }
        int done = 0, at_block = 0;
        bool released = false;
        for (int w = 0; w < n; w += 32) {
            int live = 0, at_warp = 0;
            for (int i = w; i < std::min(n, w + 32); i++) {
                live += fibers[i].state != kDone, at_warp += fibers[i].state == kAtWarpBarrier;
                done += fibers[i].state == kDone, at_block += fibers[i].state == kAtBlockBarrier;
            }
            if (at_warp && at_warp != live)
                fail("__syncwarp or shuffle reached by only some live lanes", at_warp, live);
            for (int i = w; at_warp && i < std::min(n, w + 32); i++) fibers[i].state = kRunnable;
            released |= at_warp > 0;
        }
        if (done == n) return;
        if (released) continue;
        if (done) fail("__syncthreads after some threads exited", done, n);
        for (int i = 0; i < n; i++) fibers[i].state = kRunnable;  // every thread is at __syncthreads
    }
}

// kernel<<<grid, block, smem_bytes, stream>>>(args...), blocks one after another
template <typename Kernel, typename Grid, typename... Args>
void launch(Kernel kernel, Grid grid_arg, int block, size_t smem_bytes, cudaStream_t, Args... args) {
    const dim3 grid(grid_arg);
    grid_dim = make_uint3(grid.x, grid.y, grid.z);
    block_dim = make_uint3(block, 1, 1);
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                block_idx = make_uint3(x, y, z);
                float4* shared = smem_bytes ? new float4[(smem_bytes + 15) / 16] : nullptr;
                if (shared) memset(shared, 0xFF, smem_bytes);  // NaN in fp32 and bf16
                smem = shared;
                thread_body = [&] { kernel(args...); };
                run_block(block);
                delete[] shared;
            }
}

inline uint3 thread_idx() { return make_uint3(current, 0, 0); }

}  // namespace sim

#define threadIdx (::sim::thread_idx())
#define blockIdx (::sim::block_idx)
#define gridDim (::sim::grid_dim)
#define blockDim (::sim::block_dim)
inline void __syncthreads() { sim::wait_at(sim::kAtBlockBarrier); }
inline void __syncwarp(unsigned = 0xffffffffu) { sim::wait_at(sim::kAtWarpBarrier); }
template <typename T>
T __shfl_xor_sync(unsigned, T x, int lane_mask) {
    return sim::shfl_xor(x, lane_mask);
}
template <typename T>
cudaError_t cudaFuncSetAttribute(T*, cudaFuncAttribute, int) {
    return cudaSuccess;
}
// fast-math intrinsics, as their accurate host counterparts
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
using std::max;
using std::min;
