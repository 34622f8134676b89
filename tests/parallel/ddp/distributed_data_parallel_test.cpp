// DistributedDataParallel against the single-process computation it replaces
// (DESIGN.md, "Correctness rule"): N ranks with batch B must end with the
// parameters of one process with batch N*B after 10 SGD steps with Nesterov
// momentum, in float64 (rtol 1e-9); with 16-bit compression, within the
// tolerance its precision allows.
#include "tandem/parallel/ddp/distributed_data_parallel.h"

#include <ATen/ops/allclose.h>
#include <ATen/ops/cat.h>
#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/optimizer.h>

#include <functional>

#include "tandem/core/error.h"
#include "tests/parallel/support/equivalence.h"
#include "tests/support/multiproc.h"

namespace tandem::parallel {
namespace {

using testing::Opt;

constexpr int kSteps = 10;

std::shared_ptr<Communicator> connect(int rank, int size, int port) {
  return testing::connect(testing::Backend::kShm, rank, size, port, "ddp");
}

// After the run, on each rank: its DDP object, model and workload.
using AfterRun = std::function<void(DistributedDataParallel&, torch::nn::Module&,
                                    const testing::Workload&, int rank)>;

// 10 steps of `micro_batches` micro-batches each (no_sync on all but the
// last) under DDP with `o` (small buckets), against one process.
void run_equivalence(int world, int micro_batches, DdpOptions o, double rtol, double atol,
                     AfterRun after = nullptr) {
  o.bucket_cap_mb = 300.0 / (1024 * 1024);  // 300 bytes: one layer's tensors per bucket
  testing::expect_ranks_succeed(world, [=](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    const testing::Workload w = testing::mlp_workload();
    auto model = w.make();
    DistributedDataParallel ddp(model, comm, o);
    ASSERT_GE(ddp.bucket_plan().buckets.size(), 3u);
    auto opt = testing::make_optimizer(Opt::kSgdNesterov, model->parameters());
    for (int s = 0; s < kSteps; ++s) {
      opt->zero_grad();
      for (int m = 0; m < micro_batches; ++m) {
        auto loss = testing::rank_loss(w, *model, rank, s, m, micro_batches);
        if (m + 1 < micro_batches) {
          auto guard = ddp.no_sync();
          loss.backward();
        } else {
          loss.backward();
        }
      }
      if (micro_batches == 1) {
        EXPECT_GE(ddp.last_stats().buckets_launched_during_backward, 1);
      }
      opt->step();
    }
    auto ref = testing::train_one_process(w, Opt::kSgdNesterov, size, kSteps, micro_batches);
    testing::expect_same_parameters(*model, *ref, rtol, atol);
    if (after) after(ddp, *model, w, rank);
  });
}

DdpOptions compressed(GradCompression compression) {
  DdpOptions o;
  o.compression = compression;
  return o;
}

class DdpEquivalence : public ::testing::TestWithParam<int> {};

TEST_P(DdpEquivalence, MatchesOneProcessWithTheWholeBatch) {
  run_equivalence(GetParam(), 1, {}, 1e-9, 1e-12);
}

TEST_P(DdpEquivalence, NoSyncAccumulatesTwoMicroBatches) {
  run_equivalence(GetParam(), 2, {}, 1e-9, 1e-12);
}

// float16 on the wire keeps ~3 significant digits of each step's gradient.
TEST_P(DdpEquivalence, Fp16CompressionStaysClose) {
  run_equivalence(GetParam(), 1, compressed(GradCompression::kFp16), 1e-2, 2e-3);
}

// bfloat16 keeps 8 significant bits (~2.4 digits), 8 times float16's
// rounding error: the tolerance is float16's, 8 times wider.
TEST_P(DdpEquivalence, Bf16CompressionStaysClose) {
  run_equivalence(GetParam(), 1, compressed(GradCompression::kBf16), 8e-2, 1.6e-2);
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, DdpEquivalence, ::testing::Values(2, 4));

TEST(DistributedDataParallel, MismatchedModelsAreNamed) {
  testing::expect_ranks_succeed(2, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    auto model = testing::mlp_workload(12, rank == 1 ? 4 : 3).make();
    try {
      DistributedDataParallel ddp(model, comm);
      ADD_FAILURE() << "different models were accepted";
    } catch (const InvalidArgument& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("is [4, 12] Double on rank 1 but [3, 12] Double on rank 0"),
                std::string::npos)
          << msg;
    }
  });
}

TEST(DistributedDataParallel, UnusedParametersAreAnErrorOrZeros) {
  testing::expect_ranks_succeed(2, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    const testing::Workload w = testing::two_heads_workload();
    {
      auto model = w.make();
      DistributedDataParallel ddp(model, comm);
      testing::expect_unused_head_named([&] { testing::rank_loss(w, *model, rank, 0).backward(); });
    }
    auto model = std::make_shared<testing::TwoHeads>();
    DdpOptions o;
    o.find_unused_parameters = true;
    DistributedDataParallel ddp(model, comm, o);
    testing::rank_loss(w, *model, rank, 0).backward();
    EXPECT_TRUE(model->unused->weight.grad().defined());
    EXPECT_EQ(model->unused->weight.grad().abs().sum().item<double>(), 0.0);
    // The used head's gradient is that of one process on both ranks' batches.
    auto reference = std::make_shared<testing::TwoHeads>();
    testing::one_process_loss(w, *reference, size, 0).backward();
    for (const auto& [got, want] : {std::pair{model->used->weight, reference->used->weight},
                                    std::pair{model->used->bias, reference->used->bias}}) {
      EXPECT_GT(want.grad().abs().sum().item<double>(), 0.0);
      EXPECT_TRUE(at::allclose(got.grad(), want.grad(), 1e-12, 1e-14))
          << "differs by " << (got.grad() - want.grad()).abs().max().item<double>();
    }
  });
}

// gradient_as_bucket_view: the same parameters as one process, gradients
// held once (each .grad aliases its bucket), and the optimizer's own
// zero_grad (which detach_()es .grad in place) works on them.
class DdpGradientAsBucketView : public ::testing::TestWithParam<int> {};

TEST_P(DdpGradientAsBucketView, MatchesOneProcessAndHoldsGradientsOnce) {
  DdpOptions o;
  o.gradient_as_bucket_view = true;
  run_equivalence(GetParam(), 2, o, 1e-9, 1e-12,
                  [](DistributedDataParallel& ddp, torch::nn::Module& model,
                     const testing::Workload& w, int rank) {
                    const memory::ModelStateBytes bytes = ddp.memory().now();
                    EXPECT_GT(bytes.parameters, 0);
                    EXPECT_EQ(bytes.gradients, bytes.parameters);  // 8 B/param in float64, not 16
                    // Replaced gradients are copied back and re-aliased by the next backward.
                    model.zero_grad(/*set_to_none=*/true);
                    testing::rank_loss(w, model, rank, 0).backward();
                    EXPECT_EQ(ddp.memory().now().gradients, bytes.parameters);
                  });
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, DdpGradientAsBucketView, ::testing::Values(2, 3));

}  // namespace
}  // namespace tandem::parallel
