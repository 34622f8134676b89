// ChildProcesses: the one way Tandem starts ranks as processes. tandem-run's
// workers, the benchmarks' child ranks and the fork-per-rank test harness all
// go through it.
//
// Each child either executes a program (fork + exec with exactly the
// environment given) or runs a function of this process (fork only, for
// tests). Either way it runs in a process group of its own (so kill(-pid)
// reaches whatever it starts), with stdin on /dev/null, stdout and stderr on
// pipes this object reads, default signal dispositions and, on Linux,
// PR_SET_PDEATHSIG(SIGKILL), so that it dies if the starting thread does.
// Output is handed to an optional sink chunk by chunk as it arrives, and the
// tail of each child's output is kept for its result. wait() bounds the whole
// run by a deadline: past it, every group still alive is SIGKILLed, and every
// process is reaped before it returns. A child that was still running at the
// deadline, or that a signal ended, never reads as a success.
//
// Not thread-safe: one thread starts, polls and waits. fork() copies only the
// calling thread, so a function child must not need locks that other threads
// of this process may hold (tests fork before they start threads of their
// own, as the harness always did).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tandem/core/deadline.h"

namespace tandem::launch {

enum class Stream { kStdout, kStderr };

// How one child ended, and what it wrote.
struct ChildResult {
  int rank = 0;        // as given to start_*()
  pid_t pid = -1;      // also the id of its process group
  int exit_code = -1;  // its exit code; -1 unless it exited by itself (never 0 for a signal)
  int signal = 0;      // the signal that ended it, or 0
  bool core_dumped = false;
  bool timed_out = false;  // still running at wait()'s deadline, so SIGKILLed (signal = SIGKILL)
  std::string output;      // the tail of its stdout and stderr, interleaved as read

  // True only when it exited by itself with code 0 before the deadline.
  bool ok() const { return exit_code == 0 && signal == 0 && !timed_out; }
  // "exit code 3", "signal SIGSEGV (core dumped)", "still running at the
  // deadline (SIGKILLed)", or "running" before it has ended.
  std::string how() const;
};

struct ChildOptions {
  // Called with each chunk a child writes, in order per stream (raw bytes,
  // not split into lines); `index` is the child's position in start order.
  std::function<void(size_t index, Stream stream, std::string_view data)> on_data;
  // Called once per stream when it has ended and been read to the end.
  std::function<void(size_t index, Stream stream)> on_closed;
  // How much of each child's output its ChildResult keeps (the tail).
  size_t keep_output_bytes = 1 << 20;
  // Whether this process is a child subreaper (see launcher.h), so that it
  // reaps the processes a child leaves in its group: then a child counts as
  // gone only once its whole group is. Otherwise the rest of a group is
  // SIGKILLed when its child exits and is left to init to reap.
  bool reap_groups = false;
};

class ChildProcesses {
 public:
  // A process that outlives SIGKILL this long is stuck in the kernel.
  static constexpr Millis kAfterKill{10'000};

  explicit ChildProcesses(ChildOptions options = {});
  // Bounded: SIGKILLs every group still alive, reaps for at most 3 s (a
  // warning names what is left), then closes every pipe.
  ~ChildProcesses();
  ChildProcesses(const ChildProcesses&) = delete;
  ChildProcesses& operator=(const ChildProcesses&) = delete;

  // Starts `path` with `argv` (argv[0] is the name the program sees) and
  // exactly `env` ("NAME=value" entries), and waits at most 10 s for exec to
  // succeed. Throws ProgramError (launcher.h) when exec fails, tandem::Error
  // when a pipe or fork fails.
  void start_program(int rank, const std::string& path, const std::vector<std::string>& argv,
                     const std::vector<std::string>& env);
  // Forks; the child runs body() and exits with what it returns (2 if it
  // throws, after printing "rank R threw: ..." to stderr), without running
  // this process's atexit handlers or static destructors. Throws tandem::Error when a pipe or fork
  // fails.
  void start_function(int rank, const std::function<int()>& body);

  // One turn: waits at most `timeout` for output (less if a signal arrives),
  // hands what arrived to the sink, and reaps the children that have exited.
  void poll(Millis timeout);
  // Sends `sig` to the process group of every child not yet gone.
  void signal_all(int sig);
  // SIGKILLs the groups of the children still running and marks them timed
  // out.
  void kill_running_as_timed_out();
  // After all_gone(): reads what is left in the pipes, then closes them.
  void drain();

  // Watches the children until every one is gone, then drains: past
  // `deadline` the groups still alive are SIGKILLed (their children marked
  // timed out). Returns the results in start order. Throws
  // tandem::TimeoutError naming them when processes survive SIGKILL for 10 s
  // (stuck in the kernel).
  const std::vector<ChildResult>& wait(Clock::time_point deadline);

  bool all_exited() const;  // every child has been reaped
  bool all_gone() const;    // ... and, with reap_groups, every process of its group
  // The first child, in start order, that has ended other than ok(); null if none.
  const ChildResult* first_failed() const;
  // "rank 1 (pid 42), processes left by rank 0 (process group 41)": what is
  // not gone yet.
  std::string survivors() const;
  const std::vector<ChildResult>& results() const { return results_; }
  // Throws the tandem::TimeoutError that names the survivors() as stuck
  // after SIGKILL.
  [[noreturn]] void give_up_on_survivors() const;

 private:
  struct Pipes {
    int out = -1;
    int err = -1;
    bool exited = false;      // the child itself has been reaped
    bool group_gone = false;  // nothing of its group is left (or, without reap_groups, killed)
  };
  void add(int rank, pid_t pid, int out_fd, int err_fd);
  bool read_stream(size_t index, Stream stream);
  void close_stream(size_t index, Stream stream);
  void keep(size_t index, std::string_view data);
  void reap();
  void finish_group(size_t index);

  ChildOptions options_;
  std::vector<ChildResult> results_;
  std::vector<Pipes> pipes_;  // parallel to results_
};

// One paragraph per child that is not ok(): "rank 1 (pid 42) failed (signal
// SIGKILL); its output ends:" and the last `lines` lines of its output.
// Empty when every child is ok().
std::string describe_failures(const std::vector<ChildResult>& results, int lines = 20);

// The last `lines` lines of `text`.
std::string tail_lines(std::string_view text, int lines);

// The pid of a running (not zombie) child of `parent` whose environment
// holds `assignment` ("NAME=value"), found in /proc; nullopt when none does.
// Tests and benchmarks use it to pick a worker of a launcher.
std::optional<pid_t> find_child_with_env(pid_t parent, const std::string& assignment);

}  // namespace tandem::launch
