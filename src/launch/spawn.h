// Starting one child process for ChildProcesses (tandem/launch/child_processes.h):
// fork, then in the child a process group of its own, PR_SET_PDEATHSIG(SIGKILL)
// on Linux, stdin on /dev/null, stdout/stderr on pipes, default signal
// dispositions and an empty signal mask; then exec a program or run a
// function. Only async-signal-safe calls run between fork and exec.
// Thread-compatible.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

namespace tandem::launch {

struct SpawnRequest {
  std::string path;               // the program to execute (see resolve_program)
  std::vector<std::string> argv;  // argv[0] is the program as the user typed it
  std::vector<std::string> env;   // "NAME=value" entries, the whole environment
};

struct SpawnedProcess {
  pid_t pid = -1;   // also the id of its process group
  int out_fd = -1;  // read ends, non-blocking and close-on-exec; the caller closes them
  int err_fd = -1;
};

// Starts the program and waits (at most 10 s) until exec has succeeded.
// Throws ProgramError when exec fails (the child is reaped first) and
// tandem::Error when a pipe or fork fails.
SpawnedProcess spawn_program(const SpawnRequest& request);

// Forks a child that runs body() and _exits with its result (2, with
// "NAME threw: ..." on stderr, when it throws). Throws tandem::Error when a
// pipe or fork fails.
SpawnedProcess spawn_function(const std::function<int()>& body, const std::string& name);

// How a process ended, from its waitpid status: "exit code 3",
// "signal SIGSEGV" (with " (core dumped)" when it did).
std::string describe_wait_status(int status);

// True when the status is anything but a normal exit with code 0.
bool failed(int status);

}  // namespace tandem::launch
