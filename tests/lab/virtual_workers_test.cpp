// The virtual workers against the computations they stand for (DESIGN.md,
// "Correctness rule"): with one worker and free communication each mode is
// plain SGD, bit for bit; the synchronous mode with N workers is DDP on N
// real ranks (float64, rtol 1e-9); with a straggler in the cost model the
// parameter server's staleness emerges from the timing.
#include "lab/virtual_workers.h"

#include <ATen/ops/equal.h>
#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include "tandem/comm/communicator.h"
#include "tandem/core/error.h"
#include "tandem/parallel/ddp/distributed_data_parallel.h"
#include "tests/parallel/support/equivalence.h"
#include "tests/support/multiproc.h"

namespace tandem::lab {
namespace {

using testing::Opt;

constexpr int kSteps = 8;

// mlp_workload's model, batches (worker w reads rank w's) and loss, with
// the optimizer's own learning rate. With `cycle` > 0 the workers revisit
// their first `cycle` batches, and the evaluation is the mean loss over
// those batches of the first three workers (data they learn); otherwise it
// is a batch no worker reads.
VirtualProblem problem_of(const testing::Workload& w, Opt opt, int cycle = 0) {
  VirtualProblem p;
  p.make_model = w.make;
  p.make_optimizer = [opt](std::vector<at::Tensor> params) {
    return testing::make_optimizer(opt, std::move(params));
  };
  p.set_lr = [](torch::optim::Optimizer&, double) {};
  p.batch = [w, cycle](int worker, int, int64_t step) {
    auto [x, y] = w.batch(worker, static_cast<int>(cycle > 0 ? step % cycle : step), 0);
    return train::Batch{x, y};
  };
  p.loss = [w](torch::nn::Module& m, const train::Batch& b) {
    return w.loss(m, b.input, b.target);
  };
  p.lr = [](int64_t) { return 0.0; };
  p.eval_loss = [w, cycle](torch::nn::Module& m) {
    if (cycle == 0) {
      auto [x, y] = w.batch(97, 0, 0);
      return w.loss(m, x, y).item<double>();
    }
    double sum = 0;
    for (int r = 0; r < 3; ++r) {
      for (int s = 0; s < cycle; ++s) {
        auto [x, y] = w.batch(r, s, 0);
        sum += w.loss(m, x, y).item<double>();
      }
    }
    return sum / (3 * cycle);
  };
  return p;
}

VirtualOptions options(VirtualStrategy s, int workers) {
  return VirtualOptions{.strategy = s,
                        .workers = workers,
                        .max_steps = kSteps,
                        .eval_every = 2,
                        .target_loss = 0,
                        .target_on_worker0 = false,
                        .staleness = -1,
                        .tau = 2,
                        .alpha = 0.25,
                        .gossip_pull = false,
                        .seed = 3,
                        .sync_every = 2,
                        .times = nullptr};
}

// kSteps plain SGD steps of one process on worker 0's batches.
std::vector<at::Tensor> plain_sgd(const testing::Workload& w, Opt opt) {
  auto model = w.make();
  auto o = testing::make_optimizer(opt, model->parameters());
  for (int s = 0; s < kSteps; ++s) {
    o->zero_grad();
    auto [x, y] = w.batch(0, s, 0);
    w.loss(*model, x, y).backward();
    o->step();
  }
  return model->parameters();
}

class OneWorker : public ::testing::TestWithParam<VirtualStrategy> {};

TEST_P(OneWorker, IsPlainSgdBitForBit) {
  const testing::Workload w = testing::mlp_workload();
  const auto expected = plain_sgd(w, Opt::kSgdNesterov);
  const VirtualResult r =
      run_virtual_workers(problem_of(w, Opt::kSgdNesterov), options(GetParam(), 1));
  ASSERT_EQ(r.parameters.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_TRUE(at::equal(r.parameters[i], expected[i])) << "parameter " << i;
  }
  EXPECT_EQ(r.steps, kSteps);
}

INSTANTIATE_TEST_SUITE_P(Modes, OneWorker,
                         ::testing::Values(VirtualStrategy::kSync, VirtualStrategy::kLocalSgd,
                                           VirtualStrategy::kPs),
                         [](const auto& info) {
                           std::string n = name_of(info.param);
                           return n == "local-sgd" ? std::string("localsgd") : n;
                         });

TEST(VirtualWorkers, SyncModeEqualsDdpOnRealRanks) {
  for (int world : {2, 3}) {
    testing::expect_ranks_succeed(world, [](int rank, int size, int port) {
      auto comm = testing::connect(testing::Backend::kShm, rank, size, port, "virtual");
      const testing::Workload w = testing::mlp_workload();
      auto model = w.make();
      parallel::DistributedDataParallel ddp(model, comm, {});
      auto opt = testing::make_optimizer(Opt::kSgdNesterov, model->parameters());
      for (int s = 0; s < kSteps; ++s) {
        opt->zero_grad();
        testing::rank_loss(w, *model, rank, s).backward();
        opt->step();
      }
      const VirtualResult r = run_virtual_workers(problem_of(w, Opt::kSgdNesterov),
                                                  options(VirtualStrategy::kSync, size));
      const auto params = model->parameters();
      ASSERT_EQ(r.parameters.size(), params.size());
      for (size_t i = 0; i < params.size(); ++i) {
        EXPECT_TRUE(r.parameters[i].allclose(params[i], 1e-9, 1e-12)) << "parameter " << i;
      }
      EXPECT_EQ(r.steps, kSteps * size);
    });
  }
}

// Every mode learns its workers' data: the loss on it falls, and the run
// counts its steps.
TEST(VirtualWorkers, EveryModeLowersTheLoss) {
  const testing::Workload w = testing::mlp_workload();
  const double before = problem_of(w, Opt::kSgd, 2).eval_loss(*w.make());
  for (VirtualStrategy s : {VirtualStrategy::kSync, VirtualStrategy::kPs, VirtualStrategy::kEasgd,
                            VirtualStrategy::kGossip, VirtualStrategy::kLocalSgd}) {
    for (bool pull : {false, true}) {
      if (pull && s != VirtualStrategy::kGossip) continue;
      VirtualOptions o = options(s, 3);
      o.max_steps = 40;
      o.gossip_pull = pull;
      const VirtualResult r = run_virtual_workers(problem_of(w, Opt::kSgd, 2), o);
      EXPECT_LT(r.final_loss, 0.9 * before) << name_of(s) << (pull ? " pull" : "");
      EXPECT_EQ(r.steps, 40 * 3) << name_of(s);
      EXPECT_EQ(r.samples, r.steps * 4) << name_of(s);
      EXPECT_FALSE(r.curve.empty());
    }
  }
}

TEST(VirtualWorkers, TheTargetStopsTheRunAtTheFirstEvaluationBelowIt) {
  const testing::Workload w = testing::mlp_workload();
  VirtualOptions o = options(VirtualStrategy::kSync, 2);
  o.max_steps = 200;
  const VirtualResult full = run_virtual_workers(problem_of(w, Opt::kSgd), o);
  ASSERT_GE(full.curve.size(), 3u);
  o.target_loss = full.curve[2].loss;  // reached at the third evaluation (or before)
  const VirtualResult r = run_virtual_workers(problem_of(w, Opt::kSgd), o);
  EXPECT_TRUE(r.reached);
  EXPECT_LE(r.final_loss, o.target_loss);
  EXPECT_LE(r.time_s, full.curve[2].time_s);
  EXPECT_LT(r.steps, full.steps);
}

TEST(VirtualWorkers, Worker0sSmoothedLossCanJudgeTheTarget) {
  const testing::Workload w = testing::mlp_workload();
  VirtualOptions o = options(VirtualStrategy::kGossip, 2);
  o.max_steps = 200;
  o.target_loss = 1e9;  // met as soon as worker 0 has 10 steps
  o.target_on_worker0 = true;
  const VirtualResult r = run_virtual_workers(problem_of(w, Opt::kSgd), o);
  EXPECT_TRUE(r.reached);
  EXPECT_DOUBLE_EQ(r.time_s, 10.0);  // ten local steps of 1 unit each
  EXPECT_LT(r.steps, 200 * 2);
}

// Worker 1 three times slower in the cost model: under asynchronous SGD its
// gradients lag the others' clocks; with a bound of 1 no lag passes 1.
TEST(VirtualWorkers, ParameterServerStalenessEmergesFromTheTiming) {
  sim::ComputeProfile profile;
  profile.model = "test";
  profile.batch_size = 4;
  sim::LayerProfile layer;
  layer.name = "only";
  layer.forward_s = 0.01;
  layer.backward_s = 0.02;
  layer.param_bytes = layer.grad_bytes = 1000;
  profile.layers = {layer};
  profile.optimizer_s = 0.001;
  sim::ClusterSpec cluster;
  cluster.devices_per_node = 8;
  cluster.topology = sim::Topology::kSingleHost;
  cluster.intra.nominal = {.alpha_s = 1e-5, .beta_s_per_byte = 1e-9};
  cluster.network.nominal = cluster.intra.nominal;
  cluster.slow_ranks = {{.rank = 1, .factor = 3}};
  sim::StrategySpec spec;
  spec.kind = sim::SimStrategy::kPs;
  const testing::Workload w = testing::mlp_workload();
  for (int64_t bound : {-1, 1}) {
    sim::WorkerTimes times(profile, {}, cluster, spec, 4);
    VirtualOptions o = options(VirtualStrategy::kPs, 3);
    o.max_steps = 30;
    o.staleness = bound;
    o.times = &times;
    const VirtualResult r = run_virtual_workers(problem_of(w, Opt::kSgd), o);
    const int64_t worst = r.staleness.rbegin()->first;
    if (bound < 0) {
      EXPECT_GE(worst, 2) << "the fast workers ran ahead of the slow one";
    } else {
      EXPECT_LE(worst, bound);
    }
    int64_t counted = 0;
    for (const auto& [lag, n] : r.staleness) counted += n;
    EXPECT_EQ(counted, 30 * 3);
    EXPECT_GT(r.time_s, 0);
  }
}

TEST(VirtualWorkers, BadOptionsAreRefusedNamingTheFlag) {
  const testing::Workload w = testing::mlp_workload();
  VirtualOptions o = options(VirtualStrategy::kSync, 0);
  EXPECT_THROW(run_virtual_workers(problem_of(w, Opt::kSgd), o), InvalidArgument);
  o = options(VirtualStrategy::kGossip, 1);
  EXPECT_THROW(run_virtual_workers(problem_of(w, Opt::kSgd), o), InvalidArgument);
  o = options(VirtualStrategy::kEasgd, 2);
  o.tau = 0;
  EXPECT_THROW(run_virtual_workers(problem_of(w, Opt::kSgd), o), InvalidArgument);
  try {
    parse_virtual_strategy("zero3");
    FAIL() << "zero3 was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("--strategy"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tandem::lab
