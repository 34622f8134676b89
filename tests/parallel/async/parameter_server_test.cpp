// ParameterServer and ParameterClient on real processes: the stale
// synchronous bound holds for every applied update (and without it a slow
// worker's peers do run ahead, so the bound is what holds them), every
// gradient is applied exactly once, backup workers drop late gradients and
// apply the mean of the first ones, the elastic exchange moves worker and
// center as the EASGD rule says, and bad roles are named.
#include "tandem/parallel/async/parameter_server.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/allclose.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <gtest/gtest.h>
#include <torch/optim/sgd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <thread>

#include "tandem/core/error.h"
#include "tandem/parallel/async/parameter_client.h"
#include "tests/parallel/async/async_test_support.h"
#include "tests/support/multiproc.h"

namespace tandem::parallel {
namespace {

using testing::connect;
constexpr int64_t kNumel = 10;  // odd shards with 3 servers
constexpr double kLr = 0.01;

ParameterServerOptions sgd_options(PsMode mode) {
  ParameterServerOptions o;
  o.mode = mode;
  o.make_optimizer = [](std::vector<at::Tensor> p) {
    return std::make_unique<torch::optim::SGD>(p, torch::optim::SGDOptions(kLr));
  };
  o.set_lr = [](torch::optim::Optimizer& opt, double lr) {
    for (auto& g : opt.param_groups()) static_cast<torch::optim::SGDOptions&>(g.options()).lr(lr);
  };
  return o;
}

at::Tensor initial() { return at::arange(kNumel, at::kDouble); }

// Worker w's gradient: w + 1 everywhere, so the final parameters tell how
// many of each worker's gradients were applied.
at::Tensor gradient_of(int worker) { return at::full({kNumel}, worker + 1.0, at::kDouble); }

TEST(PsRoles, SplitsRanksAndShards) {
  const PsRoles r = PsRoles::of(4, 1);
  EXPECT_EQ(r.workers, 3);
  EXPECT_TRUE(r.is_server(3));
  EXPECT_FALSE(r.is_server(2));
  const PsRoles two = PsRoles::of(5, 2);
  EXPECT_EQ(two.server_rank(1), 4);
  EXPECT_EQ(two.shard(11, 0).numel + two.shard(11, 1).numel, 11);
  EXPECT_THROW(PsRoles::of(4, 4), InvalidArgument);
  EXPECT_THROW(PsRoles::of(4, 0), InvalidArgument);
}

// 3 workers + 1 server; worker 1 sleeps 15 ms per step (a straggler, not an
// ordering device: the assertions hold for any timing). Returns nothing;
// checks on the server rank.
void run_async(int64_t staleness, bool expect_runaway) {
  constexpr int kSteps = 20;
  tandem::testing::expect_ranks_succeed(4, [=](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    const PsRoles roles = PsRoles::of(size, 1);
    if (roles.is_server(rank)) {
      auto o = sgd_options(PsMode::kAsync);
      o.staleness = staleness;
      ParameterServer server(comm, roles, initial(), o);
      server.serve();
      int64_t worst = 0;
      for (const auto& u : server.updates()) {
        worst = std::max(worst, u.staleness);
        if (staleness >= 0) {
          EXPECT_LE(u.staleness, staleness) << "worker " << u.worker << " clock " << u.clock;
        }
      }
      ASSERT_EQ(server.updates().size(), 3u * kSteps);
      if (expect_runaway) {
        EXPECT_GT(worst, 2) << "the fast workers never ran ahead";
      }
      // Every gradient applied once: x = x0 - lr * steps * (1 + 2 + 3).
      EXPECT_TRUE(at::allclose(server.shard(), initial() - kLr * kSteps * 6.0, 1e-12, 1e-12));
      return;
    }
    ParameterClient client(comm, roles, kNumel, at::kDouble);
    at::Tensor params = at::zeros({kNumel}, at::kDouble);
    // Versions only grow: the servers never hand out older parameters.
    int64_t version = client.pull(params).version;
    for (int s = 0; s < kSteps; ++s) {
      if (rank == 1) std::this_thread::sleep_for(std::chrono::milliseconds(15));
      const PsReply r = client.push_gradient(gradient_of(rank), kLr, params);
      EXPECT_GT(r.version, version);
      version = r.version;
      if (staleness >= 0) {
        EXPECT_LE(r.staleness, staleness);
      }
    }
    client.done();
  });
}

TEST(ParameterServer, StalenessNeverExceedsTheBound) { run_async(1, false); }
TEST(ParameterServer, LockStepAtStalenessZero) { run_async(0, false); }
TEST(ParameterServer, UnboundedLetsFastWorkersRunAhead) { run_async(-1, true); }

TEST(ParameterServer, TwoServersShareTheVector) {
  tandem::testing::expect_ranks_succeed(4, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    const PsRoles roles = PsRoles::of(size, 2);
    if (roles.is_server(rank)) {
      ParameterServer server(comm, roles, initial(), sgd_options(PsMode::kAsync));
      server.serve();
      const ShardRange r = roles.shard(kNumel, rank - roles.workers);
      at::Tensor want = (initial() - kLr * 3.0 * 5).narrow(0, r.offset, r.numel);
      EXPECT_TRUE(at::allclose(server.shard(), want, 1e-12, 1e-12));
      return;
    }
    ParameterClient client(comm, roles, kNumel, at::kDouble);
    at::Tensor params = at::zeros({kNumel}, at::kDouble);
    for (int s = 0; s < 5; ++s) client.push_gradient(gradient_of(rank), kLr, params);
    client.done();
  });
}

// 3 workers, 1 backup: each step applies the mean of exactly 2 gradients;
// the slow worker's late gradients are dropped, never applied.
TEST(ParameterServer, BackupWorkersDropLateGradients) {
  constexpr int64_t kTotal = 8;
  tandem::testing::expect_ranks_succeed(4, [&](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    const PsRoles roles = PsRoles::of(size, 1);
    if (roles.is_server(rank)) {
      auto o = sgd_options(PsMode::kSync);
      o.backup_workers = 1;
      o.total_steps = kTotal;
      ParameterServer server(comm, roles, initial(), o);
      server.serve();
      std::map<int64_t, std::vector<int>> applied;  // step -> contributing workers
      int64_t dropped = 0;
      for (const auto& u : server.updates()) {
        if (u.dropped) {
          ++dropped;
        } else {
          applied[u.clock].push_back(u.worker);
        }
      }
      EXPECT_EQ(server.applied_steps(), kTotal);
      EXPECT_GT(dropped, 0) << "the slow worker was never late";
      at::Tensor want = initial();
      for (const auto& [step, workers] : applied) {
        ASSERT_EQ(workers.size(), 2u) << "step " << step;
        want -= kLr * (workers[0] + workers[1] + 2.0) / 2.0;
      }
      EXPECT_TRUE(at::allclose(server.shard(), want, 1e-12, 1e-12));
      return;
    }
    ParameterClient client(comm, roles, kNumel, at::kDouble);
    at::Tensor params = at::zeros({kNumel}, at::kDouble);
    int64_t step = client.pull(params).version;
    for (;;) {
      if (rank == 1) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      const PsReply r = client.push_sync(gradient_of(rank), step, kLr, params);
      step = r.version;
      if (r.finished) break;
    }
    client.done();
  });
}

// One worker, alpha 0.5: x = 2, c = 0 -> both meet at 1.
TEST(ParameterServer, ElasticExchangeMovesBothHalfway) {
  tandem::testing::expect_ranks_succeed(2, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    const PsRoles roles = PsRoles::of(size, 1);
    auto o = sgd_options(PsMode::kElastic);
    o.alpha = 0.5;
    if (roles.is_server(rank)) {
      ParameterServer server(comm, roles, at::zeros({kNumel}, at::kDouble), o);
      server.serve();
      EXPECT_TRUE(at::allclose(server.shard(), at::full({kNumel}, 1.0, at::kDouble)));
      ASSERT_EQ(server.updates().size(), 1u);
      return;
    }
    ParameterClient client(comm, roles, kNumel, at::kDouble);
    at::Tensor x = at::full({kNumel}, 2.0, at::kDouble);
    client.elastic_exchange(x);
    EXPECT_TRUE(at::allclose(x, at::full({kNumel}, 1.0, at::kDouble)));
    client.done();
  });
}

// An elastic job's next generation: a new server restored from the old
// one's state() goes on with the same shard and the same momentum, as one
// server serving all three gradients would (SGD, momentum 0.9: the
// parameters move by lr * g * (1 + 1.9 + 2.71); a fresh momentum buffer
// would give 1 + 1.9 + 1).
TEST(ParameterServer, StateCarriesShardAndMomentumToTheNextServer) {
  tandem::testing::expect_ranks_succeed(2, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    const PsRoles roles = PsRoles::of(size, 1);
    auto o = sgd_options(PsMode::kAsync);
    o.make_optimizer = [](std::vector<at::Tensor> p) {
      return std::make_unique<torch::optim::SGD>(p, torch::optim::SGDOptions(kLr).momentum(0.9));
    };
    if (roles.is_server(rank)) {
      ParameterServer first(comm, roles, initial(), o);
      first.serve();
      const ParameterServerState carried = first.state();
      ASSERT_TRUE(carried.optimizer.has_value());
      ParameterServer next(comm, roles, at::zeros({kNumel}, at::kDouble), o);
      next.restore(carried);
      next.serve();
      EXPECT_TRUE(at::allclose(next.shard(), initial() - kLr * (1 + 1.9 + 2.71), 1e-12, 1e-12))
          << next.shard();
      ParameterServerState wrong{at::zeros({kNumel + 1}, at::kDouble), std::nullopt};
      EXPECT_THROW(next.restore(wrong), InvalidArgument);
      return;
    }
    at::Tensor params = at::zeros({kNumel}, at::kDouble);
    {
      ParameterClient client(comm, roles, kNumel, at::kDouble);
      for (int s = 0; s < 2; ++s) client.push_gradient(gradient_of(0), kLr, params);
      client.done();
    }
    ParameterClient client(comm, roles, kNumel, at::kDouble);
    client.push_gradient(gradient_of(0), kLr, params);
    client.done();
  });
}

TEST(ParameterServer, WrongRoleIsNamed) {
  tandem::testing::expect_ranks_succeed(2, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port);
    const PsRoles roles = PsRoles::of(size, 1);
    if (rank == 0) {
      try {
        ParameterServer server(comm, roles, initial(), sgd_options(PsMode::kAsync));
        FAIL() << "a worker rank built a server";
      } catch (const InvalidArgument& e) {
        EXPECT_NE(std::string(e.what()).find("rank 0 is a worker"), std::string::npos) << e.what();
      }
    } else {
      EXPECT_THROW(ParameterClient(comm, roles, kNumel, at::kDouble), InvalidArgument);
    }
  });
}

// A worker that dies mid-run: the server's serve() ends with an error that
// names it, within the communicator's timeout, instead of hanging.
TEST(ParameterServer, DeadWorkerIsNamed) {
  tandem::testing::expect_ranks_succeed(3, [](int rank, int size, int port) {
    auto comm = connect(rank, size, port, Millis(5'000));
    const PsRoles roles = PsRoles::of(size, 1);
    if (roles.is_server(rank)) {
      ParameterServer server(comm, roles, initial(), sgd_options(PsMode::kAsync));
      try {
        server.serve();
        FAIL() << "serve() returned although worker 1 died";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("rank 1"), std::string::npos) << e.what();
      }
      return;
    }
    ParameterClient client(comm, roles, kNumel, at::kDouble);
    at::Tensor params = at::zeros({kNumel}, at::kDouble);
    client.push_gradient(gradient_of(rank), kLr, params);
    // Worker 1 dies only once worker 0 said done, so the server dies of
    // worker 1 alone and worker 0's own exchanges all complete.
    at::Tensor token = at::zeros({1}, at::kDouble);
    constexpr int kWorkerZeroDone = 9900;
    if (rank == 1) {
      comm->recv(token, 0, kWorkerZeroDone);
      _exit(0);  // dies without saying done
    }
    client.done();
    comm->send(token, 1, kWorkerZeroDone);
  });
}

}  // namespace
}  // namespace tandem::parallel
