// Elastic training end to end: tandem-run --min-workers runs `tandem train`
// on 4 workers; a worker (rank 0 included) is SIGKILLed at a random step;
// the survivors redo the interrupted step on 3 ranks and end with the
// parameters of the uninterrupted run (float64, rtol 1e-9), having redone at
// most one step, with no process or /dev/shm segment left.
#include <ATen/ops/allclose.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <set>

#include "tests/support/netns.h"
#include "tests/train/elastic/elastic_job.h"

namespace tandem::testing {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr int kWorkers = 4;
constexpr int64_t kSteps = 24;

// A fresh directory for one run.
std::string run_dir(const std::string& name) {
  const fs::path dir =
      fs::temp_directory_path() / ("tandem-elastic-" + std::to_string(getpid()) + "-" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::vector<std::string> train_args(const std::string& strategy, const std::string& dir,
                                    int64_t steps = kSteps) {
  return {"--model",          "mlp",        "--dtype",        "float64",
          "--strategy",       strategy,     "--steps",        std::to_string(steps),
          "--batch-size",     "3",          "--dataset-size", "240",
          "--seed",           "7",          "--lr",           "0.05",
          "--log-every",      "1",          "--metrics",      dir + "/metrics-{rank}.jsonl",
          "--checkpoint-dir", dir + "/ckpt"};
}

std::vector<std::string> launcher_args(int min_workers, int restarts = 0) {
  return {
      "--nproc-per-node", std::to_string(kWorkers), "--min-workers",  std::to_string(min_workers),
      "--max-restarts",   std::to_string(restarts), "--grace-period", "2"};
}

void expect_same_state(const std::map<std::string, at::Tensor>& want,
                       const std::map<std::string, at::Tensor>& got, const std::string& what) {
  ASSERT_EQ(want.size(), got.size()) << what;
  ASSERT_FALSE(want.empty()) << what;
  for (const auto& [name, t] : want) {
    auto it = got.find(name);
    ASSERT_NE(it, got.end()) << what << ": " << name << " missing";
    EXPECT_TRUE(at::allclose(it->second, t, 1e-9, 1e-12))
        << what << ": " << name << " differs; max |diff| "
        << it->second.sub(t).abs().max().item<double>();
  }
}

// The uninterrupted run of `strategy`, once per test binary.
const std::map<std::string, at::Tensor>& reference(const std::string& strategy,
                                                   int64_t steps = kSteps) {
  static std::map<std::string, std::map<std::string, at::Tensor>> cache;
  const std::string key = strategy + "/" + std::to_string(steps);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  const std::string dir = run_dir("ref-" + strategy + "-" + std::to_string(steps));
  ElasticJob job(launcher_args(2), train_args(strategy, dir, steps));
  const ElasticJobResult r = job.wait(180s);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  auto state = final_state(dir + "/ckpt");
  fs::remove_all(dir);
  return cache[key] = std::move(state);
}

class ElasticShrink : public ::testing::TestWithParam<std::string> {};

TEST_P(ElasticShrink, KilledWorkerCostsOneStepAndKeepsTheMathematics) {
  const std::string strategy = GetParam();
  const auto& want = reference(strategy);
  ASSERT_FALSE(want.empty());
  const std::vector<std::string> shm_before = tandem_shm_segments();
  for (int seed = 0; seed < 10; ++seed) {
    std::mt19937 rng(static_cast<unsigned>(1000 * seed + strategy.size()));
    const int victim = std::uniform_int_distribution<int>(0, kWorkers - 1)(rng);
    const int64_t at_step = std::uniform_int_distribution<int64_t>(2, kSteps - 6)(rng);
    const std::string what =
        fmt::format("{} seed {}: kill -9 worker {} after step {}", strategy, seed, victim, at_step);
    const std::string dir = run_dir(strategy + "-" + std::to_string(seed));
    ElasticJob job(launcher_args(2), train_args(strategy, dir));
    const std::string victim_metrics = fmt::format("{}/metrics-{}.jsonl", dir, victim);
    ASSERT_TRUE(job.wait_for_step(victim_metrics, at_step, 120s)) << what;
    const auto pid = job.worker_pid(victim);
    ASSERT_TRUE(pid.has_value()) << what << ": no pid found";
    ASSERT_EQ(::kill(*pid, SIGKILL), 0) << what;
    const ElasticJobResult r = job.wait(180s);
    ASSERT_EQ(r.exit_code, 0) << what << "\n" << r.output;
    expect_same_state(want, final_state(dir + "/ckpt"), what);
    // Every survivor logged the change: one, at most one step redone.
    int changes = 0;
    for (int w = 0; w < kWorkers; ++w) {
      if (w == victim) continue;
      for (const auto& line : read_metrics(fmt::format("{}/metrics-{}.jsonl", dir, w))) {
        if (!line.contains("membership_change")) continue;
        ++changes;
        EXPECT_EQ(line["world_size"].get<int>(), kWorkers - 1) << what;
        EXPECT_LE(line["steps_redone"].get<int64_t>(), 1) << what;
        EXPECT_EQ(line["cause"]["cause"], "failure") << what;
        EXPECT_EQ(line["cause"]["worker"].get<int>(), victim) << what;
      }
    }
    EXPECT_EQ(changes, kWorkers - 1) << what << "\n" << r.output;
    EXPECT_NE(r.output.find("elastic: generation 1: 3 workers"), std::string::npos) << what << "\n"
                                                                                    << r.output;
    EXPECT_FALSE(job.worker_pid(0) || job.worker_pid(1) || job.worker_pid(2) || job.worker_pid(3))
        << what << ": a worker outlived the job";
    fs::remove_all(dir);
  }
  std::vector<std::string> left;
  for (const auto& s : tandem_shm_segments()) {
    if (std::find(shm_before.begin(), shm_before.end(), s) == shm_before.end()) left.push_back(s);
  }
  EXPECT_TRUE(left.empty()) << "left in /dev/shm: " << fmt::format("{}", fmt::join(left, ", "));
}

INSTANTIATE_TEST_SUITE_P(Strategies, ElasticShrink, ::testing::Values("ddp", "zero2", "zero3"));

// The first membership_change line among the workers' metrics files, other
// than `skip`'s; null while there is none.
nlohmann::json first_change(const std::string& dir, int skip) {
  for (int w = 0; w < kWorkers; ++w) {
    if (w == skip) continue;
    for (const auto& line : read_metrics(fmt::format("{}/metrics-{}.jsonl", dir, w))) {
      if (line.contains("membership_change")) return line;
    }
  }
  return nullptr;
}

// A SIGSTOPped worker sends no heartbeat: the coordinator evicts it within
// the heartbeat timeout (3 s by default), and the others redo the step on 3
// ranks. Woken after that, it is refused with a clear error and exits; the
// job ends as the uninterrupted run does.
TEST(ElasticStall, StoppedWorkerIsEvictedAndRefusedWhenItWakes) {
  constexpr int64_t kStallSteps = 120;  // long enough to wake it before the end
  const auto& want = reference("ddp", kStallSteps);
  ASSERT_FALSE(want.empty());
  constexpr int victim = 2;
  const std::string dir = run_dir("stall");
  ElasticJob job(launcher_args(2), train_args("ddp", dir, kStallSteps));
  ASSERT_TRUE(job.wait_for_step(fmt::format("{}/metrics-{}.jsonl", dir, victim), 5, 120s));
  const auto pid = job.worker_pid(victim);
  ASSERT_TRUE(pid.has_value());
  ASSERT_EQ(::kill(*pid, SIGSTOP), 0);
  const auto stopped = std::chrono::steady_clock::now();
  nlohmann::json change;
  while (change.is_null() && std::chrono::steady_clock::now() - stopped < 60s) {
    job.poll(100ms);
    change = first_change(dir, victim);
  }
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped).count();
  ::kill(*pid, SIGCONT);
  ASSERT_FALSE(change.is_null()) << "no membership change 60 s after SIGSTOP";
  // The heartbeat timeout (3 s), plus the polling of this test and the
  // recovery (well under a second here): a bound that a missing eviction
  // (the rendezvous timeout, minutes) cannot meet.
  EXPECT_LT(waited, 8.0) << change.dump();
  EXPECT_EQ(change["world_size"].get<int>(), kWorkers - 1) << change.dump();
  EXPECT_EQ(change["cause"]["worker"].get<int>(), victim) << change.dump();
  EXPECT_NE(change["cause"]["how"].get<std::string>().find("stalled"), std::string::npos)
      << change.dump();
  EXPECT_LE(change["steps_redone"].get<int64_t>(), 1) << change.dump();
  const ElasticJobResult r = job.wait(180s);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(fmt::format("worker {}: elastic generation 1 (members 0,1,3) left this "
                                      "worker out: stalled",
                                      victim)),
            std::string::npos)
      << "the woken worker was not refused:\n"
      << r.output;
  expect_same_state(want, final_state(dir + "/ckpt"), "after the stall");
  EXPECT_FALSE(job.worker_pid(victim)) << "the evicted worker outlived the job";
  fs::remove_all(dir);
}

// Two hosts (network namespaces), two workers each: both workers of host b
// (ranks 2 and 3) are SIGKILLed; host a's two go on alone, over shared
// memory now instead of shared memory plus Gloo, and end with the
// parameters of the uninterrupted run on one host.
TEST(ElasticHosts, LosingEveryWorkerOfAHostLeavesTheOtherGoingOn) {
  TwoHosts hosts;
  if (!hosts.failure().empty()) {
    return skip_or_fail_without_netns(hosts.failure(), "root and iproute2");
  }
  const auto& want = reference("ddp");
  ASSERT_FALSE(want.empty());
  const std::string dir = run_dir("hosts");
  std::vector<std::unique_ptr<ElasticJob>> nodes;
  for (int host = 0; host < 2; ++host) {
    std::vector<std::string> args = {"--nnodes",         "2",
                                     "--nproc-per-node", "2",
                                     "--node-rank",      std::to_string(host),
                                     "--master-addr",    hosts.address(0),
                                     "--master-port",    "29578",
                                     "--min-workers",    "2",
                                     "--max-restarts",   "0",
                                     "--grace-period",   "2"};
    nodes.push_back(std::make_unique<ElasticJob>(
        args, train_args("ddp", dir),
        std::vector<std::string>{"TANDEM_HOST_ID=host-" + std::to_string(host),
                                 "GLOO_SOCKET_IFNAME=" + hosts.interface(host)},
        hosts.exec(host)));
  }
  // Both launchers' output is relayed while waiting, so neither blocks on it.
  const std::string metrics = dir + "/metrics-2.jsonl";
  bool reached = false;
  for (int turn = 0; turn < 1200 && !reached; ++turn) {
    reached = nodes[turn % 2]->wait_for_step(metrics, 8, 100ms);
  }
  ASSERT_TRUE(reached) << "worker 2 never reached step 8";
  for (int w : {2, 3}) {
    const auto pid = nodes[1]->worker_pid(w);
    ASSERT_TRUE(pid.has_value()) << "worker " << w;
    ASSERT_EQ(::kill(*pid, SIGKILL), 0);
  }
  const ElasticJobResult b = nodes[1]->wait(60s);
  const ElasticJobResult a = nodes[0]->wait(180s);
  ASSERT_EQ(a.exit_code, 0) << "host a:\n" << a.output << "\nhost b:\n" << b.output;
  EXPECT_NE(b.exit_code, -1) << "host b's launcher did not end by itself:\n" << b.output;
  expect_same_state(want, final_state(dir + "/ckpt"), "host b lost");
  // One change, or two when the coordinator saw the deaths apart; the
  // last leaves host a's two workers.
  nlohmann::json last;
  for (const auto& line : read_metrics(dir + "/metrics-0.jsonl")) {
    if (!line.contains("membership_change")) continue;
    last = line;
    EXPECT_LE(line["steps_redone"].get<int64_t>(), 1) << line.dump();
  }
  ASSERT_FALSE(last.is_null()) << a.output;
  EXPECT_EQ(last["members"], nlohmann::json::array({0, 1})) << last.dump();
  fs::remove_all(dir);
}

// The asynchronous strategies lose a worker without losing the run: ps (3
// workers and a server) and gossip (4 workers), one worker SIGKILLed a
// fifth of the way in (a replacement is refused); the others re-form and go on from their own state
// (ps workers pull the server's), and the run still reaches its target loss.
class ElasticAsync : public ::testing::TestWithParam<std::string> {};

TEST_P(ElasticAsync, KilledWorkerAndTheRunStillReachesItsTarget) {
  const std::string strategy = GetParam();
  constexpr int64_t kAsyncSteps = 600;  // long enough for the replacement to ask
  constexpr double kTarget = 0.5;       // from about 2.3; an uninterrupted run ends near 0.001
  const std::string dir = run_dir("async-" + strategy);
  std::vector<std::string> args = {"--model",        "mlp",
                                   "--strategy",     strategy,
                                   "--steps",        std::to_string(kAsyncSteps),
                                   "--batch-size",   "16",
                                   "--dataset-size", "2048",
                                   "--seed",         "7",
                                   "--lr",           "0.01",
                                   "--log-every",    "1",
                                   "--metrics",      dir + "/metrics-{rank}.jsonl"};
  constexpr int victim = 1;  // a worker under ps too (the server is rank 3)
  // One restart: tandem-run starts a replacement, which the job refuses.
  ElasticJob job(launcher_args(2, 1), args);
  ASSERT_TRUE(
      job.wait_for_step(fmt::format("{}/metrics-{}.jsonl", dir, victim), kAsyncSteps / 5, 120s));
  const auto pid = job.worker_pid(victim);
  ASSERT_TRUE(pid.has_value());
  ASSERT_EQ(::kill(*pid, SIGKILL), 0);
  const ElasticJobResult r = job.wait(180s);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("worker 4 may not join: --strategy " + strategy + " is asynchronous"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("elastic: generation 1: 3 workers"), std::string::npos) << r.output;
  // Every surviving worker ran all its steps, and ends below the target
  // (its loss over its last 10 steps).
  const int trainers = strategy == "ps" ? kWorkers - 1 : kWorkers;
  for (int w = 0; w < trainers; ++w) {
    if (w == victim) continue;
    std::vector<double> losses;
    int64_t last = 0;
    bool changed = false;
    for (const auto& line : read_metrics(fmt::format("{}/metrics-{}.jsonl", dir, w))) {
      if (line.contains("membership_change")) {
        changed = true;
        EXPECT_EQ(line["cause"]["worker"].get<int>(), victim) << line.dump();
        continue;
      }
      if (!line.contains("loss") || line.contains("summary")) continue;
      losses.push_back(line["loss"].get<double>());
      last = line["step"].get<int64_t>();
    }
    EXPECT_TRUE(changed) << "worker " << w << " logged no membership change";
    EXPECT_EQ(last, kAsyncSteps) << "worker " << w;
    ASSERT_GE(losses.size(), 10u) << "worker " << w;
    double tail = 0;
    for (size_t i = losses.size() - 10; i < losses.size(); ++i) tail += losses[i] / 10;
    EXPECT_LT(tail, kTarget) << strategy << " worker " << w << ": loss " << losses.front() << " -> "
                             << tail;
  }
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Strategies, ElasticAsync, ::testing::Values("ps", "gossip"));

// Shrink then grow: tandem-run (--max-restarts 1) replaces the killed worker
// alone; the replacement joins at a step boundary, fetches the state from
// the survivors, and the run still ends with the uninterrupted parameters.
// The run is long enough (400 steps) for the replacement to start and join.
class ElasticGrow : public ::testing::TestWithParam<std::string> {};

TEST_P(ElasticGrow, ReplacementJoinsAndKeepsTheMathematics) {
  constexpr int64_t kLong = 400;
  const std::string strategy = GetParam();
  const auto& want = reference(strategy, kLong);
  ASSERT_FALSE(want.empty());
  for (int seed = 0; seed < 2; ++seed) {
    std::mt19937 rng(static_cast<unsigned>(77 * seed + strategy.size()));
    const int victim = std::uniform_int_distribution<int>(0, kWorkers - 1)(rng);
    const int64_t at_step = std::uniform_int_distribution<int64_t>(5, 40)(rng);
    const std::string what = fmt::format("{} seed {}: kill -9 worker {} after step {}, replaced",
                                         strategy, seed, victim, at_step);
    const std::string dir = run_dir("grow-" + strategy + "-" + std::to_string(seed));
    ElasticJob job(launcher_args(2, 1), train_args(strategy, dir, kLong));
    ASSERT_TRUE(job.wait_for_step(fmt::format("{}/metrics-{}.jsonl", dir, victim), at_step, 120s))
        << what;
    const auto pid = job.worker_pid(victim);
    ASSERT_TRUE(pid.has_value()) << what;
    ASSERT_EQ(::kill(*pid, SIGKILL), 0) << what;
    const ElasticJobResult r = job.wait(240s);
    ASSERT_EQ(r.exit_code, 0) << what << "\n" << r.output;
    expect_same_state(want, final_state(dir + "/ckpt"), what);
    EXPECT_NE(r.output.find("3 workers (members"), std::string::npos) << what << "\n" << r.output;
    EXPECT_NE(r.output.find("4 workers (members"), std::string::npos) << what << "\n" << r.output;
    // The replacement (worker 4) wrote its own metrics, the join among them.
    bool joined = false;
    for (const auto& line : read_metrics(dir + "/metrics-4.jsonl")) {
      if (line.contains("membership_change") && line["cause"]["cause"] == "join") joined = true;
    }
    EXPECT_TRUE(joined) << what << "\n" << r.output;
    fs::remove_all(dir);
  }
}

INSTANTIATE_TEST_SUITE_P(Strategies, ElasticGrow, ::testing::Values("ddp", "zero2", "zero3"));

}  // namespace
}  // namespace tandem::testing
