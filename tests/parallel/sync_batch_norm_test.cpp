// A ConvNet with SyncBatchNorm under DistributedDataParallel against one
// process with ordinary BatchNorm and the whole batch: same parameters and
// running statistics after 10 SGD steps with Nesterov momentum (float64,
// rtol 1e-9).
#include "tandem/parallel/sync_batch_norm.h"

#include <ATen/ops/allclose.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/optim/sgd.h>

#include "tandem/comm/backend.h"
#include "tandem/core/error.h"
#include "tandem/parallel/ddp/distributed_data_parallel.h"
#include "tests/support/multiproc.h"

namespace tandem::parallel {
namespace {

constexpr int64_t kBatch = 3;
constexpr int kSteps = 10;

// With `comm`, the norm layers are SyncBatchNorm; without, BatchNorm2d.
// Neither draws random numbers, so both get the same convolution weights.
torch::nn::Sequential make_convnet(std::shared_ptr<Communicator> comm = nullptr) {
  at::manual_seed(0);
  auto norm = [&](int64_t c) {
    return comm ? torch::nn::AnyModule(SyncBatchNorm(SyncBatchNormOptions{c}, comm))
                : torch::nn::AnyModule(torch::nn::BatchNorm2d(c));
  };
  torch::nn::Sequential m;
  m->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 4, 3).padding(1)));
  m->push_back(norm(4));
  m->push_back(torch::nn::ReLU());
  m->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(4, 4, 3).padding(1)));
  m->push_back(norm(4));
  m->push_back(torch::nn::ReLU());
  m->push_back(torch::nn::AdaptiveAvgPool2d(1));
  m->push_back(torch::nn::Flatten());
  m->push_back(torch::nn::Linear(4, 3));
  m->to(at::kDouble);
  return m;
}

std::pair<at::Tensor, at::Tensor> batch(int rank, int step) {
  at::manual_seed(500 + step * 31 + rank * 7);
  return {at::randn({kBatch, 2, 6, 6}, at::kDouble), at::randn({kBatch, 3}, at::kDouble)};
}

torch::optim::SGD make_sgd(torch::nn::Sequential& m) {
  return torch::optim::SGD(m->parameters(),
                           torch::optim::SGDOptions(0.05).momentum(0.9).nesterov(true));
}

class SyncBnEquivalence : public ::testing::TestWithParam<int> {};

TEST_P(SyncBnEquivalence, MatchesOneProcessWithTheWholeBatch) {
  testing::expect_ranks_succeed(GetParam(), [](int rank, int size, int port) {
    auto store = make_tcp_store("127.0.0.1", port, rank == 0, Millis(30'000));
    auto comm = make_shm_communicator(BackendOptions{
        rank, size, with_prefix(store, "sbn"), Millis(30'000), "sbn-" + std::to_string(port)});
    auto model = make_convnet(comm);
    DdpOptions o;
    o.bucket_cap_mb = 400.0 / (1024 * 1024);
    DistributedDataParallel ddp(model.ptr(), comm, o);
    ASSERT_GE(ddp.bucket_plan().buckets.size(), 3u);
    auto opt = make_sgd(model);
    auto ref = make_convnet();
    auto ref_opt = make_sgd(ref);
    for (int s = 0; s < kSteps; ++s) {
      auto [x, y] = batch(rank, s);
      opt.zero_grad();
      torch::nn::functional::mse_loss(model->forward(x), y).backward();
      opt.step();
      std::vector<at::Tensor> xs, ys;
      for (int r = 0; r < size; ++r) {
        auto [rx, ry] = batch(r, s);
        xs.push_back(rx);
        ys.push_back(ry);
      }
      ref_opt.zero_grad();
      torch::nn::functional::mse_loss(ref->forward(at::cat(xs)), at::cat(ys)).backward();
      ref_opt.step();
    }
    auto mine = model->named_parameters();
    for (const auto& item : ref->named_parameters()) {
      EXPECT_TRUE(at::allclose(mine[item.key()], item.value(), 1e-9, 1e-12)) << item.key();
    }
    auto my_buffers = model->named_buffers();
    for (const auto& item : ref->named_buffers()) {
      EXPECT_TRUE(at::allclose(my_buffers[item.key()].to(at::kDouble), item.value().to(at::kDouble),
                               1e-9, 1e-12))
          << item.key();
    }
  });
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, SyncBnEquivalence, ::testing::Values(2, 4));

}  // namespace
}  // namespace tandem::parallel
