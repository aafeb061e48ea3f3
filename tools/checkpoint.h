// checkpoint: everything a training run needs to continue bit-identically, in one versioned file.
//
// Layout (little-endian; written to <file>.tmp, then renamed over <file>, so a reader never sees half):
//   char[8]  magic "LLMQCKPT"
//   u32      version (kCheckpointVersion)
//   u32      header bytes H (the header section that follows)
//   header   (H bytes) the model config: str name, i32 vocab_size dim ffn_dim n_layers n_heads n_kv_heads
//            max_seq_len, f32 rope_theta norm_eps, u8 tied_embeddings, f32 init_std;
//            u64 num_params; u8 optimizer (0 none, 1 fp32 AdamW, 2 8-bit AdamW); i32 adam_steps_taken;
//            with 8-bit AdamW: u64 state bytes S;
//            i64 step; u64 data_epoch data_index; u64 rng_state;
//            u32 n_flags, then n_flags x (str key, str value): the training flags, as given to ./train
//            (str = u32 length + bytes);
//            u8 has_adapters; when the run trains adapters (LoRA, QLoRA): u64 adapter parameters A; u8 their
//            optimizer (1 fp32, 2 8-bit); with 8-bit: u64 its state bytes SA;
//            u32 n_sections, then n_sections x (str name, u64 bytes): the methods' own state (StateSection)
//   f32[num_params]  parameters (the Model's buffer layout)
//   f32[num_params]  AdamW m   } only with fp32 AdamW
//   f32[num_params]  AdamW v   }
//   u8[S]            8-bit AdamW: each tensor's state in layout order (quant/adam8bit.h's serialized form)
//   f32[A]           adapter parameters (adapters/lora.h's buffer), then their optimizer state as above
//                    (f32[A] m, f32[A] v; or u8[SA]); the adapters' optimizer shares adam_steps_taken
//   u8[...]          each state section's bytes, in header order
//   u64      FNV-1a 64 of every byte before it
//   char[8]  end marker "LLMQEND\0"
// Loading checks magic, version, that the file is exactly as long as the header promises (truncation),
// the checksum (corruption), and that the config matches the model it is loaded into. Version 1 files (no
// has_adapters byte: adapter fields present when the header has bytes left; no sections) are still read.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../layers/config.h"
#include "../layers/model.h"
#include "../layers/optimizer.h"

namespace llmq {

constexpr uint32_t kCheckpointVersion = 2;

using FlagValues = std::vector<std::pair<std::string, std::string>>;  // (name without "--", value)

// Where the training run stands; all of it is needed for an exact resume.
struct TrainState {
    int64_t step = 0;         // optimizer steps completed
    uint64_t data_epoch = 0;  // the train DataLoader's position
    uint64_t data_index = 0;
    uint64_t rng_state = 0;   // the training Rng
};

// A method's own state beyond parameters and AdamW (WTA-CRS's samplers, ...): named bytes the method
// serialises and parses itself.
struct StateSection {
    std::string name;
    std::vector<uint8_t> bytes;
};

struct CheckpointInfo {
    uint32_t version = 0;
    ModelConfig config;
    uint64_t num_params = 0;
    bool has_optimizer = false;
    bool optimizer_8bit = false;        // the optimizer state is 8-bit AdamW's
    uint64_t optimizer_8bit_bytes = 0;  // its size
    uint64_t adapter_params = 0;             // 0: no adapter section
    int adapter_optimizer = 0;               // 1 fp32, 2 8-bit AdamW
    uint64_t adapter_optimizer_8bit_bytes = 0;
    int adam_steps_taken = 0;
    TrainState state;
    FlagValues flags;
    std::vector<StateSection> sections;  // names and sizes from the header; bytes filled by load_checkpoint
    std::string flag(const std::string& name, const std::string& fallback = "") const;
    const StateSection* section(const std::string& name) const;  // null when absent
};

// A second trainable buffer saved beside the model: LoRA adapters (adapters/lora.h) and their optimizer.
struct AdapterSection {
    float* params = nullptr;  // (n)
    size_t n = 0;
    AdamW* opt = nullptr;     // saving: required; loading: null skips the state (sampling, export)
};

// Writes atomically (path.tmp then rename). Error naming the file on any failure; nothing is left under
// path (nor path.tmp) when the write fails. opt may be null (weights only).
void save_checkpoint(const std::string& path, const Model& model, const AdamW* opt, const TrainState& state,
                     const FlagValues& flags, const AdapterSection* adapters = nullptr,
                     const std::vector<StateSection>& sections = {});
// Reads and validates the header and the file size (cheap: the parameters are not read).
CheckpointInfo read_checkpoint_info(const std::string& path);
// Loads parameters into model (whose config must match) and, when opt is given, m, v and the step count
// (Error when the file has no optimizer state); verifies the checksum over the whole file.
// With adapters: the checkpoint must hold an adapter section of adapters->n parameters (and the other way round).
// The state sections come back in the returned info, bytes and all.
CheckpointInfo load_checkpoint(const std::string& path, Model& model, AdamW* opt, AdapterSection* adapters = nullptr);

// --resume's argument: a checkpoint file, a directory (its latest.ckpt), or DIR/latest.
std::string resolve_checkpoint_path(const std::string& arg);

}  // namespace llmq
