// FullyShardedDataParallel (ZeRO-3) against the single-process computation
// it replaces (DESIGN.md, "Correctness rule"): after 10 steps of SGD with
// Nesterov momentum and of AdamW, in float64, N ranks with batch B hold the
// parameters of one process with batch N*B to rtol 1e-9 at 1, 2, 3 and 4
// ranks (3 ranks: shards of unequal length), on an MLP with one unit per
// Linear and on a GPT-mini with one unit per block; no_sync accumulation and
// gradient clipping likewise.
#include <ATen/ops/allclose.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <cmath>

#include "tandem/core/error.h"
#include "tandem/parallel/fsdp/fully_sharded_data_parallel.h"
#include "tests/parallel/fsdp/fsdp_cases.h"
#include "tests/parallel/support/equivalence.h"
#include "tests/support/multiproc.h"

namespace tandem::parallel {
namespace {

using testing::Opt;

std::shared_ptr<Communicator> connect(int rank, int size, int port) {
  return testing::connect(testing::Backend::kShm, rank, size, port, "fsdp");
}

constexpr int kSteps = 10;

using Case = FsdpCase;

// FSDP, each step over `micros` micro-batches with no_sync on all but the last.
torch::OrderedDict<std::string, at::Tensor> train_fsdp(const Case& c, Opt opt,
                                                       const std::shared_ptr<Communicator>& comm,
                                                       int micros = 1) {
  auto model = c.workload.make();
  FsdpOptions options;
  options.wrap = c.policy;
  FullyShardedDataParallel fsdp(model, comm, options);
  EXPECT_GE(fsdp.units().size(), 3u);
  auto optimizer = testing::make_optimizer(opt, fsdp.parameters());
  for (int s = 0; s < kSteps; ++s) {
    optimizer->zero_grad();
    for (int m = 0; m < micros; ++m) {
      at::Tensor loss = testing::rank_loss(c.workload, *model, comm->rank(), s, m, micros);
      if (m + 1 < micros) {
        auto guard = fsdp.no_sync();
        loss.backward();
      } else {
        loss.backward();
      }
    }
    optimizer->step();
  }
  return fsdp.full_state_dict();
}

void run_equivalence(int world, const Case& c) {
  testing::MultiprocOptions mp;
  mp.timeout = std::chrono::milliseconds(150'000);
  testing::expect_ranks_succeed(
      world,
      [&](int rank, int size, int port) {
        auto comm = connect(rank, size, port);
        for (Opt opt : {Opt::kSgdNesterov, Opt::kAdamW}) {
          const std::string what = testing::opt_name(opt);
          auto fsdp = train_fsdp(c, opt, comm);
          auto ref = testing::train_one_process(c.workload, opt, size, kSteps);
          testing::expect_same_parameters(fsdp, testing::parameters_of(*ref), 1e-9, 1e-12, what);
          // The parameters moved, so the comparison is not between two copies of the start.
          auto start = testing::parameters_of(*c.workload.make());
          EXPECT_FALSE(at::allclose(start.begin()->value(), fsdp.begin()->value())) << what;
        }
      },
      mp);
}

class FsdpEquivalence : public ::testing::TestWithParam<int> {};

TEST_P(FsdpEquivalence, MlpWithOneUnitPerLinearMatchesOneProcess) {
  run_equivalence(GetParam(), mlp_case());
}

TEST_P(FsdpEquivalence, GptMiniWithOneUnitPerBlockMatchesOneProcess) {
  run_equivalence(GetParam(), gpt_case());
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, FsdpEquivalence, ::testing::Values(1, 2, 3, 4));

TEST(FullyShardedDataParallel, NoSyncOverTwoMicroBatchesEqualsOneBigBatch) {
  testing::expect_ranks_succeed(3, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    Case c = mlp_case();
    auto fsdp = train_fsdp(c, Opt::kSgdNesterov, comm, /*micros=*/2);
    auto ref = testing::train_one_process(c.workload, Opt::kSgdNesterov, size, kSteps, 2);
    testing::expect_same_parameters(fsdp, testing::parameters_of(*ref), 1e-9, 1e-12, "no_sync");
  });
}

TEST(FullyShardedDataParallel, ClipGradNormSeesTheWholeGradient) {
  testing::expect_ranks_succeed(3, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    Case c = mlp_case();
    auto reference = c.workload.make();
    testing::one_process_loss(c.workload, *reference, size, 0).backward();
    double sum = 0;
    for (const auto& p : reference->parameters()) sum += p.grad().pow(2).sum().item<double>();
    const double norm = std::sqrt(sum);
    auto model = c.workload.make();
    FsdpOptions options;
    options.wrap = c.policy;
    FullyShardedDataParallel fsdp(model, comm, options);
    testing::rank_loss(c.workload, *model, rank, 0).backward();
    EXPECT_NEAR(fsdp.clip_grad_norm(norm / 2), norm, 1e-12 * norm);
    at::Tensor after = at::zeros({1}, at::kDouble);
    for (const auto& shard : fsdp.parameters()) after += shard.grad().pow(2).sum();
    comm->all_reduce(after);
    EXPECT_NEAR(std::sqrt(after.item<double>()), norm / 2, 1e-5 * norm);
    EXPECT_THROW(fsdp.clip_grad_norm(0), InvalidArgument);
  });
}

}  // namespace
}  // namespace tandem::parallel
