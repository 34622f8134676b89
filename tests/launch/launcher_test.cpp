// tandem-run end to end: real workers (/bin/sh scripts) under the real
// binary. Every run is bounded by a deadline, and tests that stop workers
// check with kill(pid, 0) that no process of the job is left.
#include "tandem/launch/launcher.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "src/launch/spawn.h"
#include "tests/launch/tandem_run_process.h"

namespace tandem::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// A worker script that records its pid in D/pid-$RANK once it is running
// (written then renamed, so a reader never sees half a pid).
std::string record_pid(const TempDir& d) {
  return "echo $$ > " + d.path() + "/pid-$RANK.tmp && mv " + d.path() + "/pid-$RANK.tmp " +
         d.path() + "/pid-$RANK; ";
}

std::vector<std::string> pid_files(const TempDir& d, int n) {
  std::vector<std::string> out;
  for (int r = 0; r < n; ++r) out.push_back(d.file("pid-" + std::to_string(r)));
  return out;
}

std::map<std::string, std::string> read_env_file(const std::string& path) {
  std::map<std::string, std::string> env;
  std::istringstream in(read_text(path));
  std::string line;
  while (std::getline(in, line)) {
    auto eq = line.find('=');
    if (eq != std::string::npos) env[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return env;
}

const char* kEnvDump =
    "env | grep -E '^(MASTER_ADDR|MASTER_PORT|RANK|WORLD_SIZE|LOCAL_RANK|LOCAL_WORLD_SIZE|"
    "GROUP_RANK|TANDEM_NODE_RANK|TANDEM_RESTART_COUNT|TORCHELASTIC_RESTART_COUNT|OMP_NUM_THREADS|"
    "OPENBLAS_NUM_THREADS)=' > ";

TEST(Launcher, SetsTorchrunEnvironmentForFourWorkers) {
  TempDir d;
  std::string script = std::string(kEnvDump) + d.path() + "/env-$LOCAL_RANK";
  TandemRunResult r = run_tandem({"--nproc-per-node", "4", "--", "/bin/sh", "-c", script},
                                 seconds(30), {"RANK=99", "OPENBLAS_NUM_THREADS=3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string port;
  for (int local = 0; local < 4; ++local) {
    auto env = read_env_file(d.file("env-" + std::to_string(local)));
    SCOPED_TRACE("local rank " + std::to_string(local));
    EXPECT_EQ(env["MASTER_ADDR"], "127.0.0.1");
    EXPECT_EQ(env["RANK"], std::to_string(local));
    EXPECT_EQ(env["LOCAL_RANK"], std::to_string(local));
    EXPECT_EQ(env["WORLD_SIZE"], "4");
    EXPECT_EQ(env["LOCAL_WORLD_SIZE"], "4");
    EXPECT_EQ(env["GROUP_RANK"], "0");
    EXPECT_EQ(env["TANDEM_NODE_RANK"], "0");
    EXPECT_EQ(env["TANDEM_RESTART_COUNT"], "0");
    EXPECT_EQ(env["TORCHELASTIC_RESTART_COUNT"], "0");
    EXPECT_EQ(env["OMP_NUM_THREADS"], "1");
    EXPECT_EQ(env["OPENBLAS_NUM_THREADS"], "3");  // already set: kept
    // The auto-picked port is valid and the same for the whole group.
    ASSERT_FALSE(env["MASTER_PORT"].empty());
    int p = std::stoi(env["MASTER_PORT"]);
    EXPECT_GT(p, 0);
    EXPECT_LE(p, 65535);
    if (local == 0) port = env["MASTER_PORT"];
    EXPECT_EQ(env["MASTER_PORT"], port);
  }
}

TEST(Launcher, SetsGlobalRanksOnSecondNode) {
  TempDir d;
  std::string script = std::string(kEnvDump) + d.path() + "/env-$LOCAL_RANK";
  TandemRunResult r =
      run_tandem({"--nproc-per-node", "2", "--nnodes", "3", "--node-rank", "1", "--master-addr",
                  "localhost", "--master-port", "29511", "--", "/bin/sh", "-c", script},
                 seconds(30));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (int local = 0; local < 2; ++local) {
    auto env = read_env_file(d.file("env-" + std::to_string(local)));
    EXPECT_EQ(env["RANK"], std::to_string(2 + local));
    EXPECT_EQ(env["WORLD_SIZE"], "6");
    EXPECT_EQ(env["LOCAL_WORLD_SIZE"], "2");
    EXPECT_EQ(env["GROUP_RANK"], "1");
    EXPECT_EQ(env["TANDEM_NODE_RANK"], "1");
    EXPECT_EQ(env["MASTER_ADDR"], "localhost");
    EXPECT_EQ(env["MASTER_PORT"], "29511");
  }
}

TEST(Launcher, PrefixesStdoutAndStderrLines) {
  TandemRunResult r =
      run_tandem({"--nproc-per-node", "2", "--", "/bin/sh", "-c",
                  "echo out-$RANK; echo err-$RANK >&2; printf 'no newline %s' $RANK"},
                 seconds(30));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* rank : {"0", "1"}) {
    std::string p = std::string("[rank ") + rank + "] ";
    EXPECT_NE(r.out.find(p + "out-" + rank + "\n"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(p + "no newline " + rank + "\n"), std::string::npos) << r.out;
    EXPECT_NE(r.err.find(p + "err-" + rank + "\n"), std::string::npos) << r.err;
  }
  EXPECT_EQ(r.out.find("err-"), std::string::npos);
}

TEST(Launcher, NoPrefixPassesLinesUnchanged) {
  TandemRunResult r =
      run_tandem({"--no-prefix", "--", "/bin/sh", "-c", "echo plain; echo oops >&2; printf tail"},
                 seconds(30));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "plain\ntail\n");
  EXPECT_EQ(r.err, "oops\n");
}

TEST(Launcher, LogDirKeepsEachRanksRawOutput) {
  TempDir d;
  std::string logs = d.file("logs/nested");  // created by tandem-run
  TandemRunResult r = run_tandem({"--nproc-per-node", "3", "--log-dir", logs, "--", "/bin/sh", "-c",
                                  "echo hello $RANK; echo problem $RANK >&2"},
                                 seconds(30));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (int rank = 0; rank < 3; ++rank) {
    std::string log = read_text(logs + "/rank-" + std::to_string(rank) + ".log");
    std::string n = std::to_string(rank);
    EXPECT_NE(log.find("hello " + n + "\n"), std::string::npos) << log;
    EXPECT_NE(log.find("problem " + n + "\n"), std::string::npos) << log;
    EXPECT_EQ(log.find("[rank"), std::string::npos) << "log files hold raw output: " << log;
  }
  EXPECT_NE(r.out.find("[rank 2] hello 2"), std::string::npos);  // still on stdout too
}

TEST(Launcher, FailedWorkerStopsTheWholeGroup) {
  TempDir d;
  // Rank 1 fails once everyone is up. Rank 0 ignores SIGTERM and so do its
  // background child (a grandchild of tandem-run) and rank 2's, so only
  // SIGKILL of the process groups ends them.
  std::string script = "trap '' TERM; sleep 60 & echo $! > " + d.path() + "/child-$RANK; " +
                       record_pid(d) + "if [ $RANK = 1 ]; then while [ ! -s " + d.path() +
                       "/pid-0 ] || [ ! -s " + d.path() + "/pid-2 ]; do sleep 0.01; done; " +
                       "exit 3; fi; if [ $RANK = 2 ]; then trap - TERM; fi; sleep 60";
  TandemRunResult r = run_tandem(
      {"--nproc-per-node", "3", "--grace-period", "1", "--", "/bin/sh", "-c", script}, seconds(30));
  ASSERT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_LT(r.elapsed, seconds(10));
  pid_t failed = read_pid(d.file("pid-1"));
  EXPECT_NE(
      r.err.find("tandem-run: rank 1 (pid " + std::to_string(failed) + ") failed (exit code 3)"),
      std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("sending SIGKILL"), std::string::npos) << r.err;
  for (int rank = 0; rank < 3; ++rank) {
    for (const char* kind : {"pid-", "child-"}) {
      pid_t pid = read_pid(d.file(kind + std::to_string(rank)));
      EXPECT_FALSE(process_alive(pid)) << kind << rank << " (pid " << pid << ") survived";
    }
  }
}

TEST(Launcher, WorkerKilledBySignalIsNamed) {
  TempDir d;
  TandemRunResult r =
      run_tandem({"--nproc-per-node", "2", "--", "/bin/sh", "-c",
                  record_pid(d) + "if [ $RANK = 0 ]; then while [ ! -s " + d.path() +
                      "/pid-1 ]; do sleep 0.01; done; kill -KILL $$; fi; sleep 60"},
                 seconds(30));
  ASSERT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 1);
  pid_t pid = read_pid(d.file("pid-0"));
  EXPECT_NE(r.err.find("rank 0 (pid " + std::to_string(pid) + ") failed (signal SIGKILL)"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(process_alive(read_pid(d.file("pid-1"))));
}

TEST(Launcher, MaxRestartsRestartsTheGroupUntilItSucceeds) {
  TempDir d;
  std::string logs = d.file("logs");
  std::string script =
      "echo attempt $TANDEM_RESTART_COUNT $TORCHELASTIC_RESTART_COUNT; "
      "if [ $RANK = 1 ] && [ $TANDEM_RESTART_COUNT -lt 2 ]; then exit 3; fi; echo done";
  TandemRunResult r = run_tandem({"--nproc-per-node", "2", "--max-restarts", "2", "--log-dir", logs,
                                  "--grace-period", "1", "--", "/bin/sh", "-c", script},
                                 seconds(60));
  ASSERT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const char* n : {"0", "1", "2"}) {
    EXPECT_NE(r.out.find(std::string("[rank 1] attempt ") + n + " " + n), std::string::npos)
        << r.out;
  }
  EXPECT_NE(r.out.find("[rank 1] done"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("tandem-run: rank 1 failed (exit code 3); restarting the group "
                       "(attempt 2 of 3)"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("(attempt 3 of 3)"), std::string::npos) << r.err;
  std::string log = read_text(logs + "/rank-1.log");
  EXPECT_NE(log.find("attempt 0 0\n---- tandem-run: restart 1 of 2"), std::string::npos) << log;
  EXPECT_NE(log.find("attempt 2 2\ndone\n"), std::string::npos) << log;
}

TEST(Launcher, GivesUpWhenRestartsRunOut) {
  TandemRunResult r = run_tandem(
      {"--max-restarts", "1", "--", "/bin/sh", "-c", "echo try $TANDEM_RESTART_COUNT; exit 4"},
      seconds(30));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.out.find("[rank 0] try 1"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("try 2"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("no restart is left (--max-restarts 1)"), std::string::npos) << r.err;
}

TEST(Launcher, ForwardsSigtermAndExits143) {
  TempDir d;
  // The group's SIGTERM also ends the foreground sleep, so the shell runs
  // its trap at once ('sleep & wait' can miss a signal that comes early).
  std::string script = "trap 'echo got-term > " + d.path() + "/term-$RANK; exit 0' TERM; " +
                       record_pid(d) + "while true; do sleep 1; done";
  TandemRunProcess p({"--nproc-per-node", "3", "--", "/bin/sh", "-c", script});
  ASSERT_TRUE(wait_for_files(pid_files(d, 3), seconds(20)));
  auto sent = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(p.pid(), SIGTERM), 0);
  TandemRunResult r = p.wait(seconds(20));
  auto took = std::chrono::steady_clock::now() - sent;
  ASSERT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 143) << r.err;
  EXPECT_LT(took, seconds(5));  // within the default grace period
  EXPECT_NE(r.err.find("received SIGTERM"), std::string::npos) << r.err;
  for (int rank = 0; rank < 3; ++rank) {
    EXPECT_EQ(read_text(d.file("term-" + std::to_string(rank))), "got-term\n");
    EXPECT_FALSE(process_alive(read_pid(d.file("pid-" + std::to_string(rank)))));
  }
}

TEST(Launcher, SigintKillsWorkersThatIgnoreItAndExits130) {
  TempDir d;
  TandemRunProcess p({"--nproc-per-node", "2", "--grace-period", "0.5", "--", "/bin/sh", "-c",
                      "trap '' INT; " + record_pid(d) + "exec sleep 60"});
  ASSERT_TRUE(wait_for_files(pid_files(d, 2), seconds(20)));
  ASSERT_EQ(kill(p.pid(), SIGINT), 0);
  TandemRunResult r = p.wait(seconds(20));
  ASSERT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 130) << r.err;
  EXPECT_LT(r.elapsed, seconds(20));
  EXPECT_NE(r.err.find("still running 500 ms after SIGINT; sending SIGKILL"), std::string::npos)
      << r.err;
  for (pid_t pid : {read_pid(d.file("pid-0")), read_pid(d.file("pid-1"))}) {
    EXPECT_FALSE(process_alive(pid));
  }
}

TEST(Launcher, WorkersDieWhenTandemRunIsKilled) {
  TempDir d;
  TandemRunProcess p(
      {"--nproc-per-node", "2", "--", "/bin/sh", "-c", record_pid(d) + "exec sleep 60"});
  ASSERT_TRUE(wait_for_files(pid_files(d, 2), seconds(20)));
  ASSERT_EQ(kill(p.pid(), SIGKILL), 0);
  TandemRunResult r = p.wait(seconds(20));
  EXPECT_EQ(r.signal, SIGKILL);
  // PR_SET_PDEATHSIG(SIGKILL) ends the workers without tandem-run's help.
  EXPECT_TRUE(wait_until_dead({read_pid(d.file("pid-0")), read_pid(d.file("pid-1"))}, seconds(10)));
}

TEST(Launcher, StopsProcessesLeftBehindBySuccessfulWorkers) {
  TempDir d;
  TandemRunResult r = run_tandem({"--grace-period", "1", "--", "/bin/sh", "-c",
                                  "sleep 60 & echo $! > " + d.path() + "/child; echo finished"},
                                 seconds(30));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "[rank 0] finished\n");
  EXPECT_NE(r.err.find("every worker has exited, but processes left by rank 0"), std::string::npos)
      << r.err;
  EXPECT_FALSE(process_alive(read_pid(d.file("child"))));
}

TEST(Launcher, ResolvesProgramsLikeExecvp) {
  EXPECT_EQ(launch::resolve_program("sh", std::string("/nonexistent:/bin")), "/bin/sh");
  EXPECT_EQ(launch::resolve_program("/bin/sh", std::nullopt), "/bin/sh");
  try {
    launch::resolve_program("sh", std::string("/nonexistent"));
    ADD_FAILURE() << "no error";
  } catch (const launch::ProgramError& e) {
    EXPECT_EQ(e.exit_code(), 127);
    EXPECT_NE(std::string(e.what()).find("cannot execute 'sh': no such program in PATH"),
              std::string::npos);
  }
  EXPECT_THROW(launch::resolve_program("/", std::nullopt), launch::ProgramError);
}

TEST(Launcher, PicksAFreePort) {
  int port = launch::pick_free_port("127.0.0.1");
  EXPECT_GT(port, 0);
  EXPECT_LE(port, 65535);
  EXPECT_THROW(launch::pick_free_port("no-such-host.invalid"), Error);
}

TEST(Launcher, DescribesWaitStatus) {
  EXPECT_EQ(launch::describe_wait_status(3 << 8), "exit code 3");
  EXPECT_EQ(launch::describe_wait_status(SIGKILL), "signal SIGKILL");
  EXPECT_FALSE(launch::failed(0));
  EXPECT_TRUE(launch::failed(3 << 8));
  EXPECT_TRUE(launch::failed(SIGTERM));
}

// The store lives in the launcher (issue 15): a worker that set a key and
// was SIGKILLed leaves it behind for the restarted group, which connects to
// the same store at the same port.
TEST(Launcher, ServesTheStoreForTheWholeRun) {
  TempDir d;
  TandemRunProcess run({"--max-restarts", "1", "--", TANDEM_BINARY_DIR "/tests/launch_stub_worker"},
                       {"STUB_DIR=" + d.path(), "STUB_MODE=plain"});
  ASSERT_TRUE(wait_for_files({d.file("ready"), d.file("pid-0")}, seconds(30)));
  const pid_t first = read_pid(d.file("pid-0"));
  ASSERT_EQ(kill(first, SIGKILL), 0);
  TandemRunResult r = run.wait(seconds(30));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(read_text(d.file("seen")), std::to_string(first));
  EXPECT_NE(r.err.find("restarting the group (attempt 2 of 2)"), std::string::npos) << r.err;
  const std::string started = read_text(d.file("started"));
  EXPECT_NE(started.find("restart=0 served=1"), std::string::npos) << started;
  EXPECT_NE(started.find("restart=1 served=1"), std::string::npos) << started;
}

}  // namespace
}  // namespace tandem::testing
