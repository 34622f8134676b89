// run_command: runs a shell command line for the CLI tests, bounded by
// coreutils' timeout (SIGKILL after `timeout_s`), and returns its exit code
// and its stdout and stderr together.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace tandem::testing {

struct CommandResult {
  int exit_code = -1;  // -1: killed or not run
  std::string output;  // stdout and stderr
};

inline CommandResult run_command(const std::string& command, int timeout_s = 120) {
  CommandResult r;
  const std::string line =
      "timeout -s KILL " + std::to_string(timeout_s) + " " + command + " 2>&1";
  FILE* p = popen(line.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace tandem::testing
