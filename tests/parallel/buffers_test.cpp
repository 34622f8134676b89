// Buffers of every dtype LibTorch has on CPU (a causal mask as bool, uint8
// counters, int8/int16 tables, a transposed float view) reach every rank
// from rank 0 when DDP, ZeRO or FSDP is built, and training then runs. They
// were refused at construction before: broadcast took only six dtypes.
#include <ATen/ops/arange.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/tril.h>
#include <ATen/ops/view_as_real.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include <functional>
#include <memory>

#include "tandem/core/error.h"
#include "tandem/parallel/ddp/distributed_data_parallel.h"
#include "tandem/parallel/fsdp/fully_sharded_data_parallel.h"
#include "tandem/parallel/zero/zero_optimizer.h"
#include "tests/parallel/support/equivalence.h"
#include "tests/support/multiproc.h"

namespace tandem::parallel {
namespace {

// A Linear beside buffers whose values depend on the rank that built it.
struct Masked : torch::nn::Module {
  explicit Masked(int rank) {
    linear = register_module("linear", torch::nn::Linear(4, 4));
    const int64_t v = rank + 1;
    register_buffer("mask", at::tril(at::ones({4, 4}, at::kBool)) ^ (rank == 1));
    register_buffer("counts", at::full({3}, v, at::kByte));
    register_buffer("table8", at::full({2}, -v, at::kChar));
    register_buffer("table16", at::full({2}, 300 * v, at::kShort));
    register_buffer("complex", at::full({2}, v, at::kComplexFloat));
    register_buffer("transposed", (at::arange(6, at::kFloat) * v).reshape({2, 3}).t());
  }
  at::Tensor forward(const at::Tensor& x) { return linear->forward(x); }
  torch::nn::Linear linear{nullptr};
};

// After `wrap` built the strategy on every rank, every buffer holds what
// rank 0 built, and a forward, backward and step run.
void expect_rank0_buffers(
    const std::string& name,
    const std::function<std::shared_ptr<void>(const std::shared_ptr<Masked>&,
                                              const std::shared_ptr<Communicator>&)>& wrap) {
  testing::expect_ranks_succeed(2, [&](int rank, int size, int port) {
    auto comm = testing::connect(testing::Backend::kShm, rank, size, port, "buffers_" + name);
    auto model = std::make_shared<Masked>(rank);
    auto strategy = wrap(model, comm);
    const Masked want(0);
    for (const auto& item : want.named_buffers()) {
      const at::Tensor got = model->named_buffers()[item.key()];
      EXPECT_TRUE(at::equal(got, item.value())) << name << " rank " << rank << " " << item.key();
    }
    EXPECT_FALSE(model->named_buffers()["transposed"].is_contiguous()) << "stays a view";
    for (const auto& t : model->named_buffers().values()) {
      // Complex values have no order for the check's max: compare their parts.
      const at::Tensor c = t.is_complex() ? at::view_as_real(t.contiguous()) : t.contiguous();
      testing::expect_same_on_every_rank(*comm, c, name);
    }
  });
}

TEST(StrategyBuffers, EveryDtypeReachesEveryRankUnderDdp) {
  expect_rank0_buffers("ddp", [](const auto& model, const auto& comm) {
    auto ddp = std::make_shared<DistributedDataParallel>(model, comm);
    torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.1));
    model->forward(at::ones({2, 4})).sum().backward();
    opt.step();
    return std::static_pointer_cast<void>(ddp);
  });
}

TEST(StrategyBuffers, EveryDtypeReachesEveryRankUnderZero) {
  expect_rank0_buffers("zero", [](const auto& model, const auto& comm) {
    auto zero =
        std::make_shared<ZeroRedundancyOptimizer>(model, comm, [](std::vector<at::Tensor> p) {
          return std::make_unique<torch::optim::SGD>(p, torch::optim::SGDOptions(0.1));
        });
    zero->zero_grad();
    model->forward(at::ones({2, 4})).sum().backward();
    zero->step();
    return std::static_pointer_cast<void>(zero);
  });
}

TEST(StrategyBuffers, EveryDtypeReachesEveryRankUnderFsdp) {
  expect_rank0_buffers("fsdp", [](const auto& model, const auto& comm) {
    auto fsdp = std::make_shared<FullyShardedDataParallel>(model, comm);
    model->forward(at::ones({2, 4})).sum().backward();
    return std::static_pointer_cast<void>(fsdp);
  });
}

// A buffer that cannot move (a sparse one) is named, on every rank, before
// anything is sent.
TEST(StrategyBuffers, ABufferThatCannotMoveIsNamed) {
  testing::expect_ranks_succeed(2, [](int rank, int size, int port) {
    auto comm = testing::connect(testing::Backend::kShm, rank, size, port, "buffers_sparse");
    auto model = std::make_shared<Masked>(rank);
    model->register_buffer("sparse_index", at::ones({3}).to_sparse());
    try {
      DistributedDataParallel ddp(model, comm);
      ADD_FAILURE() << "a sparse buffer was accepted";
    } catch (const InvalidArgument& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("DistributedDataParallel: buffer 'sparse_index' is a Sparse tensor"),
                std::string::npos)
          << msg;
      EXPECT_NE(msg.find("broadcast_buffers = false"), std::string::npos) << msg;
    }
  });
}

// broadcast_buffers = false leaves every rank's buffers as it built them,
// at construction too (as PyTorch's DDP does), so a buffer that cannot move
// is no obstacle then.
TEST(StrategyBuffers, BroadcastBuffersFalseLeavesThemAlone) {
  testing::expect_ranks_succeed(2, [](int rank, int size, int port) {
    auto comm = testing::connect(testing::Backend::kShm, rank, size, port, "buffers_off");
    auto model = std::make_shared<Masked>(rank);
    model->register_buffer("sparse_index", at::ones({3}).to_sparse());
    DdpOptions dd;
    dd.broadcast_buffers = false;
    DistributedDataParallel ddp(model, comm, dd);
    FsdpOptions fo;
    fo.broadcast_buffers = false;
    auto other = std::make_shared<Masked>(rank);
    FullyShardedDataParallel fsdp(other, comm, fo);
    for (auto* m : {model.get(), other.get()}) {
      EXPECT_TRUE(at::equal(m->named_buffers()["counts"], Masked(rank).named_buffers()["counts"]))
          << "rank " << rank;
    }
  });
}

}  // namespace
}  // namespace tandem::parallel
