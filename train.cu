// train.cu: llmq's one training program, in the spirit of llm.c's train_gpt2.
//
//   ./train [flags]                 train a LLaMA-family model on token shards (./train --help lists all)
//   ./train sample --ckpt PATH ...  generate text from a checkpoint
//
// What each include defines:
//   kernels/common.h     Error, LLMQ_CHECK, Rng (splitmix64), now_seconds
//   layers/config.h      ModelConfig and the presets (tiny, 60m ... 7b)
//   layers/model.h       Model: parameters, forward (loss or logits), backward, activations
//   tools/flags.h        FlagSet: flags bound to variables; --help with every default
//   tools/checkpoint.h   the checkpoint file: save, read_checkpoint_info, load_checkpoint
//   tools/trainer.h      TrainOptions, add_train_flags, train(): the data loader, AdamW, eval, metrics,
//                        checkpoints and samples of a run (tools/dataloader.h, metrics.h, sampler.h)
//   tools/train_method.h TrainMethod: what each --method trains (full, lora family, galore, loqt) and its step;
//                        load_checkpoint_for_inference rebuilds a run's adapters for sampling
//   tools/sampler.h      generate(): temperature / top-k sampling
//   tools/tokenizer.h    Tokenizer: encode prompts, decode samples
//
//   tools/cuda_run.h     CudaRun: --device cuda, the training step on the GPU model (layers/model_cuda.h);
//                        cuda_unsupported: the flags the GPU backend does not run yet
//
// --device auto trains on the GPU when one is present and the GPU backend runs the flags, else on the CPU
// reference backend (which runs everything, on a tiny model in minutes).
#include <cuda_runtime.h>
#include <omp.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "kernels/common.h"
#include "layers/config.h"
#include "layers/model.h"
#include "tools/checkpoint.h"
#include "tools/cuda_run.h"
#include "tools/train_method.h"
#include "tools/flags.h"
#include "tools/sampler.h"
#include "tools/tokenizer.h"
#include "tools/trainer.h"

using namespace llmq;

static const char* kTrainUsage =
    "usage: ./train [flags]                 train on the shards of --data\n"
    "       ./train sample --ckpt PATH ...  generate text from a checkpoint (./train sample --help)\n"
    "\n"
    "Each step prints step/total, loss, learning rate, gradient norm, tokens/s and memory (parameters,\n"
    "gradients, AdamW state and activations); the same go to OUT/metrics.jsonl, and OUT/loss.svg plots\n"
    "train and val loss. --resume continues bit-identically from OUT/latest.ckpt (or any checkpoint),\n"
    "with the flags stored in it unless given again. --init-from DIR starts from a Hugging Face LLaMA\n"
    "directory (config.json + safetensors) instead of a preset. Ctrl-C (SIGINT, SIGTERM) finishes the step,\n"
    "writes OUT/latest.ckpt and exits with code 130; a second Ctrl-C exits at once.\n"
    "\n"
    "flags:\n";

static bool wants_help(int argc, char** argv, int begin) {
    for (int i = begin; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return true;
    return false;
}

// --device: cpu; cuda (a GPU must be present); auto: cuda when a GPU is present and the GPU backend runs the
// run's flags (tools/cuda_run.h cuda_unsupported), else cpu, saying why. Returns the device to train on.
static std::string resolve_device(const TrainOptions& opts) {
    if (opts.device == "cpu") return "cpu";
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    bool gpu = err == cudaSuccess && count > 0;
    const std::string why = cuda_unsupported(opts);
    if (opts.device == "cuda") {
        LLMQ_CHECK(why.empty(), "--device cuda: %s; use --device cpu", why.c_str());
        LLMQ_CHECK(gpu, "--device cuda: no CUDA GPU found (cudaGetDeviceCount: %s)",
                   err == cudaSuccess ? "0 devices" : cudaGetErrorString(err));
        return "cuda";
    }
    if (!gpu) return "cpu";
    if (why.empty()) return "cuda";
    printf("device: a CUDA GPU is present, but %s: training on the CPU\n", why.c_str());
    return "cpu";
}

static int train_main(int argc, char** argv) {
    TrainOptions opts;
    FlagSet flags;
    add_train_flags(flags, opts);
    if (wants_help(argc, argv, 1)) {
        printf("%s%s", kTrainUsage, flags.help().c_str());
        return 0;
    }
    flags.parse(argc, argv, 1);
    if (!opts.resume.empty()) apply_checkpoint_flags(flags, read_checkpoint_info(resolve_checkpoint_path(opts.resume)));
    opts.device = resolve_device(opts);
    printf("device: %s\n", opts.device.c_str());
    double t0 = now_seconds();
    TrainResult r = train(opts);
    if (r.interrupted) return 130;  // as a shell reports a process ended by SIGINT
    printf("done: %zu steps in %.1f s\n", r.losses.size(), now_seconds() - t0);
    return 0;
}

// ---------------------------------------------------------------------------------------------- sample

struct SampleFlags {
    std::string ckpt, prompt, encoding, vocab;
    int tokens = 128, top_k = SampleOptions{}.top_k, threads = 0;
    float temperature = SampleOptions{}.temperature;
    uint64_t seed = 1337;
};

static int sample_main(int argc, char** argv) {
    SampleFlags s;
    FlagSet flags;
    flags.add("ckpt", &s.ckpt, "checkpoint: a file, DIR or DIR/latest (required)");
    flags.add("prompt", &s.prompt, "text to continue (empty: start from <|endoftext|>)");
    flags.add("tokens", &s.tokens, "tokens to generate");
    flags.add("temperature", &s.temperature, "softmax temperature (0: greedy)");
    flags.add("top-k", &s.top_k, "sample among the k most likely tokens (0: all)");
    flags.add("seed", &s.seed, "seed of the sampling Rng");
    flags.add("encoding", &s.encoding, "tokenizer (empty: the one the checkpoint was trained with)");
    flags.add("vocab", &s.vocab, "tokenizer vocabulary file (empty: the checkpoint's)");
    flags.add("threads", &s.threads, "CPU threads (0: OpenMP's default)");
    if (wants_help(argc, argv, 2)) {
        printf("usage: ./train sample --ckpt PATH [flags]\n\nflags:\n%s", flags.help().c_str());
        return 0;
    }
    flags.parse(argc, argv, 2);
    LLMQ_CHECK(!s.ckpt.empty(), "sample: --ckpt PATH is required");
    LLMQ_CHECK(s.tokens > 0, "--tokens %d must be positive", s.tokens);
    if (s.threads > 0) omp_set_num_threads(s.threads);
    std::string path = resolve_checkpoint_path(s.ckpt);
    CheckpointInfo info = read_checkpoint_info(path);
    Model model(info.config, 0);
    // an adapter run (LoRA family, LoQT): the same adapters on the same (quantized) base, as its flags describe them
    std::unique_ptr<TrainMethod> method = load_checkpoint_for_inference(path, info, model);

    std::string vocab = s.vocab.empty() && s.encoding.empty() ? info.flag("vocab") : s.vocab;
    std::string encoding = s.encoding.empty() ? info.flag("encoding", "gpt2") : s.encoding;
    LLMQ_CHECK(!vocab.empty() || (encoding != "none" && !encoding.empty()),
               "%s: the checkpoint was trained without a tokenizer; name one with --encoding or --vocab", path.c_str());
    Tokenizer tok = vocab.empty() ? Tokenizer::from_encoding(encoding) : Tokenizer::from_file(vocab);
    LLMQ_CHECK((int)tok.vocab_size() == info.config.vocab_size,
               "tokenizer %s has %u tokens but the model in %s has %d (--encoding / --vocab)", tok.name().c_str(),
               tok.vocab_size(), path.c_str(), info.config.vocab_size);
    std::vector<uint32_t> prompt = s.prompt.empty() ? std::vector<uint32_t>{tok.eot_id()} : tok.encode(s.prompt);
    Rng rng(s.seed);
    SampleOptions so;
    so.tokens = s.tokens;
    so.temperature = s.temperature;
    so.top_k = s.top_k;
    std::vector<uint32_t> out = generate(model, prompt, so, rng);
    printf("%s%s\n", s.prompt.c_str(), tok.decode(out).c_str());
    return 0;
}

int main(int argc, char** argv) {
    setvbuf(stdout, nullptr, _IOLBF, 0);  // log lines reach a redirected log as they happen
    try {
        if (argc > 1 && !strcmp(argv[1], "sample")) return sample_main(argc, argv);
        return train_main(argc, argv);
    } catch (const Error& e) {
        fflush(stdout);
        fprintf(stderr, "error: %s\n", e.what());
        return 1;
    } catch (const std::exception& e) {
        fflush(stdout);
        fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
