// relora.cpp: ReLoRA's merge-and-restart and jagged schedule (see relora.h).
#include "relora.h"

#include <algorithm>

#include "../kernels/common.h"

namespace llmq {

float relora_lr_scale(const ReloraOptions& o, int step) {
    if (o.every <= 0 || o.rewarmup <= 0 || step < o.every) return 1.0f;
    const int since = step % o.every;  // steps since the last merge (which followed step - since - 1)
    return std::min(1.0f, (float)(since + 1) / (float)o.rewarmup);
}

void relora_merge(LoraAdapters& lora, AdamW& opt, const ReloraOptions& o, int step, uint64_t seed) {
    const uint64_t merge_index = (uint64_t)(step + 1) / (uint64_t)o.every;
    lora.merge_into_base_and_reinit(seed ^ (0x9E3779B97F4A7C15ull * merge_index));
    opt.prune_state(o.prune);
}

}  // namespace llmq
