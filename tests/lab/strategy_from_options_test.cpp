#include "lab/strategy_from_options.h"

#include <gtest/gtest.h>

#include "tandem/core/error.h"
#include "tandem/parallel/pipeline_schedule.h"

namespace tandem::lab {
namespace {

sim::ComputeProfile profile(const std::vector<std::pair<std::string, int64_t>>& layers) {
  sim::ComputeProfile p;
  p.model = "test";
  p.batch_size = 4;
  for (const auto& [name, bytes] : layers) {
    p.layers.push_back({.name = name, .forward_s = 1e-3, .backward_s = 2e-3, .param_bytes = bytes});
  }
  return p;
}

TEST(StrategyFromOptions, ZeroThreeUnitsAreTheTopLevelBlocks) {
  const auto p = profile({{"stem_conv", 10}, {"stem_norm", 1}, {"layer1_0.conv1", 5},
                          {"layer1_0.norm1", 1}, {"layer1_1.conv1", 5}, {"head", 3}});
  EXPECT_EQ(top_level_groups(p), (std::vector<int>{0, 1, 2, 4, 5}));
  train::TrainerOptions o;
  o.strategy.kind = train::StrategyKind::kZero3;
  o.run.batch_size = 16;
  o.strategy.bucket_cap_mb = 1;
  const sim::StrategySpec s = strategy_from_options(o, p);
  EXPECT_EQ(s.kind, sim::SimStrategy::kZero3);
  EXPECT_EQ(s.unit_starts, (std::vector<int>{0, 1, 2, 4, 5}));
  EXPECT_EQ(s.batch_size, 16);
  EXPECT_EQ(s.bucket_bytes, 1 << 20);
  EXPECT_DOUBLE_EQ(s.optimizer_state_factor, 1);  // SGD with momentum
  o.strategy.zero.wrap = train::parse_wrap_policy("none");
  EXPECT_EQ(strategy_from_options(o, p).unit_starts, (std::vector<int>{0}));
}

TEST(StrategyFromOptions, APipelineTakesTheTrainersCutAndSchedule) {
  const auto p = profile({{"fc0", 100}, {"fc1", 100}, {"fc2", 100}, {"fc3", 100}});
  train::TrainerOptions o;
  o.mesh.shape = train::parse_mesh("pp=2");
  o.mesh.micro_batches = 4;
  const sim::StrategySpec s = strategy_from_options(o, p);
  EXPECT_EQ(s.kind, sim::SimStrategy::kPipeline);
  EXPECT_EQ(s.stage_starts, (std::vector<int>{0, 2}));
  ASSERT_EQ(s.schedule.size(), 2u);
  const auto want = parallel::pipeline_schedule(o.mesh.schedule, 0, 2, 4);
  ASSERT_EQ(s.schedule[0].size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(s.schedule[0][i].forward, want[i].forward);
    EXPECT_EQ(s.schedule[0][i].micro_batch, want[i].micro_batch);
  }
}

TEST(StrategyFromOptions, WhatIsNotModelledIsRefused) {
  const auto p = profile({{"fc0", 100}, {"fc1", 100}});
  train::TrainerOptions o;
  o.strategy.kind = train::StrategyKind::kEasgd;
  EXPECT_THROW(strategy_from_options(o, p), NotSupported);
  o.strategy.kind = train::StrategyKind::kDdp;
  o.mesh.shape = train::parse_mesh("tp=2");
  EXPECT_THROW(strategy_from_options(o, p), NotSupported);
  o.mesh.shape = train::parse_mesh("pp=3");
  EXPECT_THROW(strategy_from_options(o, p), InvalidArgument);  // 2 layers for 3 stages
}

}  // namespace
}  // namespace tandem::lab
