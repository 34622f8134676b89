// ZeroRedundancyOptimizer's behaviour beyond equivalence
// (zero_equivalence_test.cpp) and memory (zero_memory_test.cpp): one rank is
// the plain optimizer under every way of zeroing gradients, the trace shows
// overlap, unused parameters, and the errors for bad options and for an
// optimizer ZeRO cannot shard.
#include "tandem/parallel/zero/zero_optimizer.h"

#include <ATen/ops/equal.h>
#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/lbfgs.h>
#include <torch/optim/sgd.h>

#include <algorithm>

#include "tandem/core/error.h"
#include "tests/parallel/support/equivalence.h"
#include "tests/parallel/zero/zero_cases.h"
#include "tests/support/multiproc.h"

namespace tandem::parallel {
namespace {

using testing::Opt;

// One rank: ZeRO degenerates to the plain optimizer. The shards are then
// whole buckets, so every way of zeroing gradients must work: ours, the
// inner optimizer's (it detach_()es .grad in place, which throws on autograd
// views) and, in stage 1, the module's set_to_none (the next backward
// re-aliases .grad).
TEST(ZeroRedundancyOptimizer, OneRankIsThePlainOptimizer) {
  testing::expect_ranks_succeed(1, [](int rank, int size, int port) {
    auto comm = zero_connect(rank, size, port);
    const testing::Workload w = testing::mlp_workload();
    for (int stage : {1, 2}) {
      auto model = w.make();
      ZeroRedundancyOptimizer zero(model, comm, factory(Opt::kAdamW), small_buckets(stage));
      auto ref = w.make();
      auto ref_opt = testing::make_optimizer(Opt::kAdamW, ref->parameters());
      for (int s = 0; s < 6; ++s) {
        if (s % 3 == 0) zero.zero_grad();
        if (s % 3 == 1) zero.optimizer().zero_grad();
        if (s % 3 == 2) {
          if (stage == 1) {
            model->zero_grad(/*set_to_none=*/true);
          } else {
            zero.zero_grad();
          }
        }
        testing::rank_loss(w, *model, 0, s).backward();
        zero.step();
        ref_opt->zero_grad();
        testing::rank_loss(w, *ref, 0, s).backward();
        ref_opt->step();
      }
      testing::expect_same_parameters(*model, *ref, 1e-12, 1e-14);
      if (stage == 1) {
        // Re-aliased: gradients still cost their bytes once.
        EXPECT_EQ(zero.memory().now().gradients, zero.memory().now().parameters);
      }
    }
  });
}

// The trace shows each bucket's reduce-scatter, a launch before backward
// ends (overlap), and the step's all-gathers.
TEST(ZeroRedundancyOptimizer, TraceShowsOverlapAndEveryBucket) {
  testing::expect_ranks_succeed(2, [](int rank, int size, int port) {
    auto comm = zero_connect(rank, size, port);
    const testing::Workload w = testing::mlp_workload();
    auto model = w.make();
    ZeroOptions o = small_buckets(2);
    o.trace = std::make_shared<TraceRecorder>(rank);
    ZeroRedundancyOptimizer zero(model, comm, factory(Opt::kAdamW), o);
    testing::rank_loss(w, *model, rank, 0).backward();
    zero.step();
    double backward_end = -1, first_launch = 1e300;
    int reduce_scatters = 0, all_gathers = 0, steps = 0;
    for (const auto& e : o.trace->events()) {
      if (e.name == "backward (hooks)") backward_end = e.end_us;
      if (e.name.rfind("reduce_scatter bucket", 0) == 0) {
        ++reduce_scatters;
        first_launch = std::min(first_launch, e.start_us);
        EXPECT_EQ(e.lane, "comm");
      }
      if (e.name.rfind("all_gather bucket", 0) == 0) ++all_gathers;
      if (e.name == "optimizer step (shard)") ++steps;
    }
    EXPECT_EQ(reduce_scatters, 3);
    EXPECT_EQ(all_gathers, 3);
    EXPECT_EQ(steps, 1);
    ASSERT_GT(backward_end, 0);
    EXPECT_LT(first_launch, backward_end);
  });
}

class ZeroUnusedParameters : public ::testing::TestWithParam<int> {};

TEST_P(ZeroUnusedParameters, AreAnErrorOrZeros) {
  const int stage = GetParam();
  testing::expect_ranks_succeed(2, [=](int rank, int size, int port) {
    auto comm = zero_connect(rank, size, port);
    auto [x, y] = testing::mlp_workload().batch(rank, 0, 0);
    ZeroOptions o;
    o.stage = stage;
    const auto sgd = [](std::vector<at::Tensor> p) {  // no weight decay
      return std::make_unique<torch::optim::SGD>(p, torch::optim::SGDOptions(0.1).momentum(0.9));
    };
    {
      auto model = std::make_shared<testing::TwoHeads>();
      ZeroRedundancyOptimizer zero(model, comm, sgd, o);
      testing::expect_unused_head_named(
          [&] { torch::nn::functional::mse_loss(model->forward(x), y).backward(); });
    }
    auto model = std::make_shared<testing::TwoHeads>();
    o.find_unused_parameters = true;
    ZeroRedundancyOptimizer zero(model, comm, sgd, o);
    const at::Tensor before = model->unused->weight.detach().clone();
    for (int s = 0; s < 2; ++s) {
      zero.zero_grad();
      torch::nn::functional::mse_loss(model->forward(x), y).backward();
      zero.step();
    }
    // Zero gradients and zero momentum: SGD leaves the unused head alone.
    EXPECT_TRUE(at::equal(model->unused->weight, before));
  });
}

INSTANTIATE_TEST_SUITE_P(Stages, ZeroUnusedParameters, ::testing::Values(1, 2));

TEST(ZeroRedundancyOptimizer, BadOptionsNameTheOption) {
  testing::expect_ranks_succeed(1, [](int rank, int size, int port) {
    auto comm = zero_connect(rank, size, port);
    auto model = testing::mlp_workload().make();
    auto expect_invalid = [&](ZeroOptions o, OptimizerFactory f, const std::string& words) {
      try {
        ZeroRedundancyOptimizer zero(model, comm, std::move(f), o);
        ADD_FAILURE() << "accepted; expected an error about " << words;
      } catch (const InvalidArgument& e) {
        EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
      }
    };
    ZeroOptions o;
    o.stage = 3;
    expect_invalid(o, factory(Opt::kAdamW), "ZeroOptions::stage must be 1 or 2 (got 3)");
    o = {};
    o.bucket_cap_mb = 0;
    expect_invalid(o, factory(Opt::kAdamW), "ZeroOptions::bucket_cap_mb must be positive");
    o = {};
    o.optimizer_piece_numel = 0;
    expect_invalid(o, factory(Opt::kAdamW),
                   "ZeroOptions::optimizer_piece_numel must be positive (got 0)");
    o = {};
    o.timeout = Millis(0);
    expect_invalid(o, factory(Opt::kAdamW), "ZeroOptions::timeout must be positive");
    expect_invalid({}, nullptr, "optimizer factory is empty");
    // The classic mistake: an optimizer over the whole model, not the shards.
    expect_invalid(
        {},
        [&](std::vector<at::Tensor>) {
          return testing::make_optimizer(Opt::kAdamW, model->parameters());
        },
        "must optimise exactly the 1 shard tensors");
    auto zero = std::make_unique<ZeroRedundancyOptimizer>(model, comm, factory(Opt::kAdamW));
    try {
      zero->clip_grad_norm(0);
      ADD_FAILURE() << "clip_grad_norm(0) accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("max_norm must be positive"), std::string::npos);
    }
  });
}

// LBFGS is not elementwise (its step mixes every element through dot
// products): stepping shards on their own would silently change it.
TEST(ZeroRedundancyOptimizer, AnOptimizerItCannotShardIsNotSupportedAndNamed) {
  testing::expect_ranks_succeed(1, [](int rank, int size, int port) {
    auto comm = zero_connect(rank, size, port);
    auto model = testing::mlp_workload().make();
    const OptimizerFactory lbfgs = [](std::vector<at::Tensor> p) {
      return std::make_unique<torch::optim::LBFGS>(p, torch::optim::LBFGSOptions(0.1));
    };
    try {
      ZeroRedundancyOptimizer zero(model, comm, lbfgs);
      ADD_FAILURE() << "LBFGS was accepted";
    } catch (const NotSupported& e) {
      const std::string msg = e.what();
      for (const char* words : {"torch::optim::LBFGS", "SGD, Adam, AdamW, Adagrad, RMSprop"}) {
        EXPECT_NE(msg.find(words), std::string::npos) << msg;
      }
    }
  });
}

}  // namespace
}  // namespace tandem::parallel
