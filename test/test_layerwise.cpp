// Tests of per-layer weight updates (ModelCore::set_layerwise_update, AdamW::update_tensor, ./train --layerwise 1):
// updating each layer Linear during the backward gives the usual step's parameters bit for bit (no clipping, one
// micro-batch), with tied and untied embeddings and with WTA-CRS; the gradient buffer really shrinks to the
// embeddings and norms; ./train's losses equal the usual run's, resuming is bit-identical, and the flags that
// cannot go with it are refused by name.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "../layers/model_core.h"
#include "../layers/optimizer.h"
#include "../layers/wtacrs.h"
#include "../tools/trainer.h"
#include "test_util.h"
#include "train_test_util.h"

using namespace llmq;
using namespace llmq_test;

namespace {

using Batch = RandomBatch;  // (2,12)

OptimizerConfig no_clip_config() {
    OptimizerConfig c;
    c.lr = 1e-2f, c.warmup_steps = 1, c.total_steps = 10, c.grad_clip = 0;
    return c;
}

// Four steps of the usual AdamW update and four layer-wise ones, on two copies of one model.
void expect_layerwise_equals_usual(const ModelConfig& c, bool sampled) {
    ModelCore<float> usual(c, 5), layerwise(c, 5);
    AdamW usual_opt(no_clip_config(), usual.tensors()), layer_opt(no_clip_config(), layerwise.tensors());
    int step = 0;
    size_t linear_updates = 0;
    layerwise.set_layerwise_update([&](size_t i, float* w, const float* g, size_t n) {
        EXPECT_EQ(n, layerwise.tensors()[i].size);
        EXPECT_EQ(w, layerwise.params() + layerwise.tensors()[i].offset);
        layer_opt.update_tensor(i, w, g, step);
        linear_updates++;
    });
    if (sampled)  // the same seeds on both copies: the same rows drawn
        for (ModelCore<float>* m : {&usual, &layerwise})
            for (TransformerLayer<float>& L : m->layers()) L.down.sampler = std::make_shared<WtaCrsSampler<float>>(0.3, 9, 12);
    for (step = 0; step < 4; step++) {
        Batch batch(c.vocab_size, 100 + step);
        for (ModelCore<float>* m : {&usual, &layerwise}) {
            m->zero_grad();
            m->forward(batch.tokens.data(), batch.targets.data(), batch.B, batch.T);
            m->backward();
        }
        usual_opt.step(usual.params(), usual.grads(), usual.num_params(), usual.tensors(), step);
        for (size_t i = 0; i < layerwise.tensors().size(); i++)
            if (const float* g = layerwise.grad_of(i))
                layer_opt.update_tensor(i, layerwise.params() + layerwise.tensors()[i].offset, g, step);
        layer_opt.end_step();
    }
    EXPECT_EQ(linear_updates, 4u * 7 * c.n_layers);
    for (size_t i = 0; i < usual.num_params(); i++) ASSERT_EQ(usual.params()[i], layerwise.params()[i]) << "parameter " << i;
    // the gradient buffer: embeddings (+ lm_head) and norms, plus one scratch of the largest layer Linear
    size_t held = (size_t)c.vocab_size * c.dim * (c.tied_embeddings ? 1 : 2) + (size_t)(2 * c.n_layers + 1) * c.dim;
    EXPECT_EQ(layerwise.num_grads(), held);
    EXPECT_EQ(layerwise.gradient_bytes(), sizeof(float) * (held + (size_t)c.ffn_dim * c.dim));
    EXPECT_EQ(usual.gradient_bytes(), sizeof(float) * usual.num_params());
    for (size_t i = 0; i < layerwise.tensors().size(); i++)
        EXPECT_EQ(layerwise.grad_of(i) == nullptr, is_attention_mlp_weight(layerwise.tensors()[i])) << i;
}

}  // namespace

TEST(Layerwise, EqualsTheUsualStepTied) {
    ModelConfig c = small_model_config();
    c.tied_embeddings = true;
    expect_layerwise_equals_usual(c, false);
}

TEST(Layerwise, EqualsTheUsualStepUntiedWithWtaCrs) {
    ModelConfig c = small_model_config();
    c.tied_embeddings = false;
    expect_layerwise_equals_usual(c, true);
}

// ./train --layerwise 1: the usual run's losses bit for bit (both with --grad-clip 0), fewer gradient bytes, a
// bit-identical resume, and one message naming the flags it cannot go with.
TEST(Layerwise, TrainMatchesTheUsualRunAndResumes) {
    const std::string data = markov_corpus("layerwise_data", 47, 3000, 300, 64);
    TrainOptions usual = adapter_test_run(data, temp_dir("layerwise_usual"));
    usual.steps = 6, usual.threads = 1, usual.sample_tokens = 0, usual.grad_clip = 0;
    TrainOptions layer = usual;
    layer.out = temp_dir("layerwise_on"), layer.layerwise = 1;
    TrainResult a, b;
    train_and_read_log(usual, &a);
    const std::string log = train_and_read_log(layer, &b);
    ASSERT_EQ(a.losses.size(), 6u);
    EXPECT_EQ(a.losses, b.losses);
    EXPECT_EQ(a.val_loss, b.val_loss);
    EXPECT_NE(log.find("layerwise: each layer Linear's weight is updated during the backward"), std::string::npos) << log;
    auto grads_bytes = [](const std::string& dir) { return last_metric(dir, "mem_grads"); };
    // tiny-ish model: vocab 64, dim 64, ffn 128, 2 layers, tied: 4096 + 5 * 64 held + a 128 x 64 scratch
    EXPECT_EQ(grads_bytes(layer.out), 4.0 * (64 * 64 + 5 * 64 + 128 * 64));
    EXPECT_LT(grads_bytes(layer.out), grads_bytes(usual.out) / 5);

    TrainOptions resumed = adapter_resume_run(data, temp_dir("layerwise_resume"));
    resumed.grad_clip = 0, resumed.layerwise = 1;
    expect_resume_bit_identical(resumed);

    for (auto [tweak, message] : std::vector<std::pair<std::function<void(TrainOptions&)>, std::string>>{
             {[](TrainOptions& o) { o.grad_clip = 1; }, "needs --grad-clip 0"},
             {[](TrainOptions& o) { o.grad_accum = 2; }, "--grad-accum 1"},
             {[](TrainOptions& o) { o.method = "lora"; }, "--layerwise 1 is for --method full"},
             {[](TrainOptions& o) { o.layerwise = 2; }, "--layerwise 2 must be 0 or 1"}}) {
        TrainOptions bad = layer;
        bad.out = temp_dir("layerwise_bad");
        tweak(bad);
        expect_error([&] { train(bad, stdout); }, {message});
    }
}
