// Backup workers against a straggler, the property of Chen et al. (2016):
// with one rank delayed 500 ms before every backward, ddp with one backup
// worker (3 workers + 1 server) keeps its step time within 1.3x of the same
// run undelayed, while plain ddp (all-reduce over 4 ranks) slows down at
// least 2x. Step times are rank 0's (a fast worker) mean over the run. This
// binary runs alone (RUN_SERIAL): the property is about time.
#include <gtest/gtest.h>

#include <cstdio>

#include "tandem/train/trainer.h"
#include "tests/support/multiproc.h"
#include "tests/support/rank_init.h"

namespace tandem::train {
namespace {

TrainerOptions convnet(int64_t steps, int backups, const std::string& delay) {
  TrainerOptions o;
  o.model.kind = ModelKind::kConvNet;
  o.data.source = "synthetic-mnist";
  o.data.synthetic_size = 2048;
  o.run.steps = steps;
  o.run.batch_size = 16;
  o.optimizer.lr = 0.01;
  o.optimizer.momentum = 0.9;
  o.strategy.kind = StrategyKind::kDdp;
  o.strategy.async.backup_workers = backups;
  o.straggler.delay = parse_inject_delay(delay);
  o.observe.eval_batches = 1;
  o.observe.log_every = 1000;
  return o;
}

TEST(BackupWorkers, HideAStragglerThatDdpWaitsFor) {
  tandem::testing::expect_ranks_succeed(
      4,
      [](int rank, int size, int port) {
        auto comm = tandem::testing::init_rank(rank, size, port);
        const std::string delay = "ranks=1,ms=500";
        const double ddp = train(convnet(12, 0, ""), comm, nullptr).mean_step_seconds;
        const double ddp_delayed = train(convnet(12, 0, delay), comm, nullptr).mean_step_seconds;
        const double backup = train(convnet(60, 1, ""), comm, nullptr).mean_step_seconds;
        const double backup_delayed =
            train(convnet(60, 1, delay), comm, nullptr).mean_step_seconds;
        if (rank != 0) return;
        std::printf(
            "step time on rank 0: ddp %.1f ms, delayed %.1f ms (%.2fx); ddp with 1 backup worker "
            "%.1f ms, delayed %.1f ms (%.2fx)\n",
            ddp * 1e3, ddp_delayed * 1e3, ddp_delayed / ddp, backup * 1e3, backup_delayed * 1e3,
            backup_delayed / backup);
        EXPECT_GE(ddp_delayed, 2.0 * ddp);
        EXPECT_LE(backup_delayed, 1.3 * backup);
      },
      {.timeout = std::chrono::milliseconds(150'000), .env = {}});
}

}  // namespace
}  // namespace tandem::train
