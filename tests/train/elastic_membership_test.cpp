// A worker's side of elastic membership, with the test as tandem-run's
// coordinator: two workers (threads, Gloo over loopback) are admitted to a
// generation whose third member never arrives (it died after the
// generation was decided); the coordinator ends that generation, and both
// leave its half-built communicator and form the next, instead of waiting
// in the setup until the rendezvous timeout.
#include "train/elastic_membership.h"

#include <ATen/ops/ones.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "tandem/comm/store.h"

namespace tandem::train {
namespace {
namespace el = launch::elastic;
using namespace std::chrono_literals;

constexpr Millis kRendezvousTimeout{30'000};

struct Outcome {
  int64_t generation = -1;
  int rank = -1;
  double sum = 0;
  std::string error;
};

// One worker: joins, and reduces a one over the generation it lands in.
void run_worker(int id, int port, Outcome& out) {
  try {
    RendezvousInfo info;
    info.rank = id;
    info.world_size = 3;
    info.master_addr = "127.0.0.1";
    info.master_port = port;
    info.source = "torchrun";
    info.store_served = true;
    el::ElasticEnv env;
    env.enabled = true;
    env.min_workers = 2;
    env.max_workers = 3;
    env.worker_id = id;
    InitOptions init;
    init.backend = Backend::kGloo;
    init.timeout = kRendezvousTimeout;
    init.rendezvous_timeout = kRendezvousTimeout;
    ElasticMembership membership(info, env, init);
    const Generation& g = membership.join();
    at::Tensor one = at::ones({1}, at::kDouble);
    g.comm->all_reduce(one, ReduceOp::kSum);
    out.generation = g.number;
    out.rank = g.rank;
    out.sum = one.item<double>();
  } catch (const std::exception& e) {
    out.error = e.what();
  }
}

TEST(ElasticMembership, GenerationEndedWhileFormingIsLeftForTheNext) {
  auto server = make_tcp_store("127.0.0.1", 0, true, 10s);
  auto coordinator = with_prefix(server, el::kElasticPrefix);
  coordinator->set(el::members_key(0), "0,1,2");
  coordinator->set(el::cause_key(0), R"({"cause": "start"})");
  coordinator->add("gen/decided", 1);

  const auto start = std::chrono::steady_clock::now();
  Outcome outcome[2];
  std::thread workers[2];
  for (int id = 0; id < 2; ++id) {
    workers[id] = std::thread(run_worker, id, tcp_store_port(*server), std::ref(outcome[id]));
  }
  // Both wait in generation 0's join barrier for worker 2, which never comes.
  coordinator->wait({"gen/0/rdzv/joined/0", "gen/0/rdzv/joined/1"}, 20s);
  coordinator->set(el::end_key(0),
                   R"({"reason": "failure", "message": "rank 2 (worker 2) died: signal SIGKILL"})");
  coordinator->wait({el::left_key(0, 0), el::left_key(0, 1)}, 20s);
  coordinator->set(el::members_key(1), "0,1");
  coordinator->set(el::cause_key(1), R"({"cause": "failure", "worker": 2})");
  coordinator->add("gen/decided", 1);
  for (auto& w : workers) w.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  for (int id = 0; id < 2; ++id) {
    EXPECT_EQ(outcome[id].error, "") << "worker " << id;
    EXPECT_EQ(outcome[id].generation, 1) << "worker " << id;
    EXPECT_EQ(outcome[id].rank, id) << "worker " << id;
    EXPECT_EQ(outcome[id].sum, 2.0) << "worker " << id;
    // No committed state yet: each left generation 0 at step -1.
    EXPECT_EQ(coordinator->get(el::left_key(0, id), 1s), "-1");
  }
  // Left at once, not after the rendezvous timeout.
  EXPECT_LT(seconds, std::chrono::duration<double>(kRendezvousTimeout).count() / 2);
}

}  // namespace
}  // namespace tandem::train
