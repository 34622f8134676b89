// ZeroRedundancyOptimizer really shards: the optimizer state covers only the
// rank's shards, and the model-state bytes it holds are exactly those the
// shard ranges give (the ZeRO paper's 4 + 4 + 8/N bytes per fp32 parameter
// with AdamW at stage 1, 4 + 4/N + 8/N at stage 2), beside DDP's 4 + 4 + 8.
#include <ATen/ops/full.h>
#include <ATen/ops/randn.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/adamw.h>

#include <algorithm>
#include <cstdlib>

#include "tandem/memory/storage_set.h"
#include "tandem/parallel/ddp/distributed_data_parallel.h"
#include "tandem/parallel/optimizer_state.h"
#include "tandem/parallel/zero/zero_optimizer.h"
#include "tandem/train/models/mlp.h"
#include "tests/parallel/support/equivalence.h"
#include "tests/support/multiproc.h"

namespace tandem::parallel {
namespace {

using testing::Backend;
using testing::Opt;

std::shared_ptr<Communicator> connect(int rank, int size, int port) {
  return testing::connect(Backend::kShm, rank, size, port, "zero-memory");
}

OptimizerFactory adamw(double lr) {
  return [lr](std::vector<at::Tensor> p) {
    return std::make_unique<torch::optim::AdamW>(p, torch::optim::AdamWOptions(lr));
  };
}

// Elements of all buckets this rank owns.
int64_t shard_numel(const ZeroRedundancyOptimizer& zero) {
  int64_t n = 0;
  for (size_t b = 0; b < zero.bucket_count(); ++b) n += zero.shard_of(b).numel;
  return n;
}

TEST(ZeroRedundancyOptimizer, AdamWStateCoversOnlyTheRanksShards) {
  testing::expect_ranks_succeed(3, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    const testing::Workload w = testing::mlp_workload();
    auto model = w.make();
    ZeroOptions o;
    o.bucket_cap_mb = 1200.0 / (1024 * 1024);
    ZeroRedundancyOptimizer zero(model, comm, adamw(1e-2), o);
    EXPECT_EQ(zero.optimizer_state(0), nullptr);  // created by the first step
    testing::rank_loss(w, *model, rank, 0).backward();
    zero.step();
    int64_t total_numel = 0;
    for (size_t b = 0; b < zero.bucket_count(); ++b) {
      total_numel += zero.layouts()[b].numel;
      auto* state = zero.optimizer_state(b);
      ASSERT_NE(state, nullptr) << "bucket " << b;
      for (const auto& [name, t] : param_state_fields(*state).tensors) {
        EXPECT_EQ(t.numel(), zero.shard_of(b).numel) << name << " of bucket " << b;
      }
    }
    // exp_avg and exp_avg_sq: 2 x 8 bytes per element of the shards (the
    // step counters are plain integers, not tensors).
    const int64_t mine = shard_numel(zero);
    const int64_t bytes = memory::storage_bytes(optimizer_state_tensors(zero.optimizer()));
    EXPECT_EQ(bytes, 16 * mine);
    EXPECT_EQ(zero.memory().now().optimizer_state, bytes);
    at::Tensor sum = at::full({1}, mine, at::kLong);
    comm->all_reduce(sum);
    EXPECT_EQ(sum.item<int64_t>(), total_numel);  // the shards partition the model
    EXPECT_LE(mine, total_numel / size + static_cast<int64_t>(zero.bucket_count()));
  });
}

// fp32 MLP with 12 equal hidden layers, so the 20 KiB buckets hold one layer each.
train::Mlp make_fp32_mlp() {
  at::manual_seed(0);
  return train::Mlp(train::MlpOptions{64, std::vector<int64_t>(12, 64), 10});
}

std::pair<at::Tensor, at::Tensor> fp32_batch(int rank) {
  at::manual_seed(rank + 1);
  return {at::randn({8, 64}), at::randn({8, 10})};
}

void expect_bytes(const memory::ModelStateBytes& got, const memory::ModelStateBytes& want,
                  const std::string& what) {
  EXPECT_EQ(got.parameters, want.parameters) << what;
  EXPECT_EQ(got.gradients, want.gradients) << what;
  EXPECT_EQ(got.optimizer_state, want.optimizer_state) << what;
}

class ZeroMemory : public ::testing::TestWithParam<int> {};

// After two AdamW steps, in fp32 (4 bytes an element, 8 of AdamW state).
TEST_P(ZeroMemory, BytesAreWhatTheShardRangesGive) {
  testing::expect_ranks_succeed(GetParam(), [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    auto [x, y] = fp32_batch(rank);
    const double cap_mb = 20.0 / 1024;
    {
      auto model = make_fp32_mlp();
      const int64_t count = train::mlp_parameter_count(model->options());
      DdpOptions d;
      d.bucket_cap_mb = cap_mb;
      d.gradient_as_bucket_view = true;
      DistributedDataParallel ddp(model.ptr(), comm, d);
      torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(1e-3));
      torch::nn::functional::mse_loss(model->forward(x), y).backward();
      opt.step();
      ddp.sample_memory(&opt);
      expect_bytes(ddp.memory().now(), {4 * count, 4 * count, 8 * count}, "DDP");
    }
    for (int stage : {1, 2}) {
      auto model = make_fp32_mlp();
      const int64_t count = train::mlp_parameter_count(model->options());
      ZeroOptions o;
      o.stage = stage;
      o.bucket_cap_mb = cap_mb;
      ZeroRedundancyOptimizer zero(model.ptr(), comm, adamw(1e-3), o);
      ASSERT_GE(zero.bucket_count(), 10u);
      for (int s = 0; s < 2; ++s) {
        zero.zero_grad();
        torch::nn::functional::mse_loss(model->forward(x), y).backward();
        zero.step();
      }
      const std::string what = fmt::format("zero{} at N={}", stage, size);
      const int64_t mine = shard_numel(zero);
      // The theory's 1/N, to within one element per bucket.
      EXPECT_LE(std::abs(mine * size - count), size * static_cast<int64_t>(zero.bucket_count()))
          << what;
      expect_bytes(zero.memory().now(), {4 * count, 4 * (stage == 1 ? count : mine), 8 * mine},
                   what);
      if (stage == 2) {
        for (const auto& p : model->parameters()) EXPECT_FALSE(p.grad().defined()) << what;
        // The transient during backward: the shards, the buckets being filled
        // and at most kMaxReduceScattersInFlight in flight; never the full
        // gradients (4 bytes/param).
        int64_t largest = 0;
        for (const auto& l : zero.layouts()) largest = std::max(largest, l.numel);
        const int64_t bound = static_cast<int64_t>(4.0 * count / size) + 4 * largest * 4;
        EXPECT_LE(zero.memory().peak().gradients, bound) << what;
        EXPECT_LT(zero.memory().peak().gradients, 0.9 * 4 * count) << what;
        EXPECT_GT(zero.memory().peak().gradients, zero.memory().now().gradients) << what;
      }
    }
  });
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, ZeroMemory, ::testing::Values(2, 4));

}  // namespace
}  // namespace tandem::parallel
