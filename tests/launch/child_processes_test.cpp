// launch::ChildProcesses, the one process starter (tandem-run's workers, the
// benches' child ranks and the test harness): programs and functions as
// children, their output and exit, and the deadline, past which a child's
// whole process group is killed and the child never reads as a success.
#include "tandem/launch/child_processes.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "tandem/launch/launcher.h"
#include "tests/launch/tandem_run_process.h"

namespace tandem::testing {
namespace {

using launch::ChildProcesses;
using launch::ChildResult;
using launch::Stream;
using std::chrono::milliseconds;
using std::chrono::seconds;

Clock::time_point in(milliseconds ms) { return Clock::now() + ms; }

void start_shell(ChildProcesses& children, int rank, const std::string& script) {
  children.start_program(rank, "/bin/sh", {"sh", "-c", script}, launch::current_environment());
}

TEST(ChildProcesses, ProgramsReportTheirOutputAndExitCode) {
  std::string out, err;
  int closed = 0;
  launch::ChildOptions o;
  o.on_data = [&](size_t i, Stream s, std::string_view d) {
    EXPECT_EQ(i, 0u);
    (s == Stream::kStdout ? out : err).append(d);
  };
  o.on_closed = [&](size_t, Stream) { ++closed; };
  ChildProcesses children(o);
  start_shell(children, 7, "echo to-out; echo to-err >&2; exit 3");
  const auto& results = children.wait(in(seconds(20)));
  ASSERT_EQ(results.size(), 1u);
  const ChildResult& r = results[0];
  EXPECT_EQ(r.rank, 7);
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.signal, 0);
  EXPECT_FALSE(r.timed_out);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.how(), "exit code 3");
  EXPECT_EQ(out, "to-out\n");
  EXPECT_EQ(err, "to-err\n");
  EXPECT_NE(r.output.find("to-out\n"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("to-err\n"), std::string::npos) << r.output;
  EXPECT_EQ(closed, 2);
  EXPECT_EQ(children.first_failed(), &results[0]);
}

TEST(ChildProcesses, ProgramsGetExactlyTheEnvironmentGiven) {
  ChildProcesses children;
  children.start_program(0, "/bin/sh", {"sh", "-c", "echo \"[$ONLY_THIS][$HOME]\""},
                         {"ONLY_THIS=yes"});
  const auto& r = children.wait(in(seconds(20)))[0];
  EXPECT_TRUE(r.ok()) << r.how();
  EXPECT_EQ(r.output, "[yes][]\n");
}

TEST(ChildProcesses, FunctionsExitWithWhatTheyReturnOrTwoWhenTheyThrow) {
  ChildProcesses children;
  children.start_function(0, [] { return 0; });
  children.start_function(1, [] { return 5; });
  children.start_function(2, []() -> int { throw std::runtime_error("boom"); });
  const auto& results = children.wait(in(seconds(20)));
  EXPECT_TRUE(results[0].ok());
  EXPECT_EQ(results[1].exit_code, 5);
  EXPECT_EQ(results[2].exit_code, 2);
  EXPECT_NE(results[2].output.find("rank 2 threw: boom"), std::string::npos) << results[2].output;
}

TEST(ChildProcesses, ASignalIsNeverASuccess) {
  ChildProcesses children;
  children.start_function(0, [] {
    raise(SIGKILL);
    return 0;
  });
  const ChildResult& r = children.wait(in(seconds(20)))[0];
  EXPECT_EQ(r.signal, SIGKILL);
  EXPECT_EQ(r.exit_code, -1);
  EXPECT_FALSE(r.timed_out);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.how(), "signal SIGKILL");
}

// A child and the process it started both outlive the deadline: both are
// killed, the child reads as timed out, and its output so far is kept.
TEST(ChildProcesses, TheDeadlineKillsTheWholeGroup) {
  TempDir d;
  ChildProcesses children;
  start_shell(children, 0,
              "sleep 60 & echo $! > " + d.path() + "/child; echo started; exec sleep 60");
  start_shell(children, 1, "exit 0");
  ASSERT_TRUE(wait_for_files({d.file("child")}, seconds(20)));
  const auto start = Clock::now();
  const auto& results = children.wait(in(milliseconds(500)));
  EXPECT_LT(Clock::now() - start, seconds(10));
  const ChildResult& r = results[0];
  EXPECT_TRUE(r.timed_out);
  EXPECT_EQ(r.signal, SIGKILL);
  EXPECT_EQ(r.exit_code, -1);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.how(), "still running at the deadline (SIGKILLed)");
  EXPECT_EQ(r.output, "started\n");
  EXPECT_TRUE(results[1].ok()) << "a child that finished in time is not blamed";
  EXPECT_TRUE(wait_until_dead({read_pid(d.file("child"))}, seconds(10)));
  const std::string report = launch::describe_failures(results);
  EXPECT_NE(report.find("rank 0 (pid " + std::to_string(r.pid) +
                        ") failed (still running at the deadline (SIGKILLed)); its output "
                        "ends:\nstarted\n"),
            std::string::npos)
      << report;
  EXPECT_EQ(report.find("rank 1"), std::string::npos) << report;
}

// Without reap_groups, what a child leaves in its group dies with it.
TEST(ChildProcesses, ProcessesLeftBehindByAChildAreKilled) {
  TempDir d;
  ChildProcesses children;
  start_shell(children, 0, "sleep 60 & echo $! > " + d.path() + "/child; echo done");
  const ChildResult& r = children.wait(in(seconds(20)))[0];
  EXPECT_TRUE(r.ok()) << r.how();
  EXPECT_TRUE(wait_until_dead({read_pid(d.file("child"))}, seconds(10)));
}

TEST(ChildProcesses, OutputKeepsItsTail) {
  launch::ChildOptions o;
  o.keep_output_bytes = 10;
  ChildProcesses children(o);
  start_shell(children, 0, "echo 0123456789; echo abcdefghi");
  EXPECT_EQ(children.wait(in(seconds(20)))[0].output, "abcdefghi\n");
}

TEST(ChildProcesses, AProgramThatCannotRunIsAProgramError) {
  ChildProcesses children;
  try {
    children.start_program(0, "/nonexistent/program", {"program"}, {});
    ADD_FAILURE() << "no error";
  } catch (const launch::ProgramError& e) {
    EXPECT_EQ(e.exit_code(), 127);
    EXPECT_NE(std::string(e.what()).find("cannot execute '/nonexistent/program'"),
              std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(children.all_gone());
}

TEST(ChildProcesses, TailLinesCountsLinesFromTheEnd) {
  EXPECT_EQ(launch::tail_lines("a\nb\nc\n", 2), "b\nc\n");
  EXPECT_EQ(launch::tail_lines("a\nb\nc", 2), "b\nc");
  EXPECT_EQ(launch::tail_lines("a\nb\n", 5), "a\nb\n");
  EXPECT_EQ(launch::tail_lines("", 3), "");
}

}  // namespace
}  // namespace tandem::testing
