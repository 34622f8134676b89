// `tandem train --strategy ps|easgd|gossip|local-sgd` and ddp with backup
// workers, end to end: each trains the ConvNet at 4 ranks (3 workers + 1
// server where the strategy has servers) on synthetic MNIST-format data
// from a loss near ln(10) = 2.3 to below 0.1 (rank-local loss, mean of the
// last 5 steps) in 50 steps, within the harness's deadline,
// and reports its measurements (staleness within the bound, consensus
// distance, dropped gradients). Also the flag checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tandem/core/error.h"
#include "tandem/train/trainer.h"
#include "tests/support/multiproc.h"
#include "tests/support/rank_init.h"
#include "tests/train/data/temp_dir.h"

namespace tandem::train {
namespace {

constexpr double kTargetLoss = 0.1;

TrainerOptions convnet(const std::string& strategy) {
  TrainerOptions o;
  o.model.kind = ModelKind::kConvNet;
  o.data.source = "synthetic-mnist";
  o.data.synthetic_size = 1024;
  o.run.steps = 50;
  o.run.batch_size = 16;
  o.optimizer.lr = 0.01;
  o.optimizer.momentum = 0.9;
  o.run.seed = 5;
  o.strategy.kind = parse_choice<StrategyKind>(strategy);
  o.observe.eval_batches = 2;
  o.observe.log_every = 5;
  return o;
}

using tandem::testing::init_rank;

// Trains at 4 ranks; `check` runs on every rank with its summary.
void train_4(const TrainerOptions& o,
             const std::function<void(int rank, const TrainSummary&)>& check) {
  tandem::testing::expect_ranks_succeed(
      4,
      [&](int rank, int size, int port) { check(rank, train(o, init_rank(rank, size, port), nullptr)); },
      {.timeout = std::chrono::milliseconds(120'000), .env = {}});
}

int64_t max_bin(const std::map<int64_t, int64_t>& histogram) {
  return histogram.empty() ? -1 : histogram.rbegin()->first;
}

void expect_trained(int rank, const TrainSummary& s) {
  if (s.server) return;
  // The first 5 steps' mean loss is far above the target (it starts near
  // ln 10 = 2.3); the last 5 steps' is below it.
  EXPECT_GT(s.first_loss, 4 * kTargetLoss) << "rank " << rank;
  EXPECT_LT(s.final_loss, kTargetLoss) << "rank " << rank;
  EXPECT_GT(s.eval_accuracy, 0.8) << "rank " << rank;
}

TEST(AsyncTraining, ParameterServerTrainsConvNet) {
  train_4(convnet("ps"), [](int rank, const TrainSummary& s) {
    expect_trained(rank, s);
    EXPECT_EQ(s.server, rank == 3);
    EXPECT_EQ(s.workers, 3);
    if (s.server) {
      EXPECT_EQ(s.steps, 3 * 50) << "every worker's every gradient is applied";
    } else {
      EXPECT_EQ(s.steps, 50);
      int64_t updates = 0;
      for (const auto& [k, n] : s.staleness_histogram) updates += n;
      EXPECT_EQ(updates, 50);
    }
  });
}

// Every update the server applied, as its metrics summary line records them.
TEST(AsyncTraining, BoundedStalenessHoldsInTraining) {
  testing::TempDir dir;
  auto o = convnet("ps");
  o.strategy.async.staleness = 1;
  o.straggler.slowdown = parse_inject_slowdown("ranks=2,factor=3");
  o.observe.metrics_file = dir.file("metrics-{rank}.jsonl");
  train_4(o, [](int rank, const TrainSummary& s) {
    expect_trained(rank, s);
    EXPECT_LE(max_bin(s.staleness_histogram), 1) << "rank " << rank;
  });
  std::ifstream in(dir.file("metrics-3.jsonl"));
  std::string line;
  ASSERT_TRUE(std::getline(in, line)) << "the server wrote no summary";
  const auto j = nlohmann::json::parse(line);
  EXPECT_TRUE(j["server"].get<bool>());
  int64_t updates = 0;
  for (const auto& [staleness, n] : j["staleness_histogram"].items()) {
    EXPECT_LE(std::stoi(staleness), 1);
    updates += n.get<int64_t>();
  }
  EXPECT_EQ(updates, 3 * 50);
}

TEST(AsyncTraining, ElasticAveragingTrainsConvNet) {
  auto o = convnet("easgd");
  o.strategy.async.tau = 2;
  train_4(o, [](int rank, const TrainSummary& s) {
    expect_trained(rank, s);
    if (!s.server) {
      EXPECT_GE(s.consensus_distance, 0) << "measured";
      int64_t exchanges = 0;
      for (const auto& [k, n] : s.staleness_histogram) exchanges += n;
      EXPECT_EQ(exchanges, 25);
    }
  });
}

TEST(AsyncTraining, GossipPushTrainsConvNet) {
  train_4(convnet("gossip"), [](int rank, const TrainSummary& s) {
    expect_trained(rank, s);
    EXPECT_EQ(s.workers, 4);
    EXPECT_GE(s.consensus_distance, 0);
  });
}

TEST(AsyncTraining, GossipPullTrainsConvNet) {
  auto o = convnet("gossip");
  o.strategy.async.gossip = GossipMode::kPull;
  train_4(o, [](int rank, const TrainSummary& s) { expect_trained(rank, s); });
}

TEST(AsyncTraining, LocalSgdTrainsConvNet) {
  auto o = convnet("local-sgd");
  o.strategy.async.sync_every = 4;
  train_4(o, [](int rank, const TrainSummary& s) {
    expect_trained(rank, s);
    EXPECT_GT(s.consensus_distance, 0) << "the workers drift between averages";
  });
}

TEST(AsyncTraining, BackupWorkerTrainsConvNetAndDropsTheStraggler) {
  auto o = convnet("ddp");
  o.strategy.async.backup_workers = 1;
  o.straggler.delay = parse_inject_delay("ranks=1,ms=100");
  train_4(o, [](int rank, const TrainSummary& s) {
    if (rank == 1) {
      EXPECT_GT(s.dropped_gradients, 0) << "the delayed worker was never late";
      EXPECT_LT(s.steps, 50) << "the servers ended the run without waiting for it";
      return;
    }
    expect_trained(rank, s);
    if (s.server) {
      EXPECT_EQ(s.steps, 50);
    }
  });
}

TEST(AsyncTraining, FlagsAreChecked) {
  auto expect_rejected = [](TrainerOptions o, const std::string& words) {
    tandem::testing::expect_ranks_succeed(2, [&](int rank, int size, int port) {
      try {
        train(o, init_rank(rank, size, port), nullptr);
        FAIL() << "accepted: " << words;
      } catch (const InvalidArgument& e) {
        EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
      }
    });
  };
  auto o = convnet("ps");
  o.strategy.async.servers = 2;
  expect_rejected(o, "--servers 2 with 2 rank(s) leaves 0 worker(s)");
  o = convnet("local-sgd");
  o.checkpoint.dir = "/tmp/never";
  expect_rejected(o, "does not write checkpoints");
  o = convnet("zero2");
  o.strategy.async.backup_workers = 1;
  expect_rejected(o, "--backup-workers is for --strategy ddp");
  o = convnet("easgd");
  o.strategy.async.alpha = 1.5;
  expect_rejected(o, "--alpha");
  // Bad text is refused where it is parsed, before any run.
  auto expect_unparsed = [](const std::function<void()>& parse, const std::string& words) {
    try {
      parse();
      ADD_FAILURE() << "accepted: " << words;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  expect_unparsed([] { parse_choice<GossipMode>("sideways"); }, "--gossip sideways");
  expect_unparsed([] { parse_inject_delay("ranks=1,ms=fast"); }, "ms=fast is not a number");
}

}  // namespace
}  // namespace tandem::train
