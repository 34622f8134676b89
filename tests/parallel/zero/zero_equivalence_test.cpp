// ZeroRedundancyOptimizer against the single-process computation it
// replaces (DESIGN.md, "Correctness rule"): N ranks with batch B end with
// the parameters of one process with batch N*B. Stages 1 and 2, 2-4 ranks
// (3: shards of unequal length), float64, rtol 1e-9 after 10 steps, with
// every optimizer ZeRO accepts (SGD with Nesterov momentum, Adam with
// AMSGrad, AdamW, Adagrad, centred RMSprop with momentum); also empty
// shards, small optimizer pieces, no_sync accumulation and gradient clipping.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/optimizer.h>

#include <tuple>

#include "tandem/core/error.h"
#include "tandem/parallel/zero/zero_optimizer.h"
#include "tests/parallel/support/equivalence.h"
#include "tests/parallel/zero/zero_cases.h"
#include "tests/support/multiproc.h"

namespace tandem::parallel {
namespace {

using testing::Opt;

constexpr int kSteps = 10;

// Trains `model` under `zero` for `steps` steps on workload `w`.
void train(ZeroRedundancyOptimizer& zero, const testing::Workload& w, torch::nn::Module& model,
           int rank, int steps) {
  for (int s = 0; s < steps; ++s) {
    zero.zero_grad();
    testing::rank_loss(w, model, rank, s).backward();
    EXPECT_GE(zero.last_stats().buckets_launched_during_backward, 1);
    zero.step();
  }
}

// ---- 1. the same parameters as one process ----

using Case = std::tuple<int, int, Opt>;  // world size, stage, optimizer

class ZeroEquivalence : public ::testing::TestWithParam<Case> {};

TEST_P(ZeroEquivalence, MatchesOneProcessAfterTenSteps) {
  const auto [world, stage, opt] = GetParam();
  testing::expect_ranks_succeed(world, [=](int rank, int size, int port) {
    auto comm = zero_connect(rank, size, port);
    const testing::Workload w = testing::mlp_workload();
    auto model = w.make();
    ZeroRedundancyOptimizer zero(model, comm, factory(opt), small_buckets(stage));
    ASSERT_EQ(zero.bucket_count(), 3u);
    train(zero, w, *model, rank, kSteps);
    auto ref = testing::train_one_process(w, opt, size, kSteps);
    testing::expect_same_parameters(*model, *ref, 1e-9, 1e-12);
    // Every rank ends with the same (all-gathered) parameters.
    for (size_t k = 0; k < zero.bucket_count(); ++k) {
      testing::expect_same_on_every_rank(*comm, zero.flat_parameters(k),
                                         fmt::format("bucket {}", k));
    }
  });
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return fmt::format("N{}_zero{}_{}", std::get<0>(info.param), std::get<1>(info.param),
                     testing::opt_name(std::get<2>(info.param)));
}

INSTANTIATE_TEST_SUITE_P(WorldsStagesOptimizers, ZeroEquivalence,
                         ::testing::Combine(::testing::Values(2, 3, 4), ::testing::Values(1, 2),
                                            ::testing::Values(Opt::kSgdNesterov, Opt::kAdamW)),
                         case_name);

// The other elementwise optimizers LibTorch has, at 3 ranks (shards of
// unequal length that cut across parameters).
INSTANTIATE_TEST_SUITE_P(OtherOptimizers, ZeroEquivalence,
                         ::testing::Combine(::testing::Values(3), ::testing::Values(1, 2),
                                            ::testing::Values(Opt::kAdam, Opt::kAdagrad,
                                                              Opt::kRmsprop)),
                         case_name);

// One bucket per parameter (an 8-byte cap), one of them a single element:
// at 4 ranks, three ranks hold an empty shard of it and step nothing there.
TEST(ZeroRedundancyOptimizer, EmptyShardsStillMatchOneProcess) {
  testing::expect_ranks_succeed(4, [](int rank, int size, int port) {
    auto comm = zero_connect(rank, size, port);
    const testing::Workload w = testing::mlp_workload(12, 1);
    for (int stage : {1, 2}) {
      auto model = w.make();
      ZeroOptions o;
      o.stage = stage;
      o.bucket_cap_mb = 8.0 / (1024 * 1024);
      ZeroRedundancyOptimizer zero(model, comm, factory(Opt::kAdamW), o);
      ASSERT_EQ(zero.bucket_count(), 6u);
      ASSERT_EQ(zero.layouts()[0].numel, 1);  // the last layer's bias
      EXPECT_EQ(zero.shard_of(0).numel, rank == 0 ? 1 : 0);
      train(zero, w, *model, rank, 3);
      auto ref = testing::train_one_process(w, Opt::kAdamW, size, 3);
      testing::expect_same_parameters(*model, *ref, 1e-9, 1e-12);
    }
  });
}

// The inner optimizer steps each shard in pieces of at most
// optimizer_piece_numel elements (bounding AdamW's temporaries); the result
// is the same as one process's, and the pieces tile the shard.
TEST(ZeroRedundancyOptimizer, SmallOptimizerPiecesStillMatchOneProcess) {
  testing::expect_ranks_succeed(3, [](int rank, int size, int port) {
    auto comm = zero_connect(rank, size, port);
    const testing::Workload w = testing::mlp_workload();
    for (int stage : {1, 2}) {
      auto model = w.make();
      ZeroOptions o = small_buckets(stage);
      o.optimizer_piece_numel = 5;
      ZeroRedundancyOptimizer zero(model, comm, factory(Opt::kAdamW), o);
      size_t pieces = 0;
      for (size_t b = 0; b < zero.bucket_count(); ++b) {
        int64_t numel = 0;
        for (const auto& p : zero.optimizer_pieces(b)) {
          EXPECT_LE(p.numel(), 5) << "bucket " << b;
          EXPECT_EQ(p.data_ptr<double>(), zero.parameter_shard(b).data_ptr<double>() + numel);
          numel += p.numel();
        }
        EXPECT_EQ(numel, zero.shard_of(b).numel) << "bucket " << b;
        pieces += zero.optimizer_pieces(b).size();
      }
      EXPECT_GT(pieces, 3 * zero.bucket_count());
      EXPECT_EQ(zero.optimizer().param_groups()[0].params().size(), pieces);
      train(zero, w, *model, rank, kSteps);
      auto ref = testing::train_one_process(w, Opt::kAdamW, size, kSteps);
      testing::expect_same_parameters(*model, *ref, 1e-9, 1e-12);
      EXPECT_NE(zero.optimizer_state(0, zero.optimizer_pieces(0).size() - 1), nullptr);
      EXPECT_THROW(zero.optimizer_state(0, zero.optimizer_pieces(0).size()), InvalidArgument);
    }
  });
}

// ---- 2. no_sync and clipping ----

class ZeroStages : public ::testing::TestWithParam<int> {};

// Two micro-batches per rank, the first under no_sync, against one process
// that sees every rank's micro-batches in one batch.
TEST_P(ZeroStages, NoSyncAccumulationEqualsOneBigBatch) {
  const int stage = GetParam();
  testing::expect_ranks_succeed(3, [=](int rank, int size, int port) {
    auto comm = zero_connect(rank, size, port);
    const testing::Workload w = testing::mlp_workload();
    auto model = w.make();
    ZeroRedundancyOptimizer zero(model, comm, factory(Opt::kSgdNesterov), small_buckets(stage));
    for (int s = 0; s < kSteps; ++s) {
      zero.zero_grad();
      {
        auto guard = zero.no_sync();
        testing::rank_loss(w, *model, rank, s, 0, 2).backward();
      }
      testing::rank_loss(w, *model, rank, s, 1, 2).backward();
      zero.step();
    }
    auto ref = testing::train_one_process(w, Opt::kSgdNesterov, size, kSteps, 2);
    testing::expect_same_parameters(*model, *ref, 1e-9, 1e-12);
  });
}

TEST_P(ZeroStages, ClipGradNormMatchesOneProcessAndClipGradNorm) {
  const int stage = GetParam();
  testing::expect_ranks_succeed(3, [=](int rank, int size, int port) {
    auto comm = zero_connect(rank, size, port);
    const testing::Workload w = testing::mlp_workload();
    auto model = w.make();
    ZeroRedundancyOptimizer zero(model, comm, factory(Opt::kAdamW), small_buckets(stage));
    auto ref = w.make();
    auto ref_opt = testing::make_optimizer(Opt::kAdamW, ref->parameters());
    int clipped = 0;
    for (int s = 0; s < kSteps; ++s) {
      zero.zero_grad();
      testing::rank_loss(w, *model, rank, s).backward();
      const double norm = zero.clip_grad_norm(0.3);
      zero.step();
      ref_opt->zero_grad();
      testing::one_process_loss(w, *ref, size, s).backward();
      const double ref_norm = torch::nn::utils::clip_grad_norm_(ref->parameters(), 0.3);
      ref_opt->step();
      EXPECT_NEAR(norm, ref_norm, 1e-9 * ref_norm) << "step " << s;
      if (ref_norm > 0.3) ++clipped;
    }
    EXPECT_GE(clipped, 3);  // the test clips, not just measures
    testing::expect_same_parameters(*model, *ref, 1e-9, 1e-12);
  });
}

INSTANTIATE_TEST_SUITE_P(Stages, ZeroStages, ::testing::Values(1, 2));

}  // namespace
}  // namespace tandem::parallel
