// cuda_reduce.h: deterministic sums across the threads of a warp or of a row team, for kernels that
// give one row to a warp or to a few warps (rmsnorm.cu; softmax- and loss-like ops can use it too).
//
//   warp_sum(v)        the sum of v over the 32 lanes, by an xor butterfly; every lane gets the same bits
//                      (at each step lanes i and i^o add the same two values, and fp32 addition commutes)
//   team_sum(v, buf)   the sum of v over the blockDim.x threads of a row team (the threads sharing
//                      threadIdx.y), blockDim.x a multiple of 32: warp sums, then the warps' sums added in
//                      warp order. Every thread gets the same bits and the order never depends on timing.
//                      When blockDim.x > 32 it has two __syncthreads, so EVERY thread of the block must
//                      call it (threads with no row pass 0 and keep going); buf is shared memory of at least
//                      blockDim.x * blockDim.y / 32 floats, free for reuse as soon as the call returns.
#pragma once

#include "cuda_common.h"

namespace llmq {

__device__ inline float warp_sum(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ inline float team_sum(float v, float* buf) {
    v = warp_sum(v);
    if (blockDim.x <= 32) return v;  // uniform over the block: the barriers below are reached by all or none
    const int warps = blockDim.x / 32;
    float* team = buf + threadIdx.y * warps;
    if (threadIdx.x % 32 == 0) team[threadIdx.x / 32] = v;
    __syncthreads();
    float sum = 0.0f;
    for (int w = 0; w < warps; w++) sum += team[w];
    __syncthreads();  // everyone has read buf: the next call may overwrite it
    return sum;
}

}  // namespace llmq
