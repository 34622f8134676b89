// Benchmarks that run whole training jobs start their ranks as children:
// each is this executable (`/proc/self/exe ARGS...`) with torchrun's
// variables (RANK, WORLD_SIZE, MASTER_ADDR/PORT on a free loopback port)
// and one BLAS/OpenMP thread unless the user set otherwise. The parent's
// wait is bounded: past the timeout every child is killed.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace tandem::tools {

struct ChildRanksOptions {
  int processes = 1;
  // Each child a world of its own (RANK 0, WORLD_SIZE 1, no rendezvous),
  // for runs that measure processes working side by side without talking.
  bool independent = false;
  int timeout_s = 600;
  // Non-empty: the children's stdout and stderr go to LOG_DIR/output.log.
  // Empty: their stdout comes back in ChildRanksResult::output (stderr stays
  // the caller's).
  std::filesystem::path log_dir;
};

struct ChildRanksResult {
  std::string error;   // "" when every child exited 0, else what went wrong
  std::string output;  // the children's stdout, when captured
};

// Starts the children with `args` (args[0] is their argv[0]) and waits for
// them, at most o.timeout_s seconds.
ChildRanksResult run_children(const std::vector<std::string>& args, const ChildRanksOptions& o);

// The ranks of one job, output to DIR/output.log; returns the error or "".
std::string run_child_ranks(int ranks, const std::vector<std::string>& args,
                            const std::filesystem::path& dir, int timeout_s);

}  // namespace tandem::tools
