#include "tandem/launch/elastic_coordinator.h"

#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "tandem/core/error.h"

namespace tandem::launch::elastic {
namespace {

using std::chrono::milliseconds;

// The workers' side of the protocol, driven by hand, around a coordinator
// over an in-memory store.
struct Job {
  explicit Job(CoordinatorOptions o) : options(o) {
    coordinator = std::make_unique<Coordinator>(
        store, options, [this](const std::string& line) { lines.push_back(line); });
  }

  void join(int id) {
    int64_t k = elastic->add("join/count", 1);
    elastic->set(join_key(k), std::to_string(id));
  }
  void beat(int id) { elastic->add(heartbeat_key(id), 1); }
  void leave(int64_t g, int id) { elastic->set(left_key(g, id), "7"); }
  std::string value(const std::string& key) { return elastic->get(key, milliseconds(100)); }
  nlohmann::json json(const std::string& key) { return nlohmann::json::parse(value(key)); }
  bool said(const std::string& words) const {
    for (const auto& l : lines) {
      if (l.find(words) != std::string::npos) return true;
    }
    return false;
  }
  std::string all_lines() const {
    std::string out;
    for (const auto& l : lines) out += l + "\n";
    return out;
  }

  // Polls until `done` holds (each turn also runs `each`), for at most 5 s.
  bool poll_until(const std::function<bool()>& done, const std::function<void()>& each = {}) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      if (each) each();
      coordinator->poll();
      if (done()) return true;
      std::this_thread::sleep_for(milliseconds(1));
    }
    return false;
  }

  CoordinatorOptions options;
  std::shared_ptr<Store> store = make_memory_store();
  std::shared_ptr<Store> elastic = with_prefix(store, kElasticPrefix);
  std::vector<std::string> lines;
  std::unique_ptr<Coordinator> coordinator;
};

CoordinatorOptions opts(int min, int max) {
  CoordinatorOptions o;
  o.min_workers = min;
  o.max_workers = max;
  o.settle = milliseconds(0);
  o.heartbeat_timeout = milliseconds(2000);
  o.rendezvous_timeout = milliseconds(2000);
  return o;
}

// Starts `ids` as generation 0 (max_workers of them, so no settling).
void start(Job& job, const std::vector<int>& ids) {
  for (int id : ids) job.join(id);
  job.coordinator->poll();
  ASSERT_EQ(job.coordinator->generations(), 1) << job.all_lines();
}

TEST(ElasticCoordinator, StartsOnceMaxWorkersJoined) {
  CoordinatorOptions o = opts(2, 3);
  o.settle = milliseconds(60'000);
  Job job(o);
  job.join(2);
  job.join(0);
  job.coordinator->poll();
  EXPECT_EQ(job.coordinator->generations(), 0);  // min reached, but settling
  job.join(1);
  job.coordinator->poll();
  ASSERT_EQ(job.coordinator->generations(), 1);
  EXPECT_EQ(job.value("gen/decided"), "1");
  EXPECT_EQ(job.value(members_key(0)), "0,1,2");  // id order: initial ids are ranks
  EXPECT_EQ(job.json(cause_key(0))["cause"], "start");
  EXPECT_TRUE(job.said("tandem-run: generation 0: members 0,1,2 (3 workers), at the start"))
      << job.all_lines();
  EXPECT_FALSE(job.coordinator->finished());
}

TEST(ElasticCoordinator, StartsWithMinWorkersAfterTheSettleTime) {
  CoordinatorOptions o = opts(2, 4);
  o.settle = milliseconds(50);
  Job job(o);
  job.join(0);
  job.coordinator->poll();
  EXPECT_EQ(job.coordinator->generations(), 0);
  job.join(1);
  job.coordinator->poll();
  EXPECT_EQ(job.coordinator->generations(), 0);  // the settle time has not passed
  ASSERT_TRUE(job.poll_until([&] { return job.coordinator->generations() == 1; }));
  EXPECT_EQ(job.value(members_key(0)), "0,1");
}

TEST(ElasticCoordinator, FailureByExitRecordEndsTheGenerationAndFormsTheNext) {
  Job job(opts(2, 3));
  start(job, {5, 0, 1});  // members 0,1,5: worker 5 is rank 2
  record_exit(*job.store, 5, "signal SIGKILL");
  job.coordinator->poll();
  auto end = job.json(end_key(0));
  EXPECT_EQ(end["reason"], "failure");
  EXPECT_EQ(end["message"], "rank 2 (worker 5) died: signal SIGKILL");
  // Generation 1 waits for every live member to leave generation 0.
  job.leave(0, 1);
  job.coordinator->poll();
  EXPECT_EQ(job.coordinator->generations(), 1);
  job.leave(0, 0);
  job.coordinator->poll();
  ASSERT_EQ(job.coordinator->generations(), 2) << job.all_lines();
  EXPECT_EQ(job.value(members_key(1)), "0,1");
  auto cause = job.json(cause_key(1));
  EXPECT_EQ(cause["cause"], "failure");
  EXPECT_EQ(cause["worker"], 5);
  EXPECT_EQ(cause["rank"], 2);
  EXPECT_EQ(cause["how"], "signal SIGKILL");
  EXPECT_TRUE(cause["detect_s"].is_null());
  EXPECT_GT(cause["seen_unix_ms"].get<int64_t>(), 0);
  EXPECT_TRUE(
      job.said("tandem-run: generation 1: members 0,1 (2 workers), after rank 2 (worker 5) died: "
               "signal SIGKILL"))
      << job.all_lines();
}

TEST(ElasticCoordinator, AMemberDyingWhileTheNextFormsDropsOut) {
  Job job(opts(1, 3));
  start(job, {0, 1, 2});
  record_exit(*job.store, 2, "exit code 1");
  job.coordinator->poll();
  job.leave(0, 0);
  record_exit(*job.store, 1, "signal SIGSEGV");  // dies before it leaves
  job.coordinator->poll();
  ASSERT_EQ(job.coordinator->generations(), 2) << job.all_lines();
  EXPECT_EQ(job.value(members_key(1)), "0");
  EXPECT_EQ(job.json(cause_key(1))["worker"], 2);  // the first failure is the cause
}

TEST(ElasticCoordinator, AStalledMemberIsEvicted) {
  CoordinatorOptions o = opts(2, 3);
  o.heartbeat_timeout = milliseconds(100);
  Job job(o);
  start(job, {0, 1, 2});
  // Workers 0 and 1 beat; worker 2 never does.
  auto beats = [&] {
    job.beat(0);
    job.beat(1);
  };
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(job.poll_until([&] { return job.elastic->check(end_key(0)); }, beats));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, milliseconds(100));
  EXPECT_EQ(job.coordinator->evicted(), std::vector<int>{2});
  EXPECT_NE(job.value(evicted_key(2)).find("stalled: no heartbeat for 0.1 s in generation 0"),
            std::string::npos);
  EXPECT_EQ(job.json(end_key(0))["message"], "rank 2 (worker 2) stalled: no heartbeat for 0.1 s");
  job.leave(0, 0);
  job.leave(0, 1);
  ASSERT_TRUE(job.poll_until([&] { return job.coordinator->generations() == 2; }, beats));
  EXPECT_EQ(job.value(members_key(1)), "0,1");
  auto cause = job.json(cause_key(1));
  EXPECT_EQ(cause["how"], "stalled: no heartbeat for 0.1 s");
  EXPECT_DOUBLE_EQ(cause["detect_s"].get<double>(), 0.1);
  // The evicted worker wakes and asks to join again: it is ignored.
  job.join(2);
  for (int i = 0; i < 5; ++i) job.coordinator->poll();
  EXPECT_FALSE(job.elastic->check(end_key(1)));
}

TEST(ElasticCoordinator, BeatingMembersAreNotStalled) {
  CoordinatorOptions o = opts(2, 2);
  o.heartbeat_timeout = milliseconds(50);
  Job job(o);
  start(job, {0, 1});
  auto t_end = std::chrono::steady_clock::now() + milliseconds(300);
  while (std::chrono::steady_clock::now() < t_end) {
    job.beat(0);
    job.beat(1);
    job.coordinator->poll();
    std::this_thread::sleep_for(milliseconds(5));
  }
  EXPECT_FALSE(job.elastic->check(end_key(0))) << job.all_lines();
  EXPECT_TRUE(job.coordinator->evicted().empty());
}

TEST(ElasticCoordinator, AJoinerIsAdmittedAtTheNextBoundary) {
  Job job(opts(2, 3));
  job.join(0);
  job.join(1);
  job.coordinator->poll();  // min reached, settle 0
  ASSERT_EQ(job.coordinator->generations(), 1);
  job.join(5);
  job.coordinator->poll();
  auto end = job.json(end_key(0));
  EXPECT_EQ(end["reason"], "join");
  EXPECT_EQ(end["message"], "worker 5 waits to join");
  job.leave(0, 0);
  job.leave(0, 1);
  job.coordinator->poll();
  ASSERT_EQ(job.coordinator->generations(), 2);
  EXPECT_EQ(job.value(members_key(1)), "0,1,5");
  auto cause = job.json(cause_key(1));
  EXPECT_EQ(cause["cause"], "join");
  EXPECT_EQ(cause["worker"], 5);
  EXPECT_EQ(cause["rank"], 2);
  EXPECT_TRUE(job.said("generation 1: members 0,1,5 (3 workers), after worker 5 joined"))
      << job.all_lines();
}

TEST(ElasticCoordinator, AJoinerWaitsWhileTheGenerationIsFull) {
  Job job(opts(2, 2));
  start(job, {0, 1});
  job.join(5);
  for (int i = 0; i < 3; ++i) job.coordinator->poll();
  EXPECT_FALSE(job.elastic->check(end_key(0)));
  // A member dies: the waiting joiner replaces it.
  record_exit(*job.store, 1, "signal SIGKILL");
  job.coordinator->poll();
  job.leave(0, 0);
  job.coordinator->poll();
  ASSERT_EQ(job.coordinator->generations(), 2);
  EXPECT_EQ(job.value(members_key(1)), "0,5");
}

TEST(ElasticCoordinator, ADeadJoinerIsForgotten) {
  Job job(opts(2, 3));
  start(job, {0, 1, 2});
  record_exit(*job.store, 2, "signal SIGKILL");
  job.join(3);
  record_exit(*job.store, 3, "exit code 1");
  job.coordinator->poll();
  job.leave(0, 0);
  job.leave(0, 1);
  job.coordinator->poll();
  ASSERT_EQ(job.coordinator->generations(), 2);
  EXPECT_EQ(job.value(members_key(1)), "0,1");
}

TEST(ElasticCoordinator, QuorumLostAbortsAfterTheRendezvousTimeout) {
  CoordinatorOptions o = opts(2, 2);
  o.rendezvous_timeout = milliseconds(100);
  Job job(o);
  start(job, {0, 1});
  record_exit(*job.store, 1, "signal SIGKILL");
  job.coordinator->poll();
  job.leave(0, 0);
  job.coordinator->poll();
  EXPECT_TRUE(job.said("tandem-run: waiting for 1 more worker: 1 of --min-workers 2"))
      << job.all_lines();
  EXPECT_FALSE(job.coordinator->finished());
  ASSERT_TRUE(job.poll_until([&] { return job.coordinator->finished(); }));
  ASSERT_TRUE(job.coordinator->abort_reason().has_value());
  const std::string reason = *job.coordinator->abort_reason();
  EXPECT_NE(reason.find("only 1 worker of --min-workers 2"), std::string::npos) << reason;
  EXPECT_EQ(job.value("abort"), reason);
  EXPECT_EQ(job.coordinator->generations(), 1);
}

TEST(ElasticCoordinator, AReplacementRestoresTheQuorum) {
  Job job(opts(2, 2));
  start(job, {0, 1});
  record_exit(*job.store, 1, "signal SIGKILL");
  job.coordinator->poll();
  job.leave(0, 0);
  job.coordinator->poll();
  EXPECT_EQ(job.coordinator->generations(), 1);
  job.join(2);
  job.coordinator->poll();
  ASSERT_EQ(job.coordinator->generations(), 2);
  EXPECT_EQ(job.value(members_key(1)), "0,2");
  EXPECT_EQ(job.json(cause_key(1))["cause"], "failure");
}

TEST(ElasticCoordinator, TooFewWorkersAtTheStartAbort) {
  CoordinatorOptions o = opts(3, 3);
  o.rendezvous_timeout = milliseconds(50);
  Job job(o);
  job.join(0);
  ASSERT_TRUE(job.poll_until([&] { return job.coordinator->finished(); }));
  EXPECT_NE(job.coordinator->abort_reason().value_or("").find("only 1 worker of --min-workers 3 "
                                                              "at the start"),
            std::string::npos)
      << job.coordinator->abort_reason().value_or("");
}

TEST(ElasticCoordinator, CompleteFinishesTheJob) {
  Job job(opts(2, 2));
  start(job, {0, 1});
  // A worker that exits 0 after the last step is not a failure while rank 0
  // sets `complete`.
  record_exit(*job.store, 1, "exit code 0");
  job.coordinator->poll();
  job.elastic->set("complete", "1");
  job.coordinator->poll();
  EXPECT_TRUE(job.coordinator->finished());
  EXPECT_FALSE(job.coordinator->abort_reason().has_value());
  EXPECT_FALSE(job.elastic->check(end_key(0)));
}

TEST(ElasticCoordinator, ACleanExitWithoutCompleteBecomesAFailure) {
  CoordinatorOptions o = opts(1, 2);
  o.heartbeat_timeout = milliseconds(50);
  Job job(o);
  start(job, {0, 1});
  record_exit(*job.store, 1, "exit code 0");
  ASSERT_TRUE(job.poll_until([&] { return job.elastic->check(end_key(0)); }, [&] { job.beat(0); }));
  EXPECT_EQ(job.json(end_key(0))["message"],
            "rank 1 (worker 1) died: exit code 0 before the job was complete");
}

TEST(ElasticCoordinator, GarbledRecordsAreClearErrorsAndSkipped) {
  Job job(opts(2, 2));
  int64_t k = job.elastic->add("join/count", 1);
  job.elastic->set(join_key(k), "0,1");
  try {
    job.coordinator->poll();
    ADD_FAILURE() << "a garbled join request was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("join request elastic/join/1 = '0,1'"), std::string::npos)
        << e.what();
  }
  start(job, {0, 1});  // the bad record is behind us
  k = job.elastic->add("exit/count", 1);
  job.elastic->set(exit_key(k), "1 signal SIGKILL");
  try {
    job.coordinator->poll();
    ADD_FAILURE() << "a garbled exit record was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("exit record elastic/exit/1"), std::string::npos)
        << e.what();
  }
  job.coordinator->poll();
  EXPECT_FALSE(job.elastic->check(end_key(0)));
  // A heartbeat counter that is not a number: the store call fails.
  job.elastic->set(heartbeat_key(0), "many");
  EXPECT_THROW(job.coordinator->poll(), PeerError);
}

TEST(ElasticCoordinator, ARecordCountedButNotYetWrittenDoesNotBlock) {
  Job job(opts(1, 1));
  job.elastic->add("join/count", 1);  // the writer has not set join/1 yet
  auto t0 = std::chrono::steady_clock::now();
  job.coordinator->poll();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(500));
  EXPECT_EQ(job.coordinator->generations(), 0);
  job.elastic->set(join_key(1), "0");
  job.coordinator->poll();
  EXPECT_EQ(job.coordinator->generations(), 1);
}

TEST(ElasticCoordinator, RejectsBadOptions) {
  auto store = make_memory_store();
  EXPECT_THROW(Coordinator(store, opts(0, 2), {}), InvalidArgument);
  EXPECT_THROW(Coordinator(store, opts(3, 2), {}), InvalidArgument);
  CoordinatorOptions o = opts(1, 2);
  o.heartbeat_timeout = milliseconds(0);
  EXPECT_THROW(Coordinator(store, o, {}), InvalidArgument);
  EXPECT_THROW(Coordinator(nullptr, opts(1, 2), {}), InvalidArgument);
}

}  // namespace
}  // namespace tandem::launch::elastic
