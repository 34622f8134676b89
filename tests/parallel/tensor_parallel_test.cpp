// Tensor-parallel layers against the unsplit layers they replace, at 2, 3
// and 4 ranks: a column layer with gathered output equals the full Linear
// (forward and input gradient), and a ParallelMlp trained 5 SGD steps with
// Nesterov momentum ends with the slices of the full MLP's parameters
// (float64, rtol 1e-9). Uneven splits are named.
#include "tandem/parallel/tensor_parallel.h"

#include <ATen/ops/allclose.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/gelu.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/sgd.h>

#include "tandem/core/error.h"
#include "tandem/train/models/gpt_mini.h"
#include "tests/support/multiproc.h"
#include "tests/support/rank_init.h"

namespace tandem::parallel {
namespace {

std::shared_ptr<Communicator> connect(int rank, int size, int port) {
  return tandem::testing::shm_rank(rank, size, port, "tp");
}

torch::nn::Linear linear(int64_t in, int64_t out, int seed) {
  at::manual_seed(seed);
  torch::nn::Linear l(in, out);
  l->to(at::kDouble);
  return l;
}

void expect_close(const at::Tensor& a, const at::Tensor& b, const std::string& what) {
  EXPECT_TRUE(at::allclose(a, b, 1e-9, 1e-12))
      << what << " differs by " << (a - b).abs().max().item<double>();
}

class TensorParallel : public ::testing::TestWithParam<int> {};

TEST_P(TensorParallel, ColumnLayerWithGatheredOutputIsTheFullLayer) {
  tandem::testing::expect_ranks_succeed(GetParam(), [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    auto full = linear(5, 12, 1);
    ColumnParallelLinear column(full, comm, /*gather_output=*/true);
    at::manual_seed(9);
    at::Tensor x = at::randn({4, 5}, at::kDouble).requires_grad_(true);
    at::Tensor x_ref = x.detach().clone().requires_grad_(true);
    at::Tensor y = column(x);
    at::Tensor y_ref = full(x_ref);
    expect_close(y, y_ref, "output");
    (y * y).sum().backward();
    (y_ref * y_ref).sum().backward();
    expect_close(x.grad(), x_ref.grad(), "input gradient");
    const int64_t rows = 12 / size;
    expect_close(column->weight.grad(), full->weight.grad().narrow(0, rank * rows, rows),
                 "weight gradient");
  });
}

TEST_P(TensorParallel, ParallelMlpTrainsLikeTheFullMlp) {
  tandem::testing::expect_ranks_succeed(GetParam(), [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    auto up = linear(6, 12, 1), down = linear(12, 6, 2);
    ParallelMlp mlp(up, down, comm);
    auto sgd = [](std::vector<at::Tensor> p) {
      return torch::optim::SGD(p, torch::optim::SGDOptions(0.05).momentum(0.9).nesterov(true));
    };
    auto opt = sgd(mlp->parameters());
    std::vector<at::Tensor> ref_params = up->parameters();
    for (const auto& p : down->parameters()) ref_params.push_back(p);
    auto ref_opt = sgd(ref_params);
    for (int s = 0; s < 5; ++s) {
      at::manual_seed(100 + s);  // every rank sees the same batch
      at::Tensor x = at::randn({8, 6}, at::kDouble), t = at::randn({8, 6}, at::kDouble);
      opt.zero_grad();
      torch::nn::functional::mse_loss(mlp(x), t).backward();
      opt.step();
      ref_opt.zero_grad();
      torch::nn::functional::mse_loss(down(at::gelu(up(x))), t).backward();
      ref_opt.step();
    }
    const int64_t f = 12 / size;
    expect_close(mlp->up->weight, up->weight.narrow(0, rank * f, f), "up.weight");
    expect_close(mlp->up->bias, up->bias.narrow(0, rank * f, f), "up.bias");
    expect_close(mlp->down->weight, down->weight.narrow(1, rank * f, f), "down.weight");
    expect_close(mlp->down->bias, down->bias, "down.bias");
  });
}

// GPT-mini's attention (12 heads of width 2, dropout 0) against its heads
// split over the ranks: same output and input gradient, and the q/k/v and
// projection gradients are the slices of the full ones.
TEST_P(TensorParallel, AttentionWithSplitHeadsIsTheFullAttention) {
  tandem::testing::expect_ranks_succeed(GetParam(), [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    train::GptMiniOptions o;
    o.width = 24;
    o.heads = 12;
    o.dropout = 0.0;
    at::manual_seed(3);
    train::CausalSelfAttention full(o);
    full->to(at::kDouble);
    auto child = [&](const std::string& name) {
      return torch::nn::Linear(
          std::dynamic_pointer_cast<torch::nn::LinearImpl>(full->named_children()[name]));
    };
    torch::nn::Linear qkv = child("qkv"), proj = child("proj");
    ParallelCausalSelfAttention attn(qkv, proj, o.heads, comm);
    at::manual_seed(4);
    at::Tensor x = at::randn({2, 5, 24}, at::kDouble).requires_grad_(true);
    at::Tensor x_ref = x.detach().clone().requires_grad_(true);
    at::Tensor y = attn(x), y_ref = full(x_ref);
    expect_close(y, y_ref, "output");
    (y * y).sum().backward();
    (y_ref * y_ref).sum().backward();
    expect_close(x.grad(), x_ref.grad(), "input gradient");
    const int64_t rows = 24 / size;
    at::Tensor want = at::cat({qkv->weight.grad().narrow(0, rank * rows, rows),
                               qkv->weight.grad().narrow(0, 24 + rank * rows, rows),
                               qkv->weight.grad().narrow(0, 48 + rank * rows, rows)});
    expect_close(attn->qkv_weight.grad(), want, "qkv weight gradient");
    expect_close(attn->proj->weight.grad(), proj->weight.grad().narrow(1, rank * rows, rows),
                 "proj weight gradient");
  });
}

// A 12-token vocabulary split over the ranks: the embedding equals the full
// one (and its weight gradient is the rows' slice), and the cross-entropy of
// the split logits equals the full one, with each rank's columns of the
// full logits' gradient.
TEST_P(TensorParallel, VocabularySplitEmbeddingAndCrossEntropy) {
  tandem::testing::expect_ranks_succeed(GetParam(), [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    at::manual_seed(5);
    torch::nn::Embedding full(12, 4);
    full->to(at::kDouble);
    VocabParallelEmbedding embedding(full, comm);
    at::Tensor tokens = at::randint(0, 12, {3, 5}, at::kLong);
    at::Tensor e = embedding(tokens), e_ref = full(tokens);
    expect_close(e, e_ref, "embedding");
    (e * e).sum().backward();
    (e_ref * e_ref).sum().backward();
    const int64_t rows = 12 / size;
    expect_close(embedding->weight.grad(), full->weight.grad().narrow(0, rank * rows, rows),
                 "embedding weight gradient");

    at::Tensor logits = at::randn({7, 12}, at::kDouble).requires_grad_(true);
    at::Tensor target = at::randint(0, 12, {7}, at::kLong);
    at::Tensor mine = logits.detach().narrow(1, rank * rows, rows).clone().requires_grad_(true);
    at::Tensor loss = vocab_parallel_cross_entropy(mine, target, *comm);
    at::Tensor loss_ref = torch::nn::functional::cross_entropy(logits, target);
    EXPECT_NEAR(loss.item<double>(), loss_ref.item<double>(), 1e-12);
    loss.backward();
    loss_ref.backward();
    expect_close(mine.grad(), logits.grad().narrow(1, rank * rows, rows), "logits gradient");
  });
}

INSTANTIATE_TEST_SUITE_P(Ranks, TensorParallel, ::testing::Values(2, 3, 4));

TEST(TensorParallelLayers, UnevenSplitIsNamed) {
  tandem::testing::expect_ranks_succeed(3, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    try {
      ColumnParallelLinear(linear(4, 10, 1), comm);
      FAIL() << "10 rows split over 3 ranks";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("10 features do not split evenly over 3"),
                std::string::npos)
          << e.what();
    }
  });
}

}  // namespace
}  // namespace tandem::parallel
