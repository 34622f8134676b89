// tandem-run in elastic mode, end to end: stand-in workers
// (tests/launch/stub_worker.cpp, and /bin/sh) under the real binary. The
// test connects to the store tandem-run serves to follow the generations.
// Every run is bounded, and the tests check that no worker is left.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tandem/comm/store.h"
#include "tandem/launch/elastic_protocol.h"
#include "tandem/launch/program.h"
#include "tests/launch/tandem_run_process.h"

namespace tandem::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
namespace el = launch::elastic;

std::string stub_worker() { return TANDEM_BINARY_DIR "/tests/launch_stub_worker"; }

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// Polls `done` every 20 ms for at most `timeout`.
bool eventually(const std::function<bool()>& done, milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return false;
}

TEST(ElasticGroup, AKilledWorkerIsReplacedAloneWhileTheOthersContinue) {
  TempDir d;
  const int port = launch::pick_free_port("127.0.0.1");
  TandemRunProcess run({"--nproc-per-node", "3", "--min-workers", "2", "--max-workers", "3",
                        "--max-restarts", "1", "--heartbeat-timeout", "20", "--master-port",
                        std::to_string(port), "--log-dir", d.path(), "--", stub_worker()},
                       {"STUB_DIR=" + d.path(), "STUB_MODE=elastic"});
  ASSERT_TRUE(wait_for_files({d.file("pid-0"), d.file("pid-1"), d.file("pid-2")}, seconds(30)));
  auto store =
      with_prefix(make_tcp_store("127.0.0.1", port, false, Millis(10'000)), el::kElasticPrefix);
  ASSERT_TRUE(eventually([&] { return store->add("gen/decided", 0) >= 1; }, seconds(20)));
  const pid_t p0 = read_pid(d.file("pid-0")), p1 = read_pid(d.file("pid-1")),
              p2 = read_pid(d.file("pid-2"));
  ASSERT_EQ(kill(p1, SIGKILL), 0);

  // The replacement gets the first free id (nnodes * nproc = 3) and joins.
  ASSERT_TRUE(wait_for_files({d.file("pid-3")}, seconds(30)));
  auto latest_members = [&] {
    int64_t g = store->add("gen/decided", 0) - 1;
    return el::parse_members(store->get(el::members_key(g), Millis(5000)));
  };
  ASSERT_TRUE(eventually(
      [&] {
        return latest_members() == std::vector<int>{0, 2, 3};
      },
      seconds(30)));
  EXPECT_EQ(store->get(el::exit_key(1), Millis(1000)), "1\tsignal SIGKILL");
  // The survivors are the processes that started first: not restarted.
  EXPECT_TRUE(process_alive(p0));
  EXPECT_TRUE(process_alive(p2));
  const auto started = lines_of(read_text(d.file("started")));
  ASSERT_EQ(started.size(), 4u) << read_text(d.file("started"));
  EXPECT_NE(started[3].find("id=3 rank=1 world=3 join=1 restart=1 served=1"), std::string::npos)
      << started[3];
  for (int i = 0; i < 3; ++i) EXPECT_NE(started[i].find("join=0"), std::string::npos);
  EXPECT_NE(read_text(d.file("rank-1.log")).find("worker 1 (signal SIGKILL) replaced by worker 3"),
            std::string::npos);

  std::ofstream(d.file("finish")) << "1";
  TandemRunResult r = run.wait(seconds(30));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("rank 1 (worker 1, pid " + std::to_string(p1) +
                       ") failed (signal SIGKILL); the others continue (elastic, --min-workers 2)"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("restarting it as worker 3 (restart 1 of 1)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("tandem-run: generation 1: members 0,2"), std::string::npos) << r.err;
  EXPECT_TRUE(wait_until_dead({p0, p2, read_pid(d.file("pid-3"))}, seconds(5)));
}

TEST(ElasticGroup, AStoppedWorkerIsEvictedAndKilledOnceTheJobIsComplete) {
  TempDir d;
  const int port = launch::pick_free_port("127.0.0.1");
  TandemRunProcess run(
      {"--nproc-per-node", "3", "--min-workers", "2", "--heartbeat-timeout", "2", "--grace-period",
       "1", "--master-port", std::to_string(port), "--", stub_worker()},
      {"STUB_DIR=" + d.path(), "STUB_MODE=elastic"});
  ASSERT_TRUE(wait_for_files({d.file("pid-0"), d.file("pid-1"), d.file("pid-2")}, seconds(30)));
  auto store =
      with_prefix(make_tcp_store("127.0.0.1", port, false, Millis(10'000)), el::kElasticPrefix);
  ASSERT_TRUE(eventually([&] { return store->add("gen/decided", 0) >= 1; }, seconds(20)));
  const pid_t stopped = read_pid(d.file("pid-2"));
  ASSERT_EQ(kill(stopped, SIGSTOP), 0);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(eventually([&] { return store->check(el::evicted_key(2)); }, seconds(20)));
  const auto detect = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(detect, milliseconds(1500));  // not before the timeout (less the last beat's age)
  EXPECT_LT(detect, seconds(10));
  ASSERT_TRUE(eventually(
      [&] {
        return store->add("gen/decided", 0) >= 2 &&
               store->get(el::members_key(1), Millis(1000)) == "0,1";
      },
      seconds(20)));
  EXPECT_TRUE(process_alive(stopped));  // left alone while the job runs

  std::ofstream(d.file("finish")) << "1";
  TandemRunResult r = run.wait(seconds(30));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("rank 2 (worker 2) stalled: no heartbeat for 2.0 s"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("stopping the evicted workers left"), std::string::npos) << r.err;
  EXPECT_TRUE(wait_until_dead({stopped}, seconds(5)));
}

TEST(ElasticGroup, FailedWorkersGetFreshIdsAndTheJobFailsWithoutComplete) {
  TempDir d;
  std::string script =
      "echo \"$TANDEM_WORKER_ID $RANK $WORLD_SIZE $TANDEM_ELASTIC_JOIN "
      "$TANDEM_ELASTIC $TANDEM_HEARTBEAT_TIMEOUT\" >> " +
      d.file("ids") + "; exit 3";
  TandemRunResult r = run_tandem(
      {"--nproc-per-node", "2", "--min-workers", "1", "--max-workers", "2", "--max-restarts", "2",
       "--heartbeat-timeout", "1.5", "--", "/bin/sh", "-c", script},
      seconds(30));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  auto ids = lines_of(read_text(d.file("ids")));
  ASSERT_EQ(ids.size(), 4u) << read_text(d.file("ids"));
  std::sort(ids.begin(), ids.end());
  // Replacements get ids from nnodes * nproc = 2 on, keep their rank, and
  // see WORLD_SIZE = --max-workers.
  EXPECT_EQ(ids[0], "0 0 2 0 1:2 1.5");
  EXPECT_EQ(ids[1], "1 1 2 0 1:2 1.5");
  EXPECT_TRUE(ids[2] == "2 0 2 1 1:2 1.5" || ids[2] == "2 1 2 1 1:2 1.5") << ids[2];
  EXPECT_TRUE(ids[3] == "3 0 2 1 1:2 1.5" || ids[3] == "3 1 2 1 1:2 1.5") << ids[3];
  EXPECT_NE(r.err.find("no restart is left for node 0 (--max-restarts 2)"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("ends with exit code 1"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace tandem::testing
