// The fork-per-rank harness: runs a test body in N real processes that meet
// through a loopback TCP store (rank 0 serves it on `port`). The ranks are
// started, watched and reaped by launch::ChildProcesses: the parent waits with
// a deadline, kills stragglers with SIGKILL, and reports each failed or hung
// rank with how it ended and the tail of its output; no process is left
// behind.
//
// Inside a rank, gtest assertions work as usual: a rank whose body records a
// failure or throws exits non-zero, and the parent fails the test. A rank
// killed by a signal or by the deadline is never a success: its exit_code is
// -1 and ok() is false.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "tandem/launch/child_processes.h"

namespace tandem::testing {

// rank, pid, exit_code (-1 unless the rank exited by itself), signal,
// timed_out, output (stdout + stderr), ok() and how().
using RankResult = launch::ChildResult;

struct MultiprocOptions {
  std::chrono::milliseconds timeout{60'000};
  // Extra environment for the ranks ("NAME=value").
  std::vector<std::string> env;
};

// Forks `world_size` ranks; rank r runs body(r, world_size, port). Returns
// each rank's result, in rank order, after every process has been reaped.
std::vector<RankResult> run_ranks(int world_size,
                                  const std::function<void(int rank, int size, int port)>& body,
                                  const MultiprocOptions& options = {});

// run_ranks, then a gtest failure for every rank that is not ok(), saying how
// it ended and the tail of its output.
void expect_ranks_succeed(int world_size,
                          const std::function<void(int rank, int size, int port)>& body,
                          const MultiprocOptions& options = {});

// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
int free_port();

// The last `lines` lines of `text`.
std::string tail(const std::string& text, int lines = 30);

}  // namespace tandem::testing
