// The typed options: every enum's spellings parse back to their values and
// an unknown one names the flag and every spelling; the mesh and the wrap
// policy read back what they print; validate_options() names the flag of
// each bad value.
#include "tandem/train/options.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "tandem/core/error.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::train {
namespace {

using testing::expect_error;

template <typename E>
void expect_round_trip() {
  for (const auto& [value, name] : Choices<E>::kNames) {
    EXPECT_EQ(parse_choice<E>(name), value) << name;
    EXPECT_EQ(name_of(value), name);
  }
  // fmt, not "--" + std::string: GCC 12 warns (-Warray-bounds, a false
  // positive) on that concatenation when built with the precompiled header.
  expect_error<InvalidArgument>(
      [] { parse_choice<E>("no-such-name"); },
      {fmt::format("--{} no-such-name is not one of", Choices<E>::kFlag), choice_names<E>()});
}

TEST(Choices, EverySpellingParsesBackAndUnknownOnesNameTheFlag) {
  expect_round_trip<ModelKind>();
  expect_round_trip<Dtype>();
  expect_round_trip<OptimizerKind>();
  expect_round_trip<LrSchedule>();
  expect_round_trip<StrategyKind>();
  expect_round_trip<GradCompression>();
  expect_round_trip<GossipMode>();
  expect_round_trip<PipelineSchedule>();
  expect_round_trip<DataFormat>();
  expect_round_trip<ResumeMode>();
  EXPECT_EQ(choice_names<StrategyKind>("|"),
            "none|ddp|zero1|zero2|zero3|ps|easgd|gossip|local-sgd");
  // The pipeline's flag given a learning-rate schedule says which flag is meant.
  expect_error<InvalidArgument>([] { parse_choice<PipelineSchedule>("cosine"); },
                                {"--schedule cosine names a learning-rate schedule",
                                 "the learning-rate schedule is --lr-schedule"});
}

TEST(MeshShape, ParsesAndPrintsTheSameShape) {
  const MeshShape m = parse_mesh("dp=2,pp=4");
  EXPECT_EQ(m.dp, 2);
  EXPECT_EQ(m.pp, 4);
  EXPECT_EQ(m.tp, 1);
  EXPECT_EQ(m.describe(), "dp=2,pp=4");
  EXPECT_EQ(parse_mesh("tp=2,dp=2").describe(), "dp=2,tp=2");
  EXPECT_EQ(parse_mesh("pp=2,tp=2").describe(), "pp=2,tp=2");
  EXPECT_EQ(parse_mesh("dp=1").describe(), "dp=1");
  for (const std::string text : {"dp=2,pp=2,tp=2", "pp=4", "dp=3,tp=2"}) {
    const MeshShape back = parse_mesh(parse_mesh(text).describe());
    EXPECT_EQ(back.size(), parse_mesh(text).size()) << text;
  }
  expect_error<InvalidArgument>([] { parse_mesh("dp=2,ep=2"); },
                                {"--mesh dp=2,ep=2", "'ep=2' is not DIM=N"});
}

TEST(WrapPolicy, ParsesEveryFormAndPrintsItBack) {
  EXPECT_TRUE(parse_wrap_policy("auto").automatic);
  for (const std::string text :
       {"auto", "none", "type:GptBlockImpl,LinearImpl", "size:1000", "name:block0,block1"}) {
    EXPECT_EQ(describe(parse_wrap_policy(text)), text);
  }
  const WrapPolicy size = parse_wrap_policy("size:1000");
  EXPECT_FALSE(size.automatic);
  EXPECT_EQ(size.min_num_params, 1000);
  expect_error<InvalidArgument>([] { parse_wrap_policy("size:-3"); }, {"--wrap-policy", "size"});
}

// The first message validate_options gives for `o` at `world` ranks.
std::string message(const TrainerOptions& o, int world) {
  try {
    validate_options(o, world);
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "accepted";
}

TEST(ValidateOptions, NamesTheFlagOfEachBadValue) {
  EXPECT_EQ(message(TrainerOptions{}, 1), "accepted");
  EXPECT_EQ(message(TrainerOptions{}, 4), "accepted");
  struct Case {
    std::function<void(TrainerOptions&)> set;
    int world;
    std::string words;
  };
  const std::vector<Case> cases = {
      {[](TrainerOptions& o) { o.run.batch_size = 0; }, 1, "--batch-size must be at least 1"},
      {[](TrainerOptions& o) { o.run.steps = o.run.epochs = 0; }, 1, "--steps or --epochs"},
      {[](TrainerOptions& o) { o.optimizer.lr = 0; }, 1, "--lr must be positive"},
      {[](TrainerOptions& o) { o.data.noise = 2; }, 1, "--data-noise must be in [0, 1]"},
      {[](TrainerOptions& o) { o.strategy.kind = StrategyKind::kNone; }, 2,
       "--strategy none trains one process, but 2 ranks"},
      {[](TrainerOptions& o) {
         o.strategy.ddp.compression = GradCompression::kFp16;
         o.strategy.kind = StrategyKind::kZero2;
       },
       2, "--grad-compression fp16 compresses DDP's all-reduce"},
      {[](TrainerOptions& o) { o.strategy.kind = StrategyKind::kPs; }, 1,
       "--servers 1 with 1 rank(s) leaves 0 worker(s)"},
      {[](TrainerOptions& o) { o.strategy.kind = StrategyKind::kGossip; }, 1,
       "--strategy gossip needs at least 2 ranks"},
      {[](TrainerOptions& o) { o.strategy.async.alpha = 0; }, 1, "--alpha must be in (0, 1]"},
      {[](TrainerOptions& o) { o.checkpoint.resume = ResumeMode::kIfPresent; }, 1,
       "--resume need --checkpoint-dir"},
      {[](TrainerOptions& o) { o.observe.log_every = 0; }, 1, "--log-every >= 1"},
      {[](TrainerOptions& o) { o.mesh.micro_batches = 0; }, 1,
       "--micro-batches must be at least 1"},
      {[](TrainerOptions& o) {
         o.straggler.slowdown = {{0}, 0.5};
       },
       1, "--inject-slowdown: factor must be >= 1"},
      {[](TrainerOptions& o) { o.mesh.shape = MeshShape{.dp = 2}; }, 4,
       "--mesh dp=2 needs 2 ranks"},
      {[](TrainerOptions& o) { o.mesh.shape = MeshShape{.tp = 2}; }, 2,
       "tensor parallelism splits --model gpt-mini, not mlp"},
  };
  for (const auto& c : cases) {
    TrainerOptions o;
    c.set(o);
    const std::string got = message(o, c.world);
    EXPECT_NE(got.find(c.words), std::string::npos) << c.words << "\n  got: " << got;
  }
}

TEST(ValidateOptions, RolesFollowTheStrategy) {
  TrainerOptions o;
  EXPECT_EQ(servers_for(o), 0);
  EXPECT_FALSE(is_asynchronous(o));
  o.strategy.async.backup_workers = 1;
  EXPECT_EQ(servers_for(o), 1);
  EXPECT_TRUE(is_asynchronous(o));
  o.strategy.async.backup_workers = 0;
  o.strategy.kind = StrategyKind::kEasgd;
  o.strategy.async.servers = 2;
  EXPECT_EQ(servers_for(o), 2);
  o.strategy.kind = StrategyKind::kLocalSgd;
  EXPECT_EQ(servers_for(o), 0);
  EXPECT_TRUE(is_asynchronous(o));
  EXPECT_TRUE(is_sharded(StrategyKind::kZero1));
  EXPECT_FALSE(is_sharded(StrategyKind::kDdp));
}

}  // namespace
}  // namespace tandem::train
