// Starting one worker: fork + exec with stdin on /dev/null and stdout/stderr
// on pipes, in a process group of its own (so kill(-pid) reaches whatever it
// starts) and, on Linux, with PR_SET_PDEATHSIG(SIGKILL) so it dies if the
// launcher is SIGKILLed. Thread-compatible; call from a single-threaded
// process (only async-signal-safe calls run between fork and exec).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace tandem::launch {

struct SpawnRequest {
  std::string path;               // the program to execute (see resolve_program)
  std::vector<std::string> argv;  // argv[0] is the program as the user typed it
  std::vector<std::string> env;   // "NAME=value" entries, the whole environment
};

struct SpawnedWorker {
  pid_t pid = -1;   // also the id of its process group
  int out_fd = -1;  // read ends, non-blocking and close-on-exec; the caller closes them
  int err_fd = -1;
};

// Starts the worker and waits (at most 10 s) until exec has succeeded.
// Throws ProgramError when exec fails (the child is reaped first) and
// tandem::Error when a pipe or fork fails.
SpawnedWorker spawn_worker(const SpawnRequest& request);

// How a process ended, from its waitpid status: "exit code 3",
// "signal SIGSEGV" (with " (core dumped)" when it did).
std::string describe_wait_status(int status);

// True when the status is anything but a normal exit with code 0.
bool failed(int status);

}  // namespace tandem::launch
