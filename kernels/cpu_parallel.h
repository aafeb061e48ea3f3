// cpu_parallel.h: when a loop of a CPU reference is worth an OpenMP team.
// Opening a parallel region costs microseconds, and on a busy (oversubscribed) machine a team's
// barrier can wait a whole scheduler time slice (milliseconds), which made the tiny shapes of the
// gradient checks thousands of times slower than serial code. Loops doing less work than this
// (in elements or multiply-adds) run on the calling thread: `#pragma omp parallel for if (parallel_worth(w))`.
#pragma once

namespace llmq {

constexpr long long kParallelMinWork = 1 << 16;

inline bool parallel_worth(long long work) { return work >= kParallelMinWork; }

}  // namespace llmq
