// GPT-mini with tensor parallelism against the whole model: at tp = 2 and 4
// the loss of every step and, after 5 SGD steps with Nesterov momentum, the
// parameters (as slices of the whole model's) are the same (float64, rtol
// 1e-9), and full_parameters() reassembles the whole model.
#include "tandem/train/models/gpt_mini_tp.h"

#include <ATen/ops/allclose.h>
#include <ATen/ops/randint.h>
#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/sgd.h>

#include "tandem/core/error.h"
#include "tests/support/multiproc.h"
#include "tests/support/rank_init.h"

namespace tandem::train {
namespace {

GptMiniOptions small() {
  GptMiniOptions o;
  o.vocab = 16;
  o.context = 6;
  o.layers = 2;
  o.width = 8;
  o.heads = 4;
  return o;
}

GptMini whole() {
  at::manual_seed(7);
  GptMini m(small());
  m->to(at::kDouble);
  return m;
}

torch::optim::SGD sgd(const std::vector<at::Tensor>& p) {
  return torch::optim::SGD(p, torch::optim::SGDOptions(0.1).momentum(0.9).nesterov(true));
}

class GptMiniTensorParallel : public ::testing::TestWithParam<int> {};

TEST_P(GptMiniTensorParallel, TrainsLikeTheWholeModel) {
  tandem::testing::expect_ranks_succeed(GetParam(), [](int rank, int size, int port) {
    auto comm = tandem::testing::shm_rank(rank, size, port, "gpt-tp");
    auto ref = whole();
    auto source = whole();
    TensorParallelGptMini tp(*source, comm);
    auto opt = sgd(tp->parameters());
    auto ref_opt = sgd(ref->parameters());
    for (int s = 0; s < 5; ++s) {
      at::manual_seed(100 + s);  // the same batch on every rank
      at::Tensor tokens = at::randint(0, 16, {3, 6}, at::kLong);
      at::Tensor target = at::randint(0, 16, {3, 6}, at::kLong);
      opt.zero_grad();
      at::Tensor loss = tp->loss(tp(tokens), target);
      loss.backward();
      opt.step();
      ref_opt.zero_grad();
      at::Tensor logits = ref(tokens);
      at::Tensor ref_loss =
          torch::nn::functional::cross_entropy(logits.reshape({-1, 16}), target.reshape({-1}));
      ref_loss.backward();
      ref_opt.step();
      EXPECT_NEAR(loss.item<double>(), ref_loss.item<double>(), 1e-9 * ref_loss.item<double>())
          << "step " << s;
    }
    auto want = ref->named_parameters();
    const int64_t vocab_rows = 16 / size;
    auto expect_close = [](const at::Tensor& a, const at::Tensor& b, const std::string& what) {
      EXPECT_TRUE(at::allclose(a, b, 1e-9, 1e-12))
          << what << " differs by " << (a - b).abs().max().item<double>();
    };
    expect_close(tp->lm_head->weight, want["lm_head.weight"].narrow(0, rank * vocab_rows, vocab_rows),
                 "lm_head.weight");
    expect_close(tp->token_embedding->weight,
                 want["token_embedding.weight"].narrow(0, rank * vocab_rows, vocab_rows),
                 "token_embedding.weight");
    expect_close(tp->ln_final->weight, want["ln_final.weight"], "ln_final.weight");
    expect_close(tp->position_embedding->weight, want["position_embedding.weight"],
                 "position_embedding.weight");
    const int64_t f = 32 / size;
    auto block = tp->blocks[1]->as<TensorParallelGptBlockImpl>();
    expect_close(block->mlp->up->weight, want["block1.fc.weight"].narrow(0, rank * f, f),
                 "block1.fc.weight");
    expect_close(block->ln2->bias, want["block1.ln2.bias"], "block1.ln2.bias");
    // Every parameter, assembled from the slices, under the whole model's names.
    auto full = tp->full_parameters();
    ASSERT_EQ(full.keys(), want.keys());
    for (const auto& item : want) expect_close(full[item.key()], item.value(), item.key());
  });
}

INSTANTIATE_TEST_SUITE_P(Ranks, GptMiniTensorParallel, ::testing::Values(2, 4));

TEST(GptMiniTensorParallelOptions, DropoutAndUnevenSplitsAreNamed) {
  tandem::testing::expect_ranks_succeed(3, [](int rank, int size, int port) {
    auto comm = tandem::testing::shm_rank(rank, size, port, "gpt-tp-bad");
    auto m = whole();  // 4 heads, vocabulary 16: neither divides by 3
    EXPECT_THROW(TensorParallelGptMini(*m, comm), InvalidArgument);
    GptMiniOptions o = small();
    o.heads = 6;
    o.width = 12;
    o.vocab = 18;
    o.dropout = 0.1;
    GptMini with_dropout(o);
    try {
      TensorParallelGptMini(*with_dropout, comm);
      FAIL() << "dropout accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("dropout must be 0"), std::string::npos) << e.what();
    }
  });
}

}  // namespace
}  // namespace tandem::train
