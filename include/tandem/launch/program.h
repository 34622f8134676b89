// Finding and describing the program a launch starts: the execvp search,
// this process's environment, a free TCP port, and ProgramError, the error a
// program that cannot run raises (with sh(1)'s exit code). Shared by the
// launcher, the process starter (child_processes.h) and the benchmarks.
// Thread-safe: plain functions of their arguments (and the environment).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "tandem/core/error.h"

namespace tandem::launch {

// PROGRAM cannot be executed. exit_code() follows sh(1) and env(1): 127 when
// it is not found, 126 when it is found but cannot be run.
class ProgramError : public InvalidArgument {
 public:
  ProgramError(const std::string& message, int exit_code)
      : InvalidArgument(message), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

// Finds PROGRAM the way execvp does: taken as a path when it contains '/',
// otherwise searched in `path` (the PATH value; unset means
// "/usr/local/bin:/usr/bin:/bin"). Returns the path to execute. Throws
// ProgramError naming the program and why (not found, a directory, not
// executable).
std::string resolve_program(const std::string& program, const std::optional<std::string>& path);

// This process's environment as "NAME=value" entries.
std::vector<std::string> current_environment();

// A TCP port that is free on `address` right now: binds port 0, reads the
// port the kernel chose and closes the socket. Throws tandem::Error when the
// address cannot be resolved or bound.
int pick_free_port(const std::string& address);

}  // namespace tandem::launch
