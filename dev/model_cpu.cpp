// model_cpu: CPU throughput of a preset's forward + backward (+ AdamW step) on random tokens, and the
// bytes it holds. Prints numbers; asserts nothing.
//   build/dev/model_cpu [preset] [vocab] [B] [T] [iters]     (defaults: tiny 50257 8 256 3)
// Thread count from OMP_NUM_THREADS.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "../kernels/common.h"
#include "../layers/model.h"
#include "../layers/optimizer.h"

using namespace llmq;

int main(int argc, char** argv) {
    try {
        const std::string preset = argc > 1 ? argv[1] : "tiny";
        const int vocab = argc > 2 ? std::atoi(argv[2]) : 50257;
        const int B = argc > 3 ? std::atoi(argv[3]) : 8;
        const int T = argc > 4 ? std::atoi(argv[4]) : 256;
        const int iters = argc > 5 ? std::atoi(argv[5]) : 3;
        ModelConfig c = ModelConfig::preset(preset, vocab);
        Model model(c, 1);
        OptimizerConfig oc;
        oc.total_steps = iters + 1;
        AdamW opt(oc, model.num_params());
        std::vector<int> tokens(B * T), targets(B * T);
        Rng rng(2);
        for (int i = 0; i < B * T; i++) tokens[i] = (int)rng.below(vocab);
        for (int i = 0; i < B * T; i++) targets[i] = (int)rng.below(vocab);
        std::printf("%s, B %d T %d, %d threads\n", c.describe().c_str(), B, T, omp_get_max_threads());
        double fw = 0, bw = 0, st = 0, best = 1e30;  // best: the least-disturbed forward+backward on a shared box
        for (int it = 0; it <= iters; it++) {  // iteration 0 plans the activations and warms up
            double t0 = now_seconds();
            model.zero_grad();
            float loss = model.forward(tokens.data(), targets.data(), B, T);
            double t1 = now_seconds();
            model.backward();
            double t2 = now_seconds();
            opt.step(model, it);
            double t3 = now_seconds();
            if (it == 0) continue;
            fw += t1 - t0;
            bw += t2 - t1;
            st += t3 - t2;
            best = std::min(best, t2 - t0);
            std::printf("iter %d: loss %.4f, forward %.3f s, backward %.3f s, adamw %.3f s\n", it, loss, t1 - t0,
                        t2 - t1, t3 - t2);
        }
        const double tokens_per_iter = (double)B * T;
        std::printf("forward+backward: %.0f tokens/s (forward alone %.0f tokens/s); with AdamW %.0f tokens/s\n",
                    tokens_per_iter * iters / (fw + bw), tokens_per_iter * iters / fw,
                    tokens_per_iter * iters / (fw + bw + st));
        std::printf("best forward+backward iteration: %.0f tokens/s\n", tokens_per_iter / best);
        std::printf("parameters %zu (%.1f MB, + grads + AdamW m,v: %.1f MB); activations %.1f MB\n",
                    model.num_params(), model.num_params() * 4 / 1e6, model.num_params() * 16 / 1e6,
                    model.activation_bytes() / 1e6);
        return 0;
    } catch (const Error& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
