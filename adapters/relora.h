// relora: ReLoRA (Lialin et al. 2023), the high-rank-through-low-rank-updates baseline: LoRA adapters on a
// frozen fp32 base, merged into it every K steps and restarted, so the sum of many rank-r updates can reach a
// high rank while each step trains only r (in + out) parameters per layer.
//
// Every `every` steps, after the optimizer step:
//   W += s B A for each adapted Linear; A re-drawn (kaiming uniform), B = 0 (the model's outputs are unchanged);
//   the adapters' optimizer state pruned by magnitude (`prune`, 0.99: keep the largest 1% of m and of v per
//   tensor; the paper's "partial reset"); 8-bit states are reset whole;
//   the learning rate re-warms linearly over `rewarmup` steps on top of the cosine: the jagged schedule.
// The base changes only at merges, so a checkpoint (which holds the base) resumes exactly; the re-drawn A of
// merge j comes from Rng(seed, j). The paper starts from a short full-rank warm-up: train it with --method
// full, export it (./convert llmq-to-hf), and start --method relora from it with --init-from.
#pragma once

#include <cstdint>

#include "../layers/optimizer.h"
#include "lora.h"

namespace llmq {

struct ReloraOptions {
    int every = 100;      // K: steps between merges
    int rewarmup = 10;    // lr re-warmup steps after each merge
    float prune = 0.99f;  // fraction of the optimizer state zeroed at each merge
};

// The factor on the schedule's lr at 0-based step: 1 before the first merge, then (steps since the last merge
// + 1) / rewarmup, capped at 1.
float relora_lr_scale(const ReloraOptions& options, int step);

// Whether a merge follows 0-based step (that is, (step + 1) is a multiple of every).
inline bool relora_merges_after(const ReloraOptions& options, int step) {
    return options.every > 0 && (step + 1) % options.every == 0;
}

// The merge after 0-based step: fold, re-draw, prune (see above).
void relora_merge(LoraAdapters& lora, AdamW& adapter_opt, const ReloraOptions& options, int step, uint64_t seed);

}  // namespace llmq
