// DistributedDataParallel against the single-process computation it replaces
// (DESIGN.md, "Correctness rule"): N ranks with batch B must end with the
// parameters of one process with batch N*B after 10 SGD steps with Nesterov
// momentum, in float64 (rtol 1e-9).
#include "tandem/parallel/distributed_data_parallel.h"

#include <ATen/ops/allclose.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include "tandem/comm/backend.h"
#include "tandem/core/error.h"
#include "tests/support/multiproc.h"

namespace tandem::parallel {
namespace {

constexpr int64_t kBatch = 4;
constexpr int kSteps = 10;

torch::nn::Sequential make_mlp(int64_t out = 3) {
  at::manual_seed(0);
  torch::nn::Sequential m(torch::nn::Linear(6, 12), torch::nn::Tanh(), torch::nn::Linear(12, 12),
                          torch::nn::Tanh(), torch::nn::Linear(12, out));
  m->to(at::kDouble);
  return m;
}

// Rank r's micro-batch `micro` of step s; every process can compute every rank's.
std::pair<at::Tensor, at::Tensor> batch(int rank, int step, int micro = 0) {
  at::manual_seed(1000 + step * 97 + rank * 13 + micro * 7);
  at::Tensor x = at::randn({kBatch, 6}, at::kDouble);
  at::Tensor y = at::randn({kBatch, 3}, at::kDouble);
  return {x, y};
}

torch::optim::SGD make_sgd(torch::nn::Sequential& m) {
  return torch::optim::SGD(m->parameters(),
                           torch::optim::SGDOptions(0.1).momentum(0.9).nesterov(true));
}

std::shared_ptr<Communicator> connect(int rank, int size, int port) {
  auto store = make_tcp_store("127.0.0.1", port, rank == 0, Millis(30'000));
  BackendOptions o{rank, size, with_prefix(store, "ddp"), Millis(30'000),
                   "ddp-test-" + std::to_string(port)};
  return make_shm_communicator(o);
}

// The reference: one process, every rank's micro-batches in one batch.
torch::nn::Sequential train_reference(int world, int micro_batches) {
  auto ref = make_mlp();
  auto opt = make_sgd(ref);
  for (int s = 0; s < kSteps; ++s) {
    std::vector<at::Tensor> xs, ys;
    for (int r = 0; r < world; ++r) {
      for (int m = 0; m < micro_batches; ++m) {
        auto [x, y] = batch(r, s, m);
        xs.push_back(x);
        ys.push_back(y);
      }
    }
    opt.zero_grad();
    torch::nn::functional::mse_loss(ref->forward(at::cat(xs)), at::cat(ys)).backward();
    opt.step();
  }
  return ref;
}

void expect_same_parameters(torch::nn::Sequential& a, torch::nn::Sequential& b, double rtol,
                            double atol) {
  auto pa = a->named_parameters();
  auto pb = b->named_parameters();
  for (const auto& item : pa) {
    const at::Tensor& x = item.value();
    const at::Tensor& y = pb[item.key()];
    EXPECT_TRUE(at::allclose(x, y, rtol, atol))
        << item.key() << " differs by " << (x - y).abs().max().item<double>();
  }
}

void run_equivalence(int world, int micro_batches, GradCompression compression, double rtol,
                     double atol) {
  testing::expect_ranks_succeed(world, [=](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    auto model = make_mlp();
    DdpOptions o;
    o.bucket_cap_mb = 300.0 / (1024 * 1024);  // 300 bytes: one layer's tensors per bucket
    o.compression = compression;
    DistributedDataParallel ddp(model.ptr(), comm, o);
    ASSERT_GE(ddp.bucket_plan().buckets.size(), 3u);
    auto opt = make_sgd(model);
    for (int s = 0; s < kSteps; ++s) {
      opt.zero_grad();
      for (int m = 0; m < micro_batches; ++m) {
        auto [x, y] = batch(rank, s, m);
        auto loss = torch::nn::functional::mse_loss(model->forward(x), y) / micro_batches;
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
      opt.step();
    }
    auto ref = train_reference(size, micro_batches);
    expect_same_parameters(model, ref, rtol, atol);
  });
}

class DdpEquivalence : public ::testing::TestWithParam<int> {};

TEST_P(DdpEquivalence, MatchesOneProcessWithTheWholeBatch) {
  run_equivalence(GetParam(), 1, GradCompression::kNone, 1e-9, 1e-12);
}

TEST_P(DdpEquivalence, NoSyncAccumulatesTwoMicroBatches) {
  run_equivalence(GetParam(), 2, GradCompression::kNone, 1e-9, 1e-12);
}

// float16 on the wire keeps ~3 significant digits of each step's gradient.
TEST_P(DdpEquivalence, Fp16CompressionStaysClose) {
  run_equivalence(GetParam(), 1, GradCompression::kFp16, 1e-2, 2e-3);
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, DdpEquivalence, ::testing::Values(2, 4));

TEST(DistributedDataParallel, MismatchedModelsAreNamed) {
  testing::expect_ranks_succeed(2, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    auto model = make_mlp(rank == 1 ? 4 : 3);
    try {
      DistributedDataParallel ddp(model.ptr(), comm);
      ADD_FAILURE() << "different models were accepted";
    } catch (const InvalidArgument& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("is [4, 12] Double on rank 1 but [3, 12] Double on rank 0"),
                std::string::npos)
          << msg;
    }
  });
}

struct TwoHeads : torch::nn::Module {
  TwoHeads() {
    at::manual_seed(0);
    used = register_module("used", torch::nn::Linear(6, 3));
    unused = register_module("unused", torch::nn::Linear(6, 3));
    to(at::kDouble);
  }
  at::Tensor forward(const at::Tensor& x) { return used->forward(x); }
  torch::nn::Linear used{nullptr};
  torch::nn::Linear unused{nullptr};
};

TEST(DistributedDataParallel, UnusedParametersAreAnErrorOrZeros) {
  testing::expect_ranks_succeed(2, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    auto [x, y] = batch(rank, 0);
    {
      auto model = std::make_shared<TwoHeads>();
      DistributedDataParallel ddp(model, comm);
      try {
        torch::nn::functional::mse_loss(model->forward(x), y).backward();
        ADD_FAILURE() << "a backward that left parameters without gradients passed";
      } catch (const std::exception& e) {
        std::string msg = e.what();
        EXPECT_NE(msg.find("unused.weight, unused.bias got no gradient"), std::string::npos) << msg;
        EXPECT_NE(msg.find("find_unused_parameters"), std::string::npos) << msg;
      }
    }
    auto model = std::make_shared<TwoHeads>();
    DdpOptions o;
    o.find_unused_parameters = true;
    DistributedDataParallel ddp(model, comm, o);
    torch::nn::functional::mse_loss(model->forward(x), y).backward();
    EXPECT_TRUE(model->unused->weight.grad().defined());
    EXPECT_EQ(model->unused->weight.grad().abs().sum().item<double>(), 0.0);
    // The used head's gradient is the average over both ranks.
    at::Tensor mine = model->used->weight.grad().clone();
    at::Tensor other = mine.clone();
    comm->all_reduce(other, ReduceOp::kMax);
    EXPECT_TRUE(at::allclose(mine, other));
  });
}

// gradient_as_bucket_view: the same parameters as one process, gradients
// held once (each .grad aliases its bucket), and the optimizer's own
// zero_grad (which detach_()es .grad in place) works on them.
class DdpGradientAsBucketView : public ::testing::TestWithParam<int> {};

TEST_P(DdpGradientAsBucketView, MatchesOneProcessAndHoldsGradientsOnce) {
  testing::expect_ranks_succeed(GetParam(), [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    auto model = make_mlp();
    DdpOptions o;
    o.bucket_cap_mb = 300.0 / (1024 * 1024);
    o.gradient_as_bucket_view = true;
    DistributedDataParallel ddp(model.ptr(), comm, o);
    auto opt = make_sgd(model);
    for (int s = 0; s < kSteps; ++s) {
      opt.zero_grad();
      {
        auto guard = ddp.no_sync();
        auto [x, y] = batch(rank, s, 0);
        (torch::nn::functional::mse_loss(model->forward(x), y) / 2).backward();
      }
      auto [x, y] = batch(rank, s, 1);
      (torch::nn::functional::mse_loss(model->forward(x), y) / 2).backward();
      opt.step();
    }
    auto ref = train_reference(size, 2);
    expect_same_parameters(model, ref, 1e-9, 1e-12);
    const ModelStateBytes& bytes = ddp.memory().now();
    EXPECT_GT(bytes.parameters, 0);
    EXPECT_EQ(bytes.gradients, bytes.parameters);  // 8 B/param in float64, not 16
    // Replaced gradients are copied back and re-aliased by the next backward.
    model->zero_grad(/*set_to_none=*/true);
    auto [x, y] = batch(rank, 0);
    torch::nn::functional::mse_loss(model->forward(x), y).backward();
    EXPECT_EQ(ddp.memory().now().gradients, bytes.parameters);
  });
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, DdpGradientAsBucketView, ::testing::Values(2, 3));

}  // namespace
}  // namespace tandem::parallel
