#include "tandem/sim/step_simulator.h"

#include <gtest/gtest.h>

#include "tandem/core/error.h"
#include "tandem/parallel/pipeline_schedule.h"

namespace tandem::sim {
namespace {

struct Layer {
  double forward_s, backward_s;
  int64_t bytes;
};

ComputeProfile profile_of(const std::vector<Layer>& layers, double other_s, double optimizer_s) {
  ComputeProfile p;
  p.model = "test";
  p.batch_size = 8;
  for (size_t i = 0; i < layers.size(); ++i) {
    LayerProfile l;
    l.name = "layer" + std::to_string(i);
    l.forward_s = layers[i].forward_s;
    l.backward_s = layers[i].backward_s;
    l.param_bytes = l.grad_bytes = layers[i].bytes;
    l.activation_bytes = 10;
    p.layers.push_back(l);
  }
  p.other_s = other_s;
  p.optimizer_s = optimizer_s;
  return p;
}

// One host whose link costs `alpha` per message and `beta` per byte.
ClusterSpec host(double alpha, double beta, int devices = 64) {
  ClusterSpec c;
  c.devices_per_node = devices;
  c.topology = Topology::kSingleHost;
  c.intra.nominal = {.alpha_s = alpha, .beta_s_per_byte = beta};
  c.network.nominal = c.intra.nominal;
  return c;
}

StrategySpec strategy(SimStrategy kind) {
  StrategySpec s;
  s.kind = kind;
  return s;
}

TEST(StepSimulator, OneProcessIsItsCompute) {
  const auto p = profile_of({{1, 2, 100}, {1, 1, 100}}, 0.5, 0.25);
  const SimResult r = simulate(p, {}, host(0.1, 0), strategy(SimStrategy::kNone), 1);
  EXPECT_DOUBLE_EQ(r.step_s, 5.75);
  EXPECT_DOUBLE_EQ(r.exposed_comm_s, 0);
  EXPECT_NEAR(r.efficiency, 1, 1e-12);
}

TEST(StepSimulator, DdpOverlapsTheFirstBucketWithBackward) {
  // f0 [0,1] f1 [1,2] rest [2,2.5] b1 [2.5,3.5] b0 [3.5,5.5]; bucket {layer1}
  // all-reduces in [3.5,4.25] under b0; bucket {layer0} in [5.5,6.25];
  // optimizer [6.25,6.5]. An all-reduce of 100 B on 2 ranks: 2 (0.25 + 50 x 0.0025).
  const auto p = profile_of({{1, 2, 100}, {1, 1, 100}}, 0.5, 0.25);
  StrategySpec s = strategy(SimStrategy::kDdp);
  s.bucket_bytes = 100;
  const SimResult r = simulate(p, {}, host(0.25, 0.0025), s, 2);
  EXPECT_DOUBLE_EQ(r.step_s, 6.5);
  EXPECT_DOUBLE_EQ(r.compute_s, 5.75);
  EXPECT_DOUBLE_EQ(r.exposed_comm_s, 0.75);
  // The textbook: compute, then one ring all-reduce of all 200 B.
  EXPECT_DOUBLE_EQ(r.textbook_step_s, 5.75 + 2 * (0.25 + 100 * 0.0025));
  // One bucket for both layers: nothing overlaps.
  s.bucket_bytes = 1000;
  EXPECT_DOUBLE_EQ(simulate(p, {}, host(0.25, 0.0025), s, 2).step_s, 5.75 + 1.0);
}

TEST(StepSimulator, DdpAndZeroBroadcastTheBuffersOnceBeforeTheOptimizer) {
  // As DdpOverlapsTheFirstBucketWithBackward, plus 40 B of buffers: one
  // broadcast on 2 ranks (log2 2 = 1 message of 0.25 + 40 x 0.0025) after
  // the last bucket, before the optimizer.
  auto p = profile_of({{1, 2, 100}, {1, 1, 100}}, 0.5, 0.25);
  p.buffer_bytes = 40;
  StrategySpec s = strategy(SimStrategy::kDdp);
  s.bucket_bytes = 100;
  EXPECT_DOUBLE_EQ(simulate(p, {}, host(0.25, 0.0025), s, 2).step_s, 6.5 + 0.35);
  // One process broadcasts nothing.
  EXPECT_DOUBLE_EQ(simulate(p, {}, host(0.25, 0.0025), s, 1).step_s, 5.75);
  // zero3 pays the same broadcast after its last reduce-scatter.
  const double without = [&] {
    ComputeProfile q = p;
    q.buffer_bytes = 0;
    return simulate(q, {}, host(0.25, 0.0025), strategy(SimStrategy::kZero3), 2).step_s;
  }();
  EXPECT_DOUBLE_EQ(simulate(p, {}, host(0.25, 0.0025), strategy(SimStrategy::kZero3), 2).step_s,
                   without + 0.35);
}

TEST(StepSimulator, TheLossAverageOfLogStepsIsPaidOnceEveryLogEvery) {
  // As DdpOverlapsTheFirstBucketWithBackward, logging every 2nd step: an
  // all-reduce of one double on 2 ranks, 2 (0.25 + 4 x 0.0025), every other step.
  const auto p = profile_of({{1, 2, 100}, {1, 1, 100}}, 0.5, 0.25);
  StrategySpec s = strategy(SimStrategy::kDdp);
  s.bucket_bytes = 100;
  s.log_every = 2;
  EXPECT_DOUBLE_EQ(simulate(p, {}, host(0.25, 0.0025), s, 2).step_s, 6.5 + 0.52 / 2);
  s.log_every = 0;
  EXPECT_DOUBLE_EQ(simulate(p, {}, host(0.25, 0.0025), s, 2).step_s, 6.5);
}

TEST(StepSimulator, PipelineWithEqualStagesTakesMPlusPMinusOneStageTimes) {
  const auto p = profile_of({{1e-3, 2e-3, 100}, {1e-3, 2e-3, 100}, {1e-3, 2e-3, 100},
                             {1e-3, 2e-3, 100}},
                            0, 0);
  for (auto kind : {parallel::PipelineScheduleKind::kGPipe, parallel::PipelineScheduleKind::k1F1B}) {
    StrategySpec s = strategy(SimStrategy::kPipeline);
    s.stages = 4;
    s.micro_batches = 8;
    s.stage_starts = {0, 1, 2, 3};
    for (int st = 0; st < 4; ++st) {
      s.schedule.emplace_back();
      for (const auto& a : parallel::pipeline_schedule(kind, st, 4, 8)) {
        s.schedule.back().push_back({a.forward, a.micro_batch});
      }
    }
    const SimResult r = simulate(p, {}, host(0, 0), s, 4);
    // (m + p - 1) x (f + b) / m
    EXPECT_NEAR(r.step_s, 11 * 3e-3 / 8, 1e-12);
  }
}

TEST(StepSimulator, ParameterServerIsBoundByTheServersNicUnderIncast) {
  // A worker computes 1 s and moves two 0.5 s messages: alone it needs 2 s a
  // step; the server's NIC takes W pushes of 0.5 s per round.
  const auto p = profile_of({{0.5, 0.5, 100}}, 0, 0);
  StrategySpec s = strategy(SimStrategy::kPs);
  s.servers = 1;
  EXPECT_NEAR(simulate(p, {}, host(0.5, 0), s, 3).step_s, 2.0, 0.05);  // 2 workers
  // The textbook: compute, then one push and one pull of 0.5 s, no incast.
  EXPECT_DOUBLE_EQ(simulate(p, {}, host(0.5, 0), s, 9).textbook_step_s, 1 + 2 * 0.5);
  EXPECT_NEAR(simulate(p, {}, host(0.5, 0), s, 9).step_s, 4.0, 0.1);   // 8 workers
}

TEST(StepSimulator, ZeroThreeShardsMemoryAndStillComputes) {
  std::vector<Layer> layers(6, {1e-3, 2e-3, 4 << 20});
  const auto p = profile_of(layers, 1e-3, 1e-3);
  const ClusterSpec c = host(1e-5, 1e-10);
  const SimResult ddp = simulate(p, {}, c, strategy(SimStrategy::kDdp), 8);
  const SimResult zero3 = simulate(p, {}, c, strategy(SimStrategy::kZero3), 8);
  EXPECT_LT(zero3.memory_bytes, ddp.memory_bytes / 2);
  EXPECT_GE(zero3.step_s, zero3.compute_s);
  // Gathers and reduce-scatters hide under compute; the textbook adds them all.
  EXPECT_LT(zero3.step_s, zero3.textbook_step_s);
}

TEST(StepSimulator, SlowNodesAndSharedCoresSlowTheStep) {
  const auto p = profile_of({{1, 1, 100}}, 0, 0);
  ClusterSpec c = host(0, 0, 1);
  const double base = simulate(p, {}, c, strategy(SimStrategy::kDdp), 4).step_s;
  c.slow_nodes = {{.node = 2, .factor = 2}};
  EXPECT_DOUBLE_EQ(simulate(p, {}, c, strategy(SimStrategy::kDdp), 4).step_s, 2 * base);
  ClusterSpec shared = host(0, 0, 4);
  shared.cores_per_node = 2;
  EXPECT_DOUBLE_EQ(simulate(p, {}, shared, strategy(SimStrategy::kDdp), 4).step_s, 2 * base);
  EXPECT_DOUBLE_EQ(simulate(p, {}, shared, strategy(SimStrategy::kDdp), 2).step_s, base);
}

TEST(StepSimulator, ProfiledJitterIsPaidAsTheSlowestRankBySynchronousSteps) {
  auto p = profile_of({{1, 1, 100}}, 0, 0);
  p.step_times_s = {2, 2, 2, 6};  // over the median: 1, 1, 1, 3
  ClusterSpec c = host(0, 0);
  c.slowdown = SlowdownDistribution::kProfile;
  // 64 ranks: almost surely one draws 3 each step.
  const SimResult ddp = simulate(p, {}, c, strategy(SimStrategy::kDdp), 64, {.steps = 20});
  EXPECT_GT(ddp.step_s, 2 * 2.9);
  // A parameter-server worker pays only its own draws: 1.5 on average.
  StrategySpec ps = strategy(SimStrategy::kPs);
  const SimResult async = simulate(p, {}, c, ps, 65, {.steps = 40});
  EXPECT_GT(async.step_s, 2 * 1.3);
  EXPECT_LT(async.step_s, 2 * 1.7);
  p.step_times_s.clear();
  EXPECT_THROW(simulate(p, {}, c, strategy(SimStrategy::kDdp), 2), InvalidArgument);
}

TEST(StepSimulator, BadConfigurationsAreRefused) {
  const auto p = profile_of({{1, 1, 100}}, 0, 0);
  const ClusterSpec c = host(0, 0);
  EXPECT_THROW(simulate(p, {}, c, strategy(SimStrategy::kDdp), 0), InvalidArgument);
  StrategySpec ps = strategy(SimStrategy::kPs);
  ps.servers = 2;
  EXPECT_THROW(simulate(p, {}, c, ps, 2), InvalidArgument);
  StrategySpec pipe = strategy(SimStrategy::kPipeline);
  pipe.stages = 2;
  EXPECT_THROW(simulate(p, {}, c, pipe, 3), InvalidArgument);
  EXPECT_THROW(simulate(ComputeProfile{}, {}, c, strategy(SimStrategy::kDdp), 2), InvalidArgument);
}

TEST(StepSimulator, YoungDalyAndGoodput) {
  EXPECT_NEAR(young_daly_interval_s(30, 10000), std::sqrt(2 * 30.0 * 10000) - 30, 1e-9);
  const auto p = profile_of({{0.1, 0.1, 100}}, 0, 0);
  ClusterSpec c = host(0, 0, 8);
  c.failures = {.mttf_node_s = 1000 * 3600.0,
                .checkpoint_write_s = 60,
                .checkpoint_interval_s = 0,
                .restart_all_recovery_s = 600,
                .keep_survivors_recovery_s = 5};
  const SimResult r = simulate(p, {}, c, strategy(SimStrategy::kDdp), 1024);
  EXPECT_GT(r.checkpoint_interval_s, 0);
  EXPECT_LT(r.goodput_restart_all, r.goodput_keep_survivors);
  EXPECT_GT(r.goodput_restart_all, 0);
  EXPECT_LT(r.goodput_keep_survivors, 1);
}

}  // namespace
}  // namespace tandem::sim
