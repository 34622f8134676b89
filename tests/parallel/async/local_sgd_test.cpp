// LocalSgd against the computation it replaces: with sync_every = 1 it is
// DDP (SGD with Nesterov momentum and weight decay, float64, rtol 1e-9 after
// 10 steps, 2 and 3 ranks); with sync_every = 3 the workers drift apart
// between averages and agree exactly right after each one.
#include "tandem/parallel/async/local_sgd.h"

#include <ATen/ops/allclose.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include "tandem/core/error.h"
#include "tandem/parallel/ddp/distributed_data_parallel.h"
#include "tests/parallel/async/async_test_support.h"
#include "tests/support/multiproc.h"

namespace tandem::parallel {
namespace {

using testing::connect;

torch::nn::Sequential make_mlp() {
  at::manual_seed(0);
  torch::nn::Sequential m(torch::nn::Linear(6, 12), torch::nn::Tanh(), torch::nn::Linear(12, 3));
  m->to(at::kDouble);
  return m;
}

std::unique_ptr<torch::optim::SGD> sgd(const torch::nn::Sequential& m) {
  return std::make_unique<torch::optim::SGD>(
      m->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9).nesterov(true).weight_decay(0.01));
}

void train_step(torch::nn::Sequential& m, torch::optim::SGD& opt, int rank, int step) {
  at::manual_seed(1000 + step * 97 + rank * 13);
  at::Tensor x = at::randn({4, 6}, at::kDouble);
  at::Tensor y = at::randn({4, 3}, at::kDouble);
  opt.zero_grad();
  torch::nn::functional::mse_loss(m->forward(x), y).backward();
  opt.step();
}

class LocalSgdEveryStep : public ::testing::TestWithParam<int> {};

TEST_P(LocalSgdEveryStep, EqualsDdp) {
  tandem::testing::expect_ranks_succeed(GetParam(), [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    auto local = make_mlp();
    auto local_opt = sgd(local);
    LocalSgd averaging(local.ptr(), comm, 1);
    auto ref = make_mlp();
    DistributedDataParallel ddp(ref.ptr(), comm, DdpOptions{});
    auto ref_opt = sgd(ref);
    for (int s = 0; s < 10; ++s) {
      train_step(local, *local_opt, rank, s);
      EXPECT_TRUE(averaging.after_step());
      train_step(ref, *ref_opt, rank, s);
    }
    auto want = ref->named_parameters();
    for (const auto& item : local->named_parameters()) {
      EXPECT_TRUE(at::allclose(item.value(), want[item.key()], 1e-9, 1e-12))
          << item.key() << " differs by " << (item.value() - want[item.key()]).abs().max().item<double>();
    }
  });
}

INSTANTIATE_TEST_SUITE_P(Ranks, LocalSgdEveryStep, ::testing::Values(2, 3));

TEST(LocalSgd, WorkersAgreeRightAfterEachAverage) {
  tandem::testing::expect_ranks_succeed(3, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    auto m = make_mlp();
    auto opt = sgd(m);
    LocalSgd averaging(m.ptr(), comm, 3);
    for (int s = 0; s < 9; ++s) {
      train_step(m, *opt, rank, s);
      const bool averaged = averaging.after_step();
      EXPECT_EQ(averaged, (s + 1) % 3 == 0);
      const double spread = consensus_distance(*comm, m->parameters());
      if (averaged) {
        EXPECT_LT(spread, 1e-12);
        EXPECT_GT(averaging.last_consensus_distance(), 1e-6) << "nothing to average at step " << s;
      } else {
        EXPECT_GT(spread, 1e-6) << "the workers did not step on their own at step " << s;
      }
    }
    EXPECT_EQ(averaging.averages(), 3);
    EXPECT_THROW(LocalSgd(m.ptr(), comm, 0), InvalidArgument);
  });
}

}  // namespace
}  // namespace tandem::parallel
