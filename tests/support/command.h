// run_command: runs a shell command line for the CLI tests through
// launch::ChildProcesses, bounded by a deadline (the shell's whole process
// group is SIGKILLed after `timeout_s`), and returns its exit code and its
// stdout and stderr together.
#pragma once

#include <chrono>
#include <string>

#include "tandem/launch/child_processes.h"
#include "tandem/launch/launcher.h"

namespace tandem::testing {

struct CommandResult {
  int exit_code = -1;  // -1: killed by a signal or at the deadline
  std::string output;  // stdout and stderr, interleaved as read
};

inline CommandResult run_command(const std::string& command, int timeout_s = 120) {
  launch::ChildOptions keep_all;
  keep_all.keep_output_bytes = size_t{64} << 20;
  launch::ChildProcesses shell(keep_all);
  shell.start_program(0, "/bin/sh", {"sh", "-c", command}, launch::current_environment());
  const launch::ChildResult& r =
      shell.wait(std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s))[0];
  CommandResult out{r.exit_code, r.output};
  if (r.timed_out) out.output += "\n(run_command: " + r.how() + ")\n";
  return out;
}

}  // namespace tandem::testing
