// ZeroRedundancyOptimizer against the computation it replaces: DDP with the
// full optimizer on every rank. Stages 1 and 2, SGD with Nesterov momentum
// and AdamW, 2-4 ranks (3: shards of unequal length), float64, rtol 1e-9
// after 10 steps. Also: the optimizer state and gradients really are
// sharded (bytes per parameter against the ZeRO paper's theory), no_sync
// accumulation, gradient clipping and the error paths.
#include "tandem/parallel/zero_optimizer.h"

#include <ATen/ops/allclose.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/full.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <algorithm>
#include <tuple>

#include "tandem/comm/backend.h"
#include "tandem/core/error.h"
#include "tandem/parallel/distributed_data_parallel.h"
#include "tandem/train/models/mlp.h"
#include "tests/support/multiproc.h"

namespace tandem::parallel {
namespace {

constexpr int64_t kBatch = 4;
constexpr int kSteps = 10;
// 1200 bytes of float64: buckets [fc3.bias, fc3.weight, fc2.bias] (51),
// [fc2.weight] (144), [fc1.bias, fc1.weight] (84); shards cross parameters.
constexpr double kSmallCapMb = 1200.0 / (1024 * 1024);

enum class Opt { kSgdNesterov, kAdamW };
void PrintTo(Opt opt, std::ostream* os) { *os << (opt == Opt::kAdamW ? "AdamW" : "SgdNesterov"); }

torch::nn::Sequential make_mlp() {
  at::manual_seed(0);
  torch::nn::Sequential m(torch::nn::Linear(6, 12), torch::nn::Tanh(), torch::nn::Linear(12, 12),
                          torch::nn::Tanh(), torch::nn::Linear(12, 3));
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

std::unique_ptr<torch::optim::Optimizer> make_optimizer(Opt opt, std::vector<at::Tensor> params) {
  if (opt == Opt::kSgdNesterov) {
    return std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(0.1).momentum(0.9).nesterov(true).weight_decay(0.01));
  }
  return std::make_unique<torch::optim::AdamW>(params,
                                               torch::optim::AdamWOptions(1e-2).weight_decay(0.01));
}

OptimizerFactory factory(Opt opt) {
  return [opt](std::vector<at::Tensor> p) { return make_optimizer(opt, std::move(p)); };
}

std::shared_ptr<Communicator> connect(int rank, int size, int port) {
  auto store = make_tcp_store("127.0.0.1", port, rank == 0, Millis(30'000));
  BackendOptions o{rank, size, with_prefix(store, "zero"), Millis(30'000),
                   "zero-test-" + std::to_string(port)};
  return make_shm_communicator(o);
}

at::Tensor loss_of(torch::nn::Sequential& m, const std::pair<at::Tensor, at::Tensor>& b,
                   int micro_batches = 1) {
  return torch::nn::functional::mse_loss(m->forward(b.first), b.second) / micro_batches;
}

void expect_same_parameters(torch::nn::Sequential& a, torch::nn::Sequential& b, double rtol,
                            double atol) {
  auto pb = b->named_parameters();
  for (const auto& item : a->named_parameters()) {
    const at::Tensor& x = item.value();
    const at::Tensor& y = pb[item.key()];
    EXPECT_TRUE(at::allclose(x, y, rtol, atol))
        << item.key() << " differs by " << (x - y).abs().max().item<double>();
  }
}

ZeroOptions small_buckets(int stage) {
  ZeroOptions o;
  o.stage = stage;
  o.bucket_cap_mb = kSmallCapMb;
  return o;
}

// ---- 1. the same parameters as DDP ----

using Case = std::tuple<int, int, Opt>;  // world size, stage, optimizer

class ZeroEquivalence : public ::testing::TestWithParam<Case> {};

TEST_P(ZeroEquivalence, MatchesDdpAfterTenSteps) {
  const int world = std::get<0>(GetParam());
  const int stage = std::get<1>(GetParam());
  const Opt opt = std::get<2>(GetParam());
  testing::expect_ranks_succeed(world, [=](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    auto model = make_mlp();
    ZeroRedundancyOptimizer zero(model.ptr(), comm, factory(opt), small_buckets(stage));
    ASSERT_EQ(zero.bucket_count(), 3u);
    auto ref = make_mlp();
    DdpOptions d;
    d.bucket_cap_mb = kSmallCapMb;
    DistributedDataParallel ddp(ref.ptr(), comm, d);
    auto ref_opt = make_optimizer(opt, ref->parameters());
    for (int s = 0; s < kSteps; ++s) {
      auto b = batch(rank, s);
      zero.zero_grad();
      loss_of(model, b).backward();
      EXPECT_GE(zero.last_stats().buckets_launched_during_backward, 1);
      zero.step();
      ref_opt->zero_grad();
      loss_of(ref, b).backward();
      ref_opt->step();
    }
    expect_same_parameters(model, ref, 1e-9, 1e-12);
    // Every rank ends with the same (all-gathered) parameters.
    for (size_t k = 0; k < zero.bucket_count(); ++k) {
      at::Tensor mine = zero.flat_parameters(k).clone();
      at::Tensor high = mine.clone();
      comm->all_reduce(high, ReduceOp::kMax);
      EXPECT_TRUE(at::equal(mine, high)) << "bucket " << k;
    }
  });
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  return fmt::format("N{}_zero{}_{}", std::get<0>(info.param), std::get<1>(info.param),
                     std::get<2>(info.param) == Opt::kAdamW ? "AdamW" : "SgdNesterov");
}

INSTANTIATE_TEST_SUITE_P(WorldsStagesOptimizers, ZeroEquivalence,
                         ::testing::Combine(::testing::Values(2, 3, 4), ::testing::Values(1, 2),
                                            ::testing::Values(Opt::kSgdNesterov, Opt::kAdamW)),
                         case_name);

// One rank: ZeRO degenerates to the plain optimizer. The shards are then
// whole buckets, so every way of zeroing gradients must work: ours, the
// inner optimizer's (it detach_()es .grad in place, which throws on autograd
// views) and, in stage 1, the module's set_to_none (the next backward
// re-aliases .grad).
TEST(ZeroRedundancyOptimizer, OneRankIsThePlainOptimizer) {
  testing::expect_ranks_succeed(1, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    for (int stage : {1, 2}) {
      auto model = make_mlp();
      ZeroRedundancyOptimizer zero(model.ptr(), comm, factory(Opt::kAdamW), small_buckets(stage));
      auto ref = make_mlp();
      auto ref_opt = make_optimizer(Opt::kAdamW, ref->parameters());
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
        loss_of(model, batch(0, s)).backward();
        zero.step();
        ref_opt->zero_grad();
        loss_of(ref, batch(0, s)).backward();
        ref_opt->step();
      }
      expect_same_parameters(model, ref, 1e-12, 1e-14);
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
    auto comm = connect(rank, size, port);
    auto model = make_mlp();
    ZeroOptions o = small_buckets(2);
    o.trace = std::make_shared<TraceRecorder>(rank);
    ZeroRedundancyOptimizer zero(model.ptr(), comm, factory(Opt::kAdamW), o);
    loss_of(model, batch(rank, 0)).backward();
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

// One bucket per parameter (an 8-byte cap), one of them a single element:
// at 4 ranks, three ranks hold an empty shard of it and step nothing there.
TEST(ZeroRedundancyOptimizer, EmptyShardsStillMatchDdp) {
  testing::expect_ranks_succeed(4, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    auto make = [] {
      at::manual_seed(0);
      torch::nn::Sequential m(torch::nn::Linear(6, 12), torch::nn::Tanh(),
                              torch::nn::Linear(12, 1));
      m->to(at::kDouble);
      return m;
    };
    for (int stage : {1, 2}) {
      auto model = make();
      ZeroOptions o;
      o.stage = stage;
      o.bucket_cap_mb = 8.0 / (1024 * 1024);
      ZeroRedundancyOptimizer zero(model.ptr(), comm, factory(Opt::kAdamW), o);
      ASSERT_EQ(zero.bucket_count(), 4u);
      ASSERT_EQ(zero.layouts()[0].numel, 1);  // the last layer's bias
      EXPECT_EQ(zero.shard_of(0).numel, rank == 0 ? 1 : 0);
      auto ref = make();
      DistributedDataParallel ddp(ref.ptr(), comm);
      auto ref_opt = make_optimizer(Opt::kAdamW, ref->parameters());
      for (int s = 0; s < 3; ++s) {
        auto [x, y] = batch(rank, s);
        at::Tensor target = y.narrow(1, 0, 1);
        zero.zero_grad();
        torch::nn::functional::mse_loss(model->forward(x), target).backward();
        zero.step();
        ref_opt->zero_grad();
        torch::nn::functional::mse_loss(ref->forward(x), target).backward();
        ref_opt->step();
      }
      expect_same_parameters(model, ref, 1e-9, 1e-12);
    }
  });
}

// The inner optimizer steps each shard in pieces of at most
// optimizer_piece_numel elements (bounding AdamW's temporaries); the result
// is the same as DDP's, and the pieces tile the shard.
TEST(ZeroRedundancyOptimizer, SmallOptimizerPiecesStillMatchDdp) {
  testing::expect_ranks_succeed(3, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    for (int stage : {1, 2}) {
      auto model = make_mlp();
      ZeroOptions o = small_buckets(stage);
      o.optimizer_piece_numel = 5;
      ZeroRedundancyOptimizer zero(model.ptr(), comm, factory(Opt::kAdamW), o);
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
      auto ref = make_mlp();
      DdpOptions d;
      d.bucket_cap_mb = kSmallCapMb;
      DistributedDataParallel ddp(ref.ptr(), comm, d);
      auto ref_opt = make_optimizer(Opt::kAdamW, ref->parameters());
      for (int s = 0; s < kSteps; ++s) {
        auto b = batch(rank, s);
        zero.zero_grad();
        loss_of(model, b).backward();
        zero.step();
        ref_opt->zero_grad();
        loss_of(ref, b).backward();
        ref_opt->step();
      }
      expect_same_parameters(model, ref, 1e-9, 1e-12);
      EXPECT_NE(zero.optimizer_state(0, zero.optimizer_pieces(0).size() - 1), nullptr);
      EXPECT_THROW(zero.optimizer_state(0, zero.optimizer_pieces(0).size()), InvalidArgument);
    }
  });
}

// ---- 2. optimizer state is sharded ----

TEST(ZeroRedundancyOptimizer, AdamWStateCoversOnlyTheRanksShards) {
  testing::expect_ranks_succeed(3, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    auto model = make_mlp();
    ZeroRedundancyOptimizer zero(model.ptr(), comm, factory(Opt::kAdamW), small_buckets(2));
    EXPECT_EQ(zero.optimizer_state(0), nullptr);  // created by the first step
    loss_of(model, batch(rank, 0)).backward();
    zero.step();
    int64_t shard_numel = 0, total_numel = 0;
    for (size_t b = 0; b < zero.bucket_count(); ++b) {
      shard_numel += zero.shard_of(b).numel;
      total_numel += zero.layouts()[b].numel;
      auto* state = zero.optimizer_state(b);
      ASSERT_NE(state, nullptr) << "bucket " << b;
      for (const auto& [name, t] : named_state_tensors(*state)) {
        EXPECT_EQ(t.numel(), zero.shard_of(b).numel) << name << " of bucket " << b;
      }
    }
    // exp_avg and exp_avg_sq: 2 x 8 bytes per element of the shards (the
    // step counters are plain integers, not tensors).
    const int64_t bytes = storage_bytes(optimizer_state_tensors(zero.optimizer()));
    EXPECT_EQ(bytes, 16 * shard_numel);
    EXPECT_EQ(zero.memory().now().optimizer_state, bytes);
    at::Tensor sum = at::full({1}, shard_numel, at::kLong);
    comm->all_reduce(sum);
    EXPECT_EQ(sum.item<int64_t>(), total_numel);  // the shards partition the model
    EXPECT_LE(shard_numel, total_numel / size + static_cast<int64_t>(zero.bucket_count()));
  });
}

// ---- 3. model-state bytes against the ZeRO paper ----

// fp32 MLP with 12 equal hidden layers, so the 20 KiB buckets hold one layer each.
train::Mlp make_fp32_mlp() {
  at::manual_seed(0);
  return train::Mlp(train::MlpOptions{64, std::vector<int64_t>(12, 64), 10});
}

std::pair<at::Tensor, at::Tensor> fp32_batch(int rank) {
  at::manual_seed(rank + 1);
  return {at::randn({8, 64}), at::randn({8, 10})};
}

struct PerParam {
  double params, grads, optimizer;
};

PerParam per_param(const ModelStateBytes& m, int64_t count) {
  auto d = static_cast<double>(count);
  return {m.parameters / d, m.gradients / d, m.optimizer_state / d};
}

void expect_near_theory(const PerParam& got, const PerParam& theory, const std::string& what) {
  const double total = got.params + got.grads + got.optimizer;
  const double want = theory.params + theory.grads + theory.optimizer;
  EXPECT_NEAR(total, want, 0.1 * want) << what << ": " << got.params << " + " << got.grads << " + "
                                       << got.optimizer << " bytes/param";
  EXPECT_NEAR(got.grads, theory.grads, 0.1 * theory.grads) << what;
  EXPECT_NEAR(got.optimizer, theory.optimizer, 0.1 * theory.optimizer) << what;
}

class ZeroMemory : public ::testing::TestWithParam<int> {};

TEST_P(ZeroMemory, BytesPerParameterMatchTheory) {
  testing::expect_ranks_succeed(GetParam(), [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    const double n = size;
    const auto adamw = [](std::vector<at::Tensor> p) {
      return std::make_unique<torch::optim::AdamW>(p, torch::optim::AdamWOptions(1e-3));
    };
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
      expect_near_theory(per_param(ddp.memory().now(), count), {4, 4, 8}, "DDP");
    }
    for (int stage : {1, 2}) {
      auto model = make_fp32_mlp();
      const int64_t count = train::mlp_parameter_count(model->options());
      ZeroOptions o;
      o.stage = stage;
      o.bucket_cap_mb = cap_mb;
      ZeroRedundancyOptimizer zero(model.ptr(), comm, adamw, o);
      ASSERT_GE(zero.bucket_count(), 10u);
      for (int s = 0; s < 2; ++s) {
        zero.zero_grad();
        torch::nn::functional::mse_loss(model->forward(x), y).backward();
        zero.step();
      }
      const std::string what = fmt::format("zero{} at N={}", stage, size);
      const PerParam theory = stage == 1 ? PerParam{4, 4, 8 / n} : PerParam{4, 4 / n, 8 / n};
      expect_near_theory(per_param(zero.memory().now(), count), theory, what);
      if (stage == 2) {
        for (const auto& p : model->parameters()) EXPECT_FALSE(p.grad().defined()) << what;
        // The transient during backward: the shards, the buckets being filled
        // and at most kMaxReduceScattersInFlight in flight; never the full
        // gradients (4 bytes/param).
        int64_t largest = 0;
        for (const auto& l : zero.layouts()) largest = std::max(largest, l.numel);
        const int64_t bound = static_cast<int64_t>(4 * count / n) + 4 * largest * 4;
        EXPECT_LE(zero.memory().peak().gradients, bound) << what;
        EXPECT_LT(zero.memory().peak().gradients, 0.9 * 4 * count) << what;
        EXPECT_GT(zero.memory().peak().gradients, zero.memory().now().gradients) << what;
      }
    }
  });
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, ZeroMemory, ::testing::Values(2, 4));

// ---- 4. no_sync and clipping ----

class ZeroStages : public ::testing::TestWithParam<int> {};

// Two micro-batches per rank, the first under no_sync, against one process
// that sees every rank's micro-batches in one batch.
TEST_P(ZeroStages, NoSyncAccumulationEqualsOneBigBatch) {
  const int stage = GetParam();
  testing::expect_ranks_succeed(3, [=](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    auto model = make_mlp();
    ZeroRedundancyOptimizer zero(model.ptr(), comm, factory(Opt::kSgdNesterov),
                                 small_buckets(stage));
    for (int s = 0; s < kSteps; ++s) {
      zero.zero_grad();
      {
        auto guard = zero.no_sync();
        loss_of(model, batch(rank, s, 0), 2).backward();
      }
      loss_of(model, batch(rank, s, 1), 2).backward();
      zero.step();
    }
    auto ref = make_mlp();
    auto ref_opt = make_optimizer(Opt::kSgdNesterov, ref->parameters());
    for (int s = 0; s < kSteps; ++s) {
      std::vector<at::Tensor> xs, ys;
      for (int r = 0; r < size; ++r) {
        for (int m = 0; m < 2; ++m) {
          auto [x, y] = batch(r, s, m);
          xs.push_back(x);
          ys.push_back(y);
        }
      }
      ref_opt->zero_grad();
      torch::nn::functional::mse_loss(ref->forward(at::cat(xs)), at::cat(ys)).backward();
      ref_opt->step();
    }
    expect_same_parameters(model, ref, 1e-9, 1e-12);
  });
}

TEST_P(ZeroStages, ClipGradNormMatchesDdpAndClipGradNorm) {
  const int stage = GetParam();
  testing::expect_ranks_succeed(3, [=](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    auto model = make_mlp();
    ZeroRedundancyOptimizer zero(model.ptr(), comm, factory(Opt::kAdamW), small_buckets(stage));
    auto ref = make_mlp();
    DdpOptions d;
    d.bucket_cap_mb = kSmallCapMb;
    DistributedDataParallel ddp(ref.ptr(), comm, d);
    auto ref_opt = make_optimizer(Opt::kAdamW, ref->parameters());
    int clipped = 0;
    for (int s = 0; s < kSteps; ++s) {
      auto b = batch(rank, s);
      zero.zero_grad();
      loss_of(model, b).backward();
      const double norm = zero.clip_grad_norm(0.3);
      zero.step();
      ref_opt->zero_grad();
      loss_of(ref, b).backward();
      const double ref_norm = torch::nn::utils::clip_grad_norm_(ref->parameters(), 0.3);
      ref_opt->step();
      EXPECT_NEAR(norm, ref_norm, 1e-9 * ref_norm) << "step " << s;
      if (ref_norm > 0.3) ++clipped;
    }
    EXPECT_GE(clipped, 3);  // the test clips, not just measures
    expect_same_parameters(model, ref, 1e-9, 1e-12);
  });
}

INSTANTIATE_TEST_SUITE_P(Stages, ZeroStages, ::testing::Values(1, 2));

// ---- 5. errors ----

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

TEST_P(ZeroStages, UnusedParametersAreAnErrorOrZeros) {
  const int stage = GetParam();
  testing::expect_ranks_succeed(2, [=](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    auto [x, y] = batch(rank, 0);
    ZeroOptions o;
    o.stage = stage;
    const auto sgd = [](std::vector<at::Tensor> p) {  // no weight decay
      return std::make_unique<torch::optim::SGD>(p, torch::optim::SGDOptions(0.1).momentum(0.9));
    };
    {
      auto model = std::make_shared<TwoHeads>();
      ZeroRedundancyOptimizer zero(model, comm, sgd, o);
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

TEST(ZeroRedundancyOptimizer, BadOptionsNameTheOption) {
  testing::expect_ranks_succeed(1, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    auto model = make_mlp();
    auto expect_invalid = [&](ZeroOptions o, OptimizerFactory f, const std::string& words) {
      try {
        ZeroRedundancyOptimizer zero(model.ptr(), comm, std::move(f), o);
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
        [&](std::vector<at::Tensor>) { return make_optimizer(Opt::kAdamW, model->parameters()); },
        "must optimise exactly the 1 shard tensors");
    auto zero = std::make_unique<ZeroRedundancyOptimizer>(model.ptr(), comm, factory(Opt::kAdamW));
    try {
      zero->clip_grad_norm(0);
      ADD_FAILURE() << "clip_grad_norm(0) accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("max_norm must be positive"), std::string::npos);
    }
  });
}

}  // namespace
}  // namespace tandem::parallel
