// `tandem train --strategy zero1|zero2|zero3` end to end: the sharded
// strategies train the same model as DDP, and a zero3 checkpoint written by
// 4 ranks resumes at 2 and at 3 ranks (same global batch) to the parameters
// of a run that never stopped. float64 throughout: the world sizes sum the
// gradients in different orders, so the comparisons use rtol 1e-9.
#include <ATen/ops/allclose.h>
#include <ATen/ops/cat.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include "tandem/comm/rendezvous.h"
#include "tandem/core/error.h"
#include "tandem/train/checkpoint.h"
#include "tandem/train/sharded_checkpoint.h"
#include "tandem/train/trainer.h"
#include "tests/support/multiproc.h"
#include "tests/support/rank_init.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::train {
namespace {

using testing::TempDir;

// 96 samples: 8 steps per epoch at a global batch of 12 for 2, 3 and 4
// ranks alike, so every world size crosses into epoch 1 at the same step.
TrainerOptions base_options(const std::string& strategy, int64_t batch) {
  TrainerOptions o;
  o.model.kind = ModelKind::kMlp;
  o.data.source = "synthetic-mnist";
  o.data.synthetic_size = 96;
  o.run.steps = 10;
  o.run.batch_size = batch;
  o.optimizer.kind = OptimizerKind::kSgd;
  o.optimizer.lr = 0.05;
  o.optimizer.momentum = 0.9;
  o.optimizer.nesterov = true;
  o.optimizer.weight_decay = 1e-3;
  o.optimizer.warmup_steps = 2;
  o.optimizer.schedule = LrSchedule::kCosine;
  o.run.seed = 11;
  o.model.dtype = Dtype::kFloat64;
  o.strategy.kind = parse_choice<StrategyKind>(strategy);
  o.observe.eval_batches = 1;
  o.observe.log_every = 100;
  return o;
}

void run(int world, const TrainerOptions& o) {
  tandem::testing::expect_ranks_succeed(
      world,
      [&](int rank, int size, int port) {
        train(o, tandem::testing::init_rank(rank, size, port), nullptr);
      },
      {.timeout = std::chrono::milliseconds(150'000), .env = {}});
}

// The full parameters by name from a checkpoint directory's latest, whole or sharded.
std::map<std::string, at::Tensor> final_parameters(const std::string& dir) {
  const std::string path = latest_checkpoint(dir);
  std::map<std::string, at::Tensor> out;
  if (!is_sharded_checkpoint(path)) {
    for (auto& [n, t] : read_checkpoint(path).parameters) out[n] = t;
    return out;
  }
  for (const auto& g : read_sharded_checkpoint(path, 0, 1).state.groups) {
    for (size_t e = 0; e < g.names.size(); ++e) {
      const auto& en = g.layout.entries[e];
      out[g.names[e]] = g.params.narrow(0, en.offset, en.numel).view(en.shape);
    }
  }
  return out;
}

void expect_close(const std::map<std::string, at::Tensor>& got,
                  const std::map<std::string, at::Tensor>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (const auto& [name, t] : want) {
    ASSERT_TRUE(got.count(name)) << what << ": " << name;
    EXPECT_TRUE(at::allclose(got.at(name), t, 1e-9, 0.0)) << what << ": " << name;
  }
}

TEST(ShardedTraining, ZeroStagesMatchDdp) {
  TempDir ddp_dir;
  TrainerOptions ddp = base_options("ddp", 6);
  ddp.checkpoint.dir = ddp_dir.path().string();
  run(2, ddp);
  const auto want = final_parameters(ddp.checkpoint.dir);
  for (const std::string strategy : {"zero1", "zero2", "zero3"}) {
    for (const std::string optimizer : {"sgd", "adamw"}) {
      TempDir dir;
      TrainerOptions o = base_options(strategy, 6);
      o.optimizer.kind = parse_choice<OptimizerKind>(optimizer);
      o.checkpoint.dir = dir.path().string();
      run(2, o);
      if (o.optimizer.kind == OptimizerKind::kSgd) {
        expect_close(final_parameters(o.checkpoint.dir), want, strategy);
      } else {
        TempDir adam_dir;
        TrainerOptions ref = ddp;
        ref.optimizer.kind = OptimizerKind::kAdamW;
        ref.checkpoint.dir = adam_dir.path().string();
        run(2, ref);
        expect_close(final_parameters(o.checkpoint.dir), final_parameters(ref.checkpoint.dir),
                     strategy + " adamw");
      }
    }
  }
}

TEST(ShardedTraining, Zero3CheckpointOfFourRanksResumesAtTwoAndThree) {
  TempDir straight_dir, stopped_dir;
  TrainerOptions straight = base_options("zero3", 3);
  straight.checkpoint.dir = straight_dir.path().string();
  run(4, straight);
  const auto want = final_parameters(straight.checkpoint.dir);

  TrainerOptions first = straight;
  first.checkpoint.dir = stopped_dir.path().string();
  first.run.stop_at_step = 5;
  run(4, first);
  const std::string mid = latest_checkpoint(first.checkpoint.dir);
  ASSERT_TRUE(is_sharded_checkpoint(mid));
  EXPECT_EQ(std::filesystem::path(mid).filename(), "step-5");
  const auto at_five = final_parameters(first.checkpoint.dir);

  for (int world : {2, 3}) {
    TempDir dir;
    std::filesystem::copy(first.checkpoint.dir, dir.path(),
                          std::filesystem::copy_options::recursive |
                              std::filesystem::copy_options::overwrite_existing);
    TrainerOptions second = base_options("zero3", 12 / world);
    second.checkpoint.dir = dir.path().string();
    second.checkpoint.resume = ResumeMode::kRequire;
    run(world, second);
    const auto got = final_parameters(second.checkpoint.dir);
    expect_close(got, want, "resumed at " + std::to_string(world) + " ranks");
    // The comparison can fail: five more steps moved every weight matrix.
    EXPECT_FALSE(at::allclose(got.at("fc0.weight"), at_five.at("fc0.weight"), 1e-9, 0.0));
  }
}

TEST(ShardedTraining, WrongGlobalBatchOnResumeIsNamed) {
  TempDir dir;
  TrainerOptions first = base_options("zero2", 3);
  first.checkpoint.dir = dir.path().string();
  first.run.stop_at_step = 2;
  run(2, first);
  TrainerOptions second = base_options("zero2", 4);  // 4 x 2 = 8, not 6
  second.checkpoint.dir = dir.path().string();
  second.checkpoint.resume = ResumeMode::kRequire;
  auto results = tandem::testing::run_ranks(2, [&](int rank, int size, int port) {
    auto comm = tandem::testing::init_rank(rank, size, port, "shm", Millis(20'000));
    try {
      train(second, comm, nullptr);
    } catch (const CheckpointError& e) {
      std::string what = e.what();
      _exit(what.find("global batch") != std::string::npos ? 42 : 43);
    }
    _exit(44);
  });
  for (const auto& r : results) EXPECT_EQ(r.exit_code, 42) << r.output;
}

}  // namespace
}  // namespace tandem::train
