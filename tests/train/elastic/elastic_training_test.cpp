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
#include <filesystem>
#include <map>
#include <random>
#include <set>

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
